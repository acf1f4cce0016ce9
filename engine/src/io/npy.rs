//! numpy's `.npy` format: read and write float16, float32, float64, int64 and uint8 arrays, C order,
//! little endian, format versions 1.0, 2.0 and 3.0 (3.0 differs from 2.0 only in allowing UTF-8 in
//! the header). A pickled file given instead is named as one (see [`super::pickle`]).
//!
//! The writer produces the same bytes as `numpy.save` (version 1.0 unless the header needs more than
//! 65535 bytes, then 2.0; header padded with spaces to a multiple of 64 bytes and ended by a newline).

use std::path::Path;

use half::f16;

use super::atomic::write_bytes_atomically;
use super::pickle;
use crate::error::{Error, Result, WithPath};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;

/// The element types we read and write, by their numpy `descr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F16,
    F32,
    F64,
    I64,
    U8,
}

impl NpyDtype {
    fn descr(self) -> &'static str {
        match self {
            NpyDtype::F16 => "<f2",
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
            NpyDtype::I64 => "<i8",
            NpyDtype::U8 => "|u1",
        }
    }

    fn size(self) -> usize {
        match self {
            NpyDtype::F16 => 2,
            NpyDtype::F32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
            NpyDtype::U8 => 1,
        }
    }

    fn from_descr(descr: &str) -> Option<Self> {
        match descr {
            "<f2" => Some(NpyDtype::F16),
            "<f4" => Some(NpyDtype::F32),
            "<f8" => Some(NpyDtype::F64),
            "<i8" => Some(NpyDtype::I64),
            "|u1" | "<u1" | "u1" => Some(NpyDtype::U8),
            _ => None,
        }
    }
}

