//! The correspondence benchmark: PCK of a model's features on an SPair-layout dataset, for every
//! (block, timestep), next to two baselines (raw pixel colours, and the same UNet with untrained
//! weights). Features are extracted once per (image, t) for all blocks at once.
//!
//! Matching follows DIFT's protocol, by default cheaply ([`MATCH_RULE`]): for each annotated
//! source keypoint, the feature vector at that point is compared by cosine with every target cell;
//! the similarity map is upsampled bilinearly to the target image and its argmax is the prediction.
//! DIFT upsamples the features instead ([`MatchRule::UpsampledFeatures`], also offered and exact);
//! the two agree to first order. The threshold comes from the target's box or image
//! ([`ThresholdBase`]). Images may be resized for the model; predictions are always in the
//! original image's pixels, where the annotation is.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::pck::{PckAccumulator, PckReport, ThresholdBase};
use crate::analysis::aggregate::{aggregate, AggregateGrid, WeightedTap};
use crate::analysis::recipes::correspondence::{predict_keypoints, MatchRule};
use crate::analysis::recipes::fusion::{fuse, FusionSource, FusionTap};
use crate::analysis::ImageSize;
use crate::data::spair::{PairAnnotation, PairQuery, SpairDataset};
use crate::error::{Error, Result};
use crate::features::extract::{expand_taps, extract_vit};
use crate::features::recipe::{extract_from_many_latents, NoiseSource, UNetRequest};
use crate::io::image::{load_rgb, resize, to_model_input};
use crate::model::feature_model::FeatureModel;
use crate::model::pipeline::PromptSource;
use crate::FeatureMap;

/// The prompt of every image: one for all, or a template with `{category}` filled per pair's
/// category (DIFT's `"a photo of a {category}"` for SPair).
#[derive(Clone, Debug)]
pub enum PromptChoice {
    Fixed(PromptSource),
    Template(String),
}

impl PromptChoice {
    fn for_category(&self, category: &str) -> PromptSource {
        match self {
            PromptChoice::Fixed(p) => p.clone(),
            PromptChoice::Template(t) => PromptSource::Text(t.replace("{category}", category)),
        }
    }
}

/// How each image's features are made (the recipe flags of `extract`).
#[derive(Clone, Debug)]
pub struct SweepRecipe {
    /// Seeded draws (DIFT) or none (CleanDIFT).
    pub noise: NoiseSource,
    pub prompt: PromptChoice,
    /// Resize (squash) each image first.
    pub size: Option<(u32, u32)>,
    /// SDXL's time ids (default: each input's size).
    pub time_ids: Option<[f64; 6]>,
}

impl Default for SweepRecipe {
    fn default() -> Self {
        Self {
            noise: NoiseSource::Seeded {
                seed: 0,
                ensemble: 8,
            },
            prompt: PromptChoice::Fixed(PromptSource::default()),
            size: None,
            time_ids: None,
        }
    }
}

/// A second feature source fused with the model's taps (SD-DINO).
pub struct SecondSource<'a> {
    pub model: &'a FeatureModel,
    pub taps: Vec<String>,
    /// Its own input size (SD-DINO feeds DINOv2 840 while SD takes 960).
    pub size: Option<(u32, u32)>,
    pub pca_dims: Option<usize>,
    /// Its weight; the model's taps get `1 - weight`.
    pub weight: f32,
}

/// What one row of the table scores.
pub enum Descriptor<'a> {
    /// Every tap on its own (a row per tap).
    EachTap,
    /// All taps as one descriptor (a single row): aggregated with `weights`, or fused SD-DINO's
    /// way when a tap is PCA-reduced or a second source is given. PCA is fitted per pair, jointly
    /// on its two images, as SD-DINO does.
    Together {
        weights: Vec<f32>,
        pca_dims: Vec<Option<usize>>,
        second: Option<SecondSource<'a>>,
    },
}

pub struct SweepSettings<'a> {
    /// Tap names (or `all`).
    pub blocks: Vec<String>,
    pub timesteps: Vec<usize>,
    pub alphas: Vec<f64>,
    pub query: PairQuery,
    pub recipe: SweepRecipe,
    pub descriptor: Descriptor<'a>,
    pub rule: MatchRule,
    pub threshold: ThresholdBase,
}

impl SweepSettings<'_> {
    /// How points are matched and counted, for reports.
    pub fn protocol(&self) -> String {
        format!(
            "{}; {}; correct when distance / threshold base <= alpha; per image = mean over pairs of each pair's PCK, per point = correct points / all points",
            self.rule.describe(),
            self.threshold.describe()
        )
    }
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

fn image_size(p: &Path) -> Result<ImageSize> {
    let img = load_rgb(p)?;
    Ok(ImageSize::new(img.width() as usize, img.height() as usize))
}

