//! Taps: named points in a forward pass (diffusers module paths) whose outputs are captured.
//! The pass stops as soon as every requested tap has been seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

use crate::error::{Error, Result};

/// One tap a model offers: its name, channels, and how many input pixels one feature cell spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapInfo {
    pub name: String,
    pub channels: usize,
    /// Downscale relative to the UNet input (the latent for latent models).
    pub stride: usize,
    /// True for whole blocks (`down_blocks.i`, `mid_block`, `up_blocks.i`), what `--blocks all` means.
    pub block_level: bool,
}

/// Collects the outputs of the wanted taps during one forward pass.
pub struct TapRecorder<'a> {
    wanted: Vec<String>,
    captured: HashMap<String, Tensor>,
    cancel: Option<&'a AtomicBool>,
}

impl<'a> TapRecorder<'a> {
    pub fn new(wanted: &[String], cancel: Option<&'a AtomicBool>) -> Self {
        Self {
            wanted: wanted.to_vec(),
            captured: HashMap::new(),
            cancel,
        }
    }

    /// Offer the output of `name`; returns true once every wanted tap is captured (stop the pass).
    pub fn record(&mut self, name: &str, value: &Tensor) -> Result<bool> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        if self.wanted.iter().any(|w| w == name) {
            self.captured.insert(name.to_string(), value.clone());
        }
        Ok(self.done())
    }

    pub fn done(&self) -> bool {
        self.captured.len() == self.wanted.len()
    }

    pub fn into_captured(self) -> HashMap<String, Tensor> {
        self.captured
    }
}

/// Check requested names against what a model offers, listing the valid ones on a miss.
pub fn validate_taps(requested: &[String], offered: &[TapInfo]) -> Result<()> {
    for name in requested {
        if !offered.iter().any(|t| &t.name == name) {
            let blocks: Vec<&str> = offered
                .iter()
                .filter(|t| t.block_level)
                .map(|t| t.name.as_str())
                .collect();
            let all: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown tap `{name}`. Block-level taps: {}. All taps: {}",
                blocks.join(", "),
                all.join(", ")
            )));
        }
    }
    if requested.is_empty() {
        return Err(Error::invalid("no tap requested"));
    }
    Ok(())
}

/// Record and return from the enclosing forward function once every tap is in.
macro_rules! tap {
    ($rec:expr, $name:expr, $value:expr) => {
        if $rec.record(&$name, &$value)? {
            return Ok(());
        }
    };
}
pub(crate) use tap;
