//! What the user has chosen: the part of the UI state that a session file saves and restores.
//! Results, textures and job bookkeeping live in the app, never here.

use diffscope_engine::model::attention_probs::{AttentionInfo, AttentionKind};
use diffscope_engine::model::pipeline::ModelFamily;
use diffscope_engine::model::taps::block_of;
use diffscope_engine::worker::{FeatureSettings, FusionChoice, ModelInfo};
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
    pub attention: AttentionChoice,
    pub overlay: OverlayChoice,
    pub show_keypoints: bool,
    /// The device and precision the model panel offers to reload the model with (not saved in
    /// sessions: a session may open on another machine).
    #[serde(skip)]
    pub compute: diffscope_engine::worker::ComputeChoice,
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
            attention: AttentionChoice::default(),
            overlay: OverlayChoice::default(),
            show_keypoints: true,
            compute: Default::default(),
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
    /// CleanDIFT's recipe: the clean latent, one pass, no noise (for its fine-tuned UNets).
    pub clean: bool,
    /// The second source's tap fused with the model's (empty: its default, DINOv2's last layer).
    pub fuse_tap: String,
    /// The second source's weight in the fused descriptor (the model's tap gets the rest).
    pub fuse_weight: f32,
    /// The folder typed for the second source.
    pub fuse_model: String,
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
            clean: false,
            fuse_tap: String::new(),
            fuse_weight: 0.5,
            fuse_model: String::new(),
        }
    }
}

impl FeatureChoice {
    /// What the engine is asked for with `model` (and `second`, the source fused with it): t
    /// within its schedule, the size resolved, the prompt only when the model takes one.
    pub fn for_model(&self, model: &ModelInfo, second: Option<&ModelInfo>) -> FeatureSettings {
        let size = match self.size {
            InputSize::Native => model.native_side.map(|s| (s, s)),
            InputSize::Square(s) => Some((s, s)),
            InputSize::Original => None,
        };
        FeatureSettings {
            t: self.t.min(model.alpha_bar.len().saturating_sub(1)),
            tap: self.tap.clone(),
            // 0 draws is CleanDIFT's recipe, for models with a UNet.
            ensemble: if self.clean && model.summary.family == ModelFamily::UNet {
                0
            } else {
                self.ensemble.max(1)
            },
            seed: self.seed,
            prompt: if model.summary.conditional {
                self.prompt.clone()
            } else {
                String::new()
            },
            size,
            fusion: second.map(|s| FusionChoice {
                tap: tap_or_fallback(s, &self.fuse_tap),
                weight_percent: (self.fuse_weight.clamp(0.0, 1.0) * 100.0).round() as u8,
            }),
        }
    }
}

/// A model's tap: `wanted` when it has it, else DINOv2's last layer (SD-DINO's), else its last
/// block-level tap. Serves the model's own tap (`up_blocks.1`, DIFT's) and the second source's.
pub fn tap_or_fallback(model: &ModelInfo, wanted: &str) -> String {
    let taps = &model.summary.taps;
    taps.iter()
        .find(|t| t.name == wanted)
        .or_else(|| {
            taps.iter()
                .rev()
                .find(|t| t.name.starts_with("encoder.layer."))
        })
        .or_else(|| taps.iter().rev().find(|t| t.block_level))
        .map(|t| t.name.clone())
        .unwrap_or_default()
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
    Attention,
}

impl ViewKind {
    pub const ALL: [ViewKind; 4] = [
        ViewKind::Correspondence,
        ViewKind::Pca,
        ViewKind::Segmentation,
        ViewKind::Attention,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ViewKind::Correspondence => "Correspondence",
            ViewKind::Pca => "PCA",
            ViewKind::Segmentation => "Segmentation",
            ViewKind::Attention => "Attention",
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

/// The attention view's choices: which attention (where a word lands, or where a point looks),
/// in which layers, which head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttentionChoice {
    pub kind: AttentionMode,
    /// The block whose attention layers are aggregated (`up_blocks.1`), or `all`.
    pub block: String,
    /// One layer of the block only (its module path); None: all of them.
    pub layer: Option<String>,
    /// One head only; None sums the heads.
    pub head: Option<usize>,
    /// The prompt token shown (an index into the tokenizer's sequence); None: the first word.
    pub token: Option<usize>,
    /// The clicked point: the image's slot and the point in its pixels.
    pub point: Option<(usize, [f32; 2])>,
}

impl Default for AttentionChoice {
    fn default() -> Self {
        Self {
            kind: AttentionMode::Cross,
            block: ALL_BLOCKS.into(),
            layer: None,
            head: None,
            token: None,
            point: None,
        }
    }
}

/// `AttentionChoice::block` for every block.
pub const ALL_BLOCKS: &str = "all";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionMode {
    /// Cross-attention: where a prompt word lands in every image.
    Cross,
    /// Self-attention: where a clicked point looks in its image.
    SelfAttention,
}

impl AttentionMode {
    pub fn kind(self) -> AttentionKind {
        match self {
            AttentionMode::Cross => AttentionKind::CrossAttention,
            AttentionMode::SelfAttention => AttentionKind::SelfAttention,
        }
    }
}

impl AttentionChoice {
    /// The mode the model can show: self-attention when it has no cross-attention.
    pub fn mode_for(&self, model: &ModelInfo) -> AttentionMode {
        let has_cross = model
            .summary
            .attention
            .iter()
            .any(|a| a.kind == AttentionKind::CrossAttention);
        if has_cross {
            self.kind
        } else {
            AttentionMode::SelfAttention
        }
    }

    /// The attention modules chosen in `model`, in forward order.
    pub fn modules<'a>(&self, model: &'a ModelInfo) -> Vec<&'a AttentionInfo> {
        let kind = self.mode_for(model).kind();
        model
            .summary
            .attention
            .iter()
            .filter(|a| a.kind == kind)
            .filter(|a| match &self.layer {
                Some(layer) => &a.name == layer,
                None => self.block == ALL_BLOCKS || block_of(&a.name) == self.block,
            })
            .collect()
    }
}
