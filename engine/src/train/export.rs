//! The trained model as a standard diffusers folder that `DDPMPipeline.from_pretrained` and
//! `UNet2DModel.from_pretrained` load unchanged (and so does [`crate::model::pipeline::DiffusionModel`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::arch::{ddpm_pipeline_index, ddpm_scheduler_config, UNetArchitecture};
use crate::error::{Error, Result};
use crate::io::atomic::write_bytes_atomically;
use crate::io::safetensors::write_tensors;

pub const UNET_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e.to_string()))? + "\n";
    write_bytes_atomically(path, text.as_bytes())
}

/// Write `unet/config.json` for `arch` under `dir`; returns its path.
pub fn write_unet_config(dir: &Path, arch: &UNetArchitecture) -> Result<PathBuf> {
    let path = dir.join("unet").join("config.json");
    write_json(&path, &arch.unet_config())?;
    Ok(path)
}

/// Write the whole folder: `model_index.json`, `scheduler/scheduler_config.json`,
/// `unet/config.json` and `unet/diffusion_pytorch_model.safetensors` (float32, diffusers names).
pub fn write_model_folder(
    dir: &Path,
    arch: &UNetArchitecture,
    beta_schedule: &str,
    weights: &BTreeMap<String, Tensor>,
) -> Result<()> {
    write_json(&dir.join("model_index.json"), &ddpm_pipeline_index())?;
    write_json(
        &dir.join("scheduler").join("scheduler_config.json"),
        &ddpm_scheduler_config(beta_schedule),
    )?;
    write_unet_config(dir, arch)?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_tensors(&dir.join("unet").join(UNET_WEIGHTS), weights, meta)
}