/// The values of an array, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl NpyData {
    pub fn dtype(&self) -> NpyDtype {
        match self {
            NpyData::F16(_) => NpyDtype::F16,
            NpyData::F32(_) => NpyDtype::F32,
            NpyData::F64(_) => NpyDtype::F64,
            NpyData::I64(_) => NpyDtype::I64,
            NpyData::U8(_) => NpyDtype::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            NpyData::F16(v) => v.len(),
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An n-dimensional array: its shape (empty for a scalar) and its values in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl NpyArray {
    /// An array whose value count must match its shape.
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let count = element_count(&shape)
            .ok_or_else(|| Error::invalid(format!("npy shape {shape:?} is too large")))?;
        if count != data.len() {
            return Err(Error::invalid(format!(
                "npy array of shape {shape:?} needs {count} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// The values as float32; float16 is widened (exactly), float64 narrowed, integers refused.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        match &self.data {
            NpyData::F16(v) => Ok(v.iter().map(|x| x.to_f32()).collect()),
            NpyData::F32(v) => Ok(v.clone()),
            NpyData::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            other => Err(Error::invalid(format!(
                "expected a float array, got {}",
                other.dtype().descr()
            ))),
        }
    }

    /// As [`Self::to_f32`], refusing NaN and infinity (and float64 values beyond float32's
    /// range): inputs such as noise or prompt embeddings must be numbers, or every result is NaN.
    pub fn to_finite_f32(&self) -> Result<Vec<f32>> {
        let values = self.to_f32()?;
        let bad: Vec<usize> = (0..values.len())
            .filter(|&i| !values[i].is_finite())
            .collect();
        let Some(&first) = bad.first() else {
            return Ok(values);
        };
        let what = match &self.data {
            NpyData::F64(v) if v[first].is_finite() => "a value beyond float32's range".to_string(),
            _ => format!("{}", values[first]),
        };
        Err(Error::invalid(format!(
            "the array holds {} value(s) that are NaN or infinite, the first {what} at index {:?} \
             of shape {:?}; every result computed from it would be NaN",
            bad.len(),
            unravel(first, &self.shape),
            self.shape
        )))
    }

    /// The values as float64 (exact for float16 and float32).
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        match &self.data {
            NpyData::F16(v) => Ok(v.iter().map(|x| x.to_f64()).collect()),
            NpyData::F32(v) => Ok(v.iter().map(|&x| f64::from(x)).collect()),
            NpyData::F64(v) => Ok(v.clone()),
            other => Err(Error::invalid(format!(
                "expected a float array, got {}",
                other.dtype().descr()
            ))),
        }
    }
}

/// The multi-index of flat position `i` in a C-order array of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        *slot = i % dim.max(1);
        i /= dim.max(1);
    }
    index
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Read a `.npy` file. A pickle (`torch.save`'s `.pt`) is named as one, with how to convert it.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).with_path(path)?;
    if !bytes.starts_with(MAGIC) && pickle::is_pickle(path) {
        return Err(pickle::pickle_error(path, pickle::ARRAY_ADVICE));
    }
    parse_npy(&bytes).with_path(path)
}

/// Write a `.npy` file, byte for byte as `numpy.save` would.
pub fn write_npy(path: impl AsRef<Path>, array: &NpyArray) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_npy(array)?;
    write_bytes_atomically(path, &bytes)
}

/// Parse the bytes of a `.npy` file. Errors say what is wrong, without the file name (callers add it).
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(Error::invalid("not a .npy file (no \\x93NUMPY magic)"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start) = match major {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => {
            let raw = bytes
                .get(8..12)
                .ok_or_else(|| Error::invalid("truncated .npy header"))?;
            let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            (
                usize::try_from(len).map_err(|_| Error::invalid("npy header too large"))?,
                12,
            )
        }
        _ => {
            return Err(Error::unsupported(format!(
                ".npy format version {major}.{minor}"
            )))
        }
    };
    let data_start = header_start
        .checked_add(header_len)
        .ok_or_else(|| Error::invalid("npy header length overflows"))?;
    let header_bytes = bytes.get(header_start..data_start).ok_or_else(|| {
        Error::invalid(format!(
            "truncated .npy header: {header_len} bytes announced"
        ))
    })?;
    let header =
        std::str::from_utf8(header_bytes).map_err(|_| Error::invalid("npy header is not text"))?;
    let parsed = parse_header(header)?;
    if parsed.fortran_order {
        return Err(Error::unsupported(
            "Fortran-order .npy arrays (save with np.ascontiguousarray)",
        ));
    }
    let dtype = NpyDtype::from_descr(&parsed.descr).ok_or_else(|| {
        Error::unsupported(format!(
            "npy dtype '{}' (supported: little-endian float16 '<f2', float32 '<f4', float64 '<f8', int64 '<i8', uint8 '|u1')",
            parsed.descr
        ))
    })?;
    let count = element_count(&parsed.shape)
        .ok_or_else(|| Error::invalid(format!("npy shape {:?} is too large", parsed.shape)))?;
    let payload = &bytes[data_start..];
    let expected = count
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::invalid("npy array too large"))?;
    if payload.len() != expected {
        return Err(Error::invalid(format!(
            "npy data of shape {:?} and dtype {} needs {expected} bytes, the file has {}",
            parsed.shape,
            dtype.descr(),
            payload.len()
        )));
    }
    let data = match dtype {
        NpyDtype::F16 => NpyData::F16(
            payload
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ),
        NpyDtype::F32 => NpyData::F32(
            payload
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        NpyDtype::F64 => NpyData::F64(
            payload
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        NpyDtype::I64 => NpyData::I64(
            payload
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        NpyDtype::U8 => NpyData::U8(payload.to_vec()),
    };
    NpyArray::new(parsed.shape, data)
}

/// Encode an array as `.npy` bytes.
pub fn encode_npy(array: &NpyArray) -> Result<Vec<u8>> {
    let count = element_count(&array.shape)
        .ok_or_else(|| Error::invalid(format!("npy shape {:?} is too large", array.shape)))?;
    if count != array.data.len() {
        return Err(Error::invalid(format!(
            "npy array of shape {:?} needs {count} values, got {}",
            array.shape,
            array.data.len()
        )));
    }
    let shape_text = match array.shape.as_slice() {
        [single] => format!("({single},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        array.data.dtype().descr()
    );
    // Version 1 has a 2-byte header length; numpy switches to version 2 only when that overflows.
    let (version, prefix_len) = if padded_len(10, dict.len()) - 10 <= usize::from(u16::MAX) {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total_header = padded_len(prefix_len, dict.len());
    let header_len = total_header - prefix_len;
    let mut out = Vec::with_capacity(total_header + count * array.data.dtype().size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        let len = u16::try_from(header_len).map_err(|_| Error::invalid("npy header too large"))?;
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        let len = u32::try_from(header_len).map_err(|_| Error::invalid("npy header too large"))?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total_header - 1, b' ');
    out.push(b'\n');
    match &array.data {
        NpyData::F16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::U8(v) => out.extend_from_slice(v),
    }
    Ok(out)
}

/// Length of magic + version + length field + dict + newline, rounded up to the alignment.
fn padded_len(prefix_len: usize, dict_len: usize) -> usize {
    let unpadded = prefix_len + dict_len + 1;
    unpadded.div_ceil(ALIGN) * ALIGN
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parse the Python dict literal of the header: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> Result<Header> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| Error::invalid(format!("npy header is not a dict: {text:?}")))?;
    let mut descr = None;
    let mut fortran_order = None;
    let mut shape = None;
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after_key) = parse_quoted(rest).ok_or_else(|| bad_header(text))?;
        let after_colon = after_key
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad_header(text))?
            .trim_start();
        let after_value = match key {
            "descr" => {
                let (value, after) = parse_quoted(after_colon).ok_or_else(|| bad_header(text))?;
                descr = Some(value.to_string());
                after
            }
            "fortran_order" => {
                let (value, after) = if let Some(after) = after_colon.strip_prefix("False") {
                    (false, after)
                } else if let Some(after) = after_colon.strip_prefix("True") {
                    (true, after)
                } else {
                    return Err(bad_header(text));
                };
                fortran_order = Some(value);
                after
            }
            "shape" => {
                let inner = after_colon
                    .strip_prefix('(')
                    .ok_or_else(|| bad_header(text))?;
                let close = inner.find(')').ok_or_else(|| bad_header(text))?;
                let dims = inner[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| {
                        d.trim_end_matches('L')
                            .parse::<usize>()
                            .map_err(|_| bad_header(text))
                    })
                    .collect::<Result<Vec<_>>>()?;
                shape = Some(dims);
                &inner[close + 1..]
            }
            other => {
                return Err(Error::invalid(format!(
                    "npy header has an unknown key '{other}': {text:?}"
                )))
            }
        };
        rest = after_value.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
            descr,
            fortran_order,
            shape,
        }),
        _ => Err(Error::invalid(format!(
            "npy header lacks descr, fortran_order or shape: {text:?}"
        ))),
    }
}

