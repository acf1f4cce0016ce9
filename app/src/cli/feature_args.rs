//! The recipe flags every subcommand that runs a model shares ([`RecipeArgs`]), the model and
//! taps of the feature-reading ones ([`FeatureArgs`]), and the flags of a second feature source
//! fused with the first (SD-DINO, [`FusionArgs`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use diffscope_engine::analysis::aggregate::{aggregate, AggregateGrid, WeightedTap};
use diffscope_engine::analysis::recipes::fusion::{fuse, FusionSource, FusionTap};
use diffscope_engine::device::Precision;
use diffscope_engine::features::extract::{expand_taps, extract_features, ExtractSettings};
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::io::image::parse_size;
use diffscope_engine::io::image::{load_rgb, resize};
use diffscope_engine::io::npy::read_npy;
use diffscope_engine::io::safetensors::read_tensors;
use diffscope_engine::model::conditioning::parse_time_ids;
use diffscope_engine::model::feature_model::FeatureModel;
use diffscope_engine::model::pipeline::ModelFamily;
use diffscope_engine::model::pipeline::{LoadOptions, PromptSource};
use diffscope_engine::FeatureMap;

use super::compute_args::ComputeArgs;
use super::progress::{duration_text, Progress};
use image::RgbImage;

/// How the UNet sees the image.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum Recipe {
    /// DIFT's: the clean latent noised to t by each of --ensemble draws, taps averaged.
    #[default]
    Dift,
    /// CleanDIFT's: the clean latent itself, one pass, t only in the time embedding (default
    /// 261, as CleanDIFT's code uses); for its fine-tuned UNets (--unet).
    Cleandift,
}

/// The recipe flags: how one model turns an image into features (everything but the taps and t).
#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// Number of noise draws averaged (DIFT uses 8).
    #[arg(long, default_value_t = 8)]
    pub ensemble: usize,
    /// Seed of the noise draws.
    #[arg(long, default_value_t = 0, conflicts_with = "noise")]
    pub seed: u64,
    /// Noise as a float .npy (float16, 32 or 64) of shape [K,C,h,w]; K sets the ensemble size.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Text prompt for conditional models (default: the empty prompt, as DIFT uses).
    #[arg(long, conflicts_with = "prompt_embeds")]
    pub prompt: Option<String>,
    /// Prompt embeddings as a float .npy (float16, 32 or 64) of shape [1,77,D] (SDXL: [1,77,2048],
    /// with --pooled-embeds).
    #[arg(long)]
    pub prompt_embeds: Option<PathBuf>,
    /// SDXL: the pooled text embedding as float32 .npy [1,P] (P = 1280), beside --prompt-embeds.
    #[arg(long, requires = "prompt_embeds")]
    pub pooled_embeds: Option<PathBuf>,
    /// SDXL's time ids orig_h,orig_w,crop_top,crop_left,target_h,target_w (default: the input
    /// image's size, uncropped: H,W,0,0,H,W).
    #[arg(long)]
    pub time_ids: Option<String>,
    /// Resize (squash) the image to WIDTHxHEIGHT first, bicubic; without it the image is used at its own size.
    #[arg(long)]
    pub size: Option<String>,
    /// dift (noised latents, averaged) or cleandift (the clean latent, one pass, no noise).
    #[arg(long, value_enum, default_value_t = Recipe::Dift)]
    pub recipe: Recipe,
    /// A UNet in place of the pipeline's: a diffusers UNet folder, or one .safetensors state
    /// dict (CleanDIFT's cleandift_sd15_unet.safetensors) read with the pipeline's unet/config.json.
    #[arg(long)]
    pub unet: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// The second source fused with the model's taps, SD-DINO's way (`analysis::recipes::fusion`).
