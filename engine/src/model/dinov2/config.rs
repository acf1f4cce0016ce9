//! The `config.json` of a transformers `Dinov2Model` or `Dinov2WithRegistersModel`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::config::read_json;

fn default_patch() -> usize {
    14
}
fn default_image() -> usize {
    518
}
fn default_eps() -> f64 {
    1e-6
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_true() -> bool {
    true
}
fn default_three() -> usize {
    3
}
fn default_gelu() -> String {
    "gelu".into()
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Dinov2Config {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// The training resolution: the position embeddings cover `(image_size / patch_size)^2` patches.
    #[serde(default = "default_image")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_three")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    /// Register tokens (`Dinov2WithRegistersModel`), 0 without.
    #[serde(default)]
    pub num_register_tokens: usize,
}

impl Dinov2Config {
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config
            .check()
            .map_err(|e| Error::file(path, e.to_string()))?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if !matches!(self.model_type.as_str(), "dinov2" | "dinov2_with_registers") {
            return Err(Error::unsupported(format!(
                "model_type `{}` (supported: dinov2, dinov2_with_registers)",
                self.model_type
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::unsupported(format!(
                "hidden_act `{}` (DINOv2 uses gelu)",
                self.hidden_act
            )));
        }
        if self.num_channels != 3 {
            return Err(Error::unsupported(format!(
                "num_channels {} (RGB images have 3)",
                self.num_channels
            )));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return Err(Error::invalid(format!(
                "patch_size {} does not fit image_size {}",
                self.patch_size, self.image_size
            )));
        }
        Ok(())
    }

    /// Whether transformers interpolates the position embeddings with antialiasing (the registers
    /// model does, `Dinov2Model` does not).
    pub fn antialiased_positions(&self) -> bool {
        self.model_type == "dinov2_with_registers"
    }

    /// Patches per side of the training resolution.
    pub fn position_grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// The MLP's hidden width: `hidden * mlp_ratio`, or SwiGLU's two thirds of it rounded up to 8.
    pub fn mlp_hidden(&self) -> usize {
        let hidden = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            (hidden * 2 / 3).div_ceil(8) * 8
        } else {
            hidden
        }
    }
}
