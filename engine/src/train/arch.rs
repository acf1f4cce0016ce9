//! The shape of a `UNet2DModel` to train, and the diffusers `config.json` that describes it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};

/// The diffusers version whose config keys and defaults the written configs follow.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// What a `diffscope train` run builds: a pixel-space `UNet2DModel` with one level per entry of
/// `channels`, downsampling between levels, and self-attention on the `attention_levels`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UNetArchitecture {
    pub channels: Vec<usize>,
    pub layers_per_block: usize,
    /// Indices of the levels whose blocks carry self-attention (`AttnDownBlock2D`/`AttnUpBlock2D`).
    pub attention_levels: Vec<usize>,
    /// Self-attention in the mid block.
    pub mid_attention: bool,
    /// Attention head size (diffusers' `attention_head_dim` of `UNet2DModel`).
    pub head_dim: usize,
    /// Image side in pixels (`sample_size`).
    pub size: usize,
}

impl UNetArchitecture {
    /// Check that diffusers can build this model and that the image size halves evenly.
    pub fn validate(&self) -> Result<()> {
        if self.channels.is_empty() || self.channels.contains(&0) {
            return Err(Error::invalid(format!(
                "--channels {:?}: give one positive channel count per level, e.g. 32,64,128",
                self.channels
            )));
        }
        if self.layers_per_block == 0 {
            return Err(Error::invalid("--layers-per-block must be at least 1"));
        }
        if let Some(bad) = self
            .attention_levels
            .iter()
            .find(|&&l| l >= self.channels.len())
        {
            return Err(Error::invalid(format!(
                "--attention-levels: level {bad} does not exist (this model has levels 0..={})",
                self.channels.len() - 1
            )));
        }
        let multiple = 1usize << (self.channels.len() - 1);
        if self.size == 0 || !self.size.is_multiple_of(multiple) {
            return Err(Error::invalid(format!(
                "--size {}: a model with {} levels needs a multiple of {multiple}",
                self.size,
                self.channels.len()
            )));
        }
        let uses_attention = self.mid_attention || !self.attention_levels.is_empty();
        if uses_attention && self.head_dim == 0 {
            return Err(Error::invalid("attention head size must be positive"));
        }
        if uses_attention {
            for (level, &c) in self.channels.iter().enumerate() {
                let attends = self.attention_levels.contains(&level)
                    || (self.mid_attention && level + 1 == self.channels.len());
                if attends && !c.is_multiple_of(self.head_dim) {
                    return Err(Error::invalid(format!(
                        "{c} channels at level {level} do not split into attention heads of {}",
                        self.head_dim
                    )));
                }
            }
        }
        Ok(())
    }

    /// GroupNorm groups: 32 as diffusers uses, or the largest power of two that divides every level.
    pub fn norm_groups(&self) -> usize {
        let mut g = 32;
        while g > 1 && self.channels.iter().any(|c| !c.is_multiple_of(g)) {
            g /= 2;
        }
        g
    }

    fn block_types(&self, down: bool) -> Vec<String> {
        let names = |level: usize| {
            let attn = self.attention_levels.contains(&level);
            match (down, attn) {
                (true, true) => "AttnDownBlock2D",
                (true, false) => "DownBlock2D",
                (false, true) => "AttnUpBlock2D",
                (false, false) => "UpBlock2D",
            }
        };
        let levels: Vec<usize> = if down {
            (0..self.channels.len()).collect()
        } else {
            (0..self.channels.len()).rev().collect()
        };
        levels.into_iter().map(|l| names(l).to_string()).collect()
    }

    /// diffusers' `unet/config.json` for this model, with every key `UNet2DModel` saves.
    pub fn unet_config(&self) -> serde_json::Value {
        json!({
            "_class_name": "UNet2DModel",
            "_diffusers_version": DIFFUSERS_VERSION,
            "act_fn": "silu",
            "add_attention": self.mid_attention,
            "attention_head_dim": self.head_dim,
            "attn_norm_num_groups": null,
            "block_out_channels": self.channels,
            "center_input_sample": false,
            "class_embed_type": null,
            "down_block_types": self.block_types(true),
            "downsample_padding": 1,
            "downsample_type": "conv",
            "dropout": 0.0,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 3,
            "layers_per_block": self.layers_per_block,
            "mid_block_scale_factor": 1,
            "mid_block_type": "UNetMidBlock2D",
            "norm_eps": 1e-5,
            "norm_num_groups": self.norm_groups(),
            "num_class_embeds": null,
            "num_train_timesteps": null,
            "out_channels": 3,
            "resnet_time_scale_shift": "default",
            "sample_size": self.size,
            "time_embedding_dim": null,
            "time_embedding_type": "positional",
            "up_block_types": self.block_types(false),
            "upsample_type": "conv"
        })
    }

    /// A one-line description for logs and errors.
    pub fn describe(&self) -> String {
        let attn = if self.attention_levels.is_empty() {
            "none".to_string()
        } else {
            self.attention_levels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "channels {:?}, {} layers per block, attention at levels [{attn}]{}, {}x{}",
            self.channels,
            self.layers_per_block,
            if self.mid_attention {
                " and the mid block"
            } else {
                ""
            },
            self.size,
            self.size
        )
    }
}

/// The noise schedule a model trains with, written as diffusers' `DDPMScheduler` config.
pub fn ddpm_scheduler_config(beta_schedule: &str) -> serde_json::Value {
    json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_end": 0.02,
        "beta_schedule": beta_schedule,
        "beta_start": 0.0001,
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "rescale_betas_zero_snr": false,
        "sample_max_value": 1.0,
        "steps_offset": 0,
        "thresholding": false,
        "timestep_spacing": "leading",
        "trained_betas": null,
        "variance_type": "fixed_small"
    })
}

/// `model_index.json` of a `DDPMPipeline`.
pub fn ddpm_pipeline_index() -> serde_json::Value {
    json!({
        "_class_name": "DDPMPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"]
    })
}
