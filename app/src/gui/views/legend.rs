//! Under the images: the colorbar (correspondence), the colour key (PCA), or the segment legend,
//! and a caption of every setting, so an exported figure says what it shows.

use diffscope_engine::worker::ViewResult;
use eframe::egui::{self, Color32, Rect, Sense, Vec2};

use super::result_matches_view;
use crate::gui::app::WorkbenchApp;
use crate::gui::colormap::{colour_at, palette};

pub fn show(app: &WorkbenchApp, ui: &mut egui::Ui) {
    let result = app
        .analysis
        .as_ref()
        .filter(|r| result_matches_view(r, app.settings.view));
    ui.horizontal(|ui| match result.map(|r| &r.view) {
        Some(ViewResult::Correspond { .. }) => colorbar(app, ui),
        Some(ViewResult::Pca {
            explained_variance_ratio,
            ..
        }) => {
            let first = explained_variance_ratio
                .first()
                .cloned()
                .unwrap_or_default();
            let parts: Vec<String> = ["R", "G", "B"]
                .iter()
                .zip(&first)
                .enumerate()
                .map(|(i, (c, r))| format!("{c} = PC{} ({:.1}%)", i + 1, 100.0 * r))
                .collect();
            ui.label(parts.join(", "));
        }
        Some(ViewResult::Segments { segments, .. }) => {
            for i in 0..(*segments).min(24) {
                let (rect, _) = ui.allocate_exact_size(Vec2::splat(12.0), Sense::hover());
                ui.painter().rect_filled(rect, 2.0, palette(i));
                ui.label(format!("{}", i + 1));
            }
        }
        None => {
            ui.label("");
        }
    });
    ui.label(egui::RichText::new(caption(app)).small());
}

fn colorbar(app: &WorkbenchApp, ui: &mut egui::Ui) {
    let o = &app.settings.overlay;
    let (lo, hi) = o
        .range
        .map(|r| (r[0], r[1]))
        .or(app.overlays.value_range)
        .unwrap_or((0.0, 1.0));
    ui.label(format!("{lo:.3}"));
    let (rect, _) = ui.allocate_exact_size(Vec2::new(220.0, 14.0), Sense::hover());
    let steps = 64;
    let width = rect.width() / steps as f32;
    for i in 0..steps {
        let u = (i as f32 + 0.5) / steps as f32;
        let r = Rect::from_min_size(
            rect.min + Vec2::new(i as f32 * width, 0.0),
            Vec2::new(width + 0.5, rect.height()),
        );
        ui.painter().rect_filled(r, 0.0, colour_at(o.colormap, u));
    }
    ui.painter().rect_stroke(
        rect,
        0.0,
        egui::Stroke::new(1.0, Color32::GRAY),
        egui::StrokeKind::Outside,
    );
    ui.label(format!("{hi:.3}"));
    ui.label(format!(
        "cosine similarity of the active point ({}, {})",
        o.colormap.name(),
        if o.range.is_some() {
            "fixed range"
        } else {
            "range of the maps"
        }
    ));
}

/// One line with every setting that determines the picture.
pub fn caption(app: &WorkbenchApp) -> String {
    let Some(model) = &app.model else {
        return "no model loaded".into();
    };
    let Some(result) = app
        .analysis
        .as_ref()
        .filter(|r| result_matches_view(r, app.settings.view))
    else {
        return format!("{}: computing…", model.summary.name);
    };
    let f = &result.request.features;
    let t = result.shown_t;
    let noise = match (model.alpha_bar.get(t), model.snr.get(t)) {
        (Some(a), Some(s)) => format!(" (alpha-bar {a:.4}, SNR {s:.3})"),
        _ => String::new(),
    };
    let size = f.size.map_or("own size".to_string(), |(w, h)| {
        format!("resized to {w}×{h}")
    });
    let prompt = if model.summary.conditional {
        format!(", prompt {:?}", f.prompt)
    } else {
        String::new()
    };
    let view = match &result.view {
        ViewResult::Correspond { .. } => {
            "cosine similarity at feature resolution, bilinear sample at the click, match = argmax + 3x3 soft-argmax; filled marker = mutual nearest neighbour".to_string()
        }
        ViewResult::Pca { description, .. } | ViewResult::Segments { description, .. } => {
            description.clone()
        }
    };
    let stale = if result.exact {
        String::new()
    } else {
        format!(" [nearest computed, t={} {} is being computed]", f.t, f.tap)
    };
    format!(
        "{} · t={t}{noise} · {} · ensemble {} · seed {} · {size}{prompt} · {view}{stale}",
        model.summary.name, result.shown_tap, f.ensemble, f.seed
    )
}
