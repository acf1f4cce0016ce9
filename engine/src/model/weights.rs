//! Reading weights from `.safetensors` files with errors that name the file and the tensor.
//! Pickled checkpoints are refused: they can run arbitrary code when loaded.
//!
//! Headers are read through a memory map; each tensor's bytes are read from the file into a
//! buffer. Copying out of the map instead would leave every mapped page resident until the map is
//! dropped, so loading a 3.4 GB UNet would peak at twice its size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result, WithPath};

const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "ckpt", "pt", "pth"];

/// Refuse a path that names a pickled checkpoint.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        return Err(Error::file(
            path,
            "pickled checkpoints (.bin/.ckpt/.pt) are not loaded because they can run code; \
             convert it to .safetensors (for example with diffusers: `save_pretrained(dir, safe_serialization=True)`)",
        ));
    }
    Ok(())
}

/// Find the weights file of a component folder: `<stem>.safetensors`, a sharded
/// `<stem>.safetensors.index.json`, or an fp16 variant; refuse folders holding only pickles.
pub fn find_weight_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let single = dir.join(format!("{stem}.safetensors"));
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    if index.is_file() {
        return shards_from_index(&index);
    }
    for variant in ["fp16", "bf16"] {
        let p = dir.join(format!("{stem}.{variant}.safetensors"));
        if p.is_file() {
            return Ok(vec![p]);
        }
    }
    for ext in PICKLE_EXTENSIONS {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.is_file() {
            refuse_pickle(&p)?;
        }
    }
    Err(Error::file(
        dir,
        format!("no weights found: expected {stem}.safetensors"),
    ))
}

fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).with_path(index)?;
    let json: serde_json::Value = serde_json::from_str(&text).with_path(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "missing \"weight_map\""))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Number of values stored in a component's weight files (its parameter count).
pub fn count_parameters(dir: &Path, stem: &str) -> Result<usize> {
    let files = find_weight_files(dir, stem)?;
    let weights = Weights::open(&files, &Device::Cpu)?;
    Ok(weights
        .store
        .tensors
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>())
        .sum())
}

struct Store {
    tensors: MmapedSafetensors,
    /// The file each tensor lives in, for error messages.
    files: Vec<PathBuf>,
    file_of: HashMap<String, usize>,
    /// Where each tensor's bytes lie in its file: `[start, end)`.
    byte_range: HashMap<String, (u64, u64)>,
    /// One read buffer for every tensor, so its pages are faulted in once, not per tensor.
    scratch: std::sync::Mutex<Vec<u8>>,
    /// Elements read so far, to report a model's parameter count.
    loaded: std::sync::atomic::AtomicUsize,
}

/// A view into a set of safetensors files under a name prefix (`down_blocks.0.resnets.1`).
/// Tensors come out as float32 on the target device.
#[derive(Clone)]
pub struct Weights {
    store: Arc<Store>,
    prefix: String,
    device: Device,
}

