//! Feature dumps that numpy and PyTorch read: one `.safetensors` file with a float32 `[C,h,w]`
//! tensor per tap (plus `latents`) and the settings in `__metadata__`; or a folder of `.npy`
//! files with `meta.json`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use super::extract::Extraction;
use crate::error::{Error, Result, WithPath};
use crate::io::npy::{write_npy, NpyArray, NpyData};

/// All tensors of an extraction, `latents` included, contiguous float32 on the CPU.
fn tensors_of(ex: &Extraction) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, t) in ex
        .taps
        .iter()
        .chain(std::iter::once((&"latents".to_string(), &ex.latents)))
    {
        out.insert(
            name.clone(),
            t.to_device(&candle_core::Device::Cpu)?
                .to_dtype(candle_core::DType::F32)?
                .contiguous()?,
        );
    }
    Ok(out)
}

pub fn write_safetensors(ex: &Extraction, path: &Path) -> Result<()> {
    let tensors = tensors_of(ex)?;
    let views: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let metadata: std::collections::HashMap<String, String> =
        ex.metadata.clone().into_iter().collect();
    let data: Vec<(&str, Vec<u8>, Vec<usize>)> = views
        .iter()
        .map(|(n, t)| Ok((n.as_str(), f32_bytes(t)?, t.dims().to_vec())))
        .collect::<Result<_>>()?;
    let st_views: Vec<(&str, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, bytes, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (*n, v))
                .map_err(|e| Error::file(path, e.to_string()))
        })
        .collect::<Result<_>>()?;
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(st_views, Some(metadata), tmp).with_path(tmp)
    })
}

/// `DIR/<tap>.npy` for every tap and `latents`, and `DIR/meta.json` with the settings and shapes.
pub fn write_npy_dir(ex: &Extraction, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_path(dir)?;
    let tensors = tensors_of(ex)?;
    let mut shapes = serde_json::Map::new();
    for (name, t) in &tensors {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let array = NpyArray::new(t.dims().to_vec(), NpyData::F32(values))?;
        let file = dir.join(format!("{name}.npy"));
        write_npy(&file, &array)?;
        shapes.insert(
            name.clone(),
            serde_json::json!({ "file": format!("{name}.npy"), "shape": t.dims() }),
        );
    }
    let meta = serde_json::json!({ "settings": ex.metadata, "tensors": shapes });
    let path = dir.join("meta.json");
    let text =
        serde_json::to_string_pretty(&meta).map_err(|e| Error::file(&path, e.to_string()))?;
    std::fs::write(&path, text).with_path(&path)
}

fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

/// Write to a temporary file beside `path`, then rename, so a failed write never leaves half a file.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_path(parent)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    let result = write(&tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    std::fs::rename(&tmp, path).with_path(path)
}