/// How the benchmark matches keypoints by default (see the module docs).
pub const MATCH_RULE: MatchRule = MatchRule::UpsampledArgmax;

/// Predict every source keypoint of a pair in the target by `rule`.
pub fn predict_pair(
    src: &FeatureMap,
    trg: &FeatureMap,
    pair: &PairAnnotation,
    rule: &MatchRule,
) -> Result<Vec<[f64; 2]>> {
    let src_size = ImageSize::new(pair.src_imsize[0] as usize, pair.src_imsize[1] as usize);
    let trg_size = ImageSize::new(pair.trg_imsize[0] as usize, pair.trg_imsize[1] as usize);
    predict_keypoints((src, src_size), (trg, trg_size), &pair.src_kps, rule)
}

/// Raw pixel colours as a `[3,H,W]` feature map (the trivial baseline).
pub fn pixel_features(path: &Path) -> Result<FeatureMap> {
    let x = to_model_input(&load_rgb(path)?, &candle_core::Device::Cpu)?;
    FeatureMap::from_tensor(&x)
}

/// Every image's taps by `model` at `t` under `recipe`, each image's prompt made for its
/// category. A diffusion model takes the images of one size and category (so one prompt)
/// through the UNet together, their draws batched to what the device holds (on a GPU many
/// images per pass); the numbers are those of one image at a time.
#[allow(clippy::too_many_arguments)]
fn extract_all(
    model: &FeatureModel,
    images: &[(PathBuf, String)],
    t: usize,
    taps: &[String],
    recipe: &SweepRecipe,
    size: Option<(u32, u32)>,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(usize, String),
) -> Result<FeatureTable> {
    let to_maps = |maps: BTreeMap<String, candle_core::Tensor>| -> Result<_> {
        maps.iter()
            .map(|(n, t)| Ok((n.clone(), FeatureMap::from_tensor(t)?)))
            .collect::<Result<BTreeMap<_, _>>>()
    };
    let mut table = HashMap::new();
    let m = match model {
        FeatureModel::Vit(vit) => {
            for (i, (path, _)) in images.iter().enumerate() {
                progress(i, format!("features of image {}/{}", i + 1, images.len()));
                let maps = extract_vit(vit, path, taps, size, cancel)?.taps;
                table.insert(path.clone(), to_maps(maps)?);
            }
            return Ok(table);
        }
        FeatureModel::Diffusion(m) => m,
    };
    // Encode every image; group them by category and size, in the order each group first comes.
    type Group = ((String, (u32, u32)), Vec<usize>);
    let mut latents = Vec::with_capacity(images.len());
    let mut groups: Vec<Group> = Vec::new();
    for (i, (path, category)) in images.iter().enumerate() {
        progress(
            0,
            format!("t={t}: encoding image {}/{}", i + 1, images.len()),
        );
        let image = resize(load_rgb(path)?, size);
        let dims = image.dimensions();
        let (x, _) = crate::features::extract::model_input(m, image, None, path)?;
        latents.push(m.encode(&x)?);
        let key = (category.clone(), dims);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let request = UNetRequest {
        t,
        taps: taps.to_vec(),
        noise: recipe.noise.clone(),
    };
    let mut done = 0;
    for ((category, dims), members) in groups {
        progress(
            done,
            format!(
                "t={t}: features of images {}-{} of {}",
                done + 1,
                done + members.len(),
                images.len()
            ),
        );
        let context = m
            .condition(&recipe.prompt.for_category(&category))?
            .map(|c| c.at_size(dims, recipe.time_ids));
        let group: Vec<candle_core::Tensor> = members.iter().map(|&i| latents[i].clone()).collect();
        let maps = extract_from_many_latents(
            &m.unet,
            &m.schedule,
            &group,
            context.as_ref(),
            &request,
            cancel,
            &mut |_, _| {},
        )?;
        for (&i, maps) in members.iter().zip(maps) {
            table.insert(images[i].0.clone(), to_maps(maps)?);
        }
        done += members.len();
    }
    Ok(table)
}

/// Count a pair's predictions at the settings' threshold base.
fn count(
    acc: &mut PckAccumulator,
    pair: &PairAnnotation,
    predicted: &[[f64; 2]],
    threshold: ThresholdBase,
) -> Result<()> {
    let image = (f64::from(pair.trg_imsize[0]), f64::from(pair.trg_imsize[1]));
    let size = threshold.size(pair.trg_bndbox, image);
    acc.add_pair_scaled(&pair.category, predicted, &pair.trg_kps, size)?;
    Ok(())
}

fn score(
    pairs: &[PairAnnotation],
    settings: &SweepSettings,
    features: impl Fn(&PairAnnotation) -> Result<(FeatureMap, FeatureMap)>,
) -> Result<PckReport> {
    let mut acc = PckAccumulator::new(&settings.alphas)?;
    for pair in pairs {
        let (src, trg) = features(pair)?;
        let predicted = predict_pair(&src, &trg, pair, &settings.rule)?;
        count(&mut acc, pair, &predicted, settings.threshold)?;
    }
    Ok(acc.report())
}

/// The one descriptor of a pair's two images from all taps (and the second source).
fn together(
    pair: &PairAnnotation,
    taps: &[String],
    table: &FeatureTable,
    second: Option<(&SecondSource, &FeatureTable)>,
    weights: &[f32],
    pca_dims: &[Option<usize>],
) -> Result<(FeatureMap, FeatureMap)> {
    let images = [&pair.src_image, &pair.trg_image];
    fn maps_of<'t>(
        table: &'t FeatureTable,
        images: [&PathBuf; 2],
        tap: &str,
    ) -> Vec<&'t FeatureMap> {
        images.iter().map(|p| &table[*p][tap]).collect()
    }
    let fused = second.is_some() || pca_dims.iter().any(Option::is_some);
    if !fused {
        let one = |p: &PathBuf| -> Result<FeatureMap> {
            let inputs: Vec<WeightedTap> = taps
                .iter()
                .zip(weights)
                .map(|(tap, &weight)| WeightedTap {
                    map: &table[p][tap],
                    weight,
                })
                .collect();
            aggregate(&inputs, AggregateGrid::Finest)
        };
        return Ok((one(&pair.src_image)?, one(&pair.trg_image)?));
    }
    let second_weight = second.map_or(0.0, |(s, _)| s.weight);
    let mut sources = vec![FusionSource {
        name: "model".into(),
        taps: taps
            .iter()
            .enumerate()
            .map(|(k, tap)| FusionTap {
                name: tap.clone(),
                maps: maps_of(table, images, tap),
                pca_dims: pca_dims[k],
                weight: weights[k],
            })
            .collect(),
        weight: 1.0 - second_weight,
    }];
    if let Some((s, second_table)) = second {
        sources.push(FusionSource {
            name: "second".into(),
            taps: s
                .taps
                .iter()
                .map(|tap| FusionTap {
                    name: tap.clone(),
                    maps: maps_of(second_table, images, tap),
                    pca_dims: s.pca_dims,
                    weight: 1.0,
                })
                .collect(),
            weight: s.weight,
        });
    }
    let mut maps = fuse(&sources, AggregateGrid::Finest)?.maps;
    let trg = maps
        .pop()
        .ok_or_else(|| Error::invalid("fusion gave no maps"))?;
    let src = maps
        .pop()
        .ok_or_else(|| Error::invalid("fusion gave no maps"))?;
    Ok((src, trg))
}

