//! 2-D convolution, one kernel for inference and training on the CPU.
//!
//! On the CPU, convolutions with a kernel wider than 1 (any stride) run as im2col and one matrix
//! product per band of output rows, written straight into the output. Why: candle's CPU
//! convolution gathers patches 512 output pixels at a time and scatters the results back pixel by
//! pixel; for the VAE's wide, shallow layers (128 channels at 512x512) that bookkeeping costs as
//! much as the arithmetic, and its strided path (the VAE's downsamplers) is slower still. Bands
//! keep the patch matrix small (see [`PATCH_ELEMENTS`]) whatever the image size.
//!
//! Training (weights that are variables, on the CPU) uses the same forward with a backward pass
//! of a few large products: candle's own backward runs a kernel gradient as a convolution with an
//! image-sized kernel and an input gradient as a naive transposed convolution.
//!
//! Half precision on the CPU widens to float32 for the products and rounds the output once, as
//! PyTorch's CPU convolution does. Other devices use candle's convolution (on CUDA: im2col and a
//! cuBLAS product, in the model's dtype with float32 accumulation).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Shape, Tensor};

use super::channel_bias::add_channel_bias;
use super::cpu::{contiguous_f32, matmul, values, Operand};
use super::im2col::ConvGeometry;
use crate::error::{Error, Result};

/// Largest patch matrix (input channels x kernel area x band pixels) built at once: 4 Mi floats,
/// 16 MiB, below glibc's largest mmap threshold so band buffers are reused from the heap.
const PATCH_ELEMENTS: usize = 4 << 20;

pub struct Conv2d {
    kind: ConvKind,
}

enum ConvKind {
    /// candle's convolution: 1x1 kernels on the CPU, and every GPU.
    General(candle_nn::Conv2d),
    /// The CPU's own kernel, weights fixed or trained.
    Cpu {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    },
}

impl Conv2d {
    /// `weight` is `[c_out, c_in, k, k]`, `bias` `[c_out]`.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        let kernel = weight.dim(2)?;
        // candle's 1x1 float32 convolution is a plain product already.
        let own_kernel = weight.is_variable() || kernel > 1 || weight.dtype() != DType::F32;
        let kind = if weight.device().is_cpu() && own_kernel {
            // Half-precision weights are kept widened: the products run in float32.
            let widen = |t: Tensor| -> Result<Tensor> {
                Ok(if t.is_variable() {
                    t
                } else {
                    t.to_dtype(DType::F32)?
                })
            };
            ConvKind::Cpu {
                weight: widen(weight)?,
                bias: bias.map(widen).transpose()?,
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

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            ConvKind::General(conv) => conv.forward(x),
            ConvKind::Cpu {
                weight,
                bias,
                stride,
                padding,
            } => super::cpu::in_f32(x, |x| {
                let y = conv2d(x, weight, *stride, *padding)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                match bias {
                    Some(b) => {
                        add_channel_bias(&y, b).map_err(|e| candle_core::Error::Msg(e.to_string()))
                    }
                    None => Ok(y),
                }
            }),
        }
    }
}

/// `x` (`[B,Ci,H,W]`, float32 on the CPU) convolved with `w` (`[Co,Ci,k,k]`), no bias;
/// differentiable in both when either tracks gradients.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, ci, k, k2) = w.dims4()?;
    let (b, xc, h, wd) = x.dims4()?;
    let geometry = ConvGeometry {
        batch: b,
        channels: ci,
        height: h,
        width: wd,
        kernel: k,
        stride,
        padding,
    };
    if k != k2 || xc != ci || stride == 0 || padding >= k || !geometry.is_valid() {
        return Err(Error::invalid(format!(
            "conv2d: a {k}x{k2} kernel of {ci} channels with stride {stride}, padding {padding} does not fit a {xc}-channel {wd}x{h} input"
        )));
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let op = ConvOp { geometry };
    Ok(if x.track_op() || w.track_op() {
        x.apply_op2(&w, op)?
    } else {
        x.apply_op2_no_bwd(&w, &op)?
    })
}

struct ConvOp {
    geometry: ConvGeometry,
}

