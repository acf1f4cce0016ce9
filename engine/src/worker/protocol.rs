//! What the UI asks of the engine thread ([`Command`]) and what it answers ([`Event`]).
//! Large results travel behind `Arc`, so the UI keeps them without copying.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;

use super::annotation::Keypoints;
use crate::analysis::correspond::{CorrespondOptions, PointMatch};
use crate::analysis::labels::LabelMap;
use crate::analysis::recipes::attention::AttentionHeatmap;
use crate::analysis::recipes::correspondence::MatchRule;
use crate::analysis::{GridSize, ImagePoint};
use crate::features::cache::ImageKey;
use crate::model::clip::PromptToken;
use crate::model::pipeline::ModelSummary;
use crate::model::suggested::SuggestedSettings;

/// Every job gets an id, increasing in the order the UI sent them.
pub type JobId = u64;

/// The view a job computes for: a newer job for the same view supersedes (cancels) the older one.
/// Where a model runs and in which precision, as the user picks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComputeChoice {
    pub device: crate::device::DeviceChoice,
    pub precision: crate::device::Precision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewKey {
    Model,
    FusionModel,
    Analysis,
    Sweep,
    Elbow,
    Pck,
}

/// The settings that determine a feature map (besides the model and the image).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FeatureSettings {
    pub t: usize,
    /// A tap name (diffusers module path), e.g. `up_blocks.1`.
    pub tap: String,
    /// Noise draws averaged; 0 runs CleanDIFT's recipe (the clean latent, one pass, no noise).
    pub ensemble: usize,
    pub seed: u64,
    pub prompt: String,
    /// Resize (squash) every image to `(width, height)` first; None keeps each image's own size.
    pub size: Option<(u32, u32)>,
    /// Fuse the tap with a tap of the second source (SD-DINO), when one is loaded.
    pub fusion: Option<FusionChoice>,
}

/// A tap of the second source and its weight in the fused descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FusionChoice {
    pub tap: String,
    /// The second source's weight in percent; the model's tap gets the rest.
    pub weight_percent: u8,
}

impl FusionChoice {
    pub fn weight(&self) -> f32 {
        f32::from(self.weight_percent.min(100)) / 100.0
    }
}

#[derive(Clone, Debug)]
pub enum Command {
    /// Load a model (`default`, a diffusers folder, or a Hugging Face cache folder), on the device
    /// and in the precision given (None: those of the engine's configuration, or of the last
    /// model loaded). On failure the model already loaded stays.
    LoadModel {
        spec: String,
        compute: Option<ComputeChoice>,
    },
    /// Load a second feature source (a DINOv2 folder, or any model) to fuse with the model's taps,
    /// or drop it with None.
    LoadFusionModel { spec: Option<String> },
    /// Decode an image (PNG or JPEG) and its SPair-layout keypoint annotation when there is one.
    LoadImage { path: PathBuf },
    /// Features of the images at the settings, then one analysis of them.
    Analyze(AnalysisRequest),
    /// Similarity of one clicked point's match across timesteps.
    Sweep(SweepRequest),
    /// k-means inertia against K.
    Elbow(ElbowRequest),
    /// PCK of the annotated images' keypoints, per tap and timestep.
    Pck(PckRequest),
    /// Write each image's features at the settings (tap and clean latent) as `.safetensors` into a
    /// folder: computed on the engine thread, written by its writer thread.
    ExportFeatures {
        features: FeatureSettings,
        images: Vec<ImageKey>,
        folder: PathBuf,
    },
    /// Write each image's attention maps of `view` (`<n>_<image>_attention.safetensors`, one
    /// tensor per module) and the map the view shows (`<n>_<image>_maps.safetensors`) into a
    /// folder.
    ExportAttention {
        features: FeatureSettings,
        images: Vec<ImageKey>,
        view: AttentionView,
        folder: PathBuf,
    },
    /// Write an RGBA image as PNG (by the engine's writer thread: computing goes on meanwhile).
    WritePng {
        path: PathBuf,
        width: u32,
        height: u32,
        rgba: Vec<u8>,
    },
    /// Write a text file (exports, sessions), by the writer thread too.
    WriteText { path: PathBuf, text: String },
}

