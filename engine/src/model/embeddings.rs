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
}
