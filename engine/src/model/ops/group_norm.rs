//! GroupNorm, optionally followed by SiLU, as one kernel per device.
//!
//! Why: candle-nn's GroupNorm is seven tensor operations, each allocating a tensor the size of its
//! input (plus one more for the SiLU that usually follows), and its backward differentiates
//! through all of them. On the VAE's 128 x 512 x 512 maps that is ~1 GB of fresh memory per norm.
//! Here each group's mean and variance are summed once (16 float32 lanes totalled in float64 on
//! the CPU; float32 tree sums on a GPU) and the normalised, scaled, shifted (and activated) values
//! are written once. PyTorch's formula: biased variance, eps inside the square root, SiLU as
//! `x * sigmoid(x)`. The CPU kernel has a backward pass for training.
//!
//! Half precision: statistics and arithmetic in float32, the output rounded once (as PyTorch's
//! CPU and CUDA group norms do).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Shape, Tensor};

use super::cpu::{candle_err, contiguous_f32, lane_sum, lane_sums, values};
use super::vector_exp;
use crate::error::{Error, Result};
use crate::parallel::{parallel_chunks, parallel_for, SharedSlice};

pub struct GroupNorm {
    /// In the model's dtype (or float32 on the CPU, where the kernel computes in float32).
    weight: Tensor,
    bias: Tensor,
    channels: usize,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::invalid(format!(
                "GroupNorm: {groups} groups do not divide {channels} channels"
            )));
        }
        let widen = |t: Tensor| -> Result<Tensor> {
            Ok(if t.device().is_cpu() && !t.is_variable() {
                t.to_dtype(DType::F32)?
            } else {
                t
            })
        };
        Ok(Self {
            weight: widen(weight)?,
            bias: widen(bias)?,
            channels,
            groups,
            eps,
        })
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        let (w, b, g, eps) = (&self.weight, &self.bias, self.groups, self.eps);
        if x.device().is_cpu() {
            return super::cpu::in_f32(x, |x| {
                group_norm(x, w, b, g, eps, silu).map_err(|e| candle_err(e.to_string()))
            });
        }
        // The CUDA kernel has no backward: training on a GPU takes candle's composed ops.
        #[cfg(feature = "cuda")]
        if x.device().is_cuda()
            && x.rank() >= 3
            && super::cuda::enabled()
            && !(x.track_op() || w.track_op() || b.track_op())
        {
            return super::cuda::group_norm(x, w, b, g, eps, silu);
        }
        let normed =
            candle_nn::GroupNorm::new(w.clone(), b.clone(), self.channels, g, eps)?.forward(x)?;
        if silu {
            normed.silu()
        } else {
            Ok(normed)
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, false)
    }
}

/// `GroupNorm(groups, eps)` of a float32 CPU tensor `[B,C,...]` with a per-channel affine
/// `weight`, `bias`, followed by SiLU when `silu`; differentiable in all three inputs when any of
/// them tracks gradients.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    if groups == 0 || !c.is_multiple_of(groups) || weight.dims() != [c] || bias.dims() != [c] {
        return Err(Error::invalid(format!(
            "GroupNorm: {groups} groups, weight {:?} and bias {:?} do not fit {c} channels",
            weight.dims(),
            bias.dims()
        )));
    }
    let (x, weight, bias) = (x.contiguous()?, weight.contiguous()?, bias.contiguous()?);
    let op = GroupNormOp { groups, eps, silu };
    Ok(if x.track_op() || weight.track_op() || bias.track_op() {
        x.apply_op3(&weight, &bias, op)?
    } else {
        x.apply_op3_no_bwd(&weight, &bias, &op)?
    })
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
        let mean = v.chunks(hw.max(1)).map(lane_sum).sum::<f64>() / n;
        let m = mean as f32;
        let var = v
            .chunks(hw.max(1))
            .map(|row| lane_sums(row, row, |a, _| ((a - m) * (a - m), 0.0)).0)
            .sum::<f64>()
            / n;
        (m, (1.0 / (var + self.eps).sqrt()) as f32)
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        if self.silu {
            "group-norm-silu"
        } else {
            "group-norm"
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
        if x.is_empty() {
            return Ok((CpuStorage::F32(out), xl.shape().clone()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn sigmoid_of_zero_is_a_half() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        crate::features::recipe::seeded_normal(seed, shape, &Device::Cpu).unwrap()
    }

    /// Against candle's composed GroupNorm (and SiLU), on values far from zero mean.
    #[test]
    fn matches_candles_group_norm() {
        let x = ((random(&[2, 6, 5, 7], 1) * 3.0).unwrap() + 10.0).unwrap();
        let weight = (random(&[6], 2) + 1.0).unwrap();
        let bias = random(&[6], 3);
        let ours = GroupNorm::new(weight.clone(), bias.clone(), 6, 3, 1e-6).unwrap();
        let theirs = candle_nn::GroupNorm::new(weight, bias, 6, 3, 1e-6).unwrap();
        let want = theirs.forward(&x).unwrap();
        let d = max_abs_diff(&ours.forward(&x).unwrap(), &want);
        assert!(d < 1e-5, "{d}");
        let d = max_abs_diff(&ours.forward_silu(&x).unwrap(), &want.silu().unwrap());
        assert!(d < 1e-5, "{d}");
    }

    /// Half precision on the CPU: float32 statistics and arithmetic, one rounding at the end.
    #[test]
    fn half_precision_rounds_the_float32_result() {
        let x = random(&[1, 4, 3, 5], 4);
        let weight = (random(&[4], 5) + 1.0).unwrap();
        let bias = random(&[4], 6);
        for dtype in [DType::F16, DType::BF16] {
            let half = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let wide = |t: &Tensor| half(t).to_dtype(DType::F32).unwrap();
            let ours = GroupNorm::new(half(&weight), half(&bias), 4, 2, 1e-5)
                .unwrap()
                .forward_silu(&half(&x))
                .unwrap();
            assert_eq!(ours.dtype(), dtype);
            let want = GroupNorm::new(wide(&weight), wide(&bias), 4, 2, 1e-5)
                .unwrap()
                .forward_silu(&wide(&x))
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(max_abs_diff(&ours, &want), 0.0, "{dtype:?}");
        }
    }
}
