//! AdamW (Loshchilov & Hutter, as PyTorch's `torch.optim.AdamW` computes it) over named variables,
//! with its moments exposed so a checkpoint can save and restore them exactly.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults except the weight decay, which is diffusers' training-script default.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-6,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Clone)]
pub struct Moments {
    pub m: Tensor,
    pub v: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates taken so far (PyTorch's `step`, used for bias correction).
    pub steps: usize,
    pub moments: BTreeMap<String, Moments>,
}

impl AdamW {
    /// A fresh optimizer with zero moments for each variable.
    pub fn new(config: AdamWConfig, params: &[(String, Var)]) -> Result<Self> {
        let mut moments = BTreeMap::new();
        for (name, var) in params {
            let zeros = var.as_tensor().zeros_like()?;
            moments.insert(
                name.clone(),
                Moments {
                    m: zeros.clone(),
                    v: zeros,
                },
            );
        }
        Ok(Self {
            config,
            steps: 0,
            moments,
        })
    }

    /// One update at learning rate `lr`, with the gradients scaled by `grad_scale` (for clipping).
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        for (name, var) in params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let grad = if grad_scale != 1.0 {
                (grad * grad_scale)?
            } else {
                grad.clone()
            };
            let state = self.moments.get_mut(name).ok_or_else(|| {
                Error::invalid(format!("the optimizer has no moments for `{name}`"))
            })?;
            let m = ((&state.m * c.beta1)? + (&grad * (1.0 - c.beta1))?)?;
            let v = ((&state.v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let decayed = (var.as_tensor().detach() * (1.0 - lr * c.weight_decay))?;
            let denom = ((v.clone() / bias2)?.sqrt()? + c.eps)?;
            let update = ((m.clone() / bias1)? / denom)?;
            var.set(&(decayed - (update * lr)?)?)?;
            state.m = m;
            state.v = v;
        }
        Ok(())
    }
}

/// The global L2 norm of all gradients.
pub fn gradient_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut total = 0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    Ok(total.sqrt())
}

/// Exponential moving average of the weights, with diffusers' `EMAModel` warm-up: the first update
/// copies the weights, update n+1 decays by `min(decay, (1 + n) / (10 + n))`, so the average does
/// not stay stuck near the random init early on.
pub struct Ema {
    pub decay: f64,
    pub weights: BTreeMap<String, Tensor>,
}

impl Ema {
    pub fn new(decay: f64, params: &[(String, Var)]) -> Result<Self> {
        let mut weights = BTreeMap::new();
        for (name, var) in params {
            weights.insert(name.clone(), var.as_tensor().copy()?.detach());
        }
        Ok(Self { decay, weights })
    }

    /// Fold in the current weights after optimizer update number `update` (1-based).
    pub fn update(&mut self, params: &[(String, Var)], update: usize) -> Result<()> {
        let n = update.saturating_sub(1) as f64;
        let decay = if n == 0.0 {
            0.0
        } else {
            self.decay.min((1.0 + n) / (10.0 + n))
        };
        for (name, var) in params {
            let avg = self.weights.get_mut(name).ok_or_else(|| {
                Error::invalid(format!("the weight average has no entry for `{name}`"))
            })?;
            // Detached: an average that tracked the variable would keep every earlier average
            // alive through its autograd history.
            *avg = ((&*avg * decay)? + (var.as_tensor().detach() * (1.0 - decay))?)?;
        }
        Ok(())
    }
}
