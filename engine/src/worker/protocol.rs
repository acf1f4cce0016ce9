//! What the UI asks of the engine thread ([`Command`]) and what it answers ([`Event`]).
//! Large results travel behind `Arc`, so the UI keeps them without copying.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;

use super::annotation::Keypoints;
use crate::analysis::correspond::PointMatch;
use crate::analysis::labels::LabelMap;
use crate::analysis::{GridSize, ImagePoint};
use crate::features::cache::ImageKey;
use crate::model::pipeline::ModelSummary;
use crate::model::suggested::SuggestedSettings;

/// Every job gets an id, increasing in the order the UI sent them.
pub type JobId = u64;

/// The view a job computes for: a newer job for the same view supersedes (cancels) the older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewKey {
    Model,
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
    pub ensemble: usize,
    pub seed: u64,
    pub prompt: String,
    /// Resize (squash) every image to `(width, height)` first; None keeps each image's own size.
    pub size: Option<(u32, u32)>,
}

#[derive(Clone, Debug)]
pub enum Command {
    /// Load a model (`default`, a diffusers folder, or a Hugging Face cache folder). On failure the
    /// model already loaded stays.
    LoadModel { spec: String },
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
    /// Write each image's features at the settings (tap and clean latent) as `.safetensors` into a folder.
    ExportFeatures {
        features: FeatureSettings,
        images: Vec<ImageKey>,
        folder: PathBuf,
    },
    /// Write an RGBA image as PNG.
    WritePng {
        path: PathBuf,
        width: u32,
        height: u32,
        rgba: Vec<u8>,
    },
    /// Write a text file (exports, sessions).
    WriteText { path: PathBuf, text: String },
}

impl Command {
    /// The view this command computes for, if it can be superseded.
    pub fn view(&self) -> Option<ViewKey> {
        match self {
            Command::LoadModel { .. } => Some(ViewKey::Model),
            Command::Analyze(_) => Some(ViewKey::Analysis),
            Command::Sweep(_) => Some(ViewKey::Sweep),
            Command::Elbow(_) => Some(ViewKey::Elbow),
            Command::Pck(_) => Some(ViewKey::Pck),
            Command::LoadImage { .. }
            | Command::ExportFeatures { .. }
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
    /// Per image: a label per cell (matched across images), and how many labels there are.
    Segments {
        labels: Vec<LabelMap>,
        segments: usize,
        inertia: Option<f64>,
        description: String,
    },
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
    /// A file was written.
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
