//! The central view: the images in a grid, each with its overlay (drawn by our shader), markers,
//! the colorbar or legend, and a caption that says exactly what is shown.

pub mod cards;
mod legend;

use std::collections::HashMap;
use std::sync::Arc;

use diffscope_engine::worker::{AnalysisResult, ViewResult};
use eframe::egui;

use super::context::PanelContext;
use super::heatmap::{OverlayData, OverlayValues};
pub use cards::to_screen;

use super::state::{Settings, ViewKind};

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
            ViewResult::Attention { maps, .. } => {
                for (heatmap, image) in maps.iter().zip(images) {
                    let Some(heatmap) = heatmap else {
                        continue;
                    };
                    for &v in &heatmap.values {
                        let (lo, hi) = self.value_range.unwrap_or((v, v));
                        self.value_range = Some((lo.min(v), hi.max(v)));
                    }
                    self.by_image.insert(
                        *image,
                        OverlayData::new(
                            heatmap.grid.width,
                            heatmap.grid.height,
                            OverlayValues::Scalar(heatmap.values.clone()),
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
            | (ViewResult::Attention { .. }, ViewKind::Attention)
    )
}

/// Where the central view drew things this frame.
#[derive(Default)]
pub struct Drawn {
    /// Each slot's image.
    pub image_rects: Vec<egui::Rect>,
    /// The images with their legend and caption: what an exported figure shows.
    pub figure: Option<egui::Rect>,
}

/// Clicks on the source edit the points in `settings`; `overlays` is this view's cache.
pub fn show(
    ui: &mut egui::Ui,
    cx: &PanelContext,
    settings: &mut Settings,
    overlays: &mut OverlayCache,
) -> Drawn {
    if cx.slots.is_empty() {
        ui.centered_and_justified(|ui| {
            ui.label(if cx.loading_images().next().is_none() {
                "Add two to six images: File > Add images, drop files here, type a path above, or pick a bundled sample on the left."
            } else {
                "Loading images…"
            });
        });
        return Drawn::default();
    }
    if let Some(result) = &cx.results.analysis {
        if result_matches_view(result, settings.view) {
            overlays.update(result, settings.active_point);
        } else {
            *overlays = OverlayCache::default();
        }
    }
    let figure_top = ui.cursor().min;
    let image_rects = cards::show(ui, cx, settings, overlays);
    legend::show(ui, cx, settings, overlays);
    let figure = egui::Rect::from_min_max(
        figure_top,
        egui::pos2(ui.max_rect().max.x, ui.min_rect().max.y),
    );
    Drawn {
        image_rects,
        figure: Some(figure),
    }
}
