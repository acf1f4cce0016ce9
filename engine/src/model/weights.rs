//! Reading weights from `.safetensors` files (memory-mapped) with errors that name the file and the
//! tensor. Pickled checkpoints are refused: they can run arbitrary code when loaded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::{Load, MmapedSafetensors};
use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result, WithPath};
use crate::io::pickle::{self, PICKLE_EXTENSIONS};

/// Refuse a path that names a pickled checkpoint.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    if pickle::has_pickle_extension(path) {
        return Err(pickle::pickle_error(path, pickle::MODEL_ADVICE));
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
    Ok(Weights::open(&files, &Device::Cpu)?.stored_parameters())
}

// One `Source` per model, never in a collection: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    /// Memory-mapped safetensors files.
    Files {
        tensors: MmapedSafetensors,
        files: Vec<PathBuf>,
        /// The file each tensor lives in, for error messages.
        file_of: HashMap<String, usize>,
        /// Where each tensor's bytes lie in its file: `[start, end)`.
        byte_range: HashMap<String, (u64, u64)>,
        /// One read buffer for every tensor, so its pages are faulted in once, not per tensor.
        scratch: Mutex<Vec<u8>>,
    },
    /// Variables for training, created on first request.
    Trainable(Arc<TrainableParams>),
    /// No values: every request is answered with zeros broadcast to its shape (no memory) and
    /// recorded, to build a model of any size from its config and list what it reads.
    Shapes(Mutex<BTreeMap<String, Vec<usize>>>),
}

struct Store {
    source: Source,
    /// Elements read so far, to report a model's parameter count.
    loaded: std::sync::atomic::AtomicUsize,
}