/// One image `[Ci, H, W]` (values) convolved with the row-major `[Co, Ci*k*k]` weight into
/// `out` (`[Co, Oh*Ow]`), a band of output rows at a time: im2col of the band into `buffer`,
/// then one product written straight into the band's columns of the output, computed
/// column-major (`y_bandᵀ = patchesᵀ · Wᵀ`) so gemm reads the patches in place.
fn convolve_image(
    image: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    out: &mut [f32],
    buffer: &mut Vec<f32>,
    patch_elements: usize,
) {
    let (oh, ow) = image.out_size();
    let (pixels, patch) = (oh * ow, image.patch_len());
    let co = weight.len() / patch;
    if image.kernel == 1 && image.stride == 1 && image.padding == 0 {
        // The image is its own patch matrix.
        // SAFETY: dst [pixels, co] column-major is `out`; lhs the [pixels, ci] image; rhs the weight.
        unsafe {
            matmul(
                (pixels, co, patch),
                Operand::column_major(out.as_mut_ptr(), pixels),
                false,
                Operand::column_major(x.as_ptr(), pixels),
                Operand::column_major(weight.as_ptr(), patch),
            );
        }
        return;
    }
    let band_rows = (patch_elements / (patch * ow).max(1)).clamp(1, oh.max(1));
    let mut row = 0;
    while row < oh {
        let rows = band_rows.min(oh - row);
        let band_pixels = rows * ow;
        buffer.clear();
        buffer.resize(patch * band_pixels, 0.0);
        image.im2col_rows(x, row..row + rows, buffer);
        // SAFETY: dst the band's [band_pixels, co] block of `out` (column stride `pixels`); lhs
        // the [band_pixels, patch] column-major patches; rhs the [patch, co] column-major weight.
        unsafe {
            matmul(
                (band_pixels, co, patch),
                Operand::column_major(out.as_mut_ptr().add(row * ow), pixels),
                false,
                Operand::column_major(buffer.as_ptr(), band_pixels),
                Operand::column_major(weight.as_ptr(), patch),
            );
        }
        row += rows;
    }
}

/// Convolve every image of `x` (`[B, C*H*W]` values, `image` the one-image geometry).
fn convolve_images(image: &ConvGeometry, x: &[f32], weight: &[f32], out: &mut [f32]) {
    let (oh, ow) = image.out_size();
    let co = weight.len() / image.patch_len();
    let mut buffer = Vec::new();
    for (x_b, y) in x
        .chunks(image.image_len())
        .zip(out.chunks_mut(co * oh * ow))
    {
        convolve_image(image, x_b, weight, y, &mut buffer, PATCH_ELEMENTS);
    }
}

/// One image's whole patch matrix `[Ci*k*k, Oh*Ow]` for the backward pass: the image itself for
/// a 1x1 convolution with stride 1, otherwise im2col into `buffer`. The buffer is reused image
/// after image without clearing: im2col writes the same positions every time and the padding
/// stays zero.
fn image_patches<'a>(image: &ConvGeometry, x_b: &'a [f32], buffer: &'a mut Vec<f32>) -> &'a [f32] {
    if image.kernel == 1 && image.stride == 1 && image.padding == 0 {
        return x_b;
    }
    let (oh, ow) = image.out_size();
    if buffer.is_empty() {
        *buffer = vec![0f32; image.patch_len() * oh * ow];
    }
    image.im2col_rows(x_b, 0..oh, buffer);
    buffer
}

/// A column-major `[m, n]` matrix in row-major order. gemm writes the kernel gradient
/// column-major so that it reads the patch matrix in place and packs only the smaller gradient.
fn row_major(column_major: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = column_major[j * m + i];
        }
    }
    out
}

