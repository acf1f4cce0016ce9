//! The state the engine thread owns (model, images, caches) and how it runs each command.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Tensor;

use super::protocol::*;
use super::writer::{write_png, write_text, Writer};
use super::{read_keypoints, Reporter};
use crate::analysis::aggregate::AggregateGrid;
use crate::analysis::correspond::PointMatch;
use crate::analysis::kmeans::KMeansOptions;
use crate::analysis::recipes::attention::{
    aggregate_attention, AttentionAggregation, AttentionHeatmap, AttentionTarget,
};
use crate::analysis::recipes::correspondence::{predict_keypoints, Correspondence, MatchRule};
use crate::analysis::recipes::fusion::{fuse, FusionSource, FusionTap};
use crate::analysis::recipes::pca_rgb::{pca_rgb, PcaRgbFit, PcaRgbOptions};
use crate::analysis::recipes::segment::{kmeans_inertia, segment, SegmentMethod, SegmentOptions};
use crate::analysis::{GridSize, ImagePoint, ImageSize};
use crate::error::{Error, Result};
use crate::eval::pck::PckAccumulator;
use crate::features::attention::{
    attention_bytes, attention_from_latents, attention_metadata, rows_at_point, write_attention,
    AttentionMap,
};
use crate::features::cache::{
    fnv1a, nearest_computed, BoundedCache, FeatureCache, FeatureKey, ImageKey, FNV_OFFSET,
};
use crate::features::extract::{describe, model_input, ExtractSettings, Extraction};
use crate::features::map::FeatureMap;
use crate::features::recipe::{extract_from_latents, NoiseSource, UNetRequest};
use crate::io::safetensors::write_f32;
use crate::model::attention_probs::{AttentionRequest, QueryRows};
use crate::model::clip::{PromptToken, TokenRole};
use crate::model::conditioning::Conditioning;
use crate::model::dinov2::imagenet_input;
use crate::model::feature_model::FeatureModel;
use crate::model::pipeline::{LoadOptions, PromptSource};
use crate::model::suggested::read_suggested;

use super::EngineConfig;

struct LoadedModel {
    model: FeatureModel,
    info: Arc<ModelInfo>,
    /// Identity in cache keys: the resolved folder.
    id: String,
    tap_order: Vec<String>,
}

/// The clean latents depend on the model, the image and the size only.
type LatentKey = (String, ImageKey, Option<(u32, u32)>);

/// Everything that determines an image's attention maps: the feature key with the modules,
/// comma-joined, as its tap; and the point whose self-attention rows alone were kept, if so.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AttentionKey {
    features: FeatureKey,
    row_at: Option<[u32; 2]>,
}

/// Whole self-attention maps of an image up to this size are kept, so that a click on another
/// point reads its row at once; larger ones are computed for the clicked point's row only.
const WHOLE_SELF_ATTENTION_BYTES: u64 = 128 << 20;

/// A PCA kept fixed while t and the block change.
struct LockedPca {
    images: Vec<ImageKey>,
    fit: PcaRgbFit,
}

pub(crate) struct Engine {
    config: EngineConfig,
    model: Option<LoadedModel>,
    /// A second feature source fused with the model's taps (SD-DINO).
    second: Option<LoadedModel>,
    images: HashMap<ImageKey, Arc<LoadedImage>>,
    features: FeatureCache,
    latents: BoundedCache<LatentKey, Tensor>,
    prompts: BoundedCache<(String, String), Option<Conditioning>>,
    attention: BoundedCache<AttentionKey, Arc<Vec<AttentionMap>>>,
    locked_pca: Option<LockedPca>,
    /// A disk-cache problem at start, reported with the first job.
    startup_warning: Option<String>,
    writer: Writer,
}

