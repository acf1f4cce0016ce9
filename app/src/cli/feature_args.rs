//! The model and recipe flags every feature-reading subcommand shares.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Args;
use diffscope_engine::analysis::aggregate::{aggregate, AggregateGrid, WeightedTap};
use diffscope_engine::device::default_device;
use diffscope_engine::features::extract::extract_image;
use diffscope_engine::features::extract::ExtractSettings;
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::io::image::parse_size;
use diffscope_engine::io::image::{load_rgb, resize};
use diffscope_engine::io::npy::read_npy;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_engine::FeatureMap;
use image::RgbImage;

#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// A diffusers folder (pipeline or unet/), a Hugging Face cache folder (models--org--name), or `default`.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Noise timestep, 0 (clean) to the schedule's last step (999 for most models).
    #[arg(long)]
    pub t: Option<usize>,
    /// Taps by diffusers module path, comma-separated (e.g. up_blocks.1,up_blocks.1.resnets.2), or `all` for every block.
    /// Where a command needs one descriptor, several taps are aggregated (resized to the finest, L2-normalised, weighted).
    #[arg(long, value_delimiter = ',', required = true)]
    pub blocks: Vec<String>,
    /// Weights of the aggregated taps, in the order of --blocks (default: all 1).
    #[arg(long, value_delimiter = ',')]
    pub tap_weights: Option<Vec<f32>>,
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
        let size = self.size()?;
        let t = self
            .t
            .ok_or_else(|| anyhow::anyhow!("--t is required to extract features"))?;
        Ok(ExtractSettings {
            t,
            taps: self.blocks.clone(),
            noise,
            prompt,
            size,
        })
    }

    pub fn size(&self) -> anyhow::Result<Option<(u32, u32)>> {
        Ok(self.size.as_deref().map(parse_size).transpose()?)
    }

    /// One descriptor per image: extracted with the model, or read from feature files written by
    /// `diffscope extract` (one per image, same order), then the taps aggregated.
    pub fn image_features(
        &self,
        images: &[PathBuf],
        files: Option<&[PathBuf]>,
    ) -> anyhow::Result<Vec<ImageFeatures>> {
        if let Some(files) = files {
            if files.len() != images.len() {
                bail!(
                    "{} feature files for {} images: give one per image, in the same order",
                    files.len(),
                    images.len()
                );
            }
        }
        let size = self.size()?;
        let loaded = match files {
            Some(_) => None,
            None => Some((self.load_model(&default_device()?)?, self.settings()?)),
        };
        let mut out = Vec::with_capacity(images.len());
        for (i, path) in images.iter().enumerate() {
            let image = resize(load_rgb(path)?, size);
            let taps: Vec<(String, FeatureMap)> = match (&loaded, files) {
                (Some((model, settings)), _) => {
                    eprintln!("extracting {}", path.display());
                    let ex = extract_image(model, path, settings, None, &mut |_, _| {})?;
                    ex.taps
                        .iter()
                        .map(|(n, t)| Ok((n.clone(), FeatureMap::from_tensor(t)?)))
                        .collect::<anyhow::Result<_>>()?
                }
                (None, Some(files)) => read_feature_file(&files[i], &self.blocks)?,
                (None, None) => bail!("no model and no feature files"),
            };
            let map = self.aggregate(&taps)?;
            out.push(ImageFeatures {
                path: path.clone(),
                image,
                map,
            });
        }
        Ok(out)
    }

    fn aggregate(&self, taps: &[(String, FeatureMap)]) -> anyhow::Result<FeatureMap> {
        if let [(_, only)] = taps {
            return Ok(only.clone());
        }
        let weights = match &self.tap_weights {
            Some(w) if w.len() == taps.len() => w.clone(),
            Some(w) => bail!("{} tap weights for {} taps", w.len(), taps.len()),
            None => vec![1.0; taps.len()],
        };
        let inputs: Vec<WeightedTap> = taps
            .iter()
            .zip(&weights)
            .map(|((_, map), &weight)| WeightedTap { map, weight })
            .collect();
        Ok(aggregate(&inputs, AggregateGrid::Finest)?)
    }

    /// A one-line statement of how the features were made, for figure captions.
    /// The settings as JSON fields, for files that record how they were made.
    pub fn settings_json(&self, from_files: bool) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("taps".into(), self.blocks.clone().into());
        if let Some(w) = &self.tap_weights {
            m.insert("tap_weights".into(), w.clone().into());
        }
        if from_files {
            m.insert("features".into(), "from files".into());
            return m;
        }
        m.insert("model".into(), self.model.clone().into());
        if let Some(t) = self.t {
            m.insert("t".into(), t.into());
        }
        match &self.noise {
            Some(p) => {
                m.insert("noise".into(), p.display().to_string().into());
            }
            None => {
                m.insert("ensemble".into(), self.ensemble.into());
                m.insert("seed".into(), self.seed.into());
            }
        }
        if let Some(p) = &self.prompt_embeds {
            m.insert("prompt_embeds".into(), p.display().to_string().into());
        } else {
            m.insert(
                "prompt".into(),
                self.prompt.clone().unwrap_or_default().into(),
            );
        }
        if let Some(size) = &self.size {
            m.insert("size".into(), size.clone().into());
        }
        m
    }

    pub fn describe(&self, from_files: bool) -> String {
        if from_files {
            return format!("features from files, taps {}", self.blocks.join("+"));
        }
        let noise = match &self.noise {
            Some(p) => format!("noise {}", p.display()),
            None => format!("ensemble {}, seed {}", self.ensemble, self.seed),
        };
        let prompt = match (&self.prompt, &self.prompt_embeds) {
            (_, Some(p)) => format!("prompt embeddings {}", p.display()),
            (Some(p), None) => format!("prompt \"{p}\""),
            (None, None) => "empty prompt".to_string(),
        };
        let t = self.t.map(|t| t.to_string()).unwrap_or_default();
        format!(
            "model {}, t={t}, taps {}, {noise}, {prompt}",
            self.model,
            self.blocks.join("+")
        )
    }
}

/// An image (resized as asked) and its one descriptor.
pub struct ImageFeatures {
    pub path: PathBuf,
    pub image: RgbImage,
    pub map: FeatureMap,
}

/// The requested taps from a `diffscope extract` .safetensors file, in request order.
fn read_feature_file(
    path: &PathBuf,
    blocks: &[String],
) -> anyhow::Result<Vec<(String, FeatureMap)>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| anyhow::anyhow!("{}: not a feature file: {e}", path.display()))?;
    let mut names: Vec<&String> = tensors.keys().filter(|k| k.as_str() != "latents").collect();
    names.sort();
    let mut out = vec![];
    for block in blocks {
        let wanted: Vec<String> = if block == "all" {
            names.iter().map(|s| s.to_string()).collect()
        } else {
            vec![block.clone()]
        };
        for name in wanted {
            let t = tensors.get(&name).ok_or_else(|| {
                let have: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                anyhow::anyhow!(
                    "{}: no tap `{name}` in this file (it has: {})",
                    path.display(),
                    have.join(", ")
                )
            })?;
            let map = FeatureMap::from_tensor(t)
                .map_err(|e| anyhow::anyhow!("{}: tap `{name}`: {e}", path.display()))?;
            out.push((name, map));
        }
    }
    Ok(out)
}
