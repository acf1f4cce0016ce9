//! The encoder half of diffusers' `AutoencoderKL`: image to the posterior mean, scaled.

use std::path::Path;

use candle_core::{DType, Module, Tensor};

use super::attention::SpatialAttention;
use super::config::{read_json, AutoencoderKLConfig};
use super::layers::{conv2d, group_norm, Conv2d, GroupNorm};
use super::resnet::{Downsample, ResnetBlock, ResnetSpec};
use super::weights::{find_weight_files, Weights};
use crate::error::{Error, Result};

/// The VAE uses GroupNorm eps 1e-6 everywhere.
const VAE_EPS: f64 = 1e-6;

struct EncoderLevel {
    resnets: Vec<ResnetBlock>,
    downsampler: Option<Downsample>,
}

pub struct VaeEncoder {
    pub config: AutoencoderKLConfig,
    conv_in: Conv2d,
    levels: Vec<EncoderLevel>,
    mid_resnet_0: ResnetBlock,
    mid_attention: Option<SpatialAttention>,
    mid_resnet_1: ResnetBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    pub parameters: usize,
    dtype: DType,
}

impl VaeEncoder {
    /// Load a `vae/` component folder in float32.
    pub fn load(dir: &Path, device: &candle_core::Device) -> Result<Self> {
        Self::load_in(dir, device, DType::F32)
    }

    /// Load a `vae/` component folder with its weights cast to `dtype`.
    pub fn load_in(dir: &Path, device: &candle_core::Device, dtype: DType) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::file(
                dir,
                "not a diffusers VAE folder: config.json is missing",
            ));
        }
        let config: AutoencoderKLConfig = read_json(&config_path)?;
        config
            .check_supported()
            .map_err(|e| Error::file(&config_path, e.to_string()))?;
        let files = find_weight_files(dir, "diffusion_pytorch_model")?;
        let weights = Weights::open(&files, device)?.in_dtype(dtype);
        Self::build(&weights.pp("encoder"), &weights, config)
    }

    /// Build from a `config.json` and weights from anywhere (shapes only, for instance).
    pub fn with_weights(config_path: &Path, weights: &Weights) -> Result<Self> {
        let config: AutoencoderKLConfig = read_json(config_path)?;
        config
            .check_supported()
            .map_err(|e| Error::file(config_path, e.to_string()))?;
        Self::build(&weights.pp("encoder"), weights, config)
    }

    fn build(w: &Weights, root: &Weights, config: AutoencoderKLConfig) -> Result<Self> {
        let ch = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let spec = |c_in, c_out| ResnetSpec {
            c_in,
            c_out,
            temb: None,
            groups,
            eps: VAE_EPS,
            output_scale_factor: 1.0,
        };
        let mut levels = Vec::with_capacity(ch.len());
        for (i, &c_out) in ch.iter().enumerate() {
            let wb = w.pp(format!("down_blocks.{i}"));
            let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    ResnetBlock::new(
                        &wb.pp(format!("resnets.{j}")),
                        &spec(if j == 0 { c_in } else { c_out }, c_out),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let downsampler = if i + 1 < ch.len() {
                Some(Downsample::new(&wb.pp("downsamplers.0"), c_out, 0)?)
            } else {
                None
            };
            levels.push(EncoderLevel {
                resnets,
                downsampler,
            });
        }
        let c_last = ch[ch.len() - 1];
        let wm = w.pp("mid_block");
        let mid_attention = if config.mid_block_add_attention {
            Some(SpatialAttention::new(
                &wm.pp("attentions.0"),
                c_last,
                None,
                groups,
                VAE_EPS,
                1.0,
            )?)
        } else {
            None
        };
        let moments = 2 * config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(conv2d(&root.pp("quant_conv"), moments, moments, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            conv_in: conv2d(&w.pp("conv_in"), config.in_channels, ch[0], 3, 1, 1)?,
            levels,
            mid_resnet_0: ResnetBlock::new(&wm.pp("resnets.0"), &spec(c_last, c_last))?,
            mid_attention,
            mid_resnet_1: ResnetBlock::new(&wm.pp("resnets.1"), &spec(c_last, c_last))?,
            conv_norm_out: group_norm(&w.pp("conv_norm_out"), groups, c_last, VAE_EPS)?,
            conv_out: conv2d(&w.pp("conv_out"), c_last, moments, 3, 1, 1)?,
            quant_conv,
            parameters: root.loaded_parameters(),
            dtype: root.dtype(),
            config,
        })
    }

    /// `x`: `[B,3,H,W]` in [-1,1] -> the scaled posterior mean `[B,latent,H/f,W/f]`, in the
    /// VAE's dtype.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(self.dtype)?;
        let mut h = self.conv_in.forward(&x)?;
        for level in &self.levels {
            for r in &level.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = &level.downsampler {
                h = d.forward(&h)?;
            }
        }
        h = self.mid_resnet_0.forward(&h, None)?;
        if let Some(a) = &self.mid_attention {
            h = a.forward(&h)?;
        }
        h = self.mid_resnet_1.forward(&h, None)?;
        let mut moments = self
            .conv_out
            .forward(&self.conv_norm_out.forward_silu(&h)?)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let mean = moments.narrow(1, 0, self.config.latent_channels)?;
        let shifted = match self.config.shift_factor {
            Some(shift) => (mean - shift)?,
            None => mean,
        };
        Ok((shifted * self.config.scaling_factor)?)
    }
}
