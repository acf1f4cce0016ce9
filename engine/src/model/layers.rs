//! Constructors for the basic layers, reading and shape-checking their weights.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, LayerNorm, Linear};

use super::weights::Weights;
use crate::error::{Error, Result};
use crate::train::ops;

/// True when `weight` is being trained on the CPU: the layer then takes the training ops, whose
/// backward passes are much faster there than candle's (see [`crate::train::ops`]).
fn trains_on_cpu(weight: &Tensor) -> bool {
    weight.is_variable() && weight.device().is_cpu()
}

/// A 2-D convolution with bias: candle's, or the training op when its weights are trained on the CPU.
pub struct Conv2d {
    inner: candle_nn::Conv2d,
    train: bool,
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !self.train {
            return self.inner.forward(x);
        }
        let config = self.inner.config();
        let y = ops::conv2d(x, self.inner.weight(), config.stride, config.padding)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        match self.inner.bias() {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

/// Group normalisation: candle_nn's, or the fused training op when trained on the CPU.
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    train: bool,
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !self.train {
            return self.inner.forward(x);
        }
        ops::group_norm(x, &self.weight, &self.bias, self.groups, self.eps)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

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
    let config = Conv2dConfig {
        padding,
        stride,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    let train = trains_on_cpu(&weight);
    Ok(Conv2d {
        inner: candle_nn::Conv2d::new(weight, Some(bias), config),
        train,
    })
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
    Ok(GroupNorm {
        inner: candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
        train: trains_on_cpu(&weight),
        weight,
        bias,
        groups,
        eps,
    })
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
