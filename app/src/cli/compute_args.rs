//! `--device` and `--dtype`, the same on every command that runs a model.

use clap::Args;
use diffscope_engine::device::{Compute, DeviceChoice, Precision};

#[derive(Args, Debug, Clone, Default)]
pub struct ComputeArgs {
    /// Where the model runs: cpu, cuda, cuda:N, metal (default: the first GPU this build
    /// supports when one is present, else the CPU).
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Precision of the weights and activations: f32, f16 or bf16 (weights are cast at load;
    /// features are always written as float32). Half precision is for GPUs: on the CPU it is
    /// computed in float32 and rounded, and is slower than f32.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    pub dtype: Precision,
}

pub fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
        .map_err(|e: diffscope_engine::Error| e.to_string())
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
        .map_err(|e: diffscope_engine::Error| e.to_string())
}

impl ComputeArgs {
    /// Open the device and check it can compute in the precision asked for.
    pub fn open(&self) -> anyhow::Result<Compute> {
        Ok(Compute::open(self.device, self.dtype)?)
    }
}