#[derive(Args, Debug, Clone, Default)]
pub struct FusionArgs {
    /// Reduce each tap of --blocks to this many dimensions by PCA fitted jointly on the images
    /// (SD-DINO's co-PCA), one number per tap (0 keeps a tap whole).
    #[arg(long, value_delimiter = ',')]
    pub pca_dims: Option<Vec<usize>>,
    /// A second feature source fused with the first: a DINOv2 folder (or any model --model takes).
    #[arg(long)]
    pub fuse_model: Option<String>,
    /// Its taps (default for DINOv2: its last layer, `encoder.layer.N`, as SD-DINO takes).
    #[arg(long, value_delimiter = ',')]
    pub fuse_blocks: Option<Vec<String>>,
    /// Its input size WIDTHxHEIGHT (SD-DINO: 840x840 for DINOv2 beside 960x960 for SD).
    #[arg(long)]
    pub fuse_size: Option<String>,
    /// Its weight in the fused descriptor; the first source's is 1 - this (SD-DINO: 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub fuse_weight: f32,
    /// Reduce its taps by joint PCA too (SD-DINO's CO_PCA_DINO).
    #[arg(long)]
    pub fuse_pca_dims: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// The model: `default` (bundled), a diffusers folder (pipeline or unet/), a DINOv2 folder
    /// (transformers Dinov2Model), a Hugging Face cache folder (models--org--name), or a Hugging
    /// Face name `org/name[@revision]` (a branch, tag or commit) found in the local hub cache;
    /// nothing is downloaded.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Noise timestep, 0 (clean) to the schedule's last step (999 for most models); not for DINOv2.
    #[arg(long)]
    pub t: Option<usize>,
    /// Taps by module path, comma-separated (e.g. up_blocks.1,up_blocks.1.resnets.2; DINOv2:
    /// encoder.layer.11), or `all` for every block. Where a command needs one descriptor, several
    /// taps are aggregated (resized to the finest, L2-normalised, weighted).
    #[arg(long, value_delimiter = ',', required = true)]
    pub blocks: Vec<String>,
    /// Weights of the aggregated taps, in the order of --blocks (default: all 1).
    #[arg(long, value_delimiter = ',')]
    pub tap_weights: Option<Vec<f32>>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub fusion: FusionArgs,
}

/// A float `.npy` input (noise, prompt embeddings): NaN or infinity is refused, as it would make
/// every feature NaN.
fn read_f32_npy(path: &PathBuf, what: &str) -> anyhow::Result<Tensor> {
    let array = read_npy(path).with_context(|| format!("reading the {what} file"))?;
    let values = array
        .to_finite_f32()
        .map_err(|e| anyhow::anyhow!("{}: {what}: {e}", path.display()))?;
    Ok(Tensor::from_vec(values, array.shape.clone(), &Device::Cpu)?)
}

/// CleanDIFT's code feeds t = 261 to the time embedding of its noise-free pass.
pub const CLEANDIFT_T: usize = 261;

impl RecipeArgs {
    /// Load what `spec` names on the device and in the precision of `--device` and `--dtype`.
    pub fn load(&self, spec: &str) -> anyhow::Result<FeatureModel> {
        let compute = self.compute.open()?;
        let options = LoadOptions {
            unet: self.unet.clone(),
        };
        let started = Instant::now();
        let model = FeatureModel::load(spec, &compute, &options)?;
        eprintln!(
            "loaded {spec} on {} in {}",
            compute.describe(),
            duration_text(started.elapsed().as_secs_f64())
        );
        Ok(model)
    }

    pub fn noise(&self) -> anyhow::Result<NoiseSource> {
        if self.recipe == Recipe::Cleandift {
            if self.noise.is_some() {
                bail!("--recipe cleandift adds no noise: drop --noise");
            }
            return Ok(NoiseSource::Clean);
        }
        Ok(match &self.noise {
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
        })
    }

    pub fn prompt_source(&self) -> anyhow::Result<PromptSource> {
        Ok(match (&self.prompt, &self.prompt_embeds) {
            (_, Some(path)) => PromptSource::Embeddings {
                context: read_f32_npy(path, "prompt embeddings")?,
                pooled: self
                    .pooled_embeds
                    .as_ref()
                    .map(|p| read_f32_npy(p, "pooled embeddings"))
                    .transpose()?,
            },
            (Some(p), None) => PromptSource::Text(p.clone()),
            (None, None) => PromptSource::default(),
        })
    }

    pub fn time_ids(&self) -> anyhow::Result<Option<[f64; 6]>> {
        Ok(self.time_ids.as_deref().map(parse_time_ids).transpose()?)
    }

    pub fn size(&self) -> anyhow::Result<Option<(u32, u32)>> {
        Ok(self.size.as_deref().map(parse_size).transpose()?)
    }

    /// The timestep: `t` as given, CleanDIFT's 261 when its recipe is asked without one, nothing
    /// for a vision transformer.
    pub fn timestep(&self, t: Option<usize>, model: &FeatureModel) -> anyhow::Result<usize> {
        match (t, self.recipe, model.time_free()) {
            (_, _, true) => Ok(0),
            (Some(t), _, false) => Ok(t),
            (None, Recipe::Cleandift, false) => Ok(CLEANDIFT_T),
            (None, Recipe::Dift, false) => bail!("--t is required to extract features"),
        }
    }

