//! The noise schedule: `alphas_cumprod` from a diffusers `scheduler_config.json`, in float32 as
//! diffusers computes it, and the forward noising `z_t = sqrt(ab) z + sqrt(1-ab) eps`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::config::read_json;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
}

fn default_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_schedule() -> String {
    "linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}

impl SchedulerConfig {
    /// DDPM's default (pixel models without a scheduler folder).
    pub fn ddpm_linear() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
        }
    }

    /// Stable Diffusion's schedule (UNets found without a scheduler folder).
    pub fn stable_diffusion() -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            ..Self::ddpm_linear()
        }
    }
}

#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    pub config: SchedulerConfig,
    pub alphas_cumprod: Vec<f32>,
}

/// torch.linspace in float32: the first half counts up from `start`, the second half down from `end`.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

impl NoiseSchedule {
    pub fn load(path: &Path) -> Result<Self> {
        let config: SchedulerConfig = read_json(path)?;
        Self::new(config).map_err(|e| Error::file(path, e.to_string()))
    }

    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let n = config.num_train_timesteps;
        if n == 0 {
            return Err(Error::invalid("num_train_timesteps is 0"));
        }
        let betas: Vec<f32> = if let Some(b) = &config.trained_betas {
            b.iter().map(|&v| v as f32).collect()
        } else {
            match config.beta_schedule.as_str() {
                "linear" => linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
                "scaled_linear" => linspace_f32(
                    (config.beta_start.sqrt()) as f32,
                    (config.beta_end.sqrt()) as f32,
                    n,
                )
                .into_iter()
                .map(|b| b * b)
                .collect(),
                "squaredcos_cap_v2" => {
                    let alpha_bar = |t: f64| {
                        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                            .cos()
                            .powi(2)
                    };
                    (0..n)
                        .map(|i| {
                            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                        })
                        .collect()
                }
                other => {
                    return Err(Error::unsupported(format!(
                    "beta_schedule `{other}` (supported: linear, scaled_linear, squaredcos_cap_v2)"
                )))
                }
            }
        };
        if betas.len() != n {
            return Err(Error::invalid(format!(
                "trained_betas has {} values, num_train_timesteps is {n}",
                betas.len()
            )));
        }
        let mut acc = 1f32;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(Self {
            config,
            alphas_cumprod,
        })
    }

    pub fn steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn check_timestep(&self, t: usize) -> Result<()> {
        if t >= self.steps() {
            return Err(Error::invalid(format!(
                "t = {t} is outside the schedule: this model's timesteps are 0..={}",
                self.steps() - 1
            )));
        }
        Ok(())
    }

    /// Noise level at t: alpha-bar.
    pub fn alpha_bar(&self, t: usize) -> Result<f32> {
        self.check_timestep(t)?;
        Ok(self.alphas_cumprod[t])
    }

    /// Signal-to-noise ratio at t: alpha-bar / (1 - alpha-bar).
    pub fn snr(&self, t: usize) -> Result<f32> {
        let ab = self.alpha_bar(t)?;
        Ok(ab / (1.0 - ab))
    }

    /// diffusers' `add_noise`: `sqrt(ab[t]) * z + sqrt(1 - ab[t]) * noise`, in the latent's
    /// dtype as diffusers computes it there: `ab[t]` rounded to that dtype first, each
    /// coefficient and each product rounded to it (in float32 nothing rounds but the products).
    /// `noise` is cast to the latent's dtype; `z` `[1,...]` broadcasts over a batch of noise.
    pub fn add_noise(&self, z: &Tensor, noise: &Tensor, t: usize) -> Result<Tensor> {
        let dtype = z.dtype();
        let ab = self.alpha_bar(t)?;
        let (signal, sigma) = if dtype == DType::F32 {
            (ab.sqrt() as f64, (1.0 - ab).sqrt() as f64)
        } else {
            let round = |v: f32| -> Result<f32> {
                Ok(Tensor::new(v, &Device::Cpu)?
                    .to_dtype(dtype)?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?)
            };
            let ab = round(ab)?;
            (
                round(ab.sqrt())? as f64,
                round(round(1.0 - ab)?.sqrt())? as f64,
            )
        };
        let noise = noise.to_dtype(dtype)?;
        let scaled = (z * signal)?;
        let scaled = if scaled.dims() != noise.dims() {
            scaled.broadcast_as(noise.shape())?
        } else {
            scaled
        };
        Ok((scaled + (noise * sigma)?)?)
    }
}
