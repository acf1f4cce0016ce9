//! Training versions of the UNet's convolution, group norm and 2x nearest upsampling for the CPU.
//! candle's own backward passes of these are slow there (a convolution's kernel gradient runs as
//! a convolution with an image-sized kernel, its input gradient as a naive transposed convolution;
//! group norm differentiates through eight full-size tensor ops; upsampling through a grouped
//! convolution), which made training several times slower than its forward pass suggests. These
//! ops compute the same values with gradients as a few large matrix products and fused loops.
//! The model's layers use them only when their weights are being trained on the CPU, so inference
//! keeps candle's path.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::model::im2col::ConvGeometry;
use crate::model::vector_exp;
use crate::parallel::{parallel_chunks, parallel_for, SharedSlice};

fn candle_err(message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(message.to_string())
}

/// The contiguous float32 values of a CPU storage seen through `layout`.
fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_err("training op: input is not contiguous"))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// The float32 values of a CPU tensor in row-major order: borrowed from its storage when it is
/// contiguous (the usual case for activations and gradients), else copied.
enum F32Values<'a> {
    Borrowed(candle_core::StorageRef<'a>, std::ops::Range<usize>),
    Owned(Vec<f32>),
}

impl std::ops::Deref for F32Values<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            F32Values::Borrowed(storage, range) => match &**storage {
                candle_core::Storage::Cpu(CpuStorage::F32(v)) => &v[range.clone()],
                // `values` only borrows float32 CPU storage.
                _ => &[],
            },
            F32Values::Owned(v) => v,
        }
    }
}

fn values(t: &Tensor) -> candle_core::Result<F32Values<'_>> {
    let (storage, layout) = t.storage_and_layout();
    let borrowable = matches!(&*storage, candle_core::Storage::Cpu(CpuStorage::F32(_)));
    match layout.contiguous_offsets() {
        Some((start, end)) if borrowable => Ok(F32Values::Borrowed(storage, start..end)),
        _ => {
            drop(storage);
            Ok(F32Values::Owned(t.flatten_all()?.to_vec1::<f32>()?))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// `x` (`[B,Ci,H,W]`) convolved with `w` (`[Co,Ci,k,k]`), no bias, differentiable in both:
/// im2col with contiguous row copies and one matrix product forward; two matrix products and a
/// col2im backward.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, ci, k, k2) = w.dims4()?;
    let (b, xc, h, wd) = x.dims4()?;
    if k != k2
        || padding + 1 > k
        || stride == 0
        || xc != ci
        || h + 2 * padding < k
        || wd + 2 * padding < k
    {
        return Err(Error::unsupported(format!(
            "training a {k}x{k2} convolution of {ci} channels with stride {stride}, padding {padding} on a {xc}-channel {wd}x{h} input"
        )));
    }
    let geometry = ConvGeometry {
        batch: b,
        channels: ci,
        height: h,
        width: wd,
        kernel: k,
        stride,
        padding,
    };
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, ConvWithGrad { geometry })?)
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

fn gemm_parallelism() -> gemm::Parallelism {
    match crate::parallel::threads() {
        0 | 1 => gemm::Parallelism::None,
        threads => gemm::Parallelism::Rayon(threads),
    }
}

/// A gemm operand: where the matrix starts and how it is laid out.
#[derive(Clone, Copy)]
struct Operand<P> {
    ptr: P,
    col_stride: isize,
    row_stride: isize,
}

impl<P> Operand<P> {
    /// Element (i, j) at `ptr[i + j * ld]`.
    fn column_major(ptr: P, ld: usize) -> Self {
        Self {
            ptr,
            col_stride: ld as isize,
            row_stride: 1,
        }
    }

    /// Element (i, j) at `ptr[i * ld + j]`.
    fn row_major(ptr: P, ld: usize) -> Self {
        Self {
            ptr,
            col_stride: 1,
            row_stride: ld as isize,
        }
    }
}

/// `dst [m, n] = lhs [m, k] · rhs [k, n]`, or `dst +=` it when `accumulate`.
///
/// # Safety
/// Each operand must cover its matrix at its strides, and `dst` must overlap neither input.
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: Operand<*mut f32>,
    accumulate: bool,
    lhs: Operand<*const f32>,
    rhs: Operand<*const f32>,
) {
    // SAFETY: the caller's contract; alpha (1) only scales dst when it is read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride,
            dst.row_stride,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_parallelism(),
        )
    }
}

