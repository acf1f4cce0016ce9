//! Constructors for the basic layers, reading and shape-checking their weights.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear};

pub use super::ops::{Conv2d, GroupNorm};

use super::weights::Weights;
use crate::error::{Error, Result};

pub fn conv2d(
    w: &Weights,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    let weight = w.get("weight", &[c_out, c_in, kernel, kernel])?;
    let bias = w.get("bias", &[c_out])?;
    Conv2d::new(weight, Some(bias), padding, stride)
}

/// A linear layer; also reads a 1x1 convolution stored as `[out,in,1,1]` (SD1 `proj_in`, old VAE attention).
pub fn linear(w: &Weights, c_in: usize, c_out: usize, bias: bool) -> Result<Linear> {
    let weight = if w.shape("weight").is_some_and(|s| s.len() == 4) {
        w.get("weight", &[c_out, c_in, 1, 1])?
            .reshape((c_out, c_in))?
    } else {
        w.get("weight", &[c_out, c_in])?
    };
    let bias = if bias {
        Some(w.get("bias", &[c_out])?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

pub fn group_norm(w: &Weights, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(Error::invalid(format!(
            "GroupNorm: {groups} groups do not divide {channels} channels"
        )));
    }
    let weight = w.get("weight", &[channels])?;
    let bias = w.get("bias", &[channels])?;
    GroupNorm::new(weight, bias, channels, groups, eps)
}

pub fn layer_norm(w: &Weights, channels: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        w.get("weight", &[channels])?,
        w.get("bias", &[channels])?,
        eps,
    ))
}

/// `Linear` applied to `[B, N, C]`: candle's broadcast matmul is slow for rank 3, so flatten.
pub fn apply_linear_3d(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    let y = layer.forward(&x.reshape((b * n, c))?)?;
    let out = y.dim(1)?;
    Ok(y.reshape((b, n, out))?)
}
