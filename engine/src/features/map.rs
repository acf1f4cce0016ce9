//! A feature map as the analysis code and the UI see it: `[C,h,w]` float32, channel-major.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result, WithPath};
use crate::io::npy::read_npy;

#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `channels * height * width` values; channel c, row y, column x at `(c*height + y)*width + x`.
    pub data: Arc<Vec<f32>>,
}

impl FeatureMap {
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != channels * height * width {
            return Err(Error::invalid(format!(
                "feature map of shape [{channels},{height},{width}] needs {} values, got {}",
                channels * height * width,
                data.len()
            )));
        }
        Ok(Self {
            channels,
            height,
            width,
            data: Arc::new(data),
        })
    }

    /// From a `[C,h,w]` (or `[1,C,h,w]`) float tensor.
    pub fn from_tensor(t: &candle_core::Tensor) -> Result<Self> {
        let t = match t.rank() {
            4 if t.dim(0)? == 1 => t.squeeze(0)?,
            3 => t.clone(),
            _ => {
                return Err(Error::invalid(format!(
                    "expected a [C,h,w] feature tensor, got shape {:?}",
                    t.dims()
                )))
            }
        };
        let (c, h, w) = t.dims3()?;
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::new(c, h, w, data)
    }

    pub fn to_tensor(&self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        Ok(candle_core::Tensor::from_slice(
            self.data.as_slice(),
            (self.channels, self.height, self.width),
            device,
        )?)
    }

    pub fn cells(&self) -> usize {
        self.height * self.width
    }

    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// The values of one channel, row-major `[h,w]`; None when `c` is out of range.
    pub fn channel(&self, c: usize) -> Option<&[f32]> {
        let n = self.cells();
        self.data.get(c * n..(c + 1) * n)
    }

    /// Error (naming `name`) unless the map has at least one channel and one cell, as many values as its
    /// shape says, and every value is finite.
    pub fn ensure_finite(&self, name: &str) -> Result<()> {
        if self.data.len() != self.channels * self.cells() {
            return Err(Error::invalid(format!(
                "{name}: feature map of shape [{},{},{}] holds {} values",
                self.channels,
                self.height,
                self.width,
                self.data.len()
            )));
        }
        if self.channels == 0 || self.cells() == 0 {
            return Err(Error::invalid(format!(
                "{name}: feature map of shape [{},{},{}] is empty",
                self.channels, self.height, self.width
            )));
        }
        if let Some(index) = self.data.iter().position(|v| !v.is_finite()) {
            let (c, rest) = (index / self.cells(), index % self.cells());
            return Err(Error::invalid(format!(
                "{name}: feature map has a non-finite value ({}) at channel {c}, row {}, column {}",
                self.data[index],
                rest / self.width,
                rest % self.width
            )));
        }
        Ok(())
    }
}

/// Read a feature map from a `[C,h,w]` or `[1,C,h,w]` float `.npy` file.
pub fn read_feature_map(path: impl AsRef<Path>) -> Result<FeatureMap> {
    let path = path.as_ref();
    let array = read_npy(path)?;
    let (c, h, w) = match array.shape.as_slice() {
        [c, h, w] => (*c, *h, *w),
        [1, c, h, w] => (*c, *h, *w),
        other => {
            return Err(Error::file(
                path,
                format!("expected a [C,h,w] feature map, got shape {other:?}"),
            ))
        }
    };
    let values = array.to_f32().with_path(path)?;
    FeatureMap::new(c, h, w, values).with_path(path)
}
