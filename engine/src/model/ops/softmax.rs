//! Softmax over the last dimension on the CPU with a vectorised exponential. Attention spends
//! most of its non-matrix time here: SD's 64x64 level scores 4096 keys per query, and the scalar
//! `expf` of candle's softmax took about a tenth of a UNet pass.
//!
//! The exponential is [`super::vector_exp::exp`], within 2 ulp; sums run in 8 lanes. Half
//! precision on the CPU is widened to float32 and rounded once at the end (as PyTorch computes
//! it). Other devices (candle's CUDA softmax accumulates in float32), and anything that needs a
//! gradient, use candle's softmax.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};

use super::vector_exp::exp;

/// `softmax(x, -1)`.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let float = matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16);
    if x.device().is_cpu() && float && !x.track_op() {
        super::cpu::in_f32(x, |x| x.contiguous()?.apply_op1_no_bwd(&FastSoftmax))
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
