//! `ResnetBlock2D` and the resampling layers, with diffusers' semantics.

use candle_core::{Module, Tensor, D};
use candle_nn::Linear;

use super::layers::{conv2d, group_norm, linear, Conv2d, GroupNorm};
use super::ops::{add_channel_bias, upsample_nearest};
use super::weights::Weights;
use crate::error::Result;

pub struct ResnetSpec {
    pub c_in: usize,
    pub c_out: usize,
    /// Width of the time embedding, or None where the block has no time input (VAE).
    pub temb: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock {
    pub fn new(w: &Weights, s: &ResnetSpec) -> Result<Self> {
        let time_emb_proj = match s.temb {
            Some(t) => Some(linear(&w.pp("time_emb_proj"), t, s.c_out, true)?),
            None => None,
        };
        let conv_shortcut = if s.c_in != s.c_out {
            Some(conv2d(&w.pp("conv_shortcut"), s.c_in, s.c_out, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(&w.pp("norm1"), s.groups, s.c_in, s.eps)?,
            conv1: conv2d(&w.pp("conv1"), s.c_in, s.c_out, 3, 1, 1)?,
            time_emb_proj,
            norm2: group_norm(&w.pp("norm2"), s.groups, s.c_out, s.eps)?,
            conv2: conv2d(&w.pp("conv2"), s.c_out, s.c_out, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor: s.output_scale_factor,
        })
    }

    /// `temb` is the activated-later time embedding `[B, T]` (this block applies SiLU itself).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&temb.silu()?)?;
            h = add_channel_bias(&h, &t)?;
        }
        let h = {
            let normed = self.norm2.forward_silu(&h)?;
            // conv1's output is done with: free it before conv2 allocates (image-sized in the VAE).
            drop(h);
            self.conv2.forward(&normed)?
        };
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = (skip + h)?;
        Ok(if self.output_scale_factor != 1.0 {
            (out / self.output_scale_factor)?
        } else {
            out
        })
    }
}

/// Stride-2 convolution. `padding == 0` means diffusers' asymmetric form: pad right and bottom by
/// one, then convolve without padding (VAE encoder, DDPM UNets); SD UNets pad symmetrically.
pub struct Downsample {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample {
    pub fn new(w: &Weights, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(&w.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            Ok(self.conv.forward(&x)?)
        } else {
            Ok(self.conv.forward(x)?)
        }
    }
}

/// Nearest-neighbour upsampling to a given size (2x, or the skip connection's size for odd inputs), then a 3x3 conv.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(w: &Weights, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(&w.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        Ok(self.conv.forward(&upsample_nearest(x, size)?)?)
    }
}
