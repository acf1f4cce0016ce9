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
}

pub struct Extraction {
    /// Each tap's `[C,h,w]` map, averaged over the ensemble.
    pub taps: BTreeMap<String, Tensor>,
    /// The clean latent `z` `[C,h,w]` (the image itself for pixel models).
    pub latents: Tensor,
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
    let context = model.condition(&settings.prompt)?;
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
        latents: latents.squeeze(0)?,
        metadata,
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
    }
    match &settings.prompt {
        PromptSource::Text(p) => m.insert("prompt".into(), p.clone()),
        PromptSource::Embeddings(_) => m.insert("prompt".into(), "<embeddings>".into()),
    };
    m.insert(
        "recipe".into(),
        "z_t = sqrt(ab[t]) z + sqrt(1-ab[t]) eps_k; UNet taps averaged over k".into(),
    );
    m.insert(
        "version".into(),
        format!("diffscope {}", env!("CARGO_PKG_VERSION")),
    );
    m
}
