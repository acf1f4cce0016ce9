//! What features are read from: a diffusion model (UNet taps at a timestep) or a vision
//! transformer (DINOv2's layers). Everything downstream addresses features by tap name, so both
//! work wherever a tap does.

use std::path::Path;

use candle_core::Device;

use super::dinov2::Dinov2;
use super::pipeline::{display_name, DiffusionModel, LoadOptions, ModelFamily, ModelSummary};
use super::repo::{locate, ModelLocation};
use super::taps::TapInfo;
use crate::device::{Compute, Precision};
use crate::error::{Error, Result};

/// A DINOv2 loaded on a device.
pub struct VitModel {
    pub name: String,
    pub net: Dinov2,
    pub device: Device,
    pub precision: Precision,
}

// One per loaded model, never in a collection: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum FeatureModel {
    Diffusion(DiffusionModel),
    Vit(VitModel),
}

impl FeatureModel {
    /// Load what `--model` names: a diffusion model (with `options`) or a DINOv2 folder.
    pub fn load(spec: &str, compute: &Compute, options: &LoadOptions) -> Result<Self> {
        match locate(spec)? {
            ModelLocation::Diffusion(_) => Ok(Self::Diffusion(DiffusionModel::load_with(
                spec, compute, options,
            )?)),
            ModelLocation::VisionTransformer(dir) => {
                if let Some(unet) = &options.unet {
                    return Err(Error::file(
                        unet,
                        format!(
                            "--unet replaces a diffusion model's UNet, but {} is a DINOv2 folder",
                            dir.display()
                        ),
                    ));
                }
                let net = Dinov2::load(&dir, &compute.device, compute.dtype())?;
                Ok(Self::Vit(VitModel {
                    name: display_name(&dir),
                    net,
                    device: compute.device.clone(),
                    precision: compute.precision,
                }))
            }
        }
    }

    pub fn diffusion(&self) -> Option<&DiffusionModel> {
        match self {
            Self::Diffusion(m) => Some(m),
            Self::Vit(_) => None,
        }
    }

    /// The taps it offers, in forward order.
    pub fn taps(&self) -> &[TapInfo] {
        match self {
            Self::Diffusion(m) => m.unet.taps(),
            Self::Vit(v) => v.net.taps(),
        }
    }

    /// True when its features do not depend on t, noise or a prompt.
    pub fn time_free(&self) -> bool {
        matches!(self, Self::Vit(_))
    }

    /// The folder it was read from (its identity in caches).
    pub fn root(&self) -> &Path {
        match self {
            Self::Diffusion(m) => &m.folders.root,
            Self::Vit(v) => &v.net.dir,
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Self::Diffusion(m) => &m.device,
            Self::Vit(v) => &v.device,
        }
    }

    /// The prompt's tokens as the model's tokenizer cuts them; None without a tokenizer.
    pub fn prompt_tokens(
        &self,
        prompt: &str,
    ) -> Result<Option<Vec<crate::model::clip::PromptToken>>> {
        match self {
            Self::Diffusion(m) => m.prompt_tokens(prompt),
            Self::Vit(_) => Ok(None),
        }
    }

    pub fn summary(&self) -> ModelSummary {
        match self {
            Self::Diffusion(m) => m.summary(),
            Self::Vit(v) => {
                let c = &v.net.config;
                let registers = match c.num_register_tokens {
                    0 => String::new(),
                    r => format!(", {r} registers"),
                };
                ModelSummary {
                    name: v.name.clone(),
                    architecture: format!(
                        "Dinov2Model (ViT, {} layers of {}, patch {}{registers}; no timestep or noise)",
                        c.num_hidden_layers, c.hidden_size, c.patch_size
                    ),
                    parameters: v.net.parameters,
                    device: crate::device::describe(&v.device).to_string(),
                    precision: v.precision,
                    latent: false,
                    conditional: false,
                    timesteps: 0,
                    taps: v.net.taps().to_vec(),
                    attention: vec![],
                    input_stride: 1,
                    family: ModelFamily::VisionTransformer,
                }
            }
        }
    }
}
