//! Extraction from an image file with a loaded model: the whole recipe, as the CLI and the
//! worker run it. The image is encoded once, whatever the ensemble size.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::Tensor;
use image::RgbImage;

use super::recipe::{extract_from_latents, NoiseSource, ProgressFn, UNetRequest};
use crate::error::{Error, Result};
use crate::io::image::{load_rgb, resize, to_model_input, RESIZE_FILTER};
use crate::model::dinov2::imagenet_input;
use crate::model::feature_model::{FeatureModel, VitModel};
use crate::model::pipeline::{DiffusionModel, PromptSource};
use crate::model::taps::TapInfo;

#[derive(Clone, Debug)]
pub struct ExtractSettings {
    pub t: usize,
    /// Tap names; `all` stands for every block-level tap.
    pub taps: Vec<String>,
    pub noise: NoiseSource,
    pub prompt: PromptSource,
    /// Resize (squash) the image to this `(width, height)` first.
    pub size: Option<(u32, u32)>,
    /// SDXL's time ids `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`; by default the
    /// input image's size, uncropped.
    pub time_ids: Option<[f64; 6]>,
}

pub struct Extraction {
    /// Each tap's `[C,h,w]` map, averaged over the ensemble.
    pub taps: BTreeMap<String, Tensor>,
    /// The clean latent `z` `[C,h,w]` (the image itself for pixel models, the normalised image
    /// for DINOv2).
    pub latents: Tensor,
    /// A vision transformer's other tokens per tap: `<tap>.cls` `[C]`, `<tap>.registers` `[R,C]`.
    pub tokens: BTreeMap<String, Tensor>,
    /// Every setting, as strings, for the file's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Expand `all` to every block-level tap, keep the model's forward order, drop repeats.
pub fn expand_taps(requested: &[String], offered: &[TapInfo]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in requested {
        let r = r.trim();
        if r == "all" {
            names.extend(
                offered
                    .iter()
                    .filter(|t| t.block_level)
                    .map(|t| t.name.clone()),
            );
        } else if !r.is_empty() {
            names.push(r.to_string());
        }
    }
    let order = |n: &String| {
        offered
            .iter()
            .position(|t| &t.name == n)
            .unwrap_or(usize::MAX)
    };
    names.sort_by_key(order);
    names.dedup();
    names
}

pub fn extract_image(
    model: &DiffusionModel,
    image_path: &Path,
    settings: &ExtractSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<Extraction> {
    let taps = expand_taps(&settings.taps, model.unet.taps());
    // Check cheap things before the expensive encode.
    model.schedule.check_timestep(settings.t)?;
    crate::model::taps::validate_taps(&taps, model.unet.taps())?;
    let (x, (width, height)) =
        model_input(model, load_rgb(image_path)?, settings.size, image_path)?;
    let latents = model.encode(&x)?;
    let context = model
        .condition(&settings.prompt)?
        .map(|c| c.at_size((width, height), settings.time_ids));
    let request = UNetRequest {
        t: settings.t,
        taps,
        noise: settings.noise.clone(),
    };
    let maps = extract_from_latents(
        &model.unet,
        &model.schedule,
        &latents,
        context.as_ref(),
        &request,
        cancel,
        progress,
    )?;
    let metadata = describe(model, image_path, (width, height), settings, &request);
    Ok(Extraction {
        taps: maps,
        latents: latents.squeeze(0)?.to_dtype(candle_core::DType::F32)?,
        tokens: BTreeMap::new(),
        metadata,
    })
}

/// [`extract_image`] for any feature source: a diffusion model runs the recipe, a vision
/// transformer one pass (t, noise and prompt do not apply to it).
pub fn extract_features(
    model: &FeatureModel,
    image_path: &Path,
    settings: &ExtractSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<Extraction> {
    match model {
        FeatureModel::Diffusion(m) => extract_image(m, image_path, settings, cancel, progress),
        FeatureModel::Vit(v) => extract_vit(v, image_path, &settings.taps, settings.size, cancel),
    }
}

/// A DINOv2's taps of an image (resized to `size` when given): one pass, no timestep or noise.
pub fn extract_vit(
    vit: &VitModel,
    image_path: &Path,
    requested: &[String],
    size: Option<(u32, u32)>,
    cancel: Option<&AtomicBool>,
) -> Result<Extraction> {
    let taps = expand_taps(requested, vit.net.taps());
    crate::model::taps::validate_taps(&taps, vit.net.taps())?;
    let image = resize(load_rgb(image_path)?, size);
    let (width, height) = image.dimensions();
    vit.net
        .check_input_size((width, height))
        .map_err(|e| Error::file(image_path, e.to_string()))?;
    let x = imagenet_input(&image, &vit.device)?;
    let mut maps = BTreeMap::new();
    let mut tokens = BTreeMap::new();
    for (name, tap) in vit.net.forward_taps(&x, &taps, cancel)? {
        tokens.insert(format!("{name}.cls"), tap.cls);
        if let Some(registers) = tap.registers {
            tokens.insert(format!("{name}.registers"), registers);
        }
        maps.insert(name, tap.map);
    }
    let mut m = BTreeMap::new();
    m.insert("model".into(), vit.net.dir.display().to_string());
    m.insert("image".into(), image_path.display().to_string());
    m.insert("size".into(), format!("{width}x{height}"));
    let resized = if size.is_some() {
        RESIZE_FILTER
    } else {
        "none"
    };
    m.insert("resize".into(), resized.to_string());
    m.insert("taps".into(), taps.join(","));
    m.insert("t".into(), "none".into());
    m.insert(
        "input".into(),
        "ImageNet-normalised RGB, (u8/255 - mean)/std".into(),
    );
    m.insert(
        "recipe".into(),
        "DINOv2: one pass, patch tokens of each tap as [C,h,w] (no timestep or noise)".into(),
    );
    m.insert(
        "version".into(),
        format!("diffscope {}", env!("CARGO_PKG_VERSION")),
    );
    Ok(Extraction {
        taps: maps,
        latents: x.squeeze(0)?,
        tokens,
        metadata: m,
    })
}

/// The model's input `[1,3,H,W]` for an image, resized to `size` when given, and its size
/// `(width, height)`. Errors, naming `image_path`, when the size does not fit the model.
pub fn model_input(
    model: &DiffusionModel,
    image: RgbImage,
    size: Option<(u32, u32)>,
    image_path: &Path,
) -> Result<(Tensor, (u32, u32))> {
    let image = resize(image, size);
    let (width, height) = image.dimensions();
    let stride = model.summary().input_stride as u32;
    if width % stride != 0 || height % stride != 0 {
        return Err(Error::file(
            image_path,
            format!("{width}x{height} is not a multiple of {stride}, which this model's VAE needs: pass --size, e.g. {}x{}", width / stride * stride, height / stride * stride),
        ));
    }
    model
        .unet
        .check_input_size((height / stride) as usize, (width / stride) as usize)
        .map_err(|e| Error::file(image_path, e.to_string()))?;
    Ok((to_model_input(&image, &model.device)?, (width, height)))
}

/// The settings of an extraction as strings, for a dump's metadata.
pub fn describe(
    model: &DiffusionModel,
    image_path: &Path,
    (width, height): (u32, u32),
    settings: &ExtractSettings,
    request: &UNetRequest,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("model".into(), model.folders.root.display().to_string());
    m.insert("image".into(), image_path.display().to_string());
    m.insert("size".into(), format!("{width}x{height}"));
    m.insert(
        "resize".into(),
        if settings.size.is_some() {
            RESIZE_FILTER.to_string()
        } else {
            "none".to_string()
        },
    );
    m.insert("t".into(), settings.t.to_string());
    m.insert(
        "alpha_bar".into(),
        model
            .schedule
            .alpha_bar(settings.t)
            .map(|a| a.to_string())
            .unwrap_or_default(),
    );
    m.insert("taps".into(), request.taps.join(","));
    m.insert("ensemble".into(), settings.noise.ensemble().to_string());
    match &settings.noise {
        NoiseSource::Seeded { seed, .. } => {
            m.insert("seed".into(), seed.to_string());
            m.insert(
                "noise".into(),
                "seeded (rand StdRng, one stream per member)".into(),
            );
        }
        NoiseSource::Given(_) => {
            m.insert("noise".into(), "given".into());
        }
        NoiseSource::Clean => {
            m.insert("noise".into(), "none (CleanDIFT)".into());
        }
    }
    match &settings.prompt {
        PromptSource::Text(p) => m.insert("prompt".into(), p.clone()),
        PromptSource::Embeddings { .. } => m.insert("prompt".into(), "<embeddings>".into()),
    };
    if model.unet.pooled_text_dim().is_some() {
        let (w, h) = (f64::from(width), f64::from(height));
        let ids = settings.time_ids.unwrap_or([h, w, 0.0, 0.0, h, w]);
        let ids: Vec<String> = ids.iter().map(|v| v.to_string()).collect();
        m.insert("time_ids".into(), ids.join(","));
    }
    m.insert("recipe".into(), recipe_line(&settings.noise).into());
    m.insert(
        "version".into(),
        format!("diffscope {}", env!("CARGO_PKG_VERSION")),
    );
    m
}

/// The recipe in one line, for metadata and captions.
pub fn recipe_line(noise: &NoiseSource) -> &'static str {
    match noise {
        NoiseSource::Clean => "CleanDIFT: the clean latent z through the UNet once, t only in the time embedding, no noise",
        _ => "z_t = sqrt(ab[t]) z + sqrt(1-ab[t]) eps_k; UNet taps averaged over k",
    }
}