/// The weight of the convolution whose output is a stride-1 convolution's input gradient:
/// `[Ci, Co*k*k]`, in- and out-channels swapped and the kernel turned by 180 degrees.
fn transposed_flipped(w: &[f32], co: usize, ci: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for c in 0..ci {
            for ky in 0..k {
                for kx in 0..k {
                    out[((c * co + o) * k + (k - 1 - ky)) * k + (k - 1 - kx)] =
                        w[((o * ci + c) * k + ky) * k + kx];
                }
            }
        }
    }
    out
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-cpu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let x = contiguous_f32(xs, xl)?;
        let w = contiguous_f32(ws, wl)?;
        let (oh, ow) = g.out_size();
        let co = w.len() / g.patch_len();
        let mut out = vec![0f32; g.batch * co * oh * ow];
        convolve_images(&g.one_image(), x, w, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((g.batch, co, oh, ow))))
    }

    /// Per image, straight from the batch-major gradient (no transposed copy), with the image's
    /// patches rebuilt in a reused buffer: the kernel gradient accumulates `grad_b · patches_bᵀ`.
    /// The input gradient of a stride-1 convolution is itself a convolution of the output
    /// gradient (flipped kernel, padding k-1-p): a well-shaped product and no scatter. Strided
    /// convolutions take the patch gradient `Wᵀ · grad_b` and col2im it into the input's.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = &self.geometry;
        let image = g.one_image();
        let (co, ci, k, _) = w.dims4()?;
        let (oh, ow) = g.out_size();
        let (pixels, patch) = (oh * ow, ci * k * k);
        let (x_values, grad, w_values) = (values(x)?, values(grad)?, values(w)?);
        let mut gw_column_major = vec![0f32; co * patch];
        let mut gx = vec![0f32; g.batch * g.image_len()];
        let transposed = g.stride == 1;
        let mut buffer = Vec::new();
        let mut gcols = vec![0f32; if transposed { 0 } else { patch * pixels }];
        for (b, (x_b, grad_b)) in x_values
            .chunks(g.image_len())
            .zip(grad.chunks(co * pixels))
            .enumerate()
        {
            let cols = image_patches(&image, x_b, &mut buffer);
            // SAFETY: dst [co, patch] column-major; lhs grad_b [co, pixels] row-major;
            // rhs the transpose of the image's [patch, pixels] patches.
            unsafe {
                matmul(
                    (co, patch, pixels),
                    Operand::column_major(gw_column_major.as_mut_ptr(), co),
                    b > 0,
                    Operand::row_major(grad_b.as_ptr(), pixels),
                    Operand::column_major(cols.as_ptr(), pixels),
                );
            }
            if transposed {
                continue;
            }
            // SAFETY: dst the image's [patch, pixels] patch gradient; lhs Wᵀ ([patch, co], read
            // from the row-major [co, patch] weight); rhs grad_b.
            unsafe {
                matmul(
                    (patch, pixels, co),
                    Operand::row_major(gcols.as_mut_ptr(), pixels),
                    false,
                    Operand::column_major(w_values.as_ptr(), patch),
                    Operand::row_major(grad_b.as_ptr(), pixels),
                );
            }
            image.col2im_add(&gcols, &mut gx[b * g.image_len()..][..g.image_len()]);
        }
        if transposed {
            let gradient_geometry = ConvGeometry {
                batch: 1,
                channels: co,
                height: oh,
                width: ow,
                kernel: k,
                stride: 1,
                padding: k - 1 - g.padding,
            };
            let flipped = transposed_flipped(&w_values, co, ci, k);
            convolve_images(&gradient_geometry, &grad, &flipped, &mut gx);
        }
        let gw = Tensor::from_vec(
            row_major(&gw_column_major, co, patch),
            (co, ci, k, k),
            w.device(),
        )?;
        let gx = Tensor::from_vec(gx, (g.batch, g.channels, g.height, g.width), x.device())?;
        Ok((Some(gx), Some(gw)))
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

    fn cpu_values(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The banded forward against candle's convolution, with bands of a few rows so that the
    /// first and last bands' padding and the band seams are all exercised.
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
            (1, 0, 1),
        ] {
            let weight = random(&[7, 5, k, k], 2);
            let config = candle_nn::Conv2dConfig {
                padding: p,
                stride,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            let reference = candle_nn::Conv2d::new(weight.clone(), None, config)
                .forward(&x)
                .unwrap();
            let matrix = cpu_values(&weight);
            let image = ConvGeometry {
                batch: 1,
                channels: 5,
                height: 13,
                width: 11,
                kernel: k,
                stride,
                padding: p,
            };
            let (oh, ow) = image.out_size();
            for rows_per_band in [1, 2, 5, 100] {
                let budget = rows_per_band * k * k * 5 * ow;
                for i in 0..2 {
                    let xi = cpu_values(&x.get(i).unwrap());
                    let mut out = vec![f32::NAN; 7 * oh * ow];
                    convolve_image(&image, &xi, &matrix, &mut out, &mut Vec::new(), budget);
                    let got = Tensor::from_vec(out, (7, oh, ow), &Device::Cpu).unwrap();
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

    /// Half-precision weights and inputs on the CPU: float32 products, one rounding at the end.
    #[test]
    fn half_precision_rounds_the_float32_result() {
        let x = random(&[1, 4, 9, 6], 7);
        let weight = random(&[3, 4, 3, 3], 8);
        let bias = random(&[3], 9);
        for dtype in [DType::F16, DType::BF16] {
            let half = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let ours = Conv2d::new(half(&weight), Some(half(&bias)), 1, 1)
                .unwrap()
                .forward(&half(&x))
                .unwrap();
            assert_eq!(ours.dtype(), dtype);
            let wide = |t: &Tensor| half(t).to_dtype(DType::F32).unwrap();
            let want = Conv2d::new(wide(&weight), Some(wide(&bias)), 1, 1)
                .unwrap()
                .forward(&wide(&x))
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(max_abs_diff(&ours, &want), 0.0, "{dtype:?}");
        }
    }
}
