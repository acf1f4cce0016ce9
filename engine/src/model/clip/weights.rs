//! The text encoder's weights: `model.safetensors` (or a sharded `model.safetensors.index.json`),
//! memory-mapped, each tensor checked for presence and shape and converted to float32 on load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result, WithPath};

pub(super) struct Weights {
    tensors: MmapedSafetensors,
    /// Shape of every stored tensor, and the file it is in (for messages).
    index: HashMap<String, (Vec<usize>, PathBuf)>,
    /// `text_model.` in checkpoints saved by transformers 4.x, empty in 5.x.
    prefix: String,
    /// What to name in "missing tensor" messages.
    source: PathBuf,
    device: Device,
}

impl Weights {
    /// Opens the weights of a `text_encoder/` folder. Pickled `.bin` weights are refused.
    pub(super) fn open(dir: &Path, device: &Device) -> Result<Weights> {
        let single = dir.join("model.safetensors");
        let sharded = dir.join("model.safetensors.index.json");
        let (files, source) = if single.is_file() {
            (vec![single.clone()], single)
        } else if sharded.is_file() {
            (shard_files(&sharded)?, sharded)
        } else if dir.join("pytorch_model.bin").is_file() {
            return Err(Error::file(
                dir.join("pytorch_model.bin"),
                "pickled PyTorch weights are not loaded; convert them to model.safetensors \
                 (e.g. `CLIPTextModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`)",
            ));
        } else {
            return Err(Error::file(
                dir,
                "no model.safetensors (or model.safetensors.index.json) in the text encoder folder",
            ));
        };

        let mut index = HashMap::new();
        for file in &files {
            // SAFETY: the mapping is read-only; like every safetensors reader we assume the file is
            // not truncated by another process while the model is loaded.
            let one = unsafe { MmapedSafetensors::new(file) }.with_path(file)?;
            for (name, view) in one.tensors() {
                index.insert(name, (view.shape().to_vec(), file.clone()));
            }
        }
        // SAFETY: as above.
        let tensors = unsafe { MmapedSafetensors::multi(&files) }.with_path(&source)?;

        let prefix = ["text_model.", ""]
            .into_iter()
            .find(|p| index.contains_key(&format!("{p}embeddings.token_embedding.weight")))
            .ok_or_else(|| {
                Error::file(
                    &source,
                    "missing tensor `text_model.embeddings.token_embedding.weight` \
                     (or `embeddings.token_embedding.weight`): not a CLIP text encoder?",
                )
            })?
            .to_string();
        Ok(Weights {
            tensors,
            index,
            prefix,
            source,
            device: device.clone(),
        })
    }

    /// The tensor `name` (without the `text_model.` prefix), which must have `shape`, as float32.
    pub(super) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let (stored_shape, file) = self
            .index
            .get(&full)
            .ok_or_else(|| Error::file(&self.source, format!("missing tensor `{full}`")))?;
        if stored_shape != shape {
            return Err(Error::file(
                file,
                format!("tensor `{full}` has shape {stored_shape:?}, expected {shape:?} from config.json"),
            ));
        }
        let tensor = self.tensors.load(&full, &self.device).with_path(file)?;
        Ok(tensor.to_dtype(DType::F32)?)
    }
}

/// The distinct files a sharded checkpoint's `weight_map` points to, next to the index.
fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index_path).with_path(index_path)?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(index_path, format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::file(index_path, "no \"weight_map\" object"))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::file(index_path, format!("weight_map.{name} is not a file name"))
        })?;
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}
