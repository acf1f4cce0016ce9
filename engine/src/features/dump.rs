//! Feature dumps that numpy and PyTorch read: one `.safetensors` file with a float32 `[C,h,w]`
//! tensor per tap (plus `latents`, and a vision transformer's `<tap>.cls` / `<tap>.registers`
//! tokens) and the settings in `__metadata__`; or a folder of `.npy` files with `meta.json`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use super::extract::Extraction;
use crate::error::{Error, Result, WithPath};
use crate::io::atomic::write_bytes_atomically;
use crate::io::npy::{write_npy, NpyArray, NpyData};
use crate::io::safetensors::{read_metadata, write_tensors};

/// All tensors of an extraction, `latents` included, contiguous float32 on the CPU.
fn tensors_of(ex: &Extraction) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, t) in ex
        .taps
        .iter()
        .chain(&ex.tokens)
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
    let metadata = ex.metadata.clone().into_iter().collect();
    write_tensors(path, &tensors_of(ex)?, metadata)
}

/// The metadata of a finished dump: a `.safetensors` file's `__metadata__` (its header only is
/// read), or a folder's `meta.json` settings. None when the dump is not there or not finished (a
/// folder's `meta.json` is written last).
pub fn read_dump_metadata(path: &Path) -> Result<Option<BTreeMap<String, String>>> {
    if path.is_dir() {
        let meta = path.join("meta.json");
        if !meta.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&meta).with_path(&meta)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(&meta, e.to_string()))?;
        let settings = serde_json::from_value(value["settings"].clone())
            .map_err(|e| Error::file(&meta, format!("no settings: {e}")))?;
        return Ok(Some(settings));
    }
    if !path.exists() {
        return Ok(None);
    }
    // The safetensors crate's own bound on a header.
    let metadata = read_metadata(path, 100_000_000)?;
    Ok(Some(metadata.into_iter().collect()))
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
    write_bytes_atomically(&path, text.as_bytes())
}