impl Command {
    /// The view this command computes for, if it can be superseded.
    pub fn view(&self) -> Option<ViewKey> {
        match self {
            Command::LoadModel { .. } => Some(ViewKey::Model),
            Command::LoadFusionModel { .. } => Some(ViewKey::FusionModel),
            Command::Analyze(_) => Some(ViewKey::Analysis),
            Command::Sweep(_) => Some(ViewKey::Sweep),
            Command::Elbow(_) => Some(ViewKey::Elbow),
            Command::Pck(_) => Some(ViewKey::Pck),
            Command::LoadImage { .. }
            | Command::ExportFeatures { .. }
            | Command::ExportAttention { .. }
            | Command::WritePng { .. }
            | Command::WriteText { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRequest {
    pub features: FeatureSettings,
    /// The source first, then the targets.
    pub images: Vec<ImageKey>,
    pub view: ViewRequest,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ViewRequest {
    /// Match each point of the source in every target.
    Correspond { points: Vec<ImagePoint> },
    /// PCA to RGB, fitted on all images jointly or on each alone; `lock` keeps the basis (and
    /// colour range) fitted first, so colours stay comparable across t and blocks.
    Pca { joint: bool, lock: bool },
    /// k-means with K clusters, jointly (one set of centroids) or per image (clusters matched to
    /// the first image's by the Hungarian method).
    KMeans { k: usize, joint: bool },
    /// Recursive normalized cut per image (DiffCut).
    NCut { tau: f64, alpha: f32 },
    /// Attention maps aggregated as DAAM does (the features' tap is not used).
    Attention(AttentionView),
}

/// What the attention view shows.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionView {
    /// The attention modules aggregated, by diffusers path.
    pub modules: Vec<String>,
    pub target: AttentionViewTarget,
    /// One head only; None sums every head.
    pub head: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionViewTarget {
    /// Where a prompt token lands, in every image (None: the prompt's first word, or the end
    /// token of an empty prompt).
    Token(Option<usize>),
    /// Where a point of one image (its index in the request's images) looks, in that image.
    Point { image: usize, point: ImagePoint },
    /// Nothing chosen yet (a point not clicked): no map.
    Nothing,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepRequest {
    pub features: FeatureSettings,
    pub images: Vec<ImageKey>,
    pub point: ImagePoint,
    pub ts: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ElbowRequest {
    pub features: FeatureSettings,
    pub images: Vec<ImageKey>,
    pub joint: bool,
    pub ks: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PckRequest {
    pub features: FeatureSettings,
    /// Annotated images: the source first.
    pub images: Vec<ImageKey>,
    pub ts: Vec<usize>,
    pub taps: Vec<String>,
    /// A match is correct within `alpha * max(bbox width, height)` of the target keypoint.
    pub alpha: f64,
}

/// What the UI shows about the loaded model; every number comes from the engine.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// What was asked to load.
    pub spec: String,
    pub summary: ModelSummary,
    /// alpha-bar and SNR at every timestep.
    pub alpha_bar: Vec<f32>,
    pub snr: Vec<f32>,
    /// The image side the model was trained at (`sample_size` times the VAE's factor), if known.
    pub native_side: Option<u32>,
    /// Image sides must be multiples of this.
    pub size_multiple: u32,
    /// The tap and timestep the model folder suggests (its `diffscope.json`).
    pub suggested: Option<SuggestedSettings>,
}

/// A decoded image with its content key and annotation.
#[derive(Debug)]
pub struct LoadedImage {
    pub key: ImageKey,
    pub path: PathBuf,
    pub rgb: RgbImage,
    pub keypoints: Option<Keypoints>,
}

#[derive(Clone, Debug)]
pub struct AnalysisResult {
    pub request: AnalysisRequest,
    /// The timestep and tap of the features used: the requested ones when `exact`, else the
    /// nearest ones already computed (shown at once while the requested ones are computed).
    pub shown_t: usize,
    pub shown_tap: String,
    pub exact: bool,
    /// Feature grid of each image.
    pub grids: Vec<GridSize>,
    pub view: ViewResult,
}

/// How the correspondence view, its t sweep and the PCK table match points.
pub fn view_match_options() -> CorrespondOptions {
    CorrespondOptions::default()
}

#[derive(Clone, Debug)]
pub enum ViewResult {
    /// `matches[p][i]`: point p of the source matched in target i.
    Correspond { matches: Vec<Vec<PointMatch>> },
    /// Per image: `[h, w, 3]` RGB in [0, 1]; the variance each component explains (per fit).
    Pca {
        rgb: Vec<Vec<f32>>,
        explained_variance_ratio: Vec<Vec<f64>>,
        locked: bool,
        description: String,
    },
    /// Per image (request order) its aggregated attention map, None where the target has none
    /// (a point's map is in its own image only); the prompt's tokens; the token shown.
    Attention {
        maps: Vec<Option<AttentionHeatmap>>,
        tokens: Option<Vec<PromptToken>>,
        token: Option<usize>,
        description: String,
    },
    /// Per image: a label per cell (matched across images), and how many labels there are.
    Segments {
        labels: Vec<LabelMap>,
        segments: usize,
        inertia: Option<f64>,
        description: String,
    },
}

impl ViewResult {
    /// What was done, exactly, as the recipe that computed the view describes it (for captions).
    pub fn description(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ViewResult::Correspond { .. } => MatchRule::SoftArgmax(view_match_options())
                .describe()
                .into(),
            ViewResult::Pca { description, .. }
            | ViewResult::Segments { description, .. }
            | ViewResult::Attention { description, .. } => description.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepResult {
    pub request: SweepRequest,
    /// The timesteps done so far (a prefix of the request's).
    pub ts: Vec<usize>,
    /// `[target][i]`: similarity of the best match at `ts[i]`, and whether it was mutual.
    pub similarity: Vec<Vec<f32>>,
    pub mutual: Vec<Vec<bool>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ElbowResult {
    pub request: ElbowRequest,
    pub inertia: Vec<(usize, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PckTable {
    pub request: PckRequest,
    /// `[tap][t]`: fraction of keypoints matched correctly; None where not computed yet.
    pub pck: Vec<Vec<Option<f64>>>,
    /// Keypoint pairs evaluated per cell.
    pub keypoints: usize,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// `fraction` of the job done, with what it is doing.
    Progress {
        job: JobId,
        view: Option<ViewKey>,
        fraction: f32,
        message: String,
    },
    ModelLoaded {
        job: JobId,
        info: Arc<ModelInfo>,
    },
    /// The second source is loaded (None: dropped).
    FusionModelLoaded {
        job: JobId,
        info: Option<Arc<ModelInfo>>,
    },
    ImageLoaded {
        job: JobId,
        image: Arc<LoadedImage>,
    },
    Analysis {
        job: JobId,
        result: Arc<AnalysisResult>,
    },
    Sweep {
        job: JobId,
        result: Arc<SweepResult>,
        finished: bool,
    },
    Elbow {
        job: JobId,
        result: Arc<ElbowResult>,
    },
    Pck {
        job: JobId,
        table: Arc<PckTable>,
        finished: bool,
    },
    /// Files were written. The writer thread sends it, so it may come after events of jobs sent
    /// later; a failed write is an [`Event::Error`] of the same job, naming the file.
    Written {
        job: JobId,
        paths: Vec<PathBuf>,
    },
    Cancelled {
        job: JobId,
        view: Option<ViewKey>,
    },
    /// A readable message; the engine keeps running and keeps what it had.
    Error {
        job: JobId,
        view: Option<ViewKey>,
        message: String,
    },
}

impl Event {
    pub fn job(&self) -> JobId {
        match self {
            Event::Progress { job, .. }
            | Event::ModelLoaded { job, .. }
            | Event::FusionModelLoaded { job, .. }
            | Event::ImageLoaded { job, .. }
            | Event::Analysis { job, .. }
            | Event::Sweep { job, .. }
            | Event::Elbow { job, .. }
            | Event::Pck { job, .. }
            | Event::Written { job, .. }
            | Event::Cancelled { job, .. }
            | Event::Error { job, .. } => *job,
        }
    }

    /// Whether this is the last event of its job.
    pub fn ends_job(&self) -> bool {
        match self {
            Event::Progress { .. } => false,
            Event::Analysis { result, .. } => result.exact,
            Event::Sweep { finished, .. } | Event::Pck { finished, .. } => *finished,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_correspondence_caption_is_the_rule_the_view_matches_by() {
        let view = ViewResult::Correspond { matches: vec![] };
        assert_eq!(
            view.description(),
            MatchRule::SoftArgmax(view_match_options()).describe()
        );
        assert!(view.description().ends_with("argmax + 3x3 soft-argmax"));
        let pca = ViewResult::Pca {
            rgb: vec![],
            explained_variance_ratio: vec![],
            locked: false,
            description: "what the recipe said".into(),
        };
        assert_eq!(pca.description(), "what the recipe said");
    }
}
