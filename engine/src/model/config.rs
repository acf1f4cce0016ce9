//! The `config.json` files of diffusers components, parsed with diffusers' defaults.
//! Values we do not support are rejected here, by name, before any weight is read.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result, WithPath};

/// A config value that diffusers accepts as one number for every level or as a list per level.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerLevel {
    One(usize),
    Each(Vec<usize>),
}

impl PerLevel {
    pub fn for_levels(&self, levels: usize, key: &str) -> Result<Vec<usize>> {
        match self {
            PerLevel::One(v) => Ok(vec![*v; levels]),
            PerLevel::Each(v) if v.len() == levels => Ok(v.clone()),
            PerLevel::Each(v) => Err(Error::invalid(format!(
                "`{key}` has {} entries but the model has {levels} levels",
                v.len()
            ))),
        }
    }
}

/// `transformer_layers_per_block`: one depth for every transformer, one per level, or one per layer of
/// each level (SSD-1B), as diffusers accepts them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TransformerDepths {
    One(usize),
    Each(Vec<PerLevel>),
}

impl TransformerDepths {
    /// The entry of each of `levels` levels (a number, or a list over its layers).
    pub fn for_levels(&self, levels: usize, key: &str) -> Result<Vec<PerLevel>> {
        match self {
            TransformerDepths::One(v) => Ok(vec![PerLevel::One(*v); levels]),
            TransformerDepths::Each(v) if v.len() == levels => Ok(v.clone()),
            TransformerDepths::Each(v) => Err(Error::invalid(format!(
                "`{key}` has {} entries but the model has {levels} levels",
                v.len()
            ))),
        }
    }
}

impl PerLevel {
    /// The depth of the transformer after resnet `layer` of a level with `layers` of them: the one
    /// number, or that layer's entry of the list (which must have an entry for every layer).
    pub fn for_layer(&self, layer: usize, layers: usize, key: &str) -> Result<usize> {
        match self {
            PerLevel::One(v) => Ok(*v),
            PerLevel::Each(v) if v.len() >= layers => Ok(v[layer]),
            PerLevel::Each(v) => Err(Error::invalid(format!(
                "`{key}` lists {} depths for a block of {layers} layers",
                v.len()
            ))),
        }
    }
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))
}

fn default_true() -> bool {
    true
}
fn default_one_f64() -> f64 {
    1.0
}
fn default_silu() -> String {
    "silu".into()
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_one() -> usize {
    1
}
fn default_two() -> usize {
    2
}
fn default_positional() -> String {
    "positional".into()
}
fn default_time_shift() -> String {
    "default".into()
}

/// `UNet2DConditionModel` (Stable Diffusion 1.x/2.x and relatives).
#[derive(Clone, Debug, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default = "default_four")]
    pub in_channels: usize,
    #[serde(default = "default_four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub mid_block_type: Option<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerLevel,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: PerLevel,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: TransformerDepths,
    /// The depths of the up blocks' transformers, in up-block order (SSD-1B); by default the down
    /// blocks' reversed.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<PerLevel>>,
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerLevel,
    #[serde(default)]
    pub num_attention_heads: Option<PerLevel>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// SDXL: the width of each time id's Fourier features (256).
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: the added embedding's input, the pooled text embedding and the time ids' features (2816).
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default = "default_time_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default = "default_three")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub attention_type: Option<String>,
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
}

fn default_four() -> usize {
    4
}
fn default_three() -> usize {
    3
}
fn default_layers_per_block() -> PerLevel {
    PerLevel::One(2)
}
fn default_cross_attention_dim() -> PerLevel {
    PerLevel::One(1280)
}
fn default_transformer_layers() -> TransformerDepths {
    TransformerDepths::One(1)
}
fn default_attention_head_dim() -> PerLevel {
    PerLevel::One(8)
}

