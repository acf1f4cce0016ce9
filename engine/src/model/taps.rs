//! Taps: named points in a forward pass (diffusers module paths) whose outputs are captured,
//! and the attention maps of named attention modules ([`super::attention_probs`]). The pass stops
//! as soon as every requested tap and attention map has been seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

use super::attention_probs::{AttentionRecorder, AttentionRequest, RecordedAttention};
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
    /// For a transformer (`…attentions.j` of a text-conditioned UNet): how many transformer blocks
    /// it stacks (SDXL: up to 10).
    pub transformer_depth: Option<usize>,
}

/// Collects the outputs of the wanted taps, and the wanted attention maps, during one forward
/// pass.
pub struct TapRecorder<'a> {
    wanted: Vec<String>,
    captured: HashMap<String, Tensor>,
    cancel: Option<&'a AtomicBool>,
    attention: AttentionRecorder,
}

impl<'a> TapRecorder<'a> {
    pub fn new(wanted: &[String], cancel: Option<&'a AtomicBool>) -> Self {
        Self {
            wanted: wanted.to_vec(),
            captured: HashMap::new(),
            cancel,
            attention: AttentionRecorder::default(),
        }
    }

    /// Also record the attention maps of `request`.
    pub fn with_attention(mut self, request: &AttentionRequest) -> Self {
        self.attention = AttentionRecorder::new(request);
        self
    }

    /// What the attention modules of the pass record into.
    pub fn attention(&mut self) -> &mut AttentionRecorder {
        &mut self.attention
    }

    /// Offer the output of `name`; returns true once every wanted tap is captured (stop the pass).
    /// A recorder that wants nothing never stops a pass.
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
        let wants_anything = !self.wanted.is_empty() || self.attention.wants_anything();
        wants_anything && self.captured.len() == self.wanted.len() && self.attention.done()
    }

    pub fn into_captured(self) -> HashMap<String, Tensor> {
        self.captured
    }

    /// The taps and the attention maps captured.
    pub fn into_parts(self) -> (HashMap<String, Tensor>, HashMap<String, RecordedAttention>) {
        (self.captured, self.attention.into_captured())
    }
}

/// The block a tap or an attention module belongs to: `up_blocks.1.resnets.2` -> `up_blocks.1`.
pub fn block_of(tap: &str) -> &str {
    let mut parts = tap.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(kind @ ("down_blocks" | "up_blocks")), Some(_)) => {
            let end = kind.len()
                + 1
                + tap[kind.len() + 1..]
                    .find('.')
                    .unwrap_or(tap.len() - kind.len() - 1);
            &tap[..end]
        }
        (Some("mid_block"), _) => "mid_block",
        _ => tap,
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

/// Record, and return `Ok(None)` from the enclosing forward function once every tap is in.
macro_rules! tap {
    ($rec:expr, $name:expr, $value:expr) => {
        if $rec.record(&$name, &$value)? {
            return Ok(None);
        }
    };
}
pub(crate) use tap;

#[cfg(test)]
mod tests {
    use super::block_of;

    #[test]
    fn blocks_of_taps() {
        assert_eq!(block_of("up_blocks.1.resnets.2"), "up_blocks.1");
        assert_eq!(block_of("up_blocks.1"), "up_blocks.1");
        assert_eq!(block_of("down_blocks.0.downsamplers.0"), "down_blocks.0");
        assert_eq!(block_of("mid_block.attentions.0"), "mid_block");
        assert_eq!(block_of("conv_in"), "conv_in");
        assert_eq!(
            block_of("up_blocks.2.attentions.0.transformer_blocks.0.attn2"),
            "up_blocks.2"
        );
    }
}
