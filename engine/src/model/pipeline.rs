//! A loaded model: the UNet with what it needs around it (VAE encoder, text encoders, schedule).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::attention_probs::AttentionInfo;
use super::clip::{ClipTextEncoder, ClipTokenizer, PromptToken};
use super::conditioning::{Conditioning, TextTimeConditions};
use super::repo::{resolve, ModelFolders};
use super::schedule::{NoiseSchedule, SchedulerConfig};
use super::taps::TapInfo;
use super::unet::{UNet, UNetKind};
use super::vae::VaeEncoder;
use super::weights::{count_parameters, Weights};
use crate::device::{Compute, Precision};
use crate::error::{Error, Result};

/// A prompt's tokenizers and text encoders: one pair (SD 1.x/2.x: the last hidden state), or two
/// (SDXL: the penultimate hidden states of both joined, and the second's pooled projection).
pub struct TextConditioner {
    encoders: Vec<(ClipTokenizer, ClipTextEncoder)>,
}

impl TextConditioner {
    /// Load the pairs of tokenizer and encoder folders (one for SD, two for SDXL).
    pub fn load(
        pairs: &[(&Path, &Path)],
        device: &Device,
        dtype: candle_core::DType,
    ) -> Result<Self> {
        let encoders = pairs
            .iter()
            .map(|(tok, enc)| {
                Ok((
                    ClipTokenizer::from_dir(tok)?,
                    ClipTextEncoder::load_in(enc, device, dtype)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { encoders })
    }

    /// SDXL's way: several encoders, penultimate states joined.
    fn joined(&self) -> bool {
        self.encoders.len() > 1
    }

    /// The width of the context it makes (768, 1024, SDXL's 768 + 1280 = 2048).
    pub fn context_width(&self) -> usize {
        match self.joined() {
            true => self.encoders.iter().map(|(_, e)| e.hidden_size()).sum(),
            false => self.encoders[0].1.hidden_size(),
        }
    }

    /// The width of the pooled embedding it makes (SDXL's second encoder's projection).
    pub fn pooled_width(&self) -> Option<usize> {
        match self.joined() {
            true => self.encoders.last()?.1.config().projection_dim,
            false => None,
        }
    }

    /// The prompt's tokens as the first tokenizer cuts them (SDXL's two cut words alike; only
    /// their padding differs).
    pub fn tokens(&self, prompt: &str) -> Result<Vec<PromptToken>> {
        self.encoders[0].0.tokens(prompt)
    }

    /// The token ids of each tokenizer for `prompt`.
    pub fn token_ids(&self, prompt: &str) -> Result<Vec<Vec<u32>>> {
        self.encoders
            .iter()
            .map(|(tokenizer, _)| tokenizer.encode(prompt))
            .collect()
    }

    /// The conditioning of `prompt`: its `[1,77,D]` context, and for SDXL the pooled embedding.
    pub fn embed(&self, prompt: &str) -> Result<Conditioning> {
        if !self.joined() {
            let (tokenizer, encoder) = &self.encoders[0];
            return Ok(Conditioning::text(
                encoder.forward(&tokenizer.encode(prompt)?)?,
            ));
        }
        let mut states = Vec::with_capacity(self.encoders.len());
        let mut pooled = None;
        for (tokenizer, encoder) in &self.encoders {
            let encoding = encoder.encode(&tokenizer.encode(prompt)?)?;
            states.push(encoding.penultimate);
            pooled = encoding.pooled.or(pooled);
        }
        let text_embeds = pooled.ok_or_else(|| {
            Error::invalid(
                "SDXL's second text encoder has no text_projection (CLIPTextModelWithProjection)",
            )
        })?;
        Ok(Conditioning {
            context: Tensor::cat(&states, 2)?,
            added: Some(TextTimeConditions {
                text_embeds,
                time_ids: None,
            }),
        })
    }
}

/// How to load a model beyond what `--model` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// A UNet from elsewhere in place of the pipeline's (`--unet`): a diffusers UNet folder, or one
    /// `.safetensors` state dict (CleanDIFT's) read with the pipeline's own `unet/config.json`.
    pub unet: Option<PathBuf>,
}

pub struct DiffusionModel {
    pub name: String,
    pub folders: ModelFolders,
    pub unet: UNet,
    pub vae: Option<VaeEncoder>,
    pub text: Option<TextConditioner>,
    pub schedule: NoiseSchedule,
    pub device: Device,
    /// What the weights and activations are held in (features leave as float32).
    pub precision: Precision,
    text_parameters: usize,
}

/// What the model is, for display.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub name: String,
    pub architecture: String,
    pub parameters: usize,
    pub device: String,
    pub precision: Precision,
    pub latent: bool,
    pub conditional: bool,
    pub timesteps: usize,
    pub taps: Vec<TapInfo>,
    /// Every attention module, in forward order.
    pub attention: Vec<AttentionInfo>,
    /// Image pixels per UNet input pixel (the VAE's downsampling, 1 in pixel space).
    pub input_stride: usize,
    /// A diffusion UNet (taps at a timestep) or a vision transformer (layers, no timestep).
    pub family: ModelFamily,
}

/// What kind of network features are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFamily {
    /// A diffusion model's UNet: taps at a timestep t, from noisy latents.
    UNet,
    /// A vision transformer (DINOv2): one tap per layer, no timestep or noise.
    VisionTransformer,
}