impl UNet2DConditionConfig {
    /// Reject what the engine's UNet does not implement, naming the key and value.
    pub fn check_supported(&self) -> Result<()> {
        let known_down = ["CrossAttnDownBlock2D", "DownBlock2D"];
        let known_up = ["CrossAttnUpBlock2D", "UpBlock2D"];
        check_block_types("down_block_types", &self.down_block_types, &known_down)?;
        check_block_types("up_block_types", &self.up_block_types, &known_up)?;
        if let Some(mid) = &self.mid_block_type {
            if mid != "UNetMidBlock2DCrossAttn" {
                return Err(Error::unsupported(format!(
                    "mid_block_type `{mid}` (supported: UNetMidBlock2DCrossAttn)"
                )));
            }
        }
        check_value("act_fn", &self.act_fn, &["silu"])?;
        check_value(
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
            &["default"],
        )?;
        check_value(
            "time_embedding_type",
            &self.time_embedding_type,
            &["positional"],
        )?;
        if let Some(v) = &self.class_embed_type {
            return Err(Error::unsupported(format!(
                "class_embed_type `{v}` (class-conditional UNets)"
            )));
        }
        if let Some(v) = &self.addition_embed_type {
            check_value("addition_embed_type", v, &["text_time"])?;
            if self.addition_time_embed_dim.is_none()
                || self.projection_class_embeddings_input_dim.is_none()
            {
                return Err(Error::invalid(
                    "addition_embed_type `text_time` needs addition_time_embed_dim and projection_class_embeddings_input_dim",
                ));
            }
        }
        if self.dual_cross_attention {
            return Err(Error::unsupported("dual_cross_attention"));
        }
        if !matches!(
            self.only_cross_attention,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        ) {
            return Err(Error::unsupported("only_cross_attention"));
        }
        if self.time_cond_proj_dim.is_some() {
            return Err(Error::unsupported(
                "time_cond_proj_dim (LCM-distilled UNets)",
            ));
        }
        if let Some(v) = &self.timestep_post_act {
            return Err(Error::unsupported(format!("timestep_post_act `{v}`")));
        }
        if self.encoder_hid_dim.is_some() {
            return Err(Error::unsupported("encoder_hid_dim"));
        }
        if let Some(v) = &self.attention_type {
            check_value("attention_type", v, &["default"])?;
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return Err(Error::unsupported("even conv_in_kernel/conv_out_kernel"));
        }
        check_levels(
            &self.block_out_channels,
            self.down_block_types.len(),
            self.up_block_types.len(),
        )
    }
}

/// `UNet2DModel` (pixel-space DDPM, e.g. google/ddpm-*).
#[derive(Clone, Debug, Deserialize)]
pub struct UNet2DConfig {
    #[serde(default = "default_three")]
    pub in_channels: usize,
    #[serde(default = "default_three")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_two")]
    pub layers_per_block: usize,
    #[serde(default = "default_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default)]
    pub downsample_type: Option<String>,
    #[serde(default)]
    pub upsample_type: Option<String>,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_head_size")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_time_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
}

fn default_head_size() -> Option<usize> {
    Some(8)
}

impl UNet2DConfig {
    pub fn check_supported(&self) -> Result<()> {
        check_block_types(
            "down_block_types",
            &self.down_block_types,
            &["DownBlock2D", "AttnDownBlock2D"],
        )?;
        check_block_types(
            "up_block_types",
            &self.up_block_types,
            &["UpBlock2D", "AttnUpBlock2D"],
        )?;
        check_value("act_fn", &self.act_fn, &["silu"])?;
        check_value(
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
            &["default"],
        )?;
        check_value(
            "time_embedding_type",
            &self.time_embedding_type,
            &["positional"],
        )?;
        if let Some(v) = &self.downsample_type {
            check_value("downsample_type", v, &["conv"])?;
        }
        if let Some(v) = &self.upsample_type {
            check_value("upsample_type", v, &["conv"])?;
        }
        if let Some(v) = &self.class_embed_type {
            return Err(Error::unsupported(format!(
                "class_embed_type `{v}` (class-conditional UNets)"
            )));
        }
        check_levels(
            &self.block_out_channels,
            self.down_block_types.len(),
            self.up_block_types.len(),
        )
    }
}

/// `AutoencoderKL`: only the encoder half is used.
#[derive(Clone, Debug, Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "default_three")]
    pub in_channels: usize,
    pub down_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_one")]
    pub layers_per_block: usize,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_four")]
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub force_upcast: Option<bool>,
}

fn default_scaling() -> f64 {
    0.18215
}

impl AutoencoderKLConfig {
    pub fn check_supported(&self) -> Result<()> {
        check_block_types(
            "down_block_types",
            &self.down_block_types,
            &["DownEncoderBlock2D"],
        )?;
        check_value("act_fn", &self.act_fn, &["silu"])?;
        if self.block_out_channels.len() != self.down_block_types.len()
            || self.block_out_channels.is_empty()
        {
            return Err(Error::invalid(format!(
                "block_out_channels has {} entries but down_block_types has {}",
                self.block_out_channels.len(),
                self.down_block_types.len()
            )));
        }
        Ok(())
    }

    /// How much smaller the latent is than the image.
    pub fn downsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

fn check_block_types(key: &str, types: &[String], known: &[&str]) -> Result<()> {
    for t in types {
        if !known.contains(&t.as_str()) {
            return Err(Error::unsupported(format!(
                "block type `{t}` in `{key}` (supported: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn check_value(key: &str, value: &str, known: &[&str]) -> Result<()> {
    if known.contains(&value) {
        Ok(())
    } else {
        Err(Error::unsupported(format!(
            "`{key}` = `{value}` (supported: {})",
            known.join(", ")
        )))
    }
}

fn check_levels(channels: &[usize], down: usize, up: usize) -> Result<()> {
    if channels.is_empty() || channels.len() != down || channels.len() != up {
        return Err(Error::invalid(format!(
            "block_out_channels has {} entries, down_block_types {down}, up_block_types {up}: they must agree",
            channels.len()
        )));
    }
    Ok(())
}
