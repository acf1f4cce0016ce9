//! Exports: the figure as PNG (a screenshot of the view, so it is exactly what the shader drew),
//! the pinned correspondences as CSV or JSON, and feature dumps (written by the engine).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffscope_engine::worker::{AnalysisResult, Command, ViewResult};
use eframe::egui;
use serde::Serialize;

use super::app::WorkbenchApp;

/// One pinned point matched in one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorrespondenceRow {
    pub point: usize,
    pub source_image: String,
    pub source_x: f32,
    pub source_y: f32,
    pub target_image: String,
    pub target_x: f32,
    pub target_y: f32,
    pub similarity: f32,
    pub mutual: bool,
}

#[derive(Serialize)]
struct CorrespondenceFile<'a> {
    model: &'a str,
    t: usize,
    tap: &'a str,
    ensemble: usize,
    seed: u64,
    prompt: &'a str,
    size: Option<(u32, u32)>,
    coordinates: &'static str,
    matches: &'a [CorrespondenceRow],
}

impl WorkbenchApp {
    fn image_path(&self, key: u64) -> String {
        self.slots
            .iter()
            .find(|s| s.image.key == key)
            .map(|s| s.image.path.display().to_string())
            .unwrap_or_default()
    }

    /// The rows of the last exact correspondence result.
    pub fn correspondence_rows(&self) -> Option<(Arc<AnalysisResult>, Vec<CorrespondenceRow>)> {
        let result = self.analysis.clone().filter(|r| r.exact)?;
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
                rows.push(CorrespondenceRow {
                    point: p + 1,
                    source_image: source.clone(),
                    source_x: point.x,
                    source_y: point.y,
                    target_image: self.image_path(*key),
                    target_x: m.point.x,
                    target_y: m.point.y,
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
        let text = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            let mut out = format!(
                "# model={} t={} tap={} ensemble={} seed={} prompt={:?} size={}\n",
                self.model_spec,
                f.t,
                f.tap,
                f.ensemble,
                f.seed,
                f.prompt,
                f.size.map_or("own".into(), |(w, h)| format!("{w}x{h}"))
            );
            out.push_str("point,source_image,source_x,source_y,target_image,target_x,target_y,similarity,mutual\n");
            for r in &rows {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    r.point,
                    csv_field(&r.source_image),
                    r.source_x,
                    r.source_y,
                    csv_field(&r.target_image),
                    r.target_x,
                    r.target_y,
                    r.similarity,
                    r.mutual
                ));
            }
            out
        } else {
            let file = CorrespondenceFile {
                model: &self.model_spec,
                t: f.t,
                tap: &f.tap,
                ensemble: f.ensemble,
                seed: f.seed,
                prompt: &f.prompt,
                size: f.size,
                coordinates: "image pixels of the original images, integer values at pixel centres",
                matches: &rows,
            };
            serde_json::to_string_pretty(&file).unwrap_or_default()
        };
        self.send_other(
            Command::WriteText {
                path: path.to_path_buf(),
                text,
            },
            "exporting correspondences",
        );
    }

    /// Each image's features at the current settings, as `.safetensors` in `folder`.
    pub fn export_features(&mut self, folder: PathBuf) {
        let Some(features) = self.feature_settings() else {
            self.message("nothing to export: load a model and images first", true);
            return;
        };
        let images = self.image_keys();
        self.send_other(
            Command::ExportFeatures {
                features,
                images,
                folder,
            },
            "exporting features",
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
            self.send_other(
                Command::WritePng {
                    path,
                    width: (x1 - x0) as u32,
                    height: (y1 - y0) as u32,
                    rgba,
                },
                "exporting the figure",
            );
        }
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