    /// The extraction settings for `model` at `t`, reading `taps`.
    pub fn settings(
        &self,
        model: &FeatureModel,
        t: Option<usize>,
        taps: Vec<String>,
    ) -> anyhow::Result<ExtractSettings> {
        Ok(ExtractSettings {
            t: self.timestep(t, model)?,
            taps,
            noise: self.noise()?,
            prompt: self.prompt_source()?,
            size: self.size()?,
            time_ids: self.time_ids()?,
        })
    }

    /// Settings fields as JSON.
    fn describe_json(&self, m: &mut serde_json::Map<String, serde_json::Value>) {
        match self.recipe {
            Recipe::Cleandift => {
                m.insert("recipe".into(), "cleandift".into());
            }
            Recipe::Dift => match &self.noise {
                Some(p) => {
                    m.insert("noise".into(), p.display().to_string().into());
                }
                None => {
                    m.insert("ensemble".into(), self.ensemble.into());
                    m.insert("seed".into(), self.seed.into());
                }
            },
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
        if let Some(unet) = &self.unet {
            m.insert("unet".into(), unet.display().to_string().into());
        }
        if let Some(ids) = &self.time_ids {
            m.insert("time_ids".into(), ids.clone().into());
        }
        m.insert("dtype".into(), self.compute.dtype.name().into());
    }

    /// A one-line statement of how `model` was run at `t`, for figure captions; `what` says what
    /// was read from it (`taps up_blocks.1`).
    pub fn describe_run(&self, model: &str, t: Option<usize>, what: &str) -> String {
        let t = t.map(|t| t.to_string()).unwrap_or_default();
        format!("model {model}, t={t}, {what}, {}", self.describe())
    }

    fn describe(&self) -> String {
        let noise = match (self.recipe, &self.noise) {
            (Recipe::Cleandift, _) => "CleanDIFT recipe (no noise)".to_string(),
            (Recipe::Dift, Some(p)) => format!("noise {}", p.display()),
            (Recipe::Dift, None) => format!("ensemble {}, seed {}", self.ensemble, self.seed),
        };
        let prompt = match (&self.prompt, &self.prompt_embeds) {
            (_, Some(p)) => format!("prompt embeddings {}", p.display()),
            (Some(p), None) => format!("prompt \"{p}\""),
            (None, None) => "empty prompt".to_string(),
        };
        let unet = self
            .unet
            .as_ref()
            .map(|u| format!(", UNet {}", u.display()))
            .unwrap_or_default();
        // Half precision changes the numbers a little: say so; float32 is the default and unsaid.
        let dtype = match self.compute.dtype {
            Precision::F32 => String::new(),
            p => format!(", {p}"),
        };
        format!("{noise}, {prompt}{unet}{dtype}")
    }
}

impl FusionArgs {
    /// Whether the taps go through the fusion recipe rather than the plain aggregate.
    pub fn active(&self) -> bool {
        self.fuse_model.is_some() || self.pca_dims.is_some()
    }

    /// Per tap of --blocks: its PCA size, None to keep it whole.
    pub fn tap_pca(&self, taps: usize) -> anyhow::Result<Vec<Option<usize>>> {
        match &self.pca_dims {
            None => Ok(vec![None; taps]),
            Some(d) if d.len() == taps => Ok(d.iter().map(|&d| (d > 0).then_some(d)).collect()),
            Some(d) if d.len() == 1 => Ok(vec![(d[0] > 0).then_some(d[0]); taps]),
            Some(d) => bail!("--pca-dims has {} entries for {taps} taps", d.len()),
        }
    }

    pub fn size(&self) -> anyhow::Result<Option<(u32, u32)>> {
        Ok(self.fuse_size.as_deref().map(parse_size).transpose()?)
    }

    /// The second source's taps: as given, or DINOv2's last layer.
    pub fn taps(&self, model: &FeatureModel) -> anyhow::Result<Vec<String>> {
        match &self.fuse_blocks {
            Some(b) => Ok(expand_taps(b, model.taps())),
            None if model.summary().family == ModelFamily::VisionTransformer => {
                let last = model
                    .taps()
                    .iter()
                    .rev()
                    .find(|t| t.name.starts_with("encoder.layer."))
                    .context("this DINOv2 has no layers")?;
                Ok(vec![last.name.clone()])
            }
            None => bail!("--fuse-blocks is required when the second source is a diffusion model"),
        }
    }