/// How far a sweep has come, in image feature extractions (each image once per model, timestep
/// and feature source); the scoring between them is quick.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepProgress {
    pub done: usize,
    pub total: usize,
    /// What runs now.
    pub note: String,
}

/// Counts a sweep's extractions across its calls of `extract_all`.
struct SweepCounter<'a> {
    done: usize,
    total: usize,
    report: &'a mut dyn FnMut(&SweepProgress),
}

impl SweepCounter<'_> {
    /// `in_call` images of the running `extract_all` call (extracting `what`) are done.
    fn report(&mut self, what: &str, in_call: usize, note: String) {
        (self.report)(&SweepProgress {
            done: self.done + in_call,
            total: self.total,
            note: format!("{what}: {note}"),
        })
    }

    /// `extract_all`, its progress reported under `what` and its images counted as done.
    #[allow(clippy::too_many_arguments)]
    fn extract(
        &mut self,
        what: &str,
        model: &FeatureModel,
        images: &[(PathBuf, String)],
        t: usize,
        taps: &[String],
        recipe: &SweepRecipe,
        size: Option<(u32, u32)>,
        cancel: Option<&AtomicBool>,
    ) -> Result<FeatureTable> {
        let table = extract_all(
            model,
            images,
            t,
            taps,
            recipe,
            size,
            cancel,
            &mut |n, note| self.report(what, n, note),
        )?;
        self.done += images.len();
        Ok(table)
    }
}