impl Engine {
    pub fn new(config: EngineConfig, writer: Writer) -> Self {
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
            second: None,
            images: HashMap::new(),
            features,
            latents: BoundedCache::new(32),
            prompts: BoundedCache::new(8),
            attention: BoundedCache::new(8),
            locked_pca: None,
            startup_warning,
            writer,
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
            Command::LoadModel { spec, compute } => self.load_model(&spec, compute, r),
            Command::LoadFusionModel { spec } => self.load_fusion_model(spec.as_deref(), r),
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
            Command::ExportAttention {
                features,
                images,
                view,
                folder,
            } => self.export_attention(&features, &images, &view, &folder, r),
            Command::WritePng {
                path,
                width,
                height,
                rgba,
            } => self.writer.submit(r.job, move || {
                write_png(&path, width, height, &rgba)?;
                Ok(vec![path])
            }),
            Command::WriteText { path, text } => self.writer.submit(r.job, move || {
                write_text(&path, &text)?;
                Ok(vec![path])
            }),
        }
    }

    fn load_model(
        &mut self,
        spec: &str,
        choice: Option<ComputeChoice>,
        r: &Reporter,
    ) -> Result<()> {
        r.progress(0.0, format!("loading model {spec}"));
        // A device or precision that cannot be used is an error; the loaded model stays.
        let compute = match choice {
            Some(c) => crate::device::Compute::open(c.device, c.precision)?,
            None => self.configured_compute()?,
        };
        let loaded = self.open_model(spec, &compute)?;
        // What later loads without a choice use.
        self.config.device = compute.device.clone();
        self.config.precision = compute.precision;
        let info = loaded.info.clone();
        self.model = Some(loaded);
        self.locked_pca = None;
        r.emit(Event::ModelLoaded { job: r.job, info });
        Ok(())
    }

    /// The device and precision of the configuration (or of the last model loaded).
    fn configured_compute(&self) -> Result<crate::device::Compute> {
        let compute = crate::device::Compute {
            device: self.config.device.clone(),
            precision: self.config.precision,
        };
        crate::device::check_precision(&compute.device, compute.precision)?;
        Ok(compute)
    }

    /// Load (or with None drop) the second source fused with the model's taps, on the model's
    /// device and in its precision.
    fn load_fusion_model(&mut self, spec: Option<&str>, r: &Reporter) -> Result<()> {
        let info = match spec {
            Some(spec) => {
                r.progress(0.0, format!("loading second source {spec}"));
                let loaded = self.open_model(spec, &self.configured_compute()?)?;
                let info = loaded.info.clone();
                self.second = Some(loaded);
                Some(info)
            }
            None => {
                self.second = None;
                None
            }
        };
        r.emit(Event::FusionModelLoaded { job: r.job, info });
        Ok(())
    }

    fn open_model(&self, spec: &str, compute: &crate::device::Compute) -> Result<LoadedModel> {
        let model = FeatureModel::load(spec, compute, &LoadOptions::default())?;
        let summary = model.summary();
        let (alpha_bar, snr, native_side, suggested) = match &model {
            FeatureModel::Diffusion(m) => {
                let alpha_bar = m.schedule.alphas_cumprod.clone();
                let snr = alpha_bar.iter().map(|a| a / (1.0 - a)).collect();
                let stride = summary.input_stride as u32;
                let native = sample_side(&m.folders.unet.join("config.json")).map(|s| s * stride);
                (alpha_bar, snr, native, read_suggested(&m.folders.root)?)
            }
            FeatureModel::Vit(v) => (vec![], vec![], Some(v.net.native_side() as u32), None),
        };
        let size_multiple = match &model {
            FeatureModel::Diffusion(m) => {
                summary.input_stride as u32 * m.unet.size_multiple() as u32
            }
            FeatureModel::Vit(v) => v.net.patch_size() as u32,
        };
        let info = Arc::new(ModelInfo {
            spec: spec.to_string(),
            suggested,
            alpha_bar,
            snr,
            native_side,
            size_multiple,
            summary,
        });
        let tap_order = info.summary.taps.iter().map(|t| t.name.clone()).collect();
        Ok(LoadedModel {
            // Features of one model differ by device and precision: caches key on all three.
            id: format!("{} ({})", model.root().display(), compute.describe()),
            model,
            info,
            tap_order,
        })
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
        self.image(key).map(|image| image_size_of(&image))
    }

    fn key(&self, settings: &FeatureSettings, image: ImageKey) -> Result<FeatureKey> {
        Ok(key_of(self.loaded()?, settings, image))
    }

    /// The loaded model (or second source) a key's features come from.
    fn model_of(&self, key: &FeatureKey) -> Result<&LoadedModel> {
        [&self.model, &self.second]
            .into_iter()
            .flatten()
            .find(|m| m.id == key.model)
            .ok_or_else(|| Error::invalid("the model of these features is no longer loaded"))
    }

    /// The maps the view reads: the model's, fused with the second source's when asked.
    fn descriptors(
        &mut self,
        settings: &FeatureSettings,
        images: &[ImageKey],
        maps: Vec<FeatureMap>,
        r: &Reporter,
    ) -> Result<Vec<FeatureMap>> {
        let Some(fusion) = &settings.fusion else {
            return Ok(maps);
        };
        let Some(second) = &self.second else {
            return Err(Error::invalid(
                "fusion asked, but no second source is loaded",
            ));
        };
        let second_settings = FeatureSettings {
            tap: fusion.tap.clone(),
            size: second.info.native_side.map(|s| (s, s)),
            ..settings.clone()
        };
        let keys: Vec<FeatureKey> = images
            .iter()
            .map(|&i| key_of(second, &second_settings, i))
            .collect();
        let second_maps = self.features(&keys, r, 0.95, 0.0)?;
        let weight = fusion.weight();
        let sources = [
            FusionSource {
                name: settings.tap.clone(),
                taps: vec![FusionTap {
                    name: settings.tap.clone(),
                    maps: maps.iter().collect(),
                    pca_dims: None,
                    weight: 1.0,
                }],
                weight: 1.0 - weight,
            },
            FusionSource {
                name: fusion.tap.clone(),
                taps: vec![FusionTap {
                    name: fusion.tap.clone(),
                    maps: second_maps.iter().collect(),
                    pca_dims: None,
                    weight: 1.0,
                }],
                weight,
            },
        ];
        Ok(fuse(&sources, AggregateGrid::Finest)?.maps)
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
                log::warn!("recomputing features: {e}");
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
        let loaded = self.model_of(key)?;
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
        let maps = if let FeatureModel::Vit(vit) = &self.model_of(key)?.model {
            r.progress(start, format!("{name}: DINOv2 {}", key.tap));
            let resized = crate::io::image::resize(image.rgb.clone(), key.size);
            vit.net
                .check_input_size(resized.dimensions())
                .map_err(|e| Error::file(&image.path, e.to_string()))?;
            let x = imagenet_input(&resized, &vit.device)?;
            vit.net
                .forward_taps(&x, &taps, Some(r.cancel))?
                .into_iter()
                .map(|(n, t)| (n, t.map))
                .collect()
        } else {
            r.progress(start, format!("encoding {name}"));
            let latents = self.latents_of(key, &image)?;
            let input_size = key.size.unwrap_or(image.rgb.dimensions());
            let context = self.context_of(key)?.map(|c| c.at_size(input_size, None));
            let FeatureModel::Diffusion(model) = &self.model_of(key)?.model else {
                return Err(Error::invalid("not a diffusion model"));
            };
            let request = UNetRequest {
                t: key.t,
                taps: taps.clone(),
                noise: noise_of(key),
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
            extract_from_latents(
                &model.unet,
                &model.schedule,
                &latents,
                context.as_ref(),
                &request,
                Some(r.cancel),
                &mut report,
            )?
        };
        let mut wanted = None;
        for (tap, tensor) in maps {
            let map = FeatureMap::from_tensor(&tensor)?;
            if tap == key.tap {
                wanted = Some(map.clone());
            }
            self.features.insert(key.at(key.t, &tap), map)?;
        }
        wanted.ok_or_else(|| Error::invalid(format!("the model never reached tap `{}`", key.tap)))
    }

    /// The clean latent `[1,C,h,w]` of an image at a size, encoded once and kept (for a vision
    /// transformer: its normalised input).
    fn latents_of(&mut self, key: &FeatureKey, image: &LoadedImage) -> Result<Tensor> {
        let cache_key = (key.model.clone(), key.image, key.size);
        if let Some(z) = self.latents.get(&cache_key) {
            return Ok(z);
        }
        let z = match &self.model_of(key)?.model {
            FeatureModel::Diffusion(model) => {
                let (x, _) = model_input(model, image.rgb.clone(), key.size, &image.path)?;
                model.encode(&x)?
            }
            FeatureModel::Vit(vit) => imagenet_input(
                &crate::io::image::resize(image.rgb.clone(), key.size),
                &vit.device,
            )?,
        };
        self.latents.insert(cache_key, z.clone());
        Ok(z)
    }

    fn context_of(&mut self, key: &FeatureKey) -> Result<Option<Conditioning>> {
        let cache_key = (key.model.clone(), key.prompt.clone());
        if let Some(c) = self.prompts.get(&cache_key) {
            return Ok(c);
        }
        let context = match &self.model_of(key)?.model {
            FeatureModel::Diffusion(m) => m.condition(&PromptSource::Text(key.prompt.clone()))?,
            FeatureModel::Vit(_) => None,
        };
        self.prompts.insert(cache_key, context.clone());
        Ok(context)
    }

    fn analyze(&mut self, request: AnalysisRequest, r: &Reporter) -> Result<()> {
        if request.images.is_empty() {
            return Err(Error::invalid("add an image first"));
        }
        if let ViewRequest::Attention(view) = &request.view {
            let view = view.clone();
            return self.analyze_attention(request, &view, r);
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
                let preview = self
                    .features(&near, r, 0.0, 0.0)
                    .and_then(|maps| self.descriptors(&request.features, &request.images, maps, r));
                if let Ok(maps) = preview {
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
        let maps = self.descriptors(&request.features, &request.images, maps, r)?;
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
            ViewRequest::KMeans { k, joint } => segments(
                maps,
                SegmentOptions {
                    method: SegmentMethod::KMeans {
                        k: *k,
                        seed: KMeansOptions::default().seed,
                    },
                    joint: *joint,
                },
            ),
            ViewRequest::Attention(_) => Err(Error::invalid(
                "attention maps are not computed from features",
            )),
            ViewRequest::NCut { tau, alpha } => segments(
                maps,
                SegmentOptions {
                    method: SegmentMethod::NCut {
                        tau: *tau,
                        alpha: *alpha,
                    },
                    joint: false,
                },
            ),
        }
    }

    fn correspond(
        &self,
        images: &[ImageKey],
        maps: &[FeatureMap],
        points: &[ImagePoint],
    ) -> Result<Vec<Vec<PointMatch>>> {
        let sizes: Vec<ImageSize> = images
            .iter()
            .map(|&k| self.image_size(k))
            .collect::<Result<_>>()?;
        Correspondence::new(&maps.iter().collect::<Vec<_>>(), &sizes)?
            .match_points(points, &view_match_options())
    }

    fn pca(
        &mut self,
        images: &[ImageKey],
        maps: &[FeatureMap],
        joint: bool,
        lock: bool,
        store_lock: bool,
    ) -> Result<ViewResult> {
        let maps: Vec<&FeatureMap> = maps.iter().collect();
        let kept = self
            .locked_pca
            .as_ref()
            .filter(|l| lock && l.images == images)
            .map(|l| &l.fit);
        let pca = pca_rgb(&maps, &PcaRgbOptions::new(joint), kept)?;
        if lock && !pca.reused && store_lock {
            self.locked_pca = Some(LockedPca {
                images: images.to_vec(),
                fit: pca.fit.clone(),
            });
        }
        if !lock {
            self.locked_pca = None;
        }
        Ok(ViewResult::Pca {
            explained_variance_ratio: pca.fit.explained_variance_ratio(),
            rgb: pca.rgb,
            locked: lock,
            description: pca.description,
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
            let maps = self.descriptors(&settings, &request.images, maps, r)?;
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
        let maps = self.descriptors(&request.features, &request.images, maps, r)?;
        let maps: Vec<&FeatureMap> = maps.iter().collect();
        let mut inertia = Vec::new();
        for (i, &k) in request.ks.iter().enumerate() {
            r.check_cancel()?;
            r.progress(
                0.5 + 0.5 * i as f32 / request.ks.len().max(1) as f32,
                format!("k-means inertia, K={k}"),
            );
            inertia.push((k, kmeans_inertia(&maps, k, request.joint)?));
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
        // For each target: the keypoints it shares with the source, where they are in each.
        let mut pairs = Vec::new();
        for target in targets {
            let Some(target_kps) = &target.keypoints else {
                continue;
            };
            let (from, to): (Vec<[f64; 2]>, Vec<[f64; 2]>) = source_kps
                .points
                .iter()
                .filter_map(|(id, s)| target_kps.points.get(id).map(|t| (*s, *t)))
                .unzip();
            pairs.push((target, target_kps, from, to));
        }
        let keypoints: usize = pairs.iter().map(|(_, _, from, _)| from.len()).sum();
        if keypoints == 0 {
            return Err(Error::invalid(
                "PCK: the source and the targets share no visible annotated keypoint",
            ));
        }
        // The view's own matching, counted as eval counts it.
        let rule = MatchRule::SoftArgmax(view_match_options());
        let nothing_counted = PckAccumulator::new(&[request.alpha])?;
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
                let mut counted = nothing_counted.clone();
                for (target, target_kps, from, to) in &pairs {
                    if from.is_empty() {
                        continue;
                    }
                    let keys = [
                        self.key(&settings, source.key)?,
                        self.key(&settings, target.key)?,
                    ];
                    let maps = self.features(&keys, r, 0.0, 0.0)?;
                    let predicted = predict_keypoints(
                        (&maps[0], image_size_of(source)),
                        (&maps[1], image_size_of(target)),
                        from,
                        &rule,
                    )?;
                    let box_of_target = target_kps.pck_box(target.rgb.width(), target.rgb.height());
                    counted
                        .add_pair(&target_kps.category, &predicted, to, box_of_target)
                        .map_err(|e| Error::file(&target_kps.path, e.to_string()))?;
                }
                table.pck[tap_index][ti] = Some(counted.report().overall.per_point[0]);
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

    /// The attention view: each image's maps from the cache or computed (the nearest computed
    /// t shown first), then aggregated.
    fn analyze_attention(
        &mut self,
        request: AnalysisRequest,
        view: &AttentionView,
        r: &Reporter,
    ) -> Result<()> {
        let keys = self.attention_keys(&request.features, &request.images, view)?;
        let all_cached = keys.iter().all(|(_, k)| self.attention.get(k).is_some());
        if !all_cached {
            if let Some(t) = self.nearest_attention_t(&keys) {
                let near: Vec<Option<Arc<Vec<AttentionMap>>>> = (request.images.iter().enumerate())
                    .map(|(i, _)| {
                        let (_, key) = keys.iter().find(|(j, _)| *j == i)?;
                        let key = AttentionKey {
                            features: key.features.at(t, &key.features.tap),
                            ..key.clone()
                        };
                        self.attention.get(&key)
                    })
                    .collect();
                // A preview that fails is not worth an error: the exact one follows.
                if let Ok(view) = self.attention_view(&request, view, &near) {
                    r.emit(Event::Analysis {
                        job: r.job,
                        result: Arc::new(AnalysisResult {
                            shown_t: t,
                            shown_tap: request.features.tap.clone(),
                            exact: false,
                            grids: vec![],
                            view,
                            request: request.clone(),
                        }),
                    });
                }
            }
        }
        let maps = self.attention_maps_of(&keys, &request.images, view, r, 0.95)?;
        r.check_cancel()?;
        let result = self.attention_view(&request, view, &maps)?;
        r.emit(Event::Analysis {
            job: r.job,
            result: Arc::new(AnalysisResult {
                shown_t: request.features.t,
                shown_tap: request.features.tap.clone(),
                exact: true,
                grids: vec![],
                view: result,
                request,
            }),
        });
        Ok(())
    }

    /// The images the view needs maps of (by index), with their keys.
    fn attention_keys(
        &self,
        settings: &FeatureSettings,
        images: &[ImageKey],
        view: &AttentionView,
    ) -> Result<Vec<(usize, AttentionKey)>> {
        let wanted: Vec<usize> = match view.target {
            AttentionViewTarget::Token(_) => (0..images.len()).collect(),
            AttentionViewTarget::Point { image, .. } if image < images.len() => vec![image],
            AttentionViewTarget::Point { .. } => {
                return Err(Error::invalid("the clicked image is not open any more"))
            }
            AttentionViewTarget::Nothing => vec![],
        };
        let loaded = self.loaded()?;
        let offered = &loaded.info.summary.attention;
        wanted
            .into_iter()
            .map(|i| {
                let mut features = self.key(settings, images[i])?;
                features.tap = view.modules.join(",");
                let row_at = match view.target {
                    AttentionViewTarget::Point { point, .. } => {
                        // Whole maps when they are small enough to keep, else the point's rows.
                        let image = self.image(images[i])?;
                        let (w, h) = settings
                            .size
                            .unwrap_or((image.rgb.width(), image.rgb.height()));
                        let stride = loaded.info.summary.input_stride as u32;
                        let whole = AttentionRequest {
                            modules: view.modules.clone(),
                            self_rows: QueryRows::All,
                        };
                        let input = ((h / stride) as usize, (w / stride) as usize);
                        let bytes: u64 = attention_bytes(offered, &whole, input, 77)
                            .iter()
                            .map(|b| b.2)
                            .sum();
                        (bytes > WHOLE_SELF_ATTENTION_BYTES)
                            .then(|| [point.x.to_bits(), point.y.to_bits()])
                    }
                    _ => None,
                };
                Ok((i, AttentionKey { features, row_at }))
            })
            .collect()
    }

    /// The t nearest to the keys' of maps cached for all of them (the same in all else).
    fn nearest_attention_t(&self, keys: &[(usize, AttentionKey)]) -> Option<usize> {
        let (_, first) = keys.first()?;
        let cached_ts = |key: &AttentionKey| -> Vec<usize> {
            self.attention
                .keys()
                .filter(|k| {
                    k.row_at == key.row_at
                        && k.features.tap == key.features.tap
                        && k.features.same_but_t_and_tap(&key.features)
                })
                .map(|k| k.features.t)
                .collect()
        };
        let mut common = cached_ts(first);
        for (_, key) in &keys[1..] {
            let mine = cached_ts(key);
            common.retain(|t| mine.contains(t));
        }
        common
            .into_iter()
            .min_by_key(|t| (t.abs_diff(first.features.t), *t))
    }

    /// The maps of the `keys`' images (by index into `images`; None for the others), reporting
    /// progress over the share `span` of the job.
    fn attention_maps_of(
        &mut self,
        keys: &[(usize, AttentionKey)],
        images: &[ImageKey],
        view: &AttentionView,
        r: &Reporter,
        span: f32,
    ) -> Result<Vec<Option<Arc<Vec<AttentionMap>>>>> {
        let mut maps = vec![None; images.len()];
        let share = span / keys.len().max(1) as f32;
        for (n, (i, key)) in keys.iter().enumerate() {
            let start = n as f32 * share;
            maps[*i] = Some(self.attention_maps(key, &images[*i], view, r, start, share)?);
        }
        Ok(maps)
    }

    /// An image's attention maps, from the cache or computed (reporting progress as the share
    /// `span` of the job that starts at `start`).
    fn attention_maps(
        &mut self,
        key: &AttentionKey,
        image: &ImageKey,
        view: &AttentionView,
        r: &Reporter,
        start: f32,
        span: f32,
    ) -> Result<Arc<Vec<AttentionMap>>> {
        if let Some(maps) = self.attention.get(key) {
            return Ok(maps);
        }
        let image = self.image(*image)?;
        let name = image
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        r.progress(start, format!("encoding {name}"));
        let latents = self.latents_of(&key.features, &image)?;
        let input_size = key.features.size.unwrap_or(image.rgb.dimensions());
        let context = self
            .context_of(&key.features)?
            .map(|c| c.at_size(input_size, None));
        let self_rows = match (key.row_at, view.target) {
            (Some(_), AttentionViewTarget::Point { point, .. }) => rows_at_point(
                Some([point.x, point.y]),
                (image.rgb.width(), image.rgb.height()),
            )?,
            _ => QueryRows::All,
        };
        let request = AttentionRequest {
            modules: view.modules.clone(),
            self_rows,
        };
        let settings = attention_settings(&key.features);
        let t = key.features.t;
        let mut report = |done: usize, total: usize| {
            r.progress(
                start + span * done as f32 / total.max(1) as f32,
                format!(
                    "attention of {name}: t={t}, pass {}/{total}",
                    (done + 1).min(total)
                ),
            );
        };
        let FeatureModel::Diffusion(model) = &self.model_of(&key.features)?.model else {
            return Err(Error::invalid(
                "attention maps come from a diffusion model's UNet; this model has none",
            ));
        };
        let maps = attention_from_latents(
            model,
            &latents,
            context.as_ref(),
            &settings,
            &request,
            Some(r.cancel),
            &mut report,
        )?;
        let maps = Arc::new(maps);
        self.attention.insert(key.clone(), maps.clone());
        Ok(maps)
    }

    /// Aggregate each image's maps (None: not needed, or not cached for a preview).
    fn attention_view(
        &mut self,
        request: &AnalysisRequest,
        view: &AttentionView,
        maps: &[Option<Arc<Vec<AttentionMap>>>],
    ) -> Result<ViewResult> {
        let tokens = self
            .loaded()?
            .model
            .prompt_tokens(&request.features.prompt)?;
        let (target, token) = match view.target {
            AttentionViewTarget::Token(chosen) => {
                let token = chosen
                    .or_else(|| default_token(tokens.as_deref()?))
                    .ok_or_else(|| Error::invalid("choose a token of the prompt"))?;
                (Some(AttentionTarget::Token(token)), Some(token))
            }
            AttentionViewTarget::Point { point, .. } => (Some(AttentionTarget::Point(point)), None),
            AttentionViewTarget::Nothing => (None, None),
        };
        let options = AttentionAggregation {
            head: view.head,
            grid: AggregateGrid::Finest,
        };
        let mut heatmaps: Vec<Option<AttentionHeatmap>> = Vec::with_capacity(maps.len());
        for (image, maps) in request.images.iter().zip(maps) {
            let (Some(target), Some(maps)) = (target, maps) else {
                heatmaps.push(None);
                continue;
            };
            let layers: Vec<(&AttentionMap, f32)> = maps.iter().map(|m| (m, 1.0)).collect();
            let size = self.image_size(*image)?;
            heatmaps.push(Some(aggregate_attention(&layers, target, size, &options)?));
        }
        if target.is_some() && heatmaps.iter().all(Option::is_none) {
            return Err(Error::invalid(
                "no attention map of this setting is computed",
            ));
        }
        let what = match (token, tokens.as_ref()) {
            (Some(i), Some(tokens)) => tokens
                .get(i)
                .map(|t| format!("\"{}\" (token {i}): ", t.text))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let description = match heatmaps.iter().flatten().next() {
            Some(h) => format!("{what}{}", h.description),
            None => "click a point on an image to see where it looks".to_string(),
        };
        Ok(ViewResult::Attention {
            maps: heatmaps,
            tokens,
            token,
            description,
        })
    }

    fn export_attention(
        &mut self,
        settings: &FeatureSettings,
        images: &[ImageKey],
        view: &AttentionView,
        folder: &Path,
        r: &Reporter,
    ) -> Result<()> {
        let keys = self.attention_keys(settings, images, view)?;
        if keys.is_empty() {
            return Err(Error::invalid(
                "nothing to export: click a point or choose a token first",
            ));
        }
        let request = AnalysisRequest {
            features: settings.clone(),
            images: images.to_vec(),
            view: ViewRequest::Attention(view.clone()),
        };
        let maps = self.attention_maps_of(&keys, images, view, r, 1.0)?;
        let ViewResult::Attention {
            maps: heatmaps,
            tokens,
            token,
            ..
        } = self.attention_view(&request, view, &maps)?
        else {
            return Err(Error::invalid("the attention view gave no maps"));
        };
        let map_name = match token {
            Some(t) => format!("token.{t}"),
            None => "point".to_string(),
        };
        let FeatureModel::Diffusion(model) = &self.loaded()?.model else {
            return Err(Error::invalid(
                "attention maps come from a diffusion model's UNet; this model has none",
            ));
        };
        let mut files = Vec::new();
        for (i, key) in &keys {
            let (Some(maps), Some(heatmap)) = (&maps[*i], &heatmaps[*i]) else {
                continue;
            };
            let image = self.image(images[*i])?;
            let point = match (key.row_at, view.target) {
                (Some(_), AttentionViewTarget::Point { point, .. }) => Some([point.x, point.y]),
                _ => None,
            };
            let request = AttentionRequest {
                modules: view.modules.clone(),
                self_rows: rows_at_point(point, (image.rgb.width(), image.rgb.height()))?,
            };
            let size = settings
                .size
                .unwrap_or((image.rgb.width(), image.rgb.height()));
            let mut metadata = attention_metadata(
                model,
                &image.path,
                size,
                &attention_settings(&key.features),
                &request,
                point,
                tokens.as_deref(),
            );
            metadata.insert(
                format!("{map_name}.description"),
                heatmap.description.clone(),
            );
            metadata.insert(
                format!("{map_name}.range"),
                format!("{},{}", heatmap.range.0, heatmap.range.1),
            );
            let stem = image
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("image{i}"));
            let paths = [
                folder.join(format!("{}_{stem}_attention.safetensors", i + 1)),
                folder.join(format!("{}_{stem}_maps.safetensors", i + 1)),
            ];
            files.push((paths, maps.clone(), heatmap.clone(), metadata));
        }
        let folder = folder.to_path_buf();
        self.writer.submit(r.job, move || {
            std::fs::create_dir_all(&folder).map_err(|e| Error::file(&folder, e.to_string()))?;
            let mut written = Vec::new();
            for ([attention, aggregated], maps, heatmap, metadata) in &files {
                write_attention(attention, maps, metadata)?;
                let shape = [heatmap.grid.height, heatmap.grid.width];
                write_f32(
                    aggregated,
                    [(map_name.as_str(), &shape[..], heatmap.values.as_slice())],
                    metadata.clone().into_iter().collect(),
                )?;
                written.extend([attention.clone(), aggregated.clone()]);
            }
            Ok(written)
        })
    }

    fn export_features(
        &mut self,
        settings: &FeatureSettings,
        images: &[ImageKey],
        folder: &Path,
        r: &Reporter,
    ) -> Result<()> {
        let mut files: Vec<(PathBuf, Extraction)> = Vec::new();
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
            let device = candle_core::Device::Cpu;
            // On the CPU here, so the writer thread never touches the model's device.
            let latents = self
                .latents_of(&key, &image)?
                .squeeze(0)?
                .to_device(&device)?;
            let loaded = self.loaded()?;
            let extract_settings = ExtractSettings {
                t: settings.t,
                taps: vec![settings.tap.clone()],
                noise: noise_of(&key),
                prompt: PromptSource::Text(settings.prompt.clone()),
                size: settings.size,
                time_ids: None,
            };
            let size = settings
                .size
                .unwrap_or((image.rgb.width(), image.rgb.height()));
            let metadata = match &loaded.model {
                FeatureModel::Diffusion(model) => {
                    let request = UNetRequest {
                        t: settings.t,
                        taps: vec![settings.tap.clone()],
                        noise: extract_settings.noise.clone(),
                    };
                    describe(model, &image.path, size, &extract_settings, &request)
                }
                FeatureModel::Vit(_) => BTreeMap::from([
                    ("model".to_string(), loaded.id.clone()),
                    ("image".to_string(), image.path.display().to_string()),
                    ("size".to_string(), format!("{}x{}", size.0, size.1)),
                    ("taps".to_string(), settings.tap.clone()),
                    ("t".to_string(), "none".to_string()),
                    (
                        "recipe".to_string(),
                        "DINOv2: one pass, no timestep or noise".to_string(),
                    ),
                ]),
            };
            let mut taps = BTreeMap::new();
            taps.insert(settings.tap.clone(), map.to_tensor(&device)?);
            let extraction = Extraction {
                taps,
                latents,
                tokens: BTreeMap::new(),
                metadata,
            };
            let stem = image
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("image{i}"));
            files.push((
                folder.join(format!("{}_{stem}.safetensors", i + 1)),
                extraction,
            ));
        }
        let folder = folder.to_path_buf();
        self.writer.submit(r.job, move || {
            std::fs::create_dir_all(&folder).map_err(|e| Error::file(&folder, e.to_string()))?;
            for (path, extraction) in &files {
                crate::features::dump::write_safetensors(extraction, path)?;
            }
            Ok(files.into_iter().map(|(path, _)| path).collect())
        })
    }
}

/// The recipe's settings of an attention key (its tap is the modules, not a tap).
fn attention_settings(key: &FeatureKey) -> ExtractSettings {
    ExtractSettings {
        t: key.t,
        taps: vec![],
        noise: noise_of(key),
        prompt: PromptSource::Text(key.prompt.clone()),
        size: key.size,
        time_ids: None,
    }
}

/// The prompt's first word, or the end token of an empty prompt.
fn default_token(tokens: &[PromptToken]) -> Option<usize> {
    (tokens.iter().position(|t| t.role == TokenRole::Word))
        .or_else(|| tokens.iter().position(|t| t.role == TokenRole::End))
}

fn grids(maps: &[FeatureMap]) -> Vec<GridSize> {
    maps.iter()
        .map(|m| GridSize::new(m.height, m.width))
        .collect()
}

fn segments(maps: &[FeatureMap], options: SegmentOptions) -> Result<ViewResult> {
    let s = segment(&maps.iter().collect::<Vec<_>>(), &options)?;
    Ok(ViewResult::Segments {
        labels: s.labels,
        segments: s.segments,
        inertia: s.inertia,
        description: s.description,
    })
}

fn image_size_of(image: &LoadedImage) -> ImageSize {
    ImageSize::new(image.rgb.width() as usize, image.rgb.height() as usize)
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

/// The cache key of an image's features under `settings` by `loaded`: a vision transformer's do
/// not depend on t, noise or prompt, so those are left out of its keys.
fn key_of(loaded: &LoadedModel, settings: &FeatureSettings, image: ImageKey) -> FeatureKey {
    let time_free = loaded.model.time_free();
    FeatureKey {
        model: loaded.id.clone(),
        image,
        size: settings.size,
        t: if time_free { 0 } else { settings.t },
        tap: settings.tap.clone(),
        ensemble: if time_free { 1 } else { settings.ensemble },
        seed: if time_free { 0 } else { settings.seed },
        prompt: if time_free {
            String::new()
        } else {
            settings.prompt.clone()
        },
    }
}

/// The noise of a key: `ensemble` seeded draws, or none for 0 (CleanDIFT's recipe).
fn noise_of(key: &FeatureKey) -> NoiseSource {
    match key.ensemble {
        0 => NoiseSource::Clean,
        ensemble => NoiseSource::Seeded {
            seed: key.seed,
            ensemble,
        },
    }
}
