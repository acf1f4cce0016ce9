//! What the user has chosen: the part of the UI state that a session file saves and restores.
//! Results, textures and job bookkeeping live in the app, never here.

use serde::{Deserialize, Serialize};

use super::colormap::Colormap;

/// The workbench's settings; saved as a session together with the model and the images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub features: FeatureChoice,
    pub view: ViewKind,
    /// Points on the source image (pixel coordinates, integer values at pixel centres).
    pub points: Vec<[f32; 2]>,
    /// The point whose similarity map is shown.
    pub active_point: usize,
    pub pca: PcaChoice,
    pub segment: SegmentChoice,
    pub overlay: OverlayChoice,
    pub show_keypoints: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            features: FeatureChoice::default(),
            view: ViewKind::Correspondence,
            points: Vec::new(),
            active_point: 0,
            pca: PcaChoice::default(),
            segment: SegmentChoice::default(),
            overlay: OverlayChoice::default(),
            show_keypoints: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeatureChoice {
    pub t: usize,
    pub tap: String,
    pub ensemble: usize,
    pub seed: u64,
    pub prompt: String,
    pub size: InputSize,
}

impl Default for FeatureChoice {
    fn default() -> Self {
        Self {
            t: 261,
            tap: "up_blocks.1".into(),
            ensemble: 1,
            seed: 0,
            prompt: String::new(),
            size: InputSize::Native,
        }
    }
}

/// The size images are resized to before extraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputSize {
    /// The side the model was trained at.
    Native,
    /// A square side in pixels.
    Square(u32),
    /// Each image at its own size.
    Original,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewKind {
    Correspondence,
    Pca,
    Segmentation,
}

impl ViewKind {
    pub const ALL: [ViewKind; 3] = [
        ViewKind::Correspondence,
        ViewKind::Pca,
        ViewKind::Segmentation,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ViewKind::Correspondence => "Correspondence",
            ViewKind::Pca => "PCA",
            ViewKind::Segmentation => "Segmentation",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaChoice {
    pub joint: bool,
    pub lock: bool,
}

impl Default for PcaChoice {
    fn default() -> Self {
        Self {
            joint: true,
            lock: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentMethod {
    KMeans,
    NCut,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentChoice {
    pub method: SegmentMethod,
    pub k: usize,
    pub joint: bool,
    pub tau: f64,
    pub alpha: f32,
}

impl Default for SegmentChoice {
    fn default() -> Self {
        Self {
            method: SegmentMethod::KMeans,
            k: 6,
            joint: true,
            tau: 0.5,
            alpha: 10.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverlayChoice {
    pub colormap: Colormap,
    pub opacity: f32,
    /// None: the range of the values shown; else a fixed range.
    pub range: Option<[f32; 2]>,
    pub bilinear: bool,
}

impl Default for OverlayChoice {
    fn default() -> Self {
        Self {
            colormap: Colormap::Viridis,
            opacity: 0.6,
            range: None,
            bilinear: true,
        }
    }
}
