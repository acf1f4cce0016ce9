//! 2-D convolution. On the CPU, convolutions with a kernel wider than 1 (any stride) run as
//! im2col and one matrix product per band of output rows.
//!
//! Why: candle's CPU convolution gathers patches 512 output pixels at a time and scatters the
//! results back pixel by pixel; for the VAE's wide, shallow layers (128 channels at 512x512) that
//! bookkeeping costs as much as the arithmetic, and its strided path (the VAE's downsamplers) is
//! slower still. Here the patches of a band of rows are copied in row-long blocks (see
//! [`super::im2col`], which training shares) and each band's product is copied into the output in
//! one block.

use candle_core::{Module, Storage, Tensor};

use super::im2col::ConvGeometry;
use crate::error::Result;

/// Largest patch matrix (input channels x kernel area x band pixels) built at once: 4 Mi floats,
/// 16 MiB, below glibc's largest mmap threshold so band buffers are reused from the heap.
const PATCH_ELEMENTS: usize = 4 << 20;

pub struct Conv2d {
    kind: ConvKind,
}

enum ConvKind {
    /// candle's convolution, for what the patch path does not cover (1x1, GPUs, other dtypes).
    General(candle_nn::Conv2d),
    /// Weights being trained on the CPU: the training op, whose backward pass is fast there.
    Training {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    },
    Patches {
        /// The weight as `[c_out, c_in*k*k]`, PyTorch's layout flattened.
        weight_matrix: Tensor,
        /// `[c_out, 1]`.
        bias: Option<Tensor>,
        kernel: usize,
        stride: usize,
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
        } else if weight.device().is_cpu()
            && weight.dtype() == candle_core::DType::F32
            && kernel > 1
        {
            ConvKind::Patches {
                weight_matrix: weight.reshape((c_out, c_in * kernel * kernel))?,
                bias: bias.map(|b| b.reshape((c_out, 1))).transpose()?,
                kernel,
                stride,
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

/// One image `[c_in, h, w]` -> `[c_out, h', w']`, a band of output rows at a time, each band's
/// product written straight into the output, so no image-sized copies are made.
fn forward_image(
    x: &Tensor,
    weight_matrix: &Tensor,
    bias: Option<&Tensor>,
    (kernel, stride, padding): (usize, usize, usize),
    patch_elements: usize,
) -> candle_core::Result<Tensor> {
    let (channels, height, width) = x.dims3()?;
    let geometry = ConvGeometry {
        batch: 1,
        channels,
        height,
        width,
        kernel,
        stride,
        padding,
    };
    if !geometry.is_valid() {
        candle_core::bail!(
            "conv2d: a {width}x{height} input padded by {padding} is smaller than the {kernel}x{kernel} kernel"
        );
    }
    let (out_h, out_w) = geometry.out_size();
    let c_out = weight_matrix.dim(0)?;
    let out = Tensor::zeros((c_out, out_h, out_w), x.dtype(), x.device())?;
    let band_rows = (patch_elements / (geometry.patch_len() * out_w).max(1)).clamp(1, out_h);
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        candle_core::bail!("conv2d: the patch path needs a contiguous CPU tensor");
    };
    let xs = &cpu.as_slice::<f32>()?[start..end];
    let mut row = 0;
    while row < out_h {
        let rows = band_rows.min(out_h - row);
        let mut cols = vec![0f32; geometry.patch_len() * rows * out_w];
        geometry.im2col_rows(xs, row..row + rows, &mut cols);
        let patches = Tensor::from_vec(cols, (geometry.patch_len(), rows * out_w), x.device())?;
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
                    Some(b) => crate::train::ops::add_channel_bias(&y, b)
                        .map_err(|e| candle_core::Error::Msg(e.to_string())),
                    None => Ok(y),
                }
            }
            ConvKind::Patches {
                weight_matrix,
                bias,
                kernel,
                stride,
                padding,
            } => {
                let image = |i| {
                    forward_image(
                        &x.get(i)?,
                        weight_matrix,
                        bias.as_ref(),
                        (*kernel, *stride, *padding),
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
    use crate::test_util::max_abs_diff;
    use candle_core::Device;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        crate::features::recipe::seeded_normal(seed, shape, &Device::Cpu).unwrap()
    }

    /// The patch path against candle's convolution, with bands of a few rows so that the first
    /// and last bands' padding and the band seams are all exercised.
    #[test]
    fn patches_match_candle_across_bands() {
        let x = random(&[2, 5, 13, 11], 1);
        for (k, p, stride) in [
            (3, 1, 1),
            (3, 0, 1),
            (5, 2, 1),
            (5, 1, 1),
            (3, 2, 1),
            (3, 1, 2),
            (3, 0, 2),
        ] {
            let weight = random(&[7, 5, k, k], 2);
            let bias = random(&[7], 3);
            let config = candle_nn::Conv2dConfig {
                padding: p,
                stride,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            let reference = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), config)
                .forward(&x)
                .unwrap();
            let matrix = weight.reshape((7, k * k * 5)).unwrap();
            let bias = bias.reshape((7, 1)).unwrap();
            for rows_per_band in [1, 2, 5, 100] {
                let budget = rows_per_band * k * k * 5 * ((11 + 2 * p - k) / stride + 1);
                for i in 0..2 {
                    let got = forward_image(
                        &x.get(i).unwrap(),
                        &matrix,
                        Some(&bias),
                        (k, stride, p),
                        budget,
                    )
                    .unwrap();
                    let want = reference.get(i).unwrap();
                    assert_eq!(got.dims(), want.dims(), "k={k} p={p} stride={stride}");
                    // Float rounding only: the sums run in another order than candle's.
                    let diff = max_abs_diff(&got, &want);
                    let scale = max_abs_diff(&want, &want.zeros_like().unwrap());
                    assert!(
                        diff <= 1e-6 * scale,
                        "k={k} p={p} stride={stride} rows={rows_per_band}: max diff {diff}"
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
        let diff = max_abs_diff(&ours.forward(&x).unwrap(), &theirs.forward(&x).unwrap());
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
