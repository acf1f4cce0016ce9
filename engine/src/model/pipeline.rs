//! A loaded model: the UNet with what it needs around it (VAE encoder, text encoder, schedule).

use std::path::PathBuf;

use candle_core::{Device, Tensor};

use super::clip::{ClipTextEncoder, ClipTokenizer};
use super::repo::{resolve, ModelFolders};
use super::schedule::{NoiseSchedule, SchedulerConfig};
use super::taps::TapInfo;
use super::unet::{UNet, UNetKind};
use super::vae::VaeEncoder;
use super::weights::count_parameters;
use crate::error::{Error, Result};

/// A prompt's tokenizer and encoder.
pub struct TextConditioner {
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextEncoder,
}

impl TextConditioner {
    /// `[1,77,D]` embeddings of `prompt`.
    pub fn embed(&self, prompt: &str) -> Result<Tensor> {
        let ids = self.tokenizer.encode(prompt)?;
        self.encoder.forward(&ids)
    }
}

pub struct DiffusionModel {
    pub name: String,
    pub folders: ModelFolders,
    pub unet: UNet,
    pub vae: Option<VaeEncoder>,
    pub text: Option<TextConditioner>,
    pub schedule: NoiseSchedule,
    pub device: Device,
    text_parameters: usize,
}

/// What the model is, for display.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub name: String,
    pub architecture: String,
    pub parameters: usize,
    pub device: String,
    pub latent: bool,
    pub conditional: bool,
    pub timesteps: usize,
    pub taps: Vec<TapInfo>,
    /// Image pixels per UNet input pixel (the VAE's downsampling, 1 in pixel space).
    pub input_stride: usize,
}

impl DiffusionModel {
    /// Load from what `--model` names (see [`resolve`]).
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        let folders = resolve(spec)?;
        let unet = UNet::load(&folders.unet, device)?;
        let latent = unet.in_channels != 3 || unet.kind == UNetKind::Conditional;
        let vae = match (&folders.vae, latent) {
            (Some(dir), true) => Some(VaeEncoder::load(dir, device)?),
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
        let text = match (&folders.tokenizer, &folders.text_encoder, unet.kind) {
            (Some(tok), Some(enc), UNetKind::Conditional) => Some(TextConditioner {
                tokenizer: ClipTokenizer::from_dir(tok)?,
                encoder: ClipTextEncoder::load(enc, device)?,
            }),
            _ => None,
        };
        if let (Some(text), Some(dim)) = (&text, unet.context_dim) {
            if text.encoder.hidden_size() != dim {
                return Err(Error::file(
                    folders.text_encoder.as_ref().unwrap_or(&folders.root),
                    format!("the text encoder makes {}-wide embeddings but the UNet's cross-attention takes {dim}", text.encoder.hidden_size()),
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
        let text_parameters = match (&text, &folders.text_encoder) {
            (Some(_), Some(dir)) => count_parameters(dir, "model")?,
            _ => 0,
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
            text_parameters,
        })
    }

    pub fn summary(&self) -> ModelSummary {
        let conditional = self.unet.kind == UNetKind::Conditional;
        let architecture = match (self.unet.kind, &self.vae) {
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
            latent: self.vae.is_some(),
            conditional,
            timesteps: self.schedule.steps(),
            taps: self.unet.taps().to_vec(),
            input_stride: self
                .vae
                .as_ref()
                .map_or(1, |v| v.config.downsample_factor()),
        }
    }

    /// The clean latent `z` of an image `[1,3,H,W]` in [-1,1]: the VAE's scaled mean, or the image itself.
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        match &self.vae {
            Some(vae) => vae.encode(image),
            None => Ok(image.clone()),
        }
    }

    /// Text conditioning for the UNet: None for unconditional models.
    pub fn condition(&self, prompt: &PromptSource) -> Result<Option<Tensor>> {
        let Some(dim) = self.unet.context_dim else {
            return match prompt {
                PromptSource::Text(p) if !p.is_empty() => Err(Error::invalid(
                    "this model is unconditional: it takes no prompt",
                )),
                PromptSource::Embeddings(_) => Err(Error::invalid(
                    "this model is unconditional: it takes no prompt embeddings",
                )),
                _ => Ok(None),
            };
        };
        match prompt {
            PromptSource::Embeddings(e) => {
                let dims = e.dims();
                if dims.len() != 3 || dims[0] != 1 || dims[2] != dim {
                    return Err(Error::invalid(format!("prompt embeddings have shape {dims:?}; this model needs [1,N,{dim}] (usually [1,77,{dim}])")));
                }
                Ok(Some(e.to_device(&self.device)?))
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

/// The conditioning text: a prompt (empty by default) or precomputed embeddings `[1,77,D]`.
#[derive(Clone, Debug)]
pub enum PromptSource {
    Text(String),
    Embeddings(Tensor),
}

impl Default for PromptSource {
    fn default() -> Self {
        PromptSource::Text(String::new())
    }
}

fn display_name(root: &std::path::Path) -> String {
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