/// Run the benchmark. `untrained` is the same architecture with fresh weights (a baseline).
pub fn run_sweep(
    model: &FeatureModel,
    untrained: Option<&FeatureModel>,
    dataset: &SpairDataset,
    settings: &SweepSettings,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(&SweepProgress),
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
    let mut images: Vec<(PathBuf, String)> = pairs
        .iter()
        .flat_map(|p| {
            [
                (p.src_image.clone(), p.category.clone()),
                (p.trg_image.clone(), p.category.clone()),
            ]
        })
        .collect();
    images.sort();
    images.dedup_by(|a, b| a.0 == b.0);
    let taps = expand_taps(&settings.blocks, model.taps());
    crate::model::taps::validate_taps(&taps, model.taps())?;
    let timesteps: Vec<usize> = match model {
        // A vision transformer has no timestep: one pass whatever --t says.
        FeatureModel::Vit(_) => vec![0],
        FeatureModel::Diffusion(m) => {
            for &t in &settings.timesteps {
                m.schedule.check_timestep(t)?;
            }
            settings.timesteps.clone()
        }
    };
    if let Descriptor::Together {
        weights, pca_dims, ..
    } = &settings.descriptor
    {
        if weights.len() != taps.len() || pca_dims.len() != taps.len() {
            return Err(Error::invalid(format!(
                "{} tap weights and {} PCA sizes for {} taps",
                weights.len(),
                pca_dims.len(),
                taps.len()
            )));
        }
    }

    let methods: Vec<(&str, &FeatureModel)> = std::iter::once(("model", model))
        .chain(untrained.map(|u| ("untrained", u)))
        .collect();
    let second = match &settings.descriptor {
        Descriptor::Together { second, .. } => second.as_ref(),
        Descriptor::EachTap => None,
    };
    let second_taps = match second {
        Some(s) => {
            let taps = expand_taps(&s.taps, s.model.taps());
            crate::model::taps::validate_taps(&taps, s.model.taps())?;
            taps
        }
        None => vec![],
    };
    let per_t = methods.len() * timesteps.len();
    let second_passes = match second {
        Some(s) if s.model.time_free() => 1,
        Some(_) => per_t,
        None => 0,
    };
    let mut counter = SweepCounter {
        done: 0,
        total: images.len() * (per_t + second_passes),
        report: progress,
    };
    let mut rows = vec![];
    counter.report("baseline", 0, "pixel colours".into());
    let pixels: HashMap<PathBuf, FeatureMap> = images
        .iter()
        .map(|(p, _)| Ok((p.clone(), pixel_features(p)?)))
        .collect::<Result<_>>()?;
    let report = score(&pairs, settings, |p| {
        Ok((pixels[&p.src_image].clone(), pixels[&p.trg_image].clone()))
    })?;
    rows.push(SweepRow {
        method: "pixels".into(),
        block: "rgb".into(),
        t: None,
        report,
    });

    // The second source's features at t, counted in the progress.
    let second_at = |counter: &mut SweepCounter, s: &SecondSource, t: usize| {
        let recipe = &settings.recipe;
        counter.extract(
            "second source",
            s.model,
            &images,
            t,
            &second_taps,
            recipe,
            s.size,
            cancel,
        )
    };
    // They do not depend on the model's t when the second source has none itself.
    let second_table = match second {
        Some(s) if s.model.time_free() => Some(second_at(&mut counter, s, 0)?),
        _ => None,
    };

    for (method, m) in methods {
        for &t in &timesteps {
            let table = counter.extract(
                method,
                m,
                &images,
                t,
                &taps,
                &settings.recipe,
                settings.recipe.size,
                cancel,
            )?;
            let t_row = (!m.time_free()).then_some(t);
            match &settings.descriptor {
                Descriptor::EachTap => {
                    for tap in &taps {
                        let report = score(&pairs, settings, |p| {
                            Ok((
                                table[&p.src_image][tap].clone(),
                                table[&p.trg_image][tap].clone(),
                            ))
                        })?;
                        rows.push(SweepRow {
                            method: method.into(),
                            block: tap.clone(),
                            t: t_row,
                            report,
                        });
                    }
                }
                Descriptor::Together {
                    weights,
                    pca_dims,
                    second,
                } => {
                    let second_at_t = match (second, &second_table) {
                        (Some(s), None) => Some(second_at(&mut counter, s, t)?),
                        _ => None,
                    };
                    let second_pair = second
                        .as_ref()
                        .zip(second_table.as_ref().or(second_at_t.as_ref()));
                    let report = score(&pairs, settings, |p| {
                        together(p, &taps, &table, second_pair, weights, pca_dims)
                    })?;
                    let mut block = taps.join("+");
                    if let Some(s) = second {
                        block = format!("{block} & {}", s.taps.join("+"));
                    }
                    rows.push(SweepRow {
                        method: method.into(),
                        block,
                        t: t_row,
                        report,
                    });
                }
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
        let predicted = predict_pair(&src, &trg, &pair, &MATCH_RULE).unwrap();
        // The argmax pixel of the upsampled similarity is one of the 4 pixels around the cell centre.
        for (p, t) in predicted.iter().zip(&pair.trg_kps) {
            assert!(
                (p[0] - t[0]).abs() <= 0.5 && (p[1] - t[1]).abs() <= 0.5,
                "{p:?} vs {t:?}"
            );
        }
    }
}
