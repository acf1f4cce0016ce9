//! The state the engine thread owns (model, images, caches) and how it runs each command.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Tensor;

use super::protocol::*;
use super::{read_keypoints, Reporter};
use crate::analysis::correspond::{correspond_point, CorrespondOptions, NormalizedMap, Target};
use crate::analysis::kmeans::{kmeans, match_clusters, KMeansOptions};
use crate::analysis::ncut::{recursive_ncut, NCutOptions};
use crate::analysis::pca::{to_rgb_f32, PcaBasis, PcaOptions, RgbRange};
use crate::analysis::{GridSize, ImagePoint, ImageSize};
use crate::error::{Error, Result};
use crate::features::cache::{
    fnv1a, nearest_computed, BoundedCache, FeatureCache, FeatureKey, ImageKey, FNV_OFFSET,
};
use crate::features::extract::{describe, model_input, ExtractSettings, Extraction};
use crate::features::map::FeatureMap;
use crate::features::recipe::{extract_from_latents, NoiseSource, UNetRequest};
use crate::model::pipeline::{DiffusionModel, PromptSource};
use crate::model::suggested::read_suggested;

use super::EngineConfig;

/// Colour range of PCA pictures: these percentiles of each component's scores map to 0 and 1.
const PCA_PERCENTILES: (f32, f32) = (1.0, 99.0);

struct LoadedModel {
    model: DiffusionModel,
    info: Arc<ModelInfo>,
    /// Identity in cache keys: the resolved folder.
    id: String,
    tap_order: Vec<String>,
}

/// The clean latents depend on the model, the image and the size only.
type LatentKey = (String, ImageKey, Option<(u32, u32)>);

/// A PCA kept fixed while t and the block change.
struct LockedPca {
    images: Vec<ImageKey>,
    joint: bool,
    fits: Vec<(PcaBasis, RgbRange)>,
}

