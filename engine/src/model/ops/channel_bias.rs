//! A per-channel bias added over the spatial positions: convolution biases and the time
//! embedding of a ResNet block.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::cpu::{contiguous_f32, lane_sum, values};
use crate::error::{Error, Result};
use crate::parallel::parallel_chunks;

/// `x [B,C,...] + bias` with `bias` `[C]` or `[B,C]`, broadcast over the spatial positions.
/// candle's broadcast add is differentiated by a strided sum over batch and space, a large share
/// of a training step on the CPU; this sums each contiguous plane once. Off the CPU or for other
/// dtypes: candle's broadcast add (one kernel on a GPU).
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
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    if !f32_cpu(x) || !f32_cpu(bias) {
        let mut shape = bias.dims().to_vec();
        if !per_sample {
            shape.insert(0, 1);
        }
        shape.resize(dims.len(), 1);
        let bias = bias.to_dtype(x.dtype())?.reshape(shape)?;
        return Ok(x.broadcast_add(&bias)?);
    }
    let (x, bias) = (x.contiguous()?, bias.contiguous()?);
    Ok(if x.track_op() || bias.track_op() {
        x.apply_op2(&bias, ChannelBias)?
    } else {
        x.apply_op2_no_bwd(&bias, &ChannelBias)?
    })
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