/// A '...' or "..." string at the start of `text`: its content and what follows.
fn parse_quoted(text: &str) -> Option<(&str, &str)> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = &text[1..];
    let end = inner.find(quote)?;
    Some((&inner[..end], &inner[end + 1..]))
}

fn bad_header(text: &str) -> Error {
    Error::invalid(format!("cannot parse npy header {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_dtype() {
        let arrays = [
            NpyArray::new(
                vec![2, 3],
                NpyData::F32(vec![1.0, -2.5, 3.0, 0.0, f32::MAX, 1e-30]),
            )
            .unwrap(),
            NpyArray::new(vec![4], NpyData::F64(vec![1.0, -2.5, 3.0, 1e300])).unwrap(),
            NpyArray::new(vec![1, 2, 2], NpyData::I64(vec![-1, 0, i64::MAX, 7])).unwrap(),
            NpyArray::new(vec![3], NpyData::U8(vec![0, 128, 255])).unwrap(),
            NpyArray::new(
                vec![3],
                NpyData::F16(vec![f16::from_f32(0.5), f16::MAX, f16::from_f32(-1e-3)]),
            )
            .unwrap(),
            NpyArray::new(vec![], NpyData::F32(vec![4.0])).unwrap(),
            NpyArray::new(vec![0, 5], NpyData::F32(vec![])).unwrap(),
        ];
        for array in arrays {
            let bytes = encode_npy(&array).unwrap();
            assert_eq!(
                (bytes.len() - array.data.len() * array.data.dtype().size()) % ALIGN,
                0
            );
            assert_eq!(parse_npy(&bytes).unwrap(), array);
        }
    }

    #[test]
    fn header_matches_numpy_text() {
        let array = NpyArray::new(vec![2, 3], NpyData::F32(vec![0.0; 6])).unwrap();
        let bytes = encode_npy(&array).unwrap();
        // np.save(f, np.zeros((2, 3), np.float32)) writes 128 header bytes (length field 118) and 24 data bytes.
        assert_eq!(bytes.len(), 152);
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }  "));
        assert!(header.ends_with(" \n"));
    }

    #[test]
    fn clear_errors() {
        assert!(parse_npy(b"hello").is_err());
        let mut bytes =
            encode_npy(&NpyArray::new(vec![2], NpyData::F32(vec![1.0, 2.0])).unwrap()).unwrap();
        bytes.pop();
        let err = parse_npy(&bytes).unwrap_err().to_string();
        assert!(err.contains("needs 8 bytes"), "{err}");
        let dict = b"{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
        let mut big_endian = b"\x93NUMPY\x01\x00".to_vec();
        big_endian.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        big_endian.extend_from_slice(dict);
        big_endian.extend_from_slice(&[0; 4]);
        let err = parse_npy(&big_endian).unwrap_err().to_string();
        assert!(err.contains(">f4"), "{err}");
        assert!(NpyArray::new(vec![2, 2], NpyData::U8(vec![1])).is_err());
    }

    /// `np.save(f, np.array([[1, -2.5], [65504, 1e-4]], np.float16))`: what numpy writes, read as
    /// float32 exactly.
    #[test]
    fn reads_numpys_float16() {
        let dict = b"{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }";
        let mut bytes = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        bytes.extend_from_slice(dict);
        bytes.resize(127, b' ');
        bytes.push(b'\n');
        bytes.extend_from_slice(&[0x00, 0x3c, 0x00, 0xc1, 0xff, 0x7b, 0x8e, 0x06]);
        let array = parse_npy(&bytes).unwrap();
        assert_eq!(array.shape, [2, 2]);
        assert_eq!(
            array.to_f32().unwrap(),
            [1.0, -2.5, 65504.0, f16::from_bits(0x068e).to_f32()]
        );
        assert!((array.to_f32().unwrap()[3] - 1e-4).abs() < 1e-7);
    }

    #[test]
    fn nan_and_infinity_are_refused_where_numbers_are_needed() {
        let finite = NpyArray::new(vec![2], NpyData::F32(vec![1.0, -2.0])).unwrap();
        assert_eq!(finite.to_finite_f32().unwrap(), [1.0, -2.0]);
        let nan = NpyArray::new(
            vec![1, 2, 2],
            NpyData::F32(vec![0.0, 1.0, f32::NAN, f32::INFINITY]),
        )
        .unwrap();
        let err = nan.to_finite_f32().unwrap_err().to_string();
        assert!(
            err.contains("2 value(s)") && err.contains("NaN at index [0, 1, 0]"),
            "{err}"
        );
        let wide = NpyArray::new(vec![1], NpyData::F64(vec![1e300])).unwrap();
        let err = wide.to_finite_f32().unwrap_err().to_string();
        assert!(err.contains("beyond float32's range"), "{err}");
    }

    #[test]
    fn a_pickle_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noise.pt");
        std::fs::write(&path, b"PK\x03\x04\0\0\0\0archive/data.pkl").unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(
            err.contains("noise.pt") && err.contains("pickle") && err.contains("np.save"),
            "{err}"
        );
    }
}
