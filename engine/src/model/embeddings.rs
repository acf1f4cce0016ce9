//! Sinusoidal timestep features and the time-embedding MLP, as diffusers computes them in float32.

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;

use super::layers::linear;
use super::weights::Weights;
use crate::error::Result;

/// diffusers' `get_timestep_embedding` for a batch of timesteps `[B, dim]`, computed in f32 in the same order.
pub fn timestep_features(
    timesteps: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let log_max_period = (10000f64).ln() as f32;
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-log_max_period * i as f32 / denom).exp())
        .collect();
    let mut rows = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args = freqs.iter().map(|f| t as f32 * f);
        let sin = args.clone().map(f32::sin);
        let cos = args.map(f32::cos);
        if flip_sin_to_cos {
            rows.extend(cos.chain(sin));
        } else {
            rows.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            rows.push(0.0);
        }
    }
    Ok(Tensor::from_vec(rows, (timesteps.len(), dim), device)?)
}

/// `TimestepEmbedding`: linear, SiLU, linear.
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(w: &Weights, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(&w.pp("linear_1"), c_in, c_out, true)?,
            linear_2: linear(&w.pp("linear_2"), c_out, c_out, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)?)
    }

    /// The width of its input.
    pub fn input_dim(&self) -> usize {
        self.linear_1.weight().dim(1).unwrap_or(0)
    }
}

/// SDXL's added embedding (`addition_embed_type: text_time`): each of the six time ids turned into
/// sinusoidal features as timesteps are (`add_time_proj`), joined after the pooled text embedding,
/// through a `TimestepEmbedding` (`add_embedding`); the result is added to the time embedding.
pub struct TextTimeEmbedding {
    time_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    embedding: TimestepEmbedding,
}

impl TextTimeEmbedding {
    pub fn new(
        w: &Weights,
        (time_dim, input_dim, output_dim): (usize, usize, usize),
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        Ok(Self {
            time_dim,
            flip_sin_to_cos,
            freq_shift,
            embedding: TimestepEmbedding::new(&w.pp("add_embedding"), input_dim, output_dim)?,
        })
    }

    /// The width of the pooled text embedding this UNet takes.
    pub fn text_dim(&self) -> usize {
        self.embedding.input_dim() - 6 * self.time_dim
    }

    /// `text_embeds`: `[1 or B, P]`; `time_ids`: six numbers; -> `[batch, T]` in `dtype`.
    pub fn forward(
        &self,
        text_embeds: &Tensor,
        time_ids: &[f64; 6],
        batch: usize,
        dtype: candle_core::DType,
    ) -> Result<Tensor> {
        let device = text_embeds.device();
        let times = timestep_features(
            time_ids,
            self.time_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            device,
        )?
        .reshape((1, 6 * self.time_dim))?;
        let text = text_embeds.to_dtype(candle_core::DType::F32)?;
        let joined = Tensor::cat(&[&text, &times], 1)?.to_dtype(dtype)?;
        let joined = match joined.dim(0)? {
            1 if batch > 1 => joined.repeat((batch, 1))?,
            _ => joined,
        };
        self.embedding.forward(&joined)
    }
}