pub(crate) struct Engine {
    config: EngineConfig,
    model: Option<LoadedModel>,
    images: HashMap<ImageKey, Arc<LoadedImage>>,
    features: FeatureCache,
    latents: BoundedCache<LatentKey, Tensor>,
    prompts: BoundedCache<(String, String), Option<Tensor>>,
    locked_pca: Option<LockedPca>,
    /// A disk-cache problem at start, reported with the first job.
    startup_warning: Option<String>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        let (features, startup_warning) = match &config.cache_dir {
            Some(dir) => match FeatureCache::with_disk(config.cache_budget, dir) {
                Ok(cache) => (cache, None),
                Err(e) => (
                    FeatureCache::new(config.cache_budget),
                    Some(format!("feature cache on disk is off: {e}")),
                ),
            },
            None => (FeatureCache::new(config.cache_budget), None),
        };
        Self {
            config,
            model: None,
            images: HashMap::new(),
            features,
            latents: BoundedCache::new(32),
            prompts: BoundedCache::new(8),
            locked_pca: None,
            startup_warning,
        }
    }

    pub fn execute(&mut self, command: Command, r: &Reporter) -> Result<()> {
        if let Some(warning) = self.startup_warning.take() {
            r.emit(Event::Error {
                job: r.job,
                view: None,
                message: warning,
            });
        }
        match command {
            Command::LoadModel { spec } => self.load_model(&spec, r),
            Command::LoadImage { path } => self.load_image(&path, r),
            Command::Analyze(request) => self.analyze(request, r),
            Command::Sweep(request) => self.sweep(request, r),
            Command::Elbow(request) => self.elbow(request, r),
            Command::Pck(request) => self.pck(request, r),
            Command::ExportFeatures {
                features,
                images,
                folder,
            } => self.export_features(&features, &images, &folder, r),
            Command::WritePng {
                path,
                width,
                height,
                rgba,
            } => {
                crate::features::dump::write_atomically(&path, |tmp| {
                    image::save_buffer_with_format(
                        tmp,
                        &rgba,
                        width,
                        height,
                        image::ColorType::Rgba8,
                        image::ImageFormat::Png,
                    )
                    .map_err(|e| Error::file(&path, format!("cannot write PNG: {e}")))
                })?;
                r.emit(Event::Written {
                    job: r.job,
                    paths: vec![path],
                });
                Ok(())
            }
            Command::WriteText { path, text } => {
                crate::features::dump::write_atomically(&path, |tmp| {
                    std::fs::write(tmp, text.as_bytes())
                        .map_err(|e| Error::file(&path, e.to_string()))
                })?;
                r.emit(Event::Written {
                    job: r.job,
                    paths: vec![path],
                });
                Ok(())
            }
        }
    }

    fn load_model(&mut self, spec: &str, r: &Reporter) -> Result<()> {
        r.progress(0.0, format!("loading model {spec}"));
        let model = DiffusionModel::load(spec, &self.config.device)?;
        let summary = model.summary();
        let schedule = &model.schedule;
        let alpha_bar = schedule.alphas_cumprod.clone();
        let snr = alpha_bar.iter().map(|a| a / (1.0 - a)).collect();
        let stride = summary.input_stride as u32;
        let native_side = sample_side(&model.folders.unet.join("config.json")).map(|s| s * stride);
        let suggested = read_suggested(&model.folders.root)?;
        let info = Arc::new(ModelInfo {
            spec: spec.to_string(),
            suggested,
            alpha_bar,
            snr,
            native_side,
            size_multiple: stride * model.unet.size_multiple() as u32,
            summary,
        });
        let tap_order = info.summary.taps.iter().map(|t| t.name.clone()).collect();
        self.model = Some(LoadedModel {
            id: model.folders.root.display().to_string(),
            model,
            info: info.clone(),
            tap_order,
        });
        self.locked_pca = None;
        r.emit(Event::ModelLoaded { job: r.job, info });
        Ok(())
    }

    fn load_image(&mut self, path: &Path, r: &Reporter) -> Result<()> {
        let rgb = crate::io::image::load_rgb(path)?;
        let (w, h) = rgb.dimensions();
        let size_bytes = w.to_le_bytes().into_iter().chain(h.to_le_bytes());
        let key = fnv1a(rgb.as_raw().iter().copied(), fnv1a(size_bytes, FNV_OFFSET));
        let keypoints = match read_keypoints(path) {
            Ok(k) => k,
            Err(e) => {
                // The image is fine; say why its keypoints are missing.
                r.emit(Event::Error {
                    job: r.job,
                    view: None,
                    message: format!("keypoints not shown: {e}"),
                });
                None
            }
        };
        let image = Arc::new(LoadedImage {
            key,
            path: path.to_path_buf(),
            rgb,
            keypoints,
        });
        self.images.insert(key, image.clone());
        r.emit(Event::ImageLoaded { job: r.job, image });
        Ok(())
    }

    fn loaded(&self) -> Result<&LoadedModel> {
        self.model
            .as_ref()
            .ok_or_else(|| Error::invalid("no model is loaded"))
    }

    fn image(&self, key: ImageKey) -> Result<Arc<LoadedImage>> {
        self.images
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::invalid("an image of this request was never loaded"))
    }

    fn image_size(&self, key: ImageKey) -> Result<ImageSize> {
        let image = self.image(key)?;
        Ok(ImageSize::new(
            image.rgb.width() as usize,
            image.rgb.height() as usize,
        ))
    }

    fn key(&self, settings: &FeatureSettings, image: ImageKey) -> Result<FeatureKey> {
        Ok(FeatureKey {
            model: self.loaded()?.id.clone(),
            image,
            size: settings.size,
            t: settings.t,
            tap: settings.tap.clone(),
            ensemble: settings.ensemble,
            seed: settings.seed,
            prompt: settings.prompt.clone(),
        })
    }

    /// The feature maps of `keys`, from the cache or extracted (reporting progress as the share
    /// `span` of the job that starts at `start`).
    fn features(
        &mut self,
        keys: &[FeatureKey],
        r: &Reporter,
        start: f32,
        span: f32,
    ) -> Result<Vec<FeatureMap>> {
        let missing: Vec<usize> = (0..keys.len())
            .filter(|&i| !self.features.contains(&keys[i]))
            .collect();
        let mut done = 0;
        let mut maps = Vec::with_capacity(keys.len());
        for key in keys {
            let map = match self.cached(key)? {
                Some(map) => map,
                None => {
                    let share = span / missing.len().max(1) as f32;
                    let begin = start + share * done as f32;
                    done += 1;
                    self.extract(key, &[], r, begin, share)?
                }
            };
            maps.push(map);
        }
        Ok(maps)
    }

    /// A cached map; a damaged disk entry is reported and then treated as missing.
    fn cached(&mut self, key: &FeatureKey) -> Result<Option<FeatureMap>> {
        match self.features.get(key) {
            Ok(found) => Ok(found),
            Err(e) => {
                eprintln!("diffscope: recomputing features: {e}");
                Ok(None)
            }
        }
    }

    /// Extract `key`'s tap, and `extra_taps` and every block-level tap that comes before it in the
    /// forward pass (they cost nothing more), caching them all. Returns `key`'s map.
    fn extract(
        &mut self,
        key: &FeatureKey,
        extra_taps: &[String],
        r: &Reporter,
        start: f32,
        span: f32,
    ) -> Result<FeatureMap> {
        let loaded = self.loaded()?;
        let wanted_position = loaded.tap_order.iter().position(|n| *n == key.tap);
        let Some(wanted_position) = wanted_position else {
            crate::model::taps::validate_taps(
                std::slice::from_ref(&key.tap),
                &loaded.info.summary.taps,
            )?;
            return Err(Error::invalid(format!("unknown tap `{}`", key.tap)));
        };
        let mut taps: Vec<String> = loaded.info.summary.taps[..wanted_position]
            .iter()
            .filter(|t| t.block_level)
            .map(|t| t.name.clone())
            .chain(std::iter::once(key.tap.clone()))
            .chain(extra_taps.iter().cloned())
            .collect();
        taps.sort_by_key(|n| loaded.tap_order.iter().position(|o| o == n));
        taps.dedup();
        let image = self.image(key.image)?;
        let name = image
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        r.progress(start, format!("encoding {name}"));
        let latents = self.latents_of(key, &image)?;
        let context = self.context_of(&key.prompt)?;
        let loaded = self.loaded()?;
        let request = UNetRequest {
            t: key.t,
            taps: taps.clone(),
            noise: NoiseSource::Seeded {
                seed: key.seed,
                ensemble: key.ensemble,
            },
        };
        let mut report = |done: usize, total: usize| {
            r.progress(
                start + span * done as f32 / total.max(1) as f32,
                format!(
                    "extracting {name}: t={}, {}, pass {}/{total}",
                    key.t,
                    key.tap,
                    (done + 1).min(total)
                ),
            );
        };
        let maps = extract_from_latents(
            &loaded.model.unet,
            &loaded.model.schedule,
            &latents,
            context.as_ref(),
            &request,
            Some(r.cancel),
            &mut report,
        )?;
        let mut wanted = None;
        for (tap, tensor) in maps {
            let map = FeatureMap::from_tensor(&tensor)?;
            if tap == key.tap {
                wanted = Some(map.clone());
            }
            self.features.insert(key.at(key.t, &tap), map)?;
        }
        wanted.ok_or_else(|| Error::invalid(format!("the UNet never reached tap `{}`", key.tap)))
    }

    /// The clean latent `[1,C,h,w]` of an image at a size, encoded once and kept.
    fn latents_of(&mut self, key: &FeatureKey, image: &LoadedImage) -> Result<Tensor> {
        let cache_key = (key.model.clone(), key.image, key.size);
        if let Some(z) = self.latents.get(&cache_key) {
            return Ok(z);
        }
        let model = &self.loaded()?.model;
        let (x, _) = model_input(model, image.rgb.clone(), key.size, &image.path)?;
        let z = model.encode(&x)?;
        self.latents.insert(cache_key, z.clone());
        Ok(z)
    }

    fn context_of(&mut self, prompt: &str) -> Result<Option<Tensor>> {
        let cache_key = (self.loaded()?.id.clone(), prompt.to_string());
        if let Some(c) = self.prompts.get(&cache_key) {
            return Ok(c);
        }
        let context = self
            .loaded()?
            .model
            .condition(&PromptSource::Text(prompt.to_string()))?;
        self.prompts.insert(cache_key, context.clone());
        Ok(context)
    }

    fn analyze(&mut self, request: AnalysisRequest, r: &Reporter) -> Result<()> {
        if request.images.is_empty() {
            return Err(Error::invalid("add an image first"));
        }
        let keys: Vec<FeatureKey> = request
            .images
            .iter()
            .map(|&i| self.key(&request.features, i))
            .collect::<Result<_>>()?;
        let all_cached = keys.iter().all(|k| self.features.contains(k));
        if !all_cached {
            let nearest = nearest_computed(&self.features, &keys, &self.loaded()?.tap_order);
            if let Some((t, tap)) = nearest {
                let near: Vec<FeatureKey> = keys.iter().map(|k| k.at(t, &tap)).collect();
                if let Ok(maps) = self.features(&near, r, 0.0, 0.0) {
                    // A preview that fails (e.g. a point outside) is not worth an error: the exact one follows.
                    if let Ok(view) = self.compute_view(&request, &maps, false) {
                        r.emit(Event::Analysis {
                            job: r.job,
                            result: Arc::new(AnalysisResult {
                                shown_t: t,
                                shown_tap: tap,
                                exact: false,
                                grids: grids(&maps),
                                view,
                                request: request.clone(),
                            }),
                        });
                    }
                }
            }
        }
        let maps = self.features(&keys, r, 0.0, 0.95)?;
        r.check_cancel()?;
        if !all_cached {
            r.progress(0.95, "analysing");
        }
        let view = self.compute_view(&request, &maps, true)?;
        r.emit(Event::Analysis {
            job: r.job,
            result: Arc::new(AnalysisResult {
                shown_t: request.features.t,
                shown_tap: request.features.tap.clone(),
                exact: true,
                grids: grids(&maps),
                view,
                request,
            }),
        });
        Ok(())
    }

    /// `store_lock`: whether a PCA fitted now may become the locked basis (not for previews).
    fn compute_view(
        &mut self,
        request: &AnalysisRequest,
        maps: &[FeatureMap],
        store_lock: bool,
    ) -> Result<ViewResult> {
        match &request.view {
            ViewRequest::Correspond { points } => {
                let matches = self.correspond(&request.images, maps, points)?;
                Ok(ViewResult::Correspond { matches })
            }
            ViewRequest::Pca { joint, lock } => {
                self.pca(&request.images, maps, *joint, *lock, store_lock)
            }
            ViewRequest::KMeans { k, joint } => segment_kmeans(maps, *k, *joint),
            ViewRequest::NCut { tau, alpha } => segment_ncut(maps, *tau, *alpha),
        }
    }

    fn correspond(
        &self,
        images: &[ImageKey],
        maps: &[FeatureMap],
        points: &[ImagePoint],
    ) -> Result<Vec<Vec<crate::analysis::correspond::PointMatch>>> {
        if maps.len() < 2 {
            return Err(Error::invalid(
                "correspondence needs a source and at least one target image",
            ));
        }
        let normalized: Vec<NormalizedMap> = maps
            .iter()
            .enumerate()
            .map(|(i, m)| NormalizedMap::new(m, &format!("features of image {}", i + 1)))
            .collect::<Result<_>>()?;
        let sizes: Vec<ImageSize> = images
            .iter()
            .map(|&k| self.image_size(k))
            .collect::<Result<_>>()?;
        let targets: Vec<Target> = normalized[1..]
            .iter()
            .zip(&sizes[1..])
            .map(|(map, &image)| Target { map, image })
            .collect();
        points
            .iter()
            .map(|&p| {
                correspond_point(
                    &normalized[0],
                    sizes[0],
                    p,
                    &targets,
                    &CorrespondOptions::default(),
                )
            })
            .collect()
    }

    fn pca(
        &mut self,
        images: &[ImageKey],
        maps: &[FeatureMap],
        joint: bool,
        lock: bool,
        store_lock: bool,
    ) -> Result<ViewResult> {
        let channels = maps.first().map_or(0, |m| m.channels);
        let reusable = self.locked_pca.as_ref().filter(|l| {
            lock && l.images == images
                && l.joint == joint
                && l.fits.first().is_some_and(|(b, _)| b.channels == channels)
        });
        let (fits, reused) = match reusable {
            Some(locked) => (locked.fits.clone(), true),
            None => {
                let groups: Vec<Vec<&FeatureMap>> = if joint {
                    vec![maps.iter().collect()]
                } else {
                    maps.iter().map(|m| vec![m]).collect()
                };
                let fits = groups
                    .iter()
                    .map(|group| {
                        let basis = PcaBasis::fit(group, &PcaOptions::default())?;
                        let projections = group
                            .iter()
                            .map(|m| basis.project(m))
                            .collect::<Result<Vec<_>>>()?;
                        let refs: Vec<_> = projections.iter().collect();
                        let range = RgbRange::fit(&refs, PCA_PERCENTILES.0, PCA_PERCENTILES.1)?;
                        Ok((basis, range))
                    })
                    .collect::<Result<Vec<_>>>()?;
                (fits, false)
            }
        };
        if lock && !reused && store_lock {
            self.locked_pca = Some(LockedPca {
                images: images.to_vec(),
                joint,
                fits: fits.clone(),
            });
        }
        if !lock {
            self.locked_pca = None;
        }
        let rgb = maps
            .iter()
            .enumerate()
            .map(|(i, map)| {
                let (basis, range) = &fits[if joint { 0 } else { i }];
                to_rgb_f32(&basis.project(map)?, range)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut description = fits.first().map(|(b, _)| b.describe()).unwrap_or_default();
        if !joint {
            description = format!("PCA fitted on each image alone. First image: {description}");
        }
        description.push_str(&format!(
            "; colours: components 1-3 as R, G, B, each scaled from its {}th to {}th percentile{}",
            PCA_PERCENTILES.0,
            PCA_PERCENTILES.1,
            if reused {
                " (basis and colour range locked: fitted at an earlier t/block)"
            } else {
                ""
            }
        ));
        Ok(ViewResult::Pca {
            rgb,
            explained_variance_ratio: fits
                .iter()
                .map(|(b, _)| b.explained_variance_ratio.clone())
                .collect(),
            locked: lock,
            description,
        })
    }

    fn sweep(&mut self, request: SweepRequest, r: &Reporter) -> Result<()> {
        let targets = request.images.len().saturating_sub(1);
        if targets == 0 {
            return Err(Error::invalid(
                "the t sweep needs a source and a target image",
            ));
        }
        let mut result = SweepResult {
            request: request.clone(),
            ts: Vec::new(),
            similarity: vec![Vec::new(); targets],
            mutual: vec![Vec::new(); targets],
        };
        let steps = request.ts.len().max(1) as f32;
        for (i, &t) in request.ts.iter().enumerate() {
            r.check_cancel()?;
            let settings = FeatureSettings {
                t,
                ..request.features.clone()
            };
            let keys: Vec<FeatureKey> = request
                .images
                .iter()
                .map(|&img| self.key(&settings, img))
                .collect::<Result<_>>()?;
            let maps = self.features(&keys, r, i as f32 / steps, 1.0 / steps)?;
            let matches = self.correspond(&request.images, &maps, &[request.point])?;
            let Some(matches) = matches.first() else {
                continue;
            };
            for (target, m) in matches.iter().enumerate() {
                result.similarity[target].push(m.best_similarity);
                result.mutual[target].push(m.mutual);
            }
            result.ts.push(t);
            r.progress((i + 1) as f32 / steps, format!("t sweep: t={t}"));
            let finished = i + 1 == request.ts.len();
            r.emit(Event::Sweep {
                job: r.job,
                result: Arc::new(result.clone()),
                finished,
            });
        }
        if request.ts.is_empty() {
            r.emit(Event::Sweep {
                job: r.job,
                result: Arc::new(result),
                finished: true,
            });
        }
        Ok(())
    }

    fn elbow(&mut self, request: ElbowRequest, r: &Reporter) -> Result<()> {
        let keys: Vec<FeatureKey> = request
            .images
            .iter()
            .map(|&img| self.key(&request.features, img))
            .collect::<Result<_>>()?;
        let maps = self.features(&keys, r, 0.0, 0.5)?;
        let options = KMeansOptions::default();
        let mut inertia = Vec::new();
        for (i, &k) in request.ks.iter().enumerate() {
            r.check_cancel()?;
            r.progress(
                0.5 + 0.5 * i as f32 / request.ks.len().max(1) as f32,
                format!("k-means inertia, K={k}"),
            );
            let total = if request.joint {
                let refs: Vec<&FeatureMap> = maps.iter().collect();
                kmeans(&refs, &KMeansOptions { k, ..options })?.inertia
            } else {
                maps.iter()
                    .map(|m| Ok(kmeans(&[m], &KMeansOptions { k, ..options })?.inertia))
                    .sum::<Result<f64>>()?
            };
            inertia.push((k, total));
        }
        r.emit(Event::Elbow {
            job: r.job,
            result: Arc::new(ElbowResult { request, inertia }),
        });
        Ok(())
    }

    fn pck(&mut self, request: PckRequest, r: &Reporter) -> Result<()> {
        let images: Vec<Arc<LoadedImage>> = request
            .images
            .iter()
            .map(|&k| self.image(k))
            .collect::<Result<_>>()?;
        let Some((source, targets)) = images.split_first() else {
            return Err(Error::invalid("PCK needs annotated images"));
        };
        let source_kps = source.keypoints.as_ref().ok_or_else(|| {
            Error::file(&source.path, "the source image has no keypoint annotation")
        })?;
        // For each target: the keypoints it shares with the source.
        let mut pairs = Vec::new();
        for target in targets {
            let Some(target_kps) = &target.keypoints else {
                continue;
            };
            let common: Vec<([f64; 2], [f64; 2])> = source_kps
                .points
                .iter()
                .filter_map(|(id, s)| target_kps.points.get(id).map(|t| (*s, *t)))
                .collect();
            let scale = target_kps.pck_scale(target.rgb.width(), target.rgb.height());
            pairs.push((target.key, common, scale));
        }
        let keypoints: usize = pairs.iter().map(|(_, c, _)| c.len()).sum();
        if keypoints == 0 {
            return Err(Error::invalid(
                "PCK: the source and the targets share no visible annotated keypoint",
            ));
        }
        let mut table = PckTable {
            pck: vec![vec![None; request.ts.len()]; request.taps.len()],
            keypoints,
            request: request.clone(),
        };
        let cells = (request.ts.len() * request.images.len()).max(1) as f32;
        let mut cell = 0;
        for (ti, &t) in request.ts.iter().enumerate() {
            // Extract every tap at once for each image at this t.
            for img in &request.images {
                r.check_cancel()?;
                let settings = FeatureSettings {
                    t,
                    tap: request.taps.last().cloned().unwrap_or_default(),
                    ..request.features.clone()
                };
                let key = self.key(&settings, *img)?;
                let complete = request
                    .taps
                    .iter()
                    .all(|tap| self.features.contains(&key.at(t, tap)));
                if !complete {
                    self.extract(&key, &request.taps, r, cell as f32 / cells, 1.0 / cells)?;
                }
                cell += 1;
            }
            for (tap_index, tap) in request.taps.iter().enumerate() {
                let settings = FeatureSettings {
                    t,
                    tap: tap.clone(),
                    ..request.features.clone()
                };
                let mut correct = 0usize;
                for (target_key, common, scale) in &pairs {
                    if common.is_empty() {
                        continue;
                    }
                    let keys = [
                        self.key(&settings, source.key)?,
                        self.key(&settings, *target_key)?,
                    ];
                    let maps = self.features(&keys, r, 0.0, 0.0)?;
                    let points: Vec<ImagePoint> = common
                        .iter()
                        .map(|(s, _)| ImagePoint::new(s[0] as f32, s[1] as f32))
                        .collect();
                    let matches = self.correspond(&[source.key, *target_key], &maps, &points)?;
                    for (m, (_, truth)) in matches.iter().zip(common) {
                        if let Some(m) = m.first() {
                            let dx = f64::from(m.point.x) - truth[0];
                            let dy = f64::from(m.point.y) - truth[1];
                            if (dx * dx + dy * dy).sqrt() <= request.alpha * scale {
                                correct += 1;
                            }
                        }
                    }
                }
                table.pck[tap_index][ti] = Some(correct as f64 / keypoints as f64);
            }
            r.progress(cell as f32 / cells, format!("PCK: t={t} done"));
            r.emit(Event::Pck {
                job: r.job,
                table: Arc::new(table.clone()),
                finished: ti + 1 == request.ts.len(),
            });
        }
        Ok(())
    }

    fn export_features(
        &mut self,
        settings: &FeatureSettings,
        images: &[ImageKey],
        folder: &Path,
        r: &Reporter,
    ) -> Result<()> {
        std::fs::create_dir_all(folder).map_err(|e| Error::file(folder, e.to_string()))?;
        let mut written: Vec<PathBuf> = Vec::new();
        for (i, &img) in images.iter().enumerate() {
            let key = self.key(settings, img)?;
            let map = self
                .features(
                    std::slice::from_ref(&key),
                    r,
                    i as f32 / images.len() as f32,
                    1.0 / images.len() as f32,
                )?
                .remove(0);
            let image = self.image(img)?;
            let latents = self.latents_of(&key, &image)?.squeeze(0)?;
            let loaded = self.loaded()?;
            let device = candle_core::Device::Cpu;
            let extract_settings = ExtractSettings {
                t: settings.t,
                taps: vec![settings.tap.clone()],
                noise: NoiseSource::Seeded {
                    seed: settings.seed,
                    ensemble: settings.ensemble,
                },
                prompt: PromptSource::Text(settings.prompt.clone()),
                size: settings.size,
            };
            let size = settings
                .size
                .unwrap_or((image.rgb.width(), image.rgb.height()));
            let request = UNetRequest {
                t: settings.t,
                taps: vec![settings.tap.clone()],
                noise: extract_settings.noise.clone(),
            };
            let metadata = describe(
                &loaded.model,
                &image.path,
                size,
                &extract_settings,
                &request,
            );
            let mut taps = BTreeMap::new();
            taps.insert(settings.tap.clone(), map.to_tensor(&device)?);
            let extraction = Extraction {
                taps,
                latents,
                metadata,
            };
            let stem = image
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("image{i}"));
            let path = folder.join(format!("{}_{stem}.safetensors", i + 1));
            crate::features::dump::write_safetensors(&extraction, &path)?;
            written.push(path);
        }
        r.emit(Event::Written {
            job: r.job,
            paths: written,
        });
        Ok(())
    }
}

