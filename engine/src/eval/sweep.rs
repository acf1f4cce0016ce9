//! The correspondence benchmark: PCK of a model's features on an SPair-layout dataset, for every
//! (block, timestep), next to two baselines (raw pixel colours, and the same UNet with untrained
//! weights). Features are extracted once per (image, t) for all blocks at once.
//!
//! Matching follows DIFT's protocol: for each annotated source keypoint, the feature vector at that
//! point is compared by cosine with every target cell; the similarity map is upsampled bilinearly to
//! the target image and its argmax is the prediction (DIFT upsamples the features instead; the
//! similarity of upsampled features and the upsampled similarity agree to first order, and the
//! latter needs no 3 GB maps).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::pck::{PckAccumulator, PckReport};
use crate::analysis::correspond::{similarity_map, source_vector};
use crate::analysis::{ImagePoint, ImageSize, NormalizedMap};
use crate::data::spair::{PairAnnotation, PairQuery, SpairDataset};
use crate::error::{Error, Result};
use crate::features::extract::expand_taps;
use crate::features::recipe::{extract_from_latents, NoiseSource, UNetRequest};
use crate::io::image::{load_rgb, to_model_input};
use crate::model::pipeline::{DiffusionModel, PromptSource};
use crate::FeatureMap;

#[derive(Clone, Debug)]
pub struct SweepSettings {
    /// Tap names (or `all`).
    pub blocks: Vec<String>,
    pub timesteps: Vec<usize>,
    pub alphas: Vec<f64>,
    pub ensemble: usize,
    pub seed: u64,
    pub query: PairQuery,
}

/// One row of the result: a method, a block and a timestep (None for t-independent baselines).
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub method: String,
    pub block: String,
    pub t: Option<usize>,
    pub report: PckReport,
}

/// The features of every image at one timestep: image path -> tap -> map.
type FeatureTable = HashMap<PathBuf, BTreeMap<String, FeatureMap>>;

fn image_size(p: &std::path::Path) -> Result<ImageSize> {
    let img = load_rgb(p)?;
    Ok(ImageSize::new(img.width() as usize, img.height() as usize))
}

/// Predict every source keypoint of a pair in the target (DIFT's protocol, see the module docs).
pub fn predict_pair(
    src: &FeatureMap,
    trg: &FeatureMap,
    pair: &PairAnnotation,
) -> Result<Vec<[f64; 2]>> {
    let src_map = NormalizedMap::new(src, "source")?;
    let trg_map = NormalizedMap::new(trg, "target")?;
    let src_size = ImageSize::new(pair.src_imsize[0] as usize, pair.src_imsize[1] as usize);
    let trg_size = ImageSize::new(pair.trg_imsize[0] as usize, pair.trg_imsize[1] as usize);
    pair.src_kps
        .iter()
        .map(|kp| {
            let v = source_vector(
                &src_map,
                src_size,
                ImagePoint::new(kp[0] as f32, kp[1] as f32),
            )?;
            let up = similarity_map(&v, &trg_map)?.upsample_bilinear(trg_size);
            let best = up
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &s)| if s > b.1 { (i, s) } else { b },
                )
                .0;
            Ok([
                (best % trg_size.width) as f64,
                (best / trg_size.width) as f64,
            ])
        })
        .collect()
}

/// Raw pixel colours as a `[3,H,W]` feature map (the trivial baseline).
pub fn pixel_features(path: &std::path::Path) -> Result<FeatureMap> {
    let x = to_model_input(&load_rgb(path)?, &candle_core::Device::Cpu)?;
    FeatureMap::from_tensor(&x)
}

fn extract_all(
    model: &DiffusionModel,
    images: &[PathBuf],
    t: usize,
    taps: &[String],
    settings: &SweepSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(&str),
) -> Result<FeatureTable> {
    let context = model.condition(&PromptSource::default())?;
    let mut table = HashMap::new();
    for (i, path) in images.iter().enumerate() {
        progress(&format!(
            "t={t}: features of image {}/{}",
            i + 1,
            images.len()
        ));
        let x = to_model_input(&load_rgb(path)?, &model.device)?;
        let latents = model.encode(&x)?;
        let request = UNetRequest {
            t,
            taps: taps.to_vec(),
            noise: NoiseSource::Seeded {
                seed: settings.seed,
                ensemble: settings.ensemble,
            },
        };
        let maps = extract_from_latents(
            &model.unet,
            &model.schedule,
            &latents,
            context.as_ref(),
            &request,
            cancel,
            &mut |_, _| {},
        )?;
        let maps = maps
            .iter()
            .map(|(n, t)| Ok((n.clone(), FeatureMap::from_tensor(t)?)))
            .collect::<Result<_>>()?;
        table.insert(path.clone(), maps);
    }
    Ok(table)
}

