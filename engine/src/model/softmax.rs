//! Softmax over the last dimension on the CPU with a vectorised exponential. Attention spends
//! most of its non-matrix time here: SD's 64x64 level scores 4096 keys per query, and the scalar
//! `expf` of candle's softmax took about a tenth of a UNet pass.
//!
//! The exponential is Cephes' `expf` scheme (exp(x) = 2^n * exp(r), |r| <= ln 2 / 2, a degree-6
//! polynomial for exp(r)), within 2 ulp of the exact value; sums run in 8 lanes. Other devices and
//! dtypes, and anything that needs a gradient, use candle's softmax.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};

/// `softmax(x, -1)`.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && !x.track_op() {
        x.contiguous()?.apply_op1_no_bwd(&FastSoftmax)
    } else if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

struct FastSoftmax;

impl CustomOp1 for FastSoftmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim-fast-exp"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("softmax: input is not contiguous".into()))?;
        let src = &storage.as_slice::<f32>()?[start..end];
        let dims = layout.shape().dims();
        let row = dims.last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        let rows = src.len() / row;
        crate::parallel::parallel_chunks(&mut dst, rows, |i, out| {
            softmax_row(&src[i * row..(i + 1) * row], out)
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

fn softmax_row(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { softmax_row_avx2(src, dst) };
        return;
    }
    softmax_row_body(src, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(src: &[f32], dst: &mut [f32]) {
    softmax_row_body(src, dst);
}

const LANES: usize = 8;

#[inline(always)]
fn softmax_row_body(src: &[f32], dst: &mut [f32]) {
    // Plain loops over whole rows: the shapes LLVM's loop vectoriser handles.
    let max = lane_reduce(src, f32::NEG_INFINITY, f32::max);
    for (d, s) in dst.iter_mut().zip(src) {
        *d = exp(*s - max);
    }
    let inverse = 1.0 / lane_reduce(dst, 0.0, |a, b| a + b);
    for d in dst.iter_mut() {
        *d *= inverse;
    }
}

/// `op` folded over `values` in 8 independent lanes, then across them.
#[inline(always)]
fn lane_reduce(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    let (chunks, rest) = values.as_chunks::<LANES>();
    for c in chunks {
        lanes = std::array::from_fn(|l| op(lanes[l], c[l]));
    }
    rest.iter()
        .fold(lanes.into_iter().fold(init, &op), |a, &v| op(a, v))
}

/// e^x for x <= 0 (the inputs of a softmax after subtracting the maximum); 0 below the smallest
/// normal result.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let rounded = clamped * LOG2E + ROUND;
    let n = rounded - ROUND;
    // n sits in the low bits of `rounded`: read it there rather than by a float-to-int cast,
    // whose saturating semantics keep the loop from vectorising.
    let n_int = rounded.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = (p * r2 + r) + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let exact = (x as f64).exp();
            let rel = ((exp(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
            x += 1.3e-3;
        }
        // 2 ulp of float32 at worst is 2^-22 relative.
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
    }

    #[test]
    fn matches_candles_softmax() {
        let x = crate::features::recipe::seeded_normal(3, &[3, 5, 37], &Device::Cpu).unwrap();
        let x = (x * 8.0).unwrap();
        let ours = softmax_last_dim(&x).unwrap();
        let theirs = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let diff = crate::test_util::max_abs_diff(&ours, &theirs);
        assert!(diff < 1e-6, "max diff {diff}");
    }
}
