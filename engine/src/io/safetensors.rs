//! Float32 tensors in `.safetensors` files: feature dumps, the feature cache, training
//! checkpoints and exported model weights are all written by [`write_f32`], atomically and synced.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ::safetensors::tensor::View;
use ::safetensors::Dtype;
use candle_core::{DType, Device, Tensor};

use super::atomic::write_bytes_atomically;
use crate::error::{Error, Result, WithPath};

/// One tensor to write: its shape and its values in row-major order, borrowed.
struct F32View<'a> {
    shape: &'a [usize],
    values: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.values)
    }
}

/// Write `(name, shape, values)` tensors as float32, with `metadata` as the file's
/// `__metadata__`. The file is replaced atomically (see [`super::atomic`]).
pub fn write_f32<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut views = Vec::new();
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{name}` of shape {shape:?} needs {} values, got {}",
                    shape.iter().product::<usize>(),
                    values.len()
                ),
            ));
        }
        views.push((name, F32View { shape, values }));
    }
    let bytes = ::safetensors::serialize(views, Some(metadata)).with_path(path)?;
    write_bytes_atomically(path, &canonical_header(bytes).with_path(path)?)
}

/// The same file with its JSON header's keys sorted: the safetensors crate writes the metadata
/// from a hash map, in a different order each run, and equal extractions should be equal bytes
/// (a sharded run is compared byte for byte with a whole one). The data offsets count from the
/// end of the header, so they stay valid; the header is padded to 8 bytes as the format asks.
fn canonical_header(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let length = bytes.get(..8).ok_or("no header length")?;
    let n = u64::from_le_bytes(length.try_into().map_err(|_| "no header length")?) as usize;
    let header = bytes.get(8..8 + n).ok_or("header past the end")?;
    // serde_json's map keeps keys sorted.
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut text = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Write candle tensors (any device, any float dtype) as float32 (see [`write_f32`]).
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut values = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let flat = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        values.push((name.as_str(), t.dims(), flat));
    }
    write_f32(
        path,
        values
            .iter()
            .map(|(name, shape, flat)| (*name, *shape, flat.as_slice())),
        metadata,
    )
}

/// A safetensors file's `__metadata__` (empty when it has none), reading only its header, which
/// may be at most `max_header` bytes (a longer one is an error: not a file of the kind expected).
pub fn read_metadata(path: &Path, max_header: u64) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let corrupt = |e: String| Error::file(path, format!("not a valid safetensors file: {e}"));
    let mut file = std::fs::File::open(path).with_path(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| corrupt(e.to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > max_header {
        return Err(corrupt(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(e.to_string()))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| corrupt(e.to_string()))?;
    match header.get("__metadata__") {
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| corrupt(e.to_string())),
        None => Ok(HashMap::new()),
    }
}

/// Read every tensor of a safetensors file as float32 on `device`.
pub fn read_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_path(path)?;
    let loaded = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        if super::pickle::is_pickle(path) {
            return super::pickle::pickle_error(path, super::pickle::TENSORS_ADVICE);
        }
        Error::file(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    loaded
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> HashMap<String, String> {
        HashMap::from([("format".to_string(), "pt".to_string())])
    }

    /// safetensors' own reader finds the tensors and metadata its serializer would have written.
    #[test]
    fn writes_what_safetensors_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let b = [7.0f32];
        write_f32(
            &path,
            [("b", &[1][..], &b[..]), ("a", &[2, 3][..], &a[..])],
            metadata(),
        )
        .unwrap();
        let a_bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b_bytes: Vec<u8> = b.iter().flat_map(|v| v.to_le_bytes()).collect();
        let expected = ::safetensors::serialize(
            [
                (
                    "a",
                    ::safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 3], &a_bytes)
                        .unwrap(),
                ),
                (
                    "b",
                    ::safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &b_bytes).unwrap(),
                ),
            ],
            Some(metadata()),
        )
        .unwrap();
        let written = std::fs::read(&path).unwrap();
        let (ours, theirs) = (
            ::safetensors::SafeTensors::deserialize(&written).unwrap(),
            ::safetensors::SafeTensors::deserialize(&expected).unwrap(),
        );
        let mut names = ours.names();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        for name in names {
            let (x, y) = (ours.tensor(name).unwrap(), theirs.tensor(name).unwrap());
            assert_eq!(
                (x.dtype(), x.shape(), x.data()),
                (y.dtype(), y.shape(), y.data())
            );
        }
        let meta = |bytes: &[u8]| {
            let (_, header) = ::safetensors::SafeTensors::read_metadata(bytes).unwrap();
            header.metadata().clone()
        };
        assert_eq!(meta(&written), meta(&expected));
        // The data follows the header at an 8-byte boundary, as the format asks.
        let n = u64::from_le_bytes(written[..8].try_into().unwrap());
        assert_eq!(n % 8, 0);
    }

    /// The same content is the same bytes, whatever order the metadata's hash map gives.
    #[test]
    fn equal_content_is_equal_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let many: HashMap<String, String> = (0..40)
            .map(|i| (format!("key{i}"), i.to_string()))
            .collect();
        let mut files = vec![];
        for i in 0..4 {
            let path = dir.path().join(format!("{i}.safetensors"));
            // A fresh map each time: its iteration order is seeded per map.
            let metadata: HashMap<String, String> = many.clone().into_iter().collect();
            write_f32(&path, [("x", &[2][..], &[1.0f32, 2.0][..])], metadata).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn candle_tensors_round_trip_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let t = Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let half = t.to_dtype(DType::F16).unwrap();
        let tensors = BTreeMap::from([("x".to_string(), t.clone()), ("h".to_string(), half)]);
        write_tensors(&path, &tensors, metadata()).unwrap();
        let back = read_tensors(&path, &Device::Cpu).unwrap();
        for name in ["x", "h"] {
            assert_eq!(back[name].dtype(), DType::F32);
            assert_eq!(
                back[name].to_vec2::<f32>().unwrap(),
                t.to_vec2::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn a_shape_that_does_not_fit_the_values_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let err = write_f32(&path, [("x", &[2, 2][..], &[1.0f32][..])], metadata())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("`x`"),
            "{err}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        std::fs::write(&path, b"not a tensor file").unwrap();
        let err = read_tensors(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
    }
}
