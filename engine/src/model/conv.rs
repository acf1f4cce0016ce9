//! 2-D convolution. On the CPU, stride-1 convolutions with a kernel wider than 1 run as im2col and
//! one matrix product per band of output rows.
//!
//! Why: candle's CPU convolution gathers patches 512 output pixels at a time and scatters the
//! results back pixel by pixel; for the VAE's wide, shallow layers (128 channels at 512x512) that
//! bookkeeping costs as much as the arithmetic. Here the patches of a band of rows are copied in
//! row-long blocks and each band's product is copied into the output in one block. The reduction
//! runs over the same (kernel row, kernel column, input channel) order as candle's, so results
//! differ from it by float rounding at most.

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

/// One image `[c_in, h, w]` -> `[c_out, h', w']`. Only a band of the input is padded at a time, and
/// each band's product is written straight into the output, so no image-sized copies are made.
fn forward_image(
    x: &Tensor,
    weight_matrix: &Tensor,
    bias: Option<&Tensor>,
    k: usize,
    p: usize,
    patch_elements: usize,
) -> candle_core::Result<Tensor> {
    let (c_in, h, w) = x.dims3()?;
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    if hp < k || wp < k {
        candle_core::bail!("conv2d: a {hp}x{wp} padded input is smaller than the {k}x{k} kernel");
    }
    let (out_h, out_w) = (hp + 1 - k, wp + 1 - k);
    let c_out = weight_matrix.dim(0)?;
    let out = Tensor::zeros((c_out, out_h, out_w), x.dtype(), x.device())?;
    let band_rows = (patch_elements / (k * k * c_in * out_w).max(1)).clamp(1, out_h);
    let mut row = 0;
    while row < out_h {
        let rows = band_rows.min(out_h - row);
        // Padded input rows [row, row + rows + k - 1) are input rows shifted by p, zeros outside.
        let first = row.saturating_sub(p).min(h);
        let end = (row + rows + k - 1).saturating_sub(p).min(h);
        let top = p.saturating_sub(row);
        let band = if end > first {
            let bottom = rows + k - 1 - top - (end - first);
            x.narrow(1, first, end - first)?
                .pad_with_zeros(1, top, bottom)?
                .pad_with_zeros(2, p, p)?
        } else {
            Tensor::zeros((c_in, rows + k - 1, wp), x.dtype(), x.device())?
        };
        let mut shifted = Vec::with_capacity(k * k);
        for kh in 0..k {
            for kw in 0..k {
                shifted.push(
                    band.narrow(1, kh, rows)?
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
        out.slice_set(&y.reshape((c_out, rows, out_w))?, 1, row)?;
        row += rows;
    }
    Ok(out)
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
                let image = |i| {
                    forward_image(
                        &x.get(i)?,
                        weight_matrix,
                        bias.as_ref(),
                        *kernel,
                        *padding,
                        PATCH_ELEMENTS,
                    )
                };
                match x.dim(0)? {
                    1 => image(0)?.unsqueeze(0),
                    batch => Tensor::stack(
                        &(0..batch)
                            .map(image)
                            .collect::<candle_core::Result<Vec<_>>>()?,
                        0,
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        crate::features::recipe::seeded_normal(seed, shape, &Device::Cpu).unwrap()
    }

    /// The patch path against candle's convolution, with bands of a few rows so that the first
    /// and last bands' padding and the band seams are all exercised.
    #[test]
    fn patches_match_candle_across_bands() {
        let x = random(&[2, 5, 13, 11], 1);
        for (k, p) in [(3, 1), (3, 0), (5, 2), (5, 1), (3, 2)] {
            let weight = random(&[7, 5, k, k], 2);
            let bias = random(&[7], 3);
            let config = candle_nn::Conv2dConfig {
                padding: p,
                stride: 1,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            let reference = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), config)
                .forward(&x)
                .unwrap();
            let matrix = weight
                .permute((0, 2, 3, 1))
                .unwrap()
                .reshape((7, k * k * 5))
                .unwrap();
            let bias = bias.reshape((7, 1)).unwrap();
            for rows_per_band in [1, 2, 5, 100] {
                let budget = rows_per_band * k * k * 5 * (11 + 2 * p + 1 - k);
                for i in 0..2 {
                    let got = forward_image(&x.get(i).unwrap(), &matrix, Some(&bias), k, p, budget)
                        .unwrap();
                    let want = reference.get(i).unwrap();
                    assert_eq!(got.dims(), want.dims(), "k={k} p={p}");
                    let diff = (got - want)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(
                        diff < 1e-5,
                        "k={k} p={p} rows={rows_per_band}: max diff {diff}"
                    );
                }
            }
        }
    }

    #[test]
    fn whole_layer_matches_candle() {
        let x = random(&[1, 4, 9, 6], 4);
        let weight = random(&[3, 4, 3, 3], 5);
        let bias = random(&[3], 6);
        let ours = Conv2d::new(weight.clone(), Some(bias.clone()), 1, 1).unwrap();
        let config = candle_nn::Conv2dConfig {
            padding: 1,
            stride: 1,
            dilation: 1,
            groups: 1,
            cudnn_fwd_algo: None,
        };
        let theirs = candle_nn::Conv2d::new(weight, Some(bias), config);
        let diff = (ours.forward(&x).unwrap() - theirs.forward(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