/// A view into a model's weights under a name prefix (`down_blocks.0.resnets.1`), read from
/// safetensors files or from trainable variables. Tensors come out on the device, as float32 or in
/// the precision set with [`Weights::in_dtype`] (weights are cast at load).
#[derive(Clone)]
pub struct Weights {
    store: Arc<Store>,
    prefix: String,
    device: Device,
    /// What tensors come out as (float32 unless the model runs in half precision).
    dtype: DType,
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
        let source = Source::Files {
            tensors,
            files: files.to_vec(),
            file_of,
            byte_range,
            scratch: Default::default(),
        };
        Ok(Self::with_source(source, device))
    }

    /// Weights without values ([`Source::Shapes`]): a model built from them has the right structure
    /// and parameter count and can be inspected, not run. [`Self::requested_shapes`] lists what it read.
    pub fn shapes_only(device: &Device) -> Self {
        Self::with_source(Source::Shapes(Mutex::default()), device)
    }

    /// Every weight read so far with its shape (only for [`Self::shapes_only`] weights).
    pub fn requested_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        match &self.store.source {
            Source::Shapes(seen) => seen.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Weights backed by trainable variables (see [`TrainableParams`]).
    pub fn trainable(params: Arc<TrainableParams>, device: &Device) -> Self {
        Self::with_source(Source::Trainable(params), device)
    }

    fn with_source(source: Source, device: &Device) -> Self {
        Self {
            store: Arc::new(Store {
                source,
                loaded: Default::default(),
            }),
            prefix: String::new(),
            device: device.clone(),
            dtype: DType::F32,
        }
    }

    /// The same weights, cast to `dtype` as they are read.
    pub fn in_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn dtype(&self) -> DType {
        self.dtype
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
            dtype: self.dtype,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The module path this view is under (`down_blocks.0.attentions.1`).
    pub fn prefix(&self) -> &str {
        &self.prefix
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
        let full = self.full_name(name);
        match &self.store.source {
            Source::Files { tensors, .. } => tensors.get(&full).ok().map(|v| v.shape().to_vec()),
            Source::Trainable(p) => p.shape(&full),
            Source::Shapes(_) => None,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        let full = self.full_name(name);
        match &self.store.source {
            Source::Files { file_of, .. } => file_of.contains_key(&full),
            Source::Trainable(p) => p.shape(&full).is_some(),
            Source::Shapes(_) => false,
        }
    }

    /// The tensor `name` (under the prefix), checked against `shape`, in this view's dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = self.full_name(name);
        let t = match &self.store.source {
            Source::Files {
                tensors,
                files,
                file_of,
                byte_range,
                scratch,
            } => {
                let label = match files.as_slice() {
                    [one] => one.clone(),
                    many => many
                        .first()
                        .and_then(|f| f.parent())
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                };
                let Some(&file_idx) = file_of.get(&full) else {
                    return Err(Error::file(
                        label,
                        format!("weight `{full}` is missing (expected shape {shape:?})"),
                    ));
                };
                let file = &files[file_idx];
                let view = tensors.get(&full).map_err(|e| {
                    Error::file(file, format!("weight `{full}`: {}", root_cause(&e)))
                })?;
                if view.shape() != shape {
                    return Err(Error::file(
                        file,
                        format!(
                            "weight `{full}` has shape {:?}, but the config implies {shape:?}",
                            view.shape()
                        ),
                    ));
                }
                let range = byte_range.get(&full).copied().ok_or_else(|| {
                    Error::file(file, format!("weight `{full}` is not in the file's header"))
                })?;
                // A poisoned lock only means another load failed midway; the buffer is still usable.
                let mut scratch = scratch
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let bytes = read_range(file, range, &mut scratch)?;
                safetensors::tensor::TensorView::new(view.dtype(), view.shape().to_vec(), bytes)
                    .map_err(|e| Error::file(file, format!("weight `{full}`: {e}")))?
                    .load(&self.device)
                    .map_err(|e| {
                        Error::file(file, format!("weight `{full}`: {}", root_cause(&e)))
                    })?
            }
            Source::Trainable(p) => p.get_or_create(&full, shape, &self.device)?,
            Source::Shapes(seen) => {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.insert(full.clone(), shape.to_vec()).is_some() {
                    return Err(Error::invalid(format!("weight `{full}` was read twice")));
                }
                Tensor::zeros((), self.dtype, &self.device)?.broadcast_as(shape)?
            }
        };
        self.store
            .loaded
            .fetch_add(t.elem_count(), std::sync::atomic::Ordering::Relaxed);
        Ok(t.to_dtype(self.dtype)?)
    }

    /// Values stored in the weight files (0 for trainable variables).
    pub fn stored_parameters(&self) -> usize {
        match &self.store.source {
            Source::Files { tensors, .. } => tensors
                .tensors()
                .iter()
                .map(|(_, v)| v.shape().iter().product::<usize>())
                .sum(),
            Source::Trainable(_) | Source::Shapes(_) => 0,
        }
    }

    /// Parameters read through any view of these weights so far.
    pub fn loaded_parameters(&self) -> usize {
        self.store.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Trainable variables named by diffusers' parameter paths. A fresh set creates each variable when
/// a layer first asks for it, initialised as PyTorch initialises that layer (uniform +-1/sqrt(fan_in)
/// for conv and linear weights and biases, ones and zeros for norms); a set restored from a
/// checkpoint refuses names the checkpoint lacks.
pub struct TrainableParams {
    vars: Mutex<BTreeMap<String, Var>>,
    rng: Mutex<rand::rngs::StdRng>,
    fixed: bool,
}

impl TrainableParams {
    pub fn random(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            vars: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            fixed: false,
        })
    }

    /// Variables holding the given tensors (a checkpoint to resume or fine-tune).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Result<Arc<Self>> {
        let mut vars = BTreeMap::new();
        for (name, t) in tensors {
            vars.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        Ok(Arc::new(Self {
            vars: Mutex::new(vars),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(0)),
            fixed: true,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Var>> {
        self.vars
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.lock().get(name).map(|v| v.dims().to_vec())
    }

    fn get_or_create(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let mut vars = self.lock();
        if let Some(v) = vars.get(name) {
            if v.dims() != shape {
                return Err(Error::invalid(format!(
                    "parameter `{name}` has shape {:?}, but the config implies {shape:?} (a checkpoint of another architecture?)",
                    v.dims()
                )));
            }
            return Ok(v.as_tensor().clone());
        }
        if self.fixed {
            return Err(Error::invalid(format!(
                "parameter `{name}` is missing from the checkpoint (another architecture?)"
            )));
        }
        let sibling_fan_in = |vars: &BTreeMap<String, Var>| {
            let weight = format!("{}weight", name.strip_suffix("bias").unwrap_or(""));
            vars.get(&weight)
                .filter(|w| w.rank() >= 2)
                .map(|w| w.dims()[1..].iter().product::<usize>())
        };
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let values: Vec<f32> = match (leaf, shape.len()) {
            ("weight", 1) => vec![1.0; shape[0]],
            ("weight", _) => {
                let fan_in: usize = shape[1..].iter().product();
                self.uniform(shape.iter().product(), 1.0 / (fan_in.max(1) as f32).sqrt())
            }
            ("bias", _) => match sibling_fan_in(&vars) {
                Some(fan_in) => {
                    self.uniform(shape.iter().product(), 1.0 / (fan_in.max(1) as f32).sqrt())
                }
                None => vec![0.0; shape.iter().product()],
            },
            _ => vec![0.0; shape.iter().product()],
        };
        let var = Var::from_vec(values, shape, device)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn uniform(&self, n: usize, bound: f32) -> Vec<f32> {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
    }

    /// Every variable with its name, in name order.
    pub fn named(&self) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(|v| v.elem_count()).sum()
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
