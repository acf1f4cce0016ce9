//! The settings of a training run: the architecture, the noise schedule and the optimiser's
//! hyper-parameters. Stored in every checkpoint, so checkpoints and the trainer both read it.

use serde::{Deserialize, Serialize};

use super::adamw::AdamWConfig;
use super::arch::UNetArchitecture;
use crate::error::{Error, Result};
use crate::model::schedule::{NoiseSchedule, SchedulerConfig};

/// The settings of a run, stored in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub arch: UNetArchitecture,
    /// `linear` or `squaredcos_cap_v2` (1000 steps, betas 1e-4..0.02 for linear).
    pub beta_schedule: String,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Steps of linear learning-rate warm-up from 0.
    pub warmup_steps: usize,
    pub adamw: AdamWConfig,
    /// Gradients whose global norm exceeds this are scaled down to it.
    pub max_grad_norm: f64,
    /// EMA decay of the exported weights; None exports the raw weights.
    pub ema_decay: Option<f64>,
    pub seed: u64,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.arch.validate()?;
        if self.batch_size == 0 {
            return Err(Error::invalid("--batch must be at least 1"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::invalid(format!(
                "--lr {} must be a positive number",
                self.learning_rate
            )));
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::invalid(format!(
                    "--ema {d} must be in [0, 1) (0 turns it off)"
                )));
            }
        }
        self.scheduler_config()
            .and_then(NoiseSchedule::new)
            .map(|_| ())
    }

    pub fn scheduler_config(&self) -> Result<SchedulerConfig> {
        match self.beta_schedule.as_str() {
            "linear" | "squaredcos_cap_v2" => Ok(SchedulerConfig {
                beta_schedule: self.beta_schedule.clone(),
                ..SchedulerConfig::ddpm_linear()
            }),
            other => Err(Error::invalid(format!(
                "--beta-schedule `{other}` (use linear or squaredcos_cap_v2)"
            ))),
        }
    }

    /// The learning rate at (0-based) step `step`.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            self.learning_rate
        }
    }
}