fn grids(maps: &[FeatureMap]) -> Vec<GridSize> {
    maps.iter()
        .map(|m| GridSize::new(m.height, m.width))
        .collect()
}

fn segment_kmeans(maps: &[FeatureMap], k: usize, joint: bool) -> Result<ViewResult> {
    let options = KMeansOptions {
        k,
        ..KMeansOptions::default()
    };
    if joint {
        let refs: Vec<&FeatureMap> = maps.iter().collect();
        let c = kmeans(&refs, &options)?;
        return Ok(ViewResult::Segments {
            segments: k,
            inertia: Some(c.inertia),
            description: format!(
                "k-means++ (seed {}), K={k}, on L2-normalised features of all {} images jointly: one set of centroids",
                options.seed,
                maps.len()
            ),
            labels: c.labels,
        });
    }
    let clusterings = maps
        .iter()
        .map(|m| kmeans(&[m], &options))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = clusterings.first() else {
        return Err(Error::invalid("add an image first"));
    };
    let mut labels = Vec::with_capacity(clusterings.len());
    let mut segments = k;
    for (i, c) in clusterings.iter().enumerate() {
        let own = c
            .labels
            .first()
            .cloned()
            .ok_or_else(|| Error::invalid("k-means returned no labels"))?;
        if i == 0 {
            labels.push(own);
        } else {
            let matching = match_clusters(first, c)?;
            let relabelled = matching.relabel_b(&own, c.centroids.len());
            segments = segments.max(relabelled.count());
            labels.push(relabelled);
        }
    }
    Ok(ViewResult::Segments {
        segments,
        inertia: Some(clusterings.iter().map(|c| c.inertia).sum()),
        description: format!(
            "k-means++ (seed {}), K={k}, on L2-normalised features of each image alone; clusters matched to the first image's by the Hungarian method on centroid cosine",
            options.seed
        ),
        labels,
    })
}

fn segment_ncut(maps: &[FeatureMap], tau: f64, alpha: f32) -> Result<ViewResult> {
    let options = NCutOptions {
        tau,
        alpha,
        ..NCutOptions::default()
    };
    let segmentations = maps
        .iter()
        .map(|m| recursive_ncut(m, &options))
        .collect::<Result<Vec<_>>>()?;
    let counts: Vec<String> = segmentations
        .iter()
        .map(|s| s.segments.to_string())
        .collect();
    Ok(ViewResult::Segments {
        segments: segmentations.iter().map(|s| s.segments).max().unwrap_or(0),
        inertia: None,
        description: format!(
            "recursive normalized cut (DiffCut) per image: affinity = min-max normalised cosine ^ {alpha}, 2-way cuts kept while NCut < {tau}; segments: {} (colours are not matched across images)",
            counts.join(", ")
        ),
        labels: segmentations.into_iter().map(|s| s.labels).collect(),
    })
}

/// `sample_size` of a UNet config: a number, or `[h, w]` (the larger side).
fn sample_side(config: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(config).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    match json.get("sample_size")? {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_u64()).max().map(|n| n as u32),
        _ => None,
    }
}
