//! Exports: the figure as PNG (a screenshot of the view, so it is exactly what the shader drew),
//! the pinned correspondences as CSV or JSON, and feature dumps (written by the engine).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffscope_engine::export::matches::{MatchExport, MatchRecord};
use diffscope_engine::worker::{AnalysisResult, Command, ViewResult};
use eframe::egui;

use super::app::WorkbenchApp;
use super::jobs::JobKind;

impl WorkbenchApp {
    fn image_path(&self, key: u64) -> String {
        self.slots
            .iter()
            .find(|s| s.image.key == key)
            .map(|s| s.image.path.display().to_string())
            .unwrap_or_default()
    }

    /// The rows of the last exact correspondence result.
    pub fn correspondence_rows(&self) -> Option<(Arc<AnalysisResult>, Vec<MatchRecord>)> {
        let result = self.results.analysis.clone().filter(|r| r.exact)?;
        let ViewResult::Correspond { matches } = &result.view else {
            return None;
        };
        let diffscope_engine::worker::ViewRequest::Correspond { points } = &result.request.view
        else {
            return None;
        };
        let source = self.image_path(*result.request.images.first()?);
        let mut rows = Vec::new();
        for (p, (point, per_target)) in points.iter().zip(matches).enumerate() {
            for (m, key) in per_target.iter().zip(result.request.images.iter().skip(1)) {
                rows.push(MatchRecord {
                    point: p + 1,
                    source: source.clone(),
                    source_point: [point.x, point.y],
                    target: self.image_path(*key),
                    matched: [m.point.x, m.point.y],
                    similarity: m.best_similarity,
                    mutual: m.mutual,
                });
            }
        }
        Some((result, rows))
    }

    /// CSV when the path ends in `.csv`, JSON otherwise.
    pub fn export_correspondences(&mut self, path: &Path) {
        let Some((result, rows)) = self.correspondence_rows() else {
            self.message(
                "nothing to export: pin points in the Correspondence view and wait for their matches",
                true,
            );
            return;
        };
        let f = &result.request.features;
        let mut settings = serde_json::Map::new();
        settings.insert("model".into(), self.model_spec.clone().into());
        settings.insert("t".into(), f.t.into());
        settings.insert("taps".into(), vec![f.tap.clone()].into());
        settings.insert("ensemble".into(), f.ensemble.into());
        settings.insert("seed".into(), f.seed.into());
        settings.insert("prompt".into(), f.prompt.clone().into());
        if let Some((w, h)) = f.size {
            settings.insert("size".into(), format!("{w}x{h}").into());
        }
        let export = MatchExport::new(settings, rows);
        let text = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            export.csv_text()
        } else {
            export.json_text()
        };
        self.start(
            Command::WriteText {
                path: path.to_path_buf(),
                text,
            },
            JobKind::Write("correspondences"),
        );
    }

    /// Each image's features at the current settings, as `.safetensors` in `folder`.
    pub fn export_features(&mut self, folder: PathBuf) {
        let Some(features) = self.feature_settings() else {
            self.message("nothing to export: load a model and images first", true);
            return;
        };
        let images = self.image_keys();
        self.start(
            Command::ExportFeatures {
                features,
                images,
                folder,
            },
            JobKind::Write("features"),
        );
    }

    /// Each image's attention maps of the attention view's settings, and the map it shows, as
    /// `.safetensors` in `folder`.
    pub fn export_attention(&mut self, folder: PathBuf) {
        let (Some(features), Some(view)) = (self.feature_settings(), self.attention_view()) else {
            self.message(
                "nothing to export: load a model and images, and choose attention layers",
                true,
            );
            return;
        };
        let images = self.image_keys();
        self.start(
            Command::ExportAttention {
                features,
                images,
                view,
                folder,
            },
            JobKind::Write("attention maps"),
        );
    }

    /// Ask for a screenshot; the figure is cut out of it when it arrives.
    pub fn export_figure(&mut self, path: PathBuf) {
        if self.figure_rect.is_none() {
            self.message("nothing to export: add images first", true);
            return;
        }
        self.pending_figure = Some(path);
        let tx = self.screenshots.0.clone();
        let ctx = self.ctx().clone();
        self.ctx()
            .send_viewport_cmd(egui::ViewportCommand::Screenshot(
                egui::ScreenshotCallback::new(move |image| {
                    let _ = tx.send(image);
                    ctx.request_repaint();
                }),
            ));
    }

    pub(crate) fn handle_screenshots(&mut self) {
        while let Ok(image) = self.screenshots.1.try_recv() {
            let (Some(path), Some(rect)) = (self.pending_figure.take(), self.figure_rect) else {
                continue;
            };
            let scale = self.ctx().pixels_per_point();
            let (x0, y0) = ((rect.min.x * scale) as usize, (rect.min.y * scale) as usize);
            let (x1, y1) = (
                ((rect.max.x * scale) as usize).min(image.width()),
                ((rect.max.y * scale) as usize).min(image.height()),
            );
            if x1 <= x0 || y1 <= y0 {
                self.message("the figure is not on screen", true);
                continue;
            }
            let mut rgba = Vec::with_capacity((x1 - x0) * (y1 - y0) * 4);
            for y in y0..y1 {
                for x in x0..x1 {
                    rgba.extend_from_slice(&image.pixels[y * image.width() + x].to_array());
                }
            }
            self.start(
                Command::WritePng {
                    path,
                    width: (x1 - x0) as u32,
                    height: (y1 - y0) as u32,
                    rgba,
                },
                JobKind::Write("the figure"),
            );
        }
    }
}