    pub fn check_weight(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.fuse_weight) {
            bail!(
                "--fuse-weight must be between 0 and 1, got {}",
                self.fuse_weight
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut parts = vec![];
        if let Some(d) = &self.pca_dims {
            parts.push(format!("joint PCA {d:?}"));
        }
        if let Some(m) = &self.fuse_model {
            let taps = self
                .fuse_blocks
                .as_ref()
                .map(|b| b.join("+"))
                .unwrap_or_else(|| "last layer".into());
            parts.push(format!(
                "fused with {m} {taps} (weight {})",
                self.fuse_weight
            ));
        }
        parts.join(", ")
    }
}

impl FeatureArgs {
    /// The model on the device and in the precision of `--device` and `--dtype`.
    pub fn load_model(&self) -> anyhow::Result<FeatureModel> {
        self.recipe.load(&self.model)
    }

    /// The extraction settings for `model`.
    pub fn settings(&self, model: &FeatureModel) -> anyhow::Result<ExtractSettings> {
        self.recipe.settings(model, self.t, self.blocks.clone())
    }

    pub fn size(&self) -> anyhow::Result<Option<(u32, u32)>> {
        self.recipe.size()
    }

    /// One descriptor per image: extracted with the model, or read from feature files written by
    /// `diffscope extract` (one per image, same order), then the taps aggregated, or fused with
    /// the second source when one is given.
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
        let mut taps_per_image: Vec<Vec<(String, FeatureMap)>> = Vec::with_capacity(images.len());
        match files {
            Some(files) => {
                for file in files {
                    taps_per_image.push(read_feature_file(file, &self.blocks)?);
                }
            }
            None => {
                let model = self.load_model()?;
                let settings = self.settings(&model)?;
                taps_per_image = extract_all(&model, images, &settings)?;
            }
        }
        let maps = if self.fusion.active() {
            self.fused(images, &taps_per_image)?
        } else {
            taps_per_image
                .iter()
                .map(|taps| self.aggregate(taps))
                .collect::<anyhow::Result<_>>()?
        };
        images
            .iter()
            .zip(maps)
            .map(|(path, map)| -> anyhow::Result<ImageFeatures> {
                Ok(ImageFeatures {
                    path: path.clone(),
                    image: resize(load_rgb(path)?, size),
                    map,
                })
            })
            .collect()
    }

    fn tap_weights(&self, taps: usize) -> anyhow::Result<Vec<f32>> {
        match &self.tap_weights {
            Some(w) if w.len() == taps => Ok(w.clone()),
            Some(w) => bail!("{} tap weights for {taps} taps", w.len()),
            None => Ok(vec![1.0; taps]),
        }
    }

    fn aggregate(&self, taps: &[(String, FeatureMap)]) -> anyhow::Result<FeatureMap> {
        if let [(_, only)] = taps {
            return Ok(only.clone());
        }
        let weights = self.tap_weights(taps.len())?;
        let inputs: Vec<WeightedTap> = taps
            .iter()
            .zip(&weights)
            .map(|((_, map), &weight)| WeightedTap { map, weight })
            .collect();
        Ok(aggregate(&inputs, AggregateGrid::Finest)?)
    }

