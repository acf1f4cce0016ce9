//! 2-D convolution. On the CPU, stride-1 convolutions with a kernel wider than 1 run as im2col and
//! one matrix product per band of output rows.
//!
//! Why: candle's CPU convolution gathers patches 512 output pixels at a time and scatters the
//! results back pixel by pixel; for the VAE's wide, shallow layers (128 channels at 512x512) that
//! bookkeeping costs as much as the arithmetic. Here the patches of a band of rows are copied in
//! row-long blocks and the product writes the output in place. The reduction runs over the same
//! (kernel row, kernel column, input channel) order as candle's, so results differ from it by
//! float rounding at most.

use candle_core::{Module, Tensor};

use crate::error::Result;

/// Largest patch matrix (input channels x kernel area x band pixels) built at once: 16 Mi floats, 64 MiB.
const PATCH_ELEMENTS: usize = 16 << 20;

pub struct Conv2d {
    kind: ConvKind,
}

enum ConvKind {
    /// candle's convolution, for what the patch path does not cover (strides, 1x1, GPUs).
    General(candle_nn::Conv2d),
    /// Weights being trained on the CPU: the training op, whose backward pass is fast there.
    Training {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    },
    Patches {
        /// The weight as `[c_out, k*k*c_in]`, ordered (kernel row, kernel column, input channel).
        weight_matrix: Tensor,
        /// `[c_out, 1]`.
        bias: Option<Tensor>,
        kernel: usize,
        padding: usize,
    },
}

impl Conv2d {
    /// `weight` is `[c_out, c_in, k, k]`, `bias` `[c_out]`. Only one layout of the weight is kept.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        let (c_out, c_in, kernel, _) = weight.dims4()?;
        let kind = if weight.is_variable() && weight.device().is_cpu() {
            ConvKind::Training {
                weight,
                bias,
                stride,
                padding,
            }
        } else if weight.device().is_cpu() && stride == 1 && kernel > 1 {
            ConvKind::Patches {
                weight_matrix: weight
                    .permute((0, 2, 3, 1))?
                    .reshape((c_out, kernel * kernel * c_in))?,
                bias: bias.map(|b| b.reshape((c_out, 1))).transpose()?,
                kernel,
                padding,
            }
        } else {
            let config = candle_nn::Conv2dConfig {
                padding,
                stride,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            ConvKind::General(candle_nn::Conv2d::new(weight, bias, config))
        };
        Ok(Self { kind })
    }
}

/// One image `[c_in, h+2p, w+2p]` (already padded) -> `[c_out, h', w']`.
fn forward_padded(
    x: &Tensor,
    weight_matrix: &Tensor,
    bias: Option<&Tensor>,
    k: usize,
) -> candle_core::Result<Tensor> {
    let (c_in, hp, wp) = x.dims3()?;
    if hp < k || wp < k {
        candle_core::bail!("conv2d: a {hp}x{wp} padded input is smaller than the {k}x{k} kernel");
    }
    let (out_h, out_w) = (hp + 1 - k, wp + 1 - k);
    let c_out = weight_matrix.dim(0)?;
    let band_rows = (PATCH_ELEMENTS / (k * k * c_in * out_w).max(1)).clamp(1, out_h);
    let mut bands = Vec::with_capacity(out_h.div_ceil(band_rows));
    let mut row = 0;
    while row < out_h {
        let rows = band_rows.min(out_h - row);
        let mut shifted = Vec::with_capacity(k * k);
        for kh in 0..k {
            for kw in 0..k {
                shifted.push(
                    x.narrow(1, row + kh, rows)?
                        .narrow(2, kw, out_w)?
                        .unsqueeze(0)?,
                );
            }
        }
        // [k*k, c_in, rows, w'] -> [k*k*c_in, rows*w'], the product's right operand.
        let patches = Tensor::cat(&shifted, 0)?.reshape((k * k * c_in, rows * out_w))?;
        let mut y = weight_matrix.matmul(&patches)?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        bands.push(y.reshape((c_out, rows, out_w))?);
        row += rows;
    }
    if bands.len() == 1 {
        Ok(bands.remove(0))
    } else {
        Tensor::cat(&bands, 1)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            ConvKind::General(conv) => conv.forward(x),
            ConvKind::Training {
                weight,
                bias,
                stride,
                padding,
            } => {
                let y = crate::train::ops::conv2d(x, weight, *stride, *padding)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                match bias {
                    Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
                    None => Ok(y),
                }
            }
            ConvKind::Patches {
                weight_matrix,
                bias,
                kernel,
                padding,
            } => {
                let p = *padding;
                let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
                let outs = (0..padded.dim(0)?)
                    .map(|i| forward_padded(&padded.get(i)?, weight_matrix, bias.as_ref(), *kernel))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&outs, 0)
            }
        }
    }
}
