//! Nearest-neighbour upsampling.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::cpu::{contiguous_f32, values};
use crate::error::Result;
use crate::parallel::parallel_chunks;

/// `x` `[B,C,H,W]` upsampled to `size` (height, width) by repeating the nearest pixel. The
/// common case, 2x of a float32 CPU tensor, is one pass (differentiable: candle's backward of
/// its upsampling is a slow grouped convolution); other sizes, dtypes and devices use candle's.
pub fn upsample_nearest(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let doubling = size == (2 * h, 2 * w);
    if doubling && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        let x = x.contiguous()?;
        return Ok(if x.track_op() {
            x.apply_op1(Upsample2x)?
        } else {
            x.apply_op1_no_bwd(&Upsample2x)?
        });
    }
    Ok(x.upsample_nearest2d(size.0, size.1)?)
}

struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "upsample-nearest-2x"
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
