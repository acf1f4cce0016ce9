//! The central view: the images in a grid, each with its overlay (drawn by our shader), markers,
//! the colorbar or legend, and a caption that says exactly what is shown.

pub mod cards;
mod legend;

use std::collections::HashMap;
use std::sync::Arc;

use diffscope_engine::worker::{AnalysisResult, ViewResult};
use eframe::egui;

use super::app::WorkbenchApp;
use super::heatmap::{OverlayData, OverlayValues};
pub use cards::to_screen;

use super::state::ViewKind;

/// Overlays built from the last result, per image, rebuilt only when the result or the active
/// point changes.
#[derive(Default)]
pub struct OverlayCache {
    key: Option<(usize, usize)>,
    pub by_image: HashMap<u64, Arc<OverlayData>>,
    /// Range of the scalar values (min, max) over all images.
    pub value_range: Option<(f32, f32)>,
}

impl OverlayCache {
    pub fn update(&mut self, result: &Arc<AnalysisResult>, active_point: usize) {
        let key = (Arc::as_ptr(result) as usize, active_point);
        if self.key == Some(key) {
            return;
        }
        self.key = Some(key);
        self.by_image.clear();
        self.value_range = None;
        let images = &result.request.images;
        match &result.view {
            ViewResult::Correspond { matches } => {
                let Some(point) = matches.get(active_point) else {
                    return;
                };
                for (m, image) in point.iter().zip(images.iter().skip(1)) {
                    let grid = m.similarity.grid;
                    for &v in &m.similarity.values {
                        let (lo, hi) = self.value_range.unwrap_or((v, v));
                        self.value_range = Some((lo.min(v), hi.max(v)));
                    }
                    self.by_image.insert(
                        *image,
                        OverlayData::new(
                            grid.width,
                            grid.height,
                            OverlayValues::Scalar(m.similarity.values.clone()),
                        ),
                    );
                }
            }
            ViewResult::Pca { rgb, .. } => {
                for ((values, grid), image) in rgb.iter().zip(&result.grids).zip(images) {
                    self.by_image.insert(
                        *image,
                        OverlayData::new(
                            grid.width,
                            grid.height,
                            OverlayValues::Rgb(values.clone()),
                        ),
                    );
                }
            }
            ViewResult::Segments { labels, .. } => {
                for (map, image) in labels.iter().zip(images) {
                    self.by_image.insert(
                        *image,
                        OverlayData::new(
                            map.grid.width,
                            map.grid.height,
                            OverlayValues::Labels(map.labels.clone()),
                        ),
                    );
                }
            }
        }
    }
}

/// Whether a result belongs to the view now chosen (the previous view's result may still be on
/// screen for a moment after switching).
pub fn result_matches_view(result: &AnalysisResult, view: ViewKind) -> bool {
    matches!(
        (&result.view, view),
        (ViewResult::Correspond { .. }, ViewKind::Correspondence)
            | (ViewResult::Pca { .. }, ViewKind::Pca)
            | (ViewResult::Segments { .. }, ViewKind::Segmentation)
    )
}

pub fn show(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    if app.slots.is_empty() {
        ui.centered_and_justified(|ui| {
            ui.label(if app.image_jobs.is_empty() {
                "Add two to six images: File > Add images, drop files here, type a path above, or pick a bundled sample on the left."
            } else {
                "Loading images…"
            });
        });
        app.image_rects.clear();
        app.figure_rect = None;
        return;
    }
    if let Some(result) = app.analysis.clone() {
        if result_matches_view(&result, app.settings.view) {
            app.overlays.update(&result, app.settings.active_point);
        } else {
            app.overlays = OverlayCache::default();
        }
    }
    let figure_top = ui.cursor().min;
    cards::show(app, ui);
    legend::show(app, ui);
    let figure = egui::Rect::from_min_max(
        figure_top,
        egui::pos2(ui.max_rect().max.x, ui.min_rect().max.y),
    );
    app.figure_rect = Some(figure);
}