    /// The model's taps of every image fused SD-DINO's way with the second source's.
    fn fused(
        &self,
        images: &[PathBuf],
        taps_per_image: &[Vec<(String, FeatureMap)>],
    ) -> anyhow::Result<Vec<FeatureMap>> {
        self.fusion.check_weight()?;
        let names: Vec<String> = taps_per_image[0].iter().map(|(n, _)| n.clone()).collect();
        let pca = self.fusion.tap_pca(names.len())?;
        let weights = self.tap_weights(names.len())?;
        let tap = |k: usize, table: &[Vec<(String, FeatureMap)>]| -> Vec<FeatureMap> {
            table.iter().map(|taps| taps[k].1.clone()).collect()
        };
        let first: Vec<Vec<FeatureMap>> =
            (0..names.len()).map(|k| tap(k, taps_per_image)).collect();
        let second = match &self.fusion.fuse_model {
            Some(spec) => {
                let model = self
                    .recipe
                    .load(spec)
                    .with_context(|| format!("loading --fuse-model {spec}"))?;
                let taps = self.fusion.taps(&model)?;
                let mut settings = self.settings(&model)?;
                settings.taps = taps;
                settings.size = self.fusion.size()?;
                let table = extract_all(&model, images, &settings)?;
                let names: Vec<String> = table[0].iter().map(|(n, _)| n.clone()).collect();
                let maps: Vec<Vec<FeatureMap>> = (0..names.len()).map(|k| tap(k, &table)).collect();
                Some((spec.clone(), names, maps))
            }
            None => None,
        };
        let second_weight = second.as_ref().map_or(0.0, |_| self.fusion.fuse_weight);
        let mut sources = vec![FusionSource {
            name: self.model.clone(),
            taps: names
                .iter()
                .enumerate()
                .map(|(k, name)| FusionTap {
                    name: name.clone(),
                    maps: first[k].iter().collect(),
                    pca_dims: pca[k],
                    weight: weights[k],
                })
                .collect(),
            weight: 1.0 - second_weight,
        }];
        if let Some((spec, names, maps)) = &second {
            sources.push(FusionSource {
                name: spec.clone(),
                taps: names
                    .iter()
                    .zip(maps)
                    .map(|(name, maps)| FusionTap {
                        name: name.clone(),
                        maps: maps.iter().collect(),
                        pca_dims: self.fusion.fuse_pca_dims,
                        weight: 1.0,
                    })
                    .collect(),
                weight: second_weight,
            });
        }
        let fusion = fuse(&sources, AggregateGrid::Finest)?;
        eprintln!("{}", fusion.description);
        Ok(fusion.maps)
    }

    /// The settings as JSON fields, for files that record how they were made.
    pub fn settings_json(&self, from_files: bool) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("taps".into(), self.blocks.clone().into());
        if let Some(w) = &self.tap_weights {
            m.insert("tap_weights".into(), w.clone().into());
        }
        if self.fusion.active() {
            m.insert("fusion".into(), self.fusion.describe().into());
        }
        if from_files {
            m.insert("features".into(), "from files".into());
            return m;
        }
        m.insert("model".into(), self.model.clone().into());
        if let Some(t) = self.t {
            m.insert("t".into(), t.into());
        }
        self.recipe.describe_json(&mut m);
        m
    }

    /// A one-line statement of how the features were made, for figure captions.
    pub fn describe(&self, from_files: bool) -> String {
        let fusion = if self.fusion.active() {
            format!(", {}", self.fusion.describe())
        } else {
            String::new()
        };
        if from_files {
            return format!(
                "features from files, taps {}{fusion}",
                self.blocks.join("+")
            );
        }
        let taps = format!("taps {}", self.blocks.join("+"));
        let run = self.recipe.describe_run(&self.model, self.t, &taps);
        format!("{run}{fusion}")
    }
}

/// Every image's taps by `model` under `settings`, in request order.
fn extract_all(
    model: &FeatureModel,
    images: &[PathBuf],
    settings: &ExtractSettings,
) -> anyhow::Result<Vec<Vec<(String, FeatureMap)>>> {
    let mut bar = Progress::new("features", images.len(), "images");
    let features = images
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = path.display().to_string();
            bar.set(i, &name);
            let ex = extract_features(model, path, settings, None, &mut |done, total| {
                bar.set(i, format!("{name}: UNet pass {done}/{total}"))
            })?;
            let order = expand_taps(&settings.taps, model.taps());
            order
                .iter()
                .map(|n| {
                    let t = ex.taps.get(n).context("a tap was not extracted")?;
                    Ok((n.clone(), FeatureMap::from_tensor(t)?))
                })
                .collect()
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    bar.finish();
    Ok(features)
}

/// An image (resized as asked) and its one descriptor.
pub struct ImageFeatures {
    pub path: PathBuf,
    pub image: RgbImage,
    pub map: FeatureMap,
}

/// The requested taps from a `diffscope extract` .safetensors file, in request order.
fn read_feature_file(path: &Path, blocks: &[String]) -> anyhow::Result<Vec<(String, FeatureMap)>> {
    let tensors = read_tensors(path, &Device::Cpu)?;
    // Feature maps only: `latents` and a vision transformer's class/register tokens are not taps.
    let mut names: Vec<&String> = tensors
        .iter()
        .filter(|(k, t)| k.as_str() != "latents" && t.rank() == 3)
        .map(|(k, _)| k)
        .collect();
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
