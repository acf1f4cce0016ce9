//! What a panel sees of the workbench: a read-only view of its state, built by the app for each
//! frame, and the queue to push actions into. Panels edit only the settings they own.

use std::path::Path;
use std::sync::Arc;

use diffscope_engine::worker::{FeatureSettings, LoadedImage, ModelInfo};
use eframe::egui;

use super::actions::{Action, ActionSender};
use super::frame_stats::FrameStats;
use super::jobs::JobTable;
use super::remembered::Remembered;
use super::results::Results;
use super::samples::Library;
use super::state::FeatureChoice;

/// At most this many images are open at once.
pub const MAX_IMAGES: usize = 6;

/// An image slot: the decoded image and its texture.
pub struct Slot {
    pub image: Arc<LoadedImage>,
    pub texture: egui::TextureHandle,
}

impl Slot {
    pub fn name(&self) -> String {
        self.image
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A message in the message bar.
pub struct Message {
    pub text: String,
    pub error: bool,
}

pub struct PanelContext<'a> {
    /// The model asked for last (it may still be loading).
    pub model_spec: &'a str,
    /// The model loaded.
    pub model: Option<&'a Arc<ModelInfo>>,
    /// The second source fused with the model's taps, when one is loaded.
    pub second_model: Option<&'a Arc<ModelInfo>>,
    /// The open images; the first is the source.
    pub slots: &'a [Slot],
    pub results: &'a Results,
    pub jobs: &'a JobTable,
    pub messages: &'a [Message],
    pub library: &'a Library,
    /// The recent models and sessions.
    pub remembered: &'a Remembered,
    /// Whether the GPU overlay pipeline is installed.
    pub has_gpu: bool,
    /// Recent frame times, for the status bar; None hides them.
    pub frame_times: Option<&'a FrameStats>,
    pub actions: &'a ActionSender,
}

impl PanelContext<'_> {
    pub fn send(&self, action: Action) {
        self.actions.send(action);
    }

    /// The feature settings for `choice`, once a model is loaded.
    pub fn feature_settings(&self, choice: &FeatureChoice) -> Option<FeatureSettings> {
        Some(choice.for_model(self.model?, self.second_model.map(|m| m.as_ref())))
    }

    /// The last timestep of the model's schedule (999 before a model is loaded).
    pub fn last_t(&self) -> usize {
        last_t(self.model.map(|m| &**m))
    }

    /// Alpha-bar and SNR at `t`, from the model's schedule.
    pub fn noise_level(&self, t: usize) -> Option<(f32, f32)> {
        let model = self.model?;
        Some((*model.alpha_bar.get(t)?, *model.snr.get(t)?))
    }

    /// The paths of the images being loaded.
    pub fn loading_images(&self) -> impl Iterator<Item = &Path> {
        self.jobs.images()
    }

    /// Whether another image can be added.
    pub fn has_room_for_images(&self) -> bool {
        has_room_for_images(self.slots, self.jobs)
    }
}

/// The last timestep of `model`'s schedule (999 before a model is loaded).
pub fn last_t(model: Option<&ModelInfo>) -> usize {
    model.map_or(999, |m| m.alpha_bar.len().saturating_sub(1))
}

/// Whether another image fits beside the open ones and those being loaded.
pub fn has_room_for_images(slots: &[Slot], jobs: &JobTable) -> bool {
    slots.len() + jobs.images().count() < MAX_IMAGES
}