fn score(
    pairs: &[PairAnnotation],
    alphas: &[f64],
    features: impl Fn(&PairAnnotation) -> Result<(FeatureMap, FeatureMap)>,
) -> Result<PckReport> {
    let mut acc = PckAccumulator::new(alphas)?;
    for pair in pairs {
        let (src, trg) = features(pair)?;
        let predicted = predict_pair(&src, &trg, pair)?;
        acc.add_pair(&pair.category, &predicted, &pair.trg_kps, pair.trg_bndbox)?;
    }
    Ok(acc.report())
}

/// Run the benchmark. `untrained` is the same architecture with fresh weights (a baseline).
pub fn run_sweep(
    model: &DiffusionModel,
    untrained: Option<&DiffusionModel>,
    dataset: &SpairDataset,
    settings: &SweepSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<SweepRow>> {
    let pairs = dataset.load_pairs(&settings.query)?;
    if pairs.is_empty() {
        return Err(Error::file(dataset.root(), "no pairs match the query"));
    }
    for pair in &pairs {
        for (path, size) in [
            (&pair.src_image, pair.src_imsize),
            (&pair.trg_image, pair.trg_imsize),
        ] {
            let actual = image_size(path)?;
            if (actual.width as u32, actual.height as u32) != (size[0], size[1]) {
                return Err(Error::file(
                    path,
                    format!(
                        "image is {}x{} but its annotation says {}x{}",
                        actual.width, actual.height, size[0], size[1]
                    ),
                ));
            }
        }
    }
    let mut images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.src_image.clone(), p.trg_image.clone()])
        .collect();
    images.sort();
    images.dedup();
    let taps = expand_taps(&settings.blocks, model.unet.taps());
    crate::model::taps::validate_taps(&taps, model.unet.taps())?;
    for &t in &settings.timesteps {
        model.schedule.check_timestep(t)?;
    }

    let mut rows = vec![];
    progress("baseline: pixel colours");
    let pixels: HashMap<PathBuf, FeatureMap> = images
        .iter()
        .map(|p| Ok((p.clone(), pixel_features(p)?)))
        .collect::<Result<_>>()?;
    let report = score(&pairs, &settings.alphas, |p| {
        Ok((pixels[&p.src_image].clone(), pixels[&p.trg_image].clone()))
    })?;
    rows.push(SweepRow {
        method: "pixels".into(),
        block: "rgb".into(),
        t: None,
        report,
    });

    let methods: Vec<(&str, &DiffusionModel)> = std::iter::once(("model", model))
        .chain(untrained.map(|u| ("untrained", u)))
        .collect();
    for (method, m) in methods {
        for &t in &settings.timesteps {
            let table = extract_all(m, &images, t, &taps, settings, cancel, &mut |s| {
                progress(&format!("{method}: {s}"))
            })?;
            for tap in &taps {
                let report = score(&pairs, &settings.alphas, |p| {
                    Ok((
                        table[&p.src_image][tap].clone(),
                        table[&p.trg_image][tap].clone(),
                    ))
                })?;
                rows.push(SweepRow {
                    method: method.into(),
                    block: tap.clone(),
                    t: Some(t),
                    report,
                });
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::spair::PairFlags;

    /// One-hot features: cell (r, c) of an 8x8 grid has channel r*8+c set, so every location is
    /// unique and the true match is known.
    fn one_hot(shift: (usize, usize)) -> FeatureMap {
        let n = 8;
        let mut data = vec![0f32; n * n * n * n];
        for r in 0..n {
            for c in 0..n {
                let channel = ((r + shift.0) % n) * n + (c + shift.1) % n;
                data[channel * n * n + r * n + c] = 1.0;
            }
        }
        FeatureMap::new(n * n, n, n, data).unwrap()
    }

    #[test]
    fn unique_features_find_every_keypoint_exactly() {
        // 64x64 images, 8x8 cells: cell (r, c) is centred on pixel (8c + 3.5, 8r + 3.5).
        // The target is the source shifted by one cell down and two right.
        let src = one_hot((0, 0));
        let trg = one_hot((7, 6));
        let pair = PairAnnotation {
            name: "toy".into(),
            pair_id: None,
            category: "toy".into(),
            src_imname: "a".into(),
            trg_imname: "b".into(),
            src_image: "a".into(),
            trg_image: "b".into(),
            src_imsize: [64, 64],
            trg_imsize: [64, 64],
            src_bndbox: [0.0, 0.0, 63.0, 63.0],
            trg_bndbox: [0.0, 0.0, 63.0, 63.0],
            src_kps: vec![[11.5, 3.5], [35.5, 43.5]],
            trg_kps: vec![[27.5, 11.5], [51.5, 51.5]],
            kps_ids: None,
            flags: PairFlags::default(),
        };
        let predicted = predict_pair(&src, &trg, &pair).unwrap();
        // The argmax pixel of the upsampled similarity is one of the 4 pixels around the cell centre.
        for (p, t) in predicted.iter().zip(&pair.trg_kps) {
            assert!(
                (p[0] - t[0]).abs() <= 0.5 && (p[1] - t[1]).abs() <= 0.5,
                "{p:?} vs {t:?}"
            );
        }
    }
}
