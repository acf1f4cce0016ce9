//! Shared helpers for the end-to-end tests: fixture paths, reference files, comparisons.

pub mod tiny_training;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// `tests/fixtures/` of this repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The reference tensors and metadata that `make_model_fixtures.py` wrote with diffusers.
pub struct Reference {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl Reference {
    pub fn load(model: &str, image: &str) -> Reference {
        Self::load_file(
            &fixtures()
                .join("refs")
                .join(format!("{model}__{image}.safetensors")),
        )
    }

    pub fn load_file(path: &Path) -> Reference {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("reference header");
        let metadata = meta.metadata().clone().unwrap_or_default();
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("reference tensors");
        Reference { tensors, metadata }
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("reference has no tensor `{name}`"))
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        self.metadata
            .get(key)
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// max |a - b| over all elements (same shapes).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a - b| / max |reference|, the parity measure of the issue.
pub fn relative_error(actual: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(actual.dims(), reference.dims(), "shape mismatch");
    let a = actual
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let r = reference
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = r
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = a
        .iter()
        .zip(&r)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// The tolerance the engine must meet against diffusers.
pub const PARITY_TOLERANCE: f32 = 1e-4;

/// Copy the folder `from` to `to` recursively (a private copy of a fixture to modify).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