struct ConvWithGrad {
    geometry: ConvGeometry,
}

/// One image's patch matrix `[Ci*k*k, Oh*Ow]`: the image itself for a 1x1 convolution with
/// stride 1, otherwise im2col into `buffer`. The buffer is reused image after image without
/// clearing: im2col writes the same positions every time and the padding stays zero.
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

/// Convolve every image of `x` (`[B, C*H*W]` values, `image` the one-image geometry) with the
/// row-major `[Co, C*k*k]` `weight` into `out` (`[B, Co*Oh*Ow]`): per image, im2col into one
/// reused buffer, then one product written straight into the output, `y_b = W · patches_b`,
/// computed column-major (`y_bᵀ = patches_bᵀ · Wᵀ`) so gemm reads the patches in place.
fn convolve_images(image: &ConvGeometry, x: &[f32], weight: &[f32], out: &mut [f32]) {
    let (oh, ow) = image.out_size();
    let (pixels, patch) = (oh * ow, image.patch_len());
    let co = weight.len() / patch;
    let mut buffer = Vec::new();
    for (x_b, y) in x.chunks(image.image_len()).zip(out.chunks_mut(co * pixels)) {
        let cols = image_patches(image, x_b, &mut buffer);
        // SAFETY: dst the image's [co, pixels] output block; lhs its [patch, pixels] patches;
        // rhs the [co, patch] weight.
        unsafe {
            matmul(
                (pixels, co, patch),
                Operand::column_major(y.as_mut_ptr(), pixels),
                false,
                Operand::column_major(cols.as_ptr(), pixels),
                Operand::column_major(weight.as_ptr(), patch),
            );
        }
    }
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

impl CustomOp2 for ConvWithGrad {
    fn name(&self) -> &'static str {
        "conv2d-train"
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

// ---------------------------------------------------------------------------------------------
// Group norm

/// `GroupNorm(groups, eps)` with a per-channel affine `weight`, `bias`, as PyTorch defines it
/// (biased variance), differentiable in all three inputs; followed by SiLU when `silu` (fused:
/// one pass forward and backward instead of candle's chain of element-wise ops for SiLU).
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::invalid(format!(
            "GroupNorm: {groups} groups do not divide {c} channels"
        )));
    }
    Ok(x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        GroupNormOp { groups, eps, silu },
    )?)
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + vector_exp::exp(-v))
}

impl GroupNormOp {
    /// (batch, channels, spatial size) of `[B,C,...]`.
    fn dims(shape: &Shape) -> candle_core::Result<(usize, usize, usize)> {
        let dims = shape.dims();
        if dims.len() < 2 {
            return Err(candle_err("GroupNorm needs [B,C,...]"));
        }
        Ok((dims[0], dims[1], dims[2..].iter().product()))
    }

    /// Mean and 1/std of one group's values (`cg` channel rows of `hw`).
    fn stats(&self, v: &[f32], hw: usize) -> (f32, f32) {
        let n = v.len() as f64;
        let mean = v.chunks(hw).map(lane_sum).sum::<f64>() / n;
        let m = mean as f32;
        let var = v
            .chunks(hw)
            .map(|row| lane_sums(row, row, |a, _| ((a - m) * (a - m), 0.0)).0)
            .sum::<f64>()
            / n;
        (m, (1.0 / (var + self.eps).sqrt()) as f32)
    }
}

/// Sum of `v`, in 16 f32 lanes (they vectorize) totalled in f64.
fn lane_sum(v: &[f32]) -> f64 {
    lane_sums(v, v, |a, _| (a, 0.0)).0
}

