//! The model and recipe flags every feature-reading subcommand shares.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Args;
use diffscope_engine::features::extract::ExtractSettings;
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::io::image::parse_size;
use diffscope_engine::io::npy::read_npy;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};

#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// A diffusers folder (pipeline or unet/), a Hugging Face cache folder (models--org--name), or `default`.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Noise timestep, 0 (clean) to the schedule's last step (999 for most models).
    #[arg(long)]
    pub t: usize,
    /// Taps by diffusers module path, comma-separated (e.g. up_blocks.1,up_blocks.1.resnets.2), or `all` for every block.
    #[arg(long, value_delimiter = ',', required = true)]
    pub blocks: Vec<String>,
    /// Number of noise draws averaged (DIFT uses 8).
    #[arg(long, default_value_t = 8)]
    pub ensemble: usize,
    /// Seed of the noise draws.
    #[arg(long, default_value_t = 0, conflicts_with = "noise")]
    pub seed: u64,
    /// Noise as float32 .npy of shape [K,C,h,w]; K sets the ensemble size.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Text prompt for conditional models (default: the empty prompt, as DIFT uses).
    #[arg(long, conflicts_with = "prompt_embeds")]
    pub prompt: Option<String>,
    /// Prompt embeddings as float32 .npy of shape [1,77,D].
    #[arg(long)]
    pub prompt_embeds: Option<PathBuf>,
    /// Resize (squash) the image to WIDTHxHEIGHT first, bicubic; without it the image is used at its own size.
    #[arg(long)]
    pub size: Option<String>,
}

fn read_f32_npy(path: &PathBuf, what: &str) -> anyhow::Result<Tensor> {
    let array = read_npy(path).with_context(|| format!("reading the {what} file"))?;
    let values = array
        .to_f32()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Tensor::from_vec(values, array.shape.clone(), &Device::Cpu)?)
}

impl FeatureArgs {
    pub fn load_model(&self, device: &Device) -> anyhow::Result<DiffusionModel> {
        Ok(DiffusionModel::load(&self.model, device)?)
    }

    pub fn settings(&self) -> anyhow::Result<ExtractSettings> {
        let noise = match &self.noise {
            Some(path) => {
                let t = read_f32_npy(path, "noise")?;
                if t.rank() != 4 {
                    bail!(
                        "{}: noise must have shape [K,C,h,w], got {:?}",
                        path.display(),
                        t.dims()
                    );
                }
                NoiseSource::Given(t)
            }
            None => NoiseSource::Seeded {
                seed: self.seed,
                ensemble: self.ensemble,
            },
        };
        let prompt = match (&self.prompt, &self.prompt_embeds) {
            (_, Some(path)) => PromptSource::Embeddings(read_f32_npy(path, "prompt embeddings")?),
            (Some(p), None) => PromptSource::Text(p.clone()),
            (None, None) => PromptSource::default(),
        };
        let size = self.size.as_deref().map(parse_size).transpose()?;
        Ok(ExtractSettings {
            t: self.t,
            taps: self.blocks.clone(),
            noise,
            prompt,
            size,
        })
    }
}