impl Weights {
    pub fn open(files: &[PathBuf], device: &Device) -> Result<Self> {
        for f in files {
            refuse_pickle(f)?;
            if !f.is_file() {
                return Err(Error::file(f, "weights file not found"));
            }
        }
        let mut file_of = HashMap::new();
        let mut byte_range = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            // Parse each header on its own first so a bad file is named precisely.
            // SAFETY: the file is mapped read-only; like every mmap reader we rely on it not being
            // truncated by another process while in use.
            let one = unsafe { MmapedSafetensors::new(f) }.map_err(|e| {
                Error::file(
                    f,
                    format!(
                        "not a valid safetensors file (truncated or corrupt?): {}",
                        root_cause(&e)
                    ),
                )
            })?;
            for (name, _) in one.tensors() {
                file_of.insert(name, i);
            }
            byte_range.extend(tensor_byte_ranges(f)?);
        }
        // SAFETY: as above.
        let tensors = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| {
            Error::file(&files[0], format!("cannot map weights: {}", root_cause(&e)))
        })?;
        Ok(Self {
            store: Arc::new(Store {
                tensors,
                files: files.to_vec(),
                file_of,
                byte_range,
                scratch: Default::default(),
                loaded: Default::default(),
            }),
            prefix: String::new(),
            device: device.clone(),
        })
    }

    /// The same weights under `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Self {
            store: self.store.clone(),
            prefix,
            device: self.device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.store
            .tensors
            .get(&self.full_name(name))
            .ok()
            .map(|v| v.shape().to_vec())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.file_of.contains_key(&self.full_name(name))
    }

    fn file_label(&self) -> PathBuf {
        match self.store.files.as_slice() {
            [one] => one.clone(),
            files => files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// The tensor `name` (under the prefix), checked against `shape`, as float32.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = self.full_name(name);
        let Some(&file_idx) = self.store.file_of.get(&full) else {
            return Err(Error::file(
                self.file_label(),
                format!("weight `{full}` is missing (expected shape {shape:?})"),
            ));
        };
        let file = &self.store.files[file_idx];
        let view = self
            .store
            .tensors
            .get(&full)
            .map_err(|e| Error::file(file, format!("weight `{full}`: {}", root_cause(&e))))?;
        if view.shape() != shape {
            return Err(Error::file(
                file,
                format!(
                    "weight `{full}` has shape {:?}, but the config implies {shape:?}",
                    view.shape()
                ),
            ));
        }
        let range = self.store.byte_range.get(&full).copied().ok_or_else(|| {
            Error::file(file, format!("weight `{full}` is not in the file's header"))
        })?;
        let t = {
            // A poisoned lock only means another load failed midway; the buffer is still usable.
            let mut scratch = self
                .store
                .scratch
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let bytes = read_range(file, range, &mut scratch)?;
            safetensors::tensor::TensorView::new(view.dtype(), view.shape().to_vec(), bytes)
                .map_err(|e| Error::file(file, format!("weight `{full}`: {e}")))?
                .load(&self.device)
                .map_err(|e| Error::file(file, format!("weight `{full}`: {}", root_cause(&e))))?
        };
        self.store
            .loaded
            .fetch_add(t.elem_count(), std::sync::atomic::Ordering::Relaxed);
        Ok(t.to_dtype(DType::F32)?)
    }

    /// Parameters read through any view of these weights so far.
    pub fn loaded_parameters(&self) -> usize {
        self.store.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Each tensor's absolute byte range in a safetensors file: an 8-byte little-endian header size,
/// the JSON header, then the data, which the header's `data_offsets` index.
fn tensor_byte_ranges(path: &Path) -> Result<HashMap<String, (u64, u64)>> {
    let mut file = File::open(path).with_path(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_path(path)?;
    let header_len = u64::from_le_bytes(len);
    let mut header = vec![
        0u8;
        usize::try_from(header_len)
            .unwrap_or(usize::MAX)
            .min(100 << 20)
    ];
    file.read_exact(&mut header).with_path(path)?;
    let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .map_err(|e| Error::file(path, format!("unreadable safetensors header: {e}")))?;
    let data_start = 8 + header_len;
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (begin, end) = info.data_offsets;
            (name, (data_start + begin as u64, data_start + end as u64))
        })
        .collect())
}

/// Read `[start, end)` of a file into `buffer` (grown as needed) and return that part of it.
fn read_range<'a>(
    path: &Path,
    (start, end): (u64, u64),
    buffer: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let len = usize::try_from(end.saturating_sub(start))
        .map_err(|_| Error::file(path, "tensor larger than this machine's address space"))?;
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    let mut file = File::open(path).with_path(path)?;
    file.seek(SeekFrom::Start(start)).with_path(path)?;
    let bytes = &mut buffer[..len];
    file.read_exact(bytes).with_path(path)?;
    Ok(bytes)
}

fn root_cause(e: &candle_core::Error) -> String {
    let mut text = e.to_string();
    if let Some(i) = text.find("\nbacktrace") {
        text.truncate(i);
    }
    text
}