impl DiffusionModel {
    /// Load from what `--model` names (see [`resolve`]) in float32.
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        let compute = Compute {
            device: device.clone(),
            precision: Precision::F32,
        };
        Self::load_on(spec, &compute)
    }

    /// Load from what `--model` names, on a device in a precision (weights are cast at load).
    pub fn load_on(spec: &str, compute: &Compute) -> Result<Self> {
        Self::load_with(spec, compute, &LoadOptions::default())
    }

    /// [`Self::load_on`] with a UNet from elsewhere when `options` names one.
    pub fn load_with(spec: &str, compute: &Compute, options: &LoadOptions) -> Result<Self> {
        let (device, dtype) = (&compute.device, compute.dtype());
        let mut folders = resolve(spec)?;
        // Every weight is read into memory: refuse a model that cannot fit before reading any.
        let stored = |dir: &Option<PathBuf>, stem: &str| -> Result<usize> {
            dir.as_ref()
                .map_or(Ok(0), |d| super::memory::stored_values(d, stem))
        };
        let unet_values = match &options.unet {
            Some(path) if path.is_file() => {
                Weights::open(std::slice::from_ref(path), &Device::Cpu)?.stored_parameters()
            }
            Some(path) => super::memory::stored_values(path, "diffusion_pytorch_model")?,
            None => super::memory::stored_values(&folders.unet, "diffusion_pytorch_model")?,
        };
        let values = unet_values
            + stored(&folders.vae, "diffusion_pytorch_model")?
            + stored(&folders.text_encoder, "model")?
            + stored(&folders.text_encoder_2, "model")?;
        super::memory::check_fits(
            &folders.root,
            values,
            dtype.size_in_bytes(),
            super::memory::available_bytes(device),
        )?;
        let unet = match &options.unet {
            None => UNet::load_in(&folders.unet, device, dtype)?,
            Some(path) => {
                let unet = UNet::load_replacement(path, &folders.unet, device, dtype)?;
                folders.unet = path.clone();
                unet
            }
        };
        let latent = unet.in_channels != 3 || unet.kind == UNetKind::Conditional;
        let vae = match (&folders.vae, latent) {
            (Some(dir), true) => Some(VaeEncoder::load_in(dir, device, dtype)?),
            (None, true) => {
                return Err(Error::file(
                    &folders.root,
                    "this UNet works on latents but the model has no vae/ folder",
                ));
            }
            (_, false) => None,
        };
        if let Some(vae) = &vae {
            if vae.config.latent_channels != unet.in_channels {
                return Err(Error::file(
                    folders.vae.as_ref().unwrap_or(&folders.root),
                    format!(
                        "the VAE makes {} latent channels but the UNet takes {}",
                        vae.config.latent_channels, unet.in_channels
                    ),
                ));
            }
        }
        let mut pairs: Vec<(&Path, &Path)> = vec![];
        if let (Some(tok), Some(enc)) = (&folders.tokenizer, &folders.text_encoder) {
            pairs.push((tok, enc));
        }
        if let (Some(tok), Some(enc)) = (&folders.tokenizer_2, &folders.text_encoder_2) {
            pairs.push((tok, enc));
        }
        let text = match (pairs.is_empty(), unet.kind) {
            (false, UNetKind::Conditional) => Some(TextConditioner::load(&pairs, device, dtype)?),
            _ => None,
        };
        if let (Some(text), Some(dim)) = (&text, unet.context_dim) {
            if text.context_width() != dim {
                return Err(Error::file(
                    folders.text_encoder.as_ref().unwrap_or(&folders.root),
                    format!("the text encoders make {}-wide embeddings but the UNet's cross-attention takes {dim}", text.context_width()),
                ));
            }
            if text.pooled_width() != unet.pooled_text_dim() {
                let says = |w: Option<usize>| w.map_or("none".to_string(), |w| w.to_string());
                return Err(Error::file(
                    folders.text_encoder_2.as_ref().unwrap_or(&folders.root),
                    format!(
                        "the text encoders' pooled embedding ({} wide) does not fit the UNet's added embedding (which takes {})",
                        says(text.pooled_width()),
                        says(unet.pooled_text_dim())
                    ),
                ));
            }
        }
        let schedule = match &folders.scheduler_config {
            Some(path) => NoiseSchedule::load(path)?,
            None => NoiseSchedule::new(match unet.kind {
                UNetKind::Pixel => SchedulerConfig::ddpm_linear(),
                UNetKind::Conditional => SchedulerConfig::stable_diffusion(),
            })?,
        };
        let text_parameters = match &text {
            Some(_) => [&folders.text_encoder, &folders.text_encoder_2]
                .into_iter()
                .flatten()
                .map(|dir| count_parameters(dir, "model"))
                .sum::<Result<usize>>()?,
            None => 0,
        };
        let name = if spec == "default" {
            "default".to_string()
        } else {
            display_name(&folders.root)
        };
        Ok(Self {
            name,
            folders,
            unet,
            vae,
            text,
            schedule,
            device: device.clone(),
            precision: compute.precision,
            text_parameters,
        })
    }

    pub fn summary(&self) -> ModelSummary {
        let conditional = self.unet.kind == UNetKind::Conditional;
        let architecture = match (self.unet.kind, &self.vae) {
            (UNetKind::Conditional, _) if self.unet.pooled_text_dim().is_some() => {
                "UNet2DConditionModel, SDXL-style (latent, two text encoders, time ids)"
            }
            (UNetKind::Conditional, _) => "UNet2DConditionModel (latent, text-conditioned)",
            (UNetKind::Pixel, Some(_)) => "UNet2DModel (latent)",
            (UNetKind::Pixel, None) => "UNet2DModel (pixel space)",
        };
        let parameters = self.unet.parameters
            + self.vae.as_ref().map_or(0, |v| v.parameters)
            + self.text_parameters;
        ModelSummary {
            name: self.name.clone(),
            architecture: architecture.to_string(),
            parameters,
            device: crate::device::describe(&self.device).to_string(),
            precision: self.precision,
            latent: self.vae.is_some(),
            conditional,
            timesteps: self.schedule.steps(),
            taps: self.unet.taps().to_vec(),
            attention: self.unet.attention_modules(),
            input_stride: self
                .vae
                .as_ref()
                .map_or(1, |v| v.config.downsample_factor()),
            family: ModelFamily::UNet,
        }
    }

    /// The clean latent `z` of an image `[1,3,H,W]` in [-1,1]: the VAE's scaled mean, or the
    /// image itself; in the model's dtype.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        match &self.vae {
            Some(vae) => vae.encode(image),
            None => Ok(image.to_dtype(self.precision.dtype())?),
        }
    }

    /// The prompt's tokens as the model's tokenizer cuts them (start, words, end, padding); None
    /// when the model has no tokenizer.
    pub fn prompt_tokens(&self, prompt: &str) -> Result<Option<Vec<PromptToken>>> {
        self.text
            .as_ref()
            .map(|text| text.tokens(prompt))
            .transpose()
    }

    /// Text conditioning for the UNet: None for unconditional models. SDXL-style conditionings
    /// still need their time ids ([`Conditioning::at_size`]).
    pub fn condition(&self, prompt: &PromptSource) -> Result<Option<Conditioning>> {
        let Some(dim) = self.unet.context_dim else {
            return match prompt {
                PromptSource::Text(p) if !p.is_empty() => Err(Error::invalid(
                    "this model is unconditional: it takes no prompt",
                )),
                PromptSource::Embeddings { .. } => Err(Error::invalid(
                    "this model is unconditional: it takes no prompt embeddings",
                )),
                _ => Ok(None),
            };
        };
        match prompt {
            PromptSource::Embeddings { context, pooled } => {
                let dims = context.dims();
                if dims.len() != 3 || dims[0] != 1 || dims[2] != dim {
                    return Err(Error::invalid(format!("prompt embeddings have shape {dims:?}; this model needs [1,N,{dim}] (usually [1,77,{dim}])")));
                }
                let to_model = |t: &Tensor| -> Result<Tensor> {
                    Ok(t.to_device(&self.device)?
                        .to_dtype(self.precision.dtype())?)
                };
                let added = match (self.unet.pooled_text_dim(), pooled) {
                    (None, None) => None,
                    (None, Some(_)) => {
                        return Err(Error::invalid(
                            "this model takes no pooled embeddings (only SDXL-style UNets do)",
                        ))
                    }
                    (Some(p), None) => {
                        return Err(Error::invalid(format!("this SDXL-style model also needs the pooled text embedding: pass --pooled-embeds (float32 [1,{p}])")))
                    }
                    (Some(p), Some(t)) => {
                        if t.dims() != [1, p] {
                            return Err(Error::invalid(format!(
                                "pooled embeddings have shape {:?}; this model needs [1,{p}]",
                                t.dims()
                            )));
                        }
                        Some(TextTimeConditions {
                            text_embeds: to_model(t)?,
                            time_ids: None,
                        })
                    }
                };
                Ok(Some(Conditioning {
                    context: to_model(context)?,
                    added,
                }))
            }
            PromptSource::Text(p) => match &self.text {
                Some(text) => Ok(Some(text.embed(p)?)),
                None => Err(Error::file(
                    &self.folders.root,
                    "this model has no text_encoder/ and tokenizer/ folders: pass prompt embeddings instead",
                )),
            },
        }
    }
}

/// The conditioning text: a prompt (empty by default) or precomputed embeddings `[1,77,D]` (and
/// for SDXL the pooled embedding `[1,P]`).
#[derive(Clone, Debug)]
pub enum PromptSource {
    Text(String),
    Embeddings {
        context: Tensor,
        pooled: Option<Tensor>,
    },
}

impl Default for PromptSource {
    fn default() -> Self {
        PromptSource::Text(String::new())
    }
}

/// The last two components of a model's folder (or its hub name), for display.
pub fn display_name(root: &std::path::Path) -> String {
    // A hub cache snapshot goes by the model's hub name.
    if let Some(name) = super::hub::repo_name(root) {
        return name;
    }
    let s: PathBuf = root
        .components()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    s.display().to_string()
}