/// The two sums `Σ f(a_j, b_j)` over equal-length slices, in 16 f32 lanes each (they
/// vectorize) totalled in f64.
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut first, mut second) = ([0f32; LANES], [0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            let (u, v) = f(xa[l], xb[l]);
            first[l] += u;
            second[l] += v;
        }
    }
    let mut total = (
        first.iter().map(|&v| v as f64).sum::<f64>(),
        second.iter().map(|&v| v as f64).sum::<f64>(),
    );
    for (&xa, &xb) in ra.iter().zip(rb) {
        let (u, v) = f(xa, xb);
        total.0 += u as f64;
        total.1 += v as f64;
    }
    total
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        if self.silu {
            "group-norm-silu-train"
        } else {
            "group-norm-train"
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl)?;
        let w = contiguous_f32(ws, wl)?;
        let b = contiguous_f32(bs, bl)?;
        let (batch, c, hw) = Self::dims(xl.shape())?;
        let cg = c / self.groups;
        let mut out = vec![0f32; x.len()];
        parallel_chunks(&mut out, batch * self.groups, |i, dst| {
            let g = i % self.groups;
            let src = &x[i * cg * hw..(i + 1) * cg * hw];
            let (mean, rstd) = self.stats(src, hw);
            for ch in 0..cg {
                let channel = g * cg + ch;
                let (scale, shift) = (w[channel] * rstd, b[channel] - mean * rstd * w[channel]);
                let pairs = dst[ch * hw..(ch + 1) * hw]
                    .iter_mut()
                    .zip(&src[ch * hw..(ch + 1) * hw]);
                if self.silu {
                    for (d, &s) in pairs {
                        let y = s * scale + shift;
                        *d = y * sigmoid(y);
                    }
                } else {
                    for (d, &s) in pairs {
                        *d = s * scale + shift;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, c, hw) = Self::dims(x.shape())?;
        let cg = c / self.groups;
        let xs = values(x)?;
        let ws = values(w)?;
        let bs = values(b)?;
        let gs = values(grad)?;
        let mut gx = vec![0f32; xs.len()];
        let groups = batch * self.groups;
        // Per (image, channel) sums of grad and grad * x_hat, for the weight and bias gradients.
        let mut channel_sums = vec![0f32; groups * cg * 2];
        {
            let sums = std::sync::Mutex::new(&mut channel_sums);
            let gx_ptr = SharedSlice(gx.as_mut_ptr());
            parallel_for(groups, |range| {
                let mut local = vec![0f32; cg * 2];
                // The gradient at the norm's output: through SiLU when fused.
                let mut dy_norm = vec![0f32; if self.silu { cg * hw } else { 0 }];
                for i in range {
                    let g = i % self.groups;
                    let lo = i * cg * hw;
                    let src = &xs[lo..lo + cg * hw];
                    let (mean, rstd) = self.stats(src, hw);
                    let dy = if self.silu {
                        for ch in 0..cg {
                            let (wc, bc) = (ws[g * cg + ch], bs[g * cg + ch]);
                            let row = ch * hw..(ch + 1) * hw;
                            for ((d, &x), &dy) in dy_norm[row.clone()]
                                .iter_mut()
                                .zip(&src[row.clone()])
                                .zip(&gs[lo + row.start..lo + row.end])
                            {
                                let y = (x - mean) * rstd * wc + bc;
                                let s = sigmoid(y);
                                *d = dy * s * (1.0 + y * (1.0 - s));
                            }
                        }
                        &dy_norm[..]
                    } else {
                        &gs[lo..lo + cg * hw]
                    };
                    // Sums over the group of dxhat and dxhat * xhat (dxhat = dy * weight).
                    let (mut s1, mut s2) = (0f64, 0f64);
                    for ch in 0..cg {
                        let wc = ws[g * cg + ch];
                        // Σ dy and Σ dy·xhat = rstd · Σ dy·(x - mean).
                        let row = ch * hw..(ch + 1) * hw;
                        let (a, centred) =
                            lane_sums(&dy[row.clone()], &src[row], |d, x| (d, d * (x - mean)));
                        let bsum = centred * rstd as f64;
                        local[ch * 2] = a as f32;
                        local[ch * 2 + 1] = bsum as f32;
                        s1 += a * wc as f64;
                        s2 += bsum * wc as f64;
                    }
                    let n = (cg * hw) as f64;
                    let (m1, m2) = ((s1 / n) as f32, (s2 / n) as f32);
                    // SAFETY: each group writes only its own range lo..lo+cg*hw of gx.
                    let gx_group =
                        unsafe { std::slice::from_raw_parts_mut(gx_ptr.at(lo), cg * hw) };
                    for ch in 0..cg {
                        let wc = ws[g * cg + ch];
                        let row = ch * hw..(ch + 1) * hw;
                        for ((out, &x), &d) in gx_group[row.clone()]
                            .iter_mut()
                            .zip(&src[row.clone()])
                            .zip(&dy[row])
                        {
                            *out = rstd * (d * wc - m1 - (x - mean) * rstd * m2);
                        }
                    }
                    let mut sums = sums.lock().unwrap_or_else(|p| p.into_inner());
                    sums[i * cg * 2..(i + 1) * cg * 2].copy_from_slice(&local);
                }
            });
        }
        let mut gw = vec![0f32; c];
        let mut gb = vec![0f32; c];
        for i in 0..groups {
            let g = i % self.groups;
            for ch in 0..cg {
                gb[g * cg + ch] += channel_sums[(i * cg + ch) * 2];
                gw[g * cg + ch] += channel_sums[(i * cg + ch) * 2 + 1];
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), dev)?),
            Some(Tensor::from_vec(gw, w.shape(), dev)?),
            Some(Tensor::from_vec(gb, w.shape(), dev)?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Upsampling

/// Nearest-neighbour 2x upsampling of `[B,C,H,W]`, differentiable.
pub fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Upsample2x)?)
}

struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "upsample-nearest-2x-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let (b, c, h, w) = l.shape().dims4()?;
        let mut out = vec![0f32; b * c * h * w * 4];
        parallel_chunks(&mut out, b * c, |plane, dst| {
            let src = &x[plane * h * w..(plane + 1) * h * w];
            for y in 0..2 * h {
                for xx in 0..2 * w {
                    dst[y * 2 * w + xx] = src[(y / 2) * w + xx / 2];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, c, h, w) = x.dims4()?;
        let g = values(grad)?;
        let mut out = vec![0f32; b * c * h * w];
        parallel_chunks(&mut out, b * c, |plane, dst| {
            let src = &g[plane * h * w * 4..(plane + 1) * h * w * 4];
            for y in 0..h {
                for xx in 0..w {
                    let top = (2 * y) * 2 * w + 2 * xx;
                    let bottom = top + 2 * w;
                    dst[y * w + xx] = src[top] + src[top + 1] + src[bottom] + src[bottom + 1];
                }
            }
        });
        Ok(Some(Tensor::from_vec(out, (b, c, h, w), x.device())?))
    }
}

// ---------------------------------------------------------------------------------------------
// Per-channel bias

/// `x [B,C,...] + bias` with `bias` `[C]` or `[B,C]`, broadcast over the spatial positions:
/// convolution biases and the time embedding of a ResNet block. candle's broadcast add is
/// differentiated by a strided sum over batch and space, a large share of a training step on the
/// CPU; this sums each contiguous plane once. Off the CPU or for other dtypes: candle's.
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let per_sample = bias.rank() == 2;
    let expected = if per_sample {
        dims.get(..2).map(|d| d.to_vec())
    } else {
        dims.get(1..2).map(|d| d.to_vec())
    };
    if expected.as_deref() != Some(bias.dims()) {
        return Err(Error::invalid(format!(
            "channel bias {:?} does not fit {:?}",
            bias.dims(),
            dims
        )));
    }
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        let mut shape = bias.dims().to_vec();
        if !per_sample {
            shape.insert(0, 1);
        }
        shape.resize(dims.len(), 1);
        return Ok(x.broadcast_add(&bias.reshape(shape)?)?);
    }
    Ok(x.contiguous()?
        .apply_op2(&bias.contiguous()?, ChannelBias)?)
}

struct ChannelBias;

impl ChannelBias {
    /// (batch, channels, plane size) of `[B,C,...]`.
    fn dims(shape: &Shape) -> (usize, usize, usize) {
        let d = shape.dims();
        (d[0], d[1], d[2..].iter().product())
    }
}

impl candle_core::CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "channel-bias-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl)?;
        let bias = contiguous_f32(bs, bl)?;
        let (b, c, plane) = Self::dims(xl.shape());
        let mut out = vec![0f32; x.len()];
        parallel_chunks(&mut out, b * c, |i, dst| {
            let v = bias[i % bias.len()];
            for (d, s) in dst.iter_mut().zip(&x[i * plane..(i + 1) * plane]) {
                *d = s + v;
            }
        });
        debug_assert!(bias.len() == c || bias.len() == b * c);
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, c, plane) = Self::dims(grad.shape());
        let g = values(grad)?;
        let n = bias.elem_count();
        let mut sums = vec![0f32; n];
        for (i, chunk) in g.chunks(plane.max(1)).take(b * c).enumerate() {
            sums[i % n] += lane_sum(chunk) as f32;
        }
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(sums, bias.shape(), grad.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_of_zero_is_a_half() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}
