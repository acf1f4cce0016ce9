//! Under the images: the colorbar (correspondence), the colour key (PCA), or the segment legend,
//! and a caption of every setting, so an exported figure says what it shows.

use diffscope_engine::model::taps::block_of;
use diffscope_engine::worker::{ViewRequest, ViewResult};
use eframe::egui::{self, Color32, Rect, Sense, Vec2};

use super::{result_matches_view, OverlayCache};
use crate::gui::colormap::{colour_at, palette};
use crate::gui::context::PanelContext;
use crate::gui::state::{Settings, ViewKind};

pub fn show(ui: &mut egui::Ui, cx: &PanelContext, settings: &Settings, overlays: &OverlayCache) {
    let result = cx
        .results
        .analysis
        .as_ref()
        .filter(|r| result_matches_view(r, settings.view));
    ui.horizontal(|ui| match result.map(|r| &r.view) {
        Some(ViewResult::Correspond { .. }) => colorbar(
            ui,
            settings,
            overlays,
            "cosine similarity of the active point",
        ),
        Some(ViewResult::Attention { .. }) => colorbar(
            ui,
            settings,
            overlays,
            "attention, min-max normalised (DAAM)",
        ),
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
    ui.label(egui::RichText::new(caption(cx, settings.view)).small());
}

/// The colormap from the low to the high end of the range shown, and what the values are.
fn colorbar(ui: &mut egui::Ui, settings: &Settings, overlays: &OverlayCache, values: &str) {
    let o = &settings.overlay;
    let (lo, hi) = o
        .range
        .map(|r| (r[0], r[1]))
        .or(overlays.value_range)
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
        "{values} ({}, {})",
        o.colormap.name(),
        if o.range.is_some() {
            "fixed range"
        } else {
            "range of the maps"
        }
    ));
}

/// One line with every setting that determines the picture.
pub fn caption(cx: &PanelContext, view: ViewKind) -> String {
    let Some(model) = cx.model else {
        return "no model loaded".into();
    };
    let Some(result) = cx
        .results
        .analysis
        .as_ref()
        .filter(|r| result_matches_view(r, view))
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
    // What was done comes from the engine's recipe; the markers are the workbench's own.
    let view = match &result.view {
        ViewResult::Correspond { .. } => format!(
            "{}; filled marker = mutual nearest neighbour",
            result.view.description()
        ),
        other => other.description().into_owned(),
    };
    // The attention view reads attention layers, not the features' tap.
    let (shown, wanted) = match &result.request.view {
        ViewRequest::Attention(a) => {
            let layers = attention_layers(&a.modules);
            (layers.clone(), layers)
        }
        _ => (result.shown_tap.clone(), f.tap.clone()),
    };
    let stale = if result.exact {
        String::new()
    } else {
        format!(" [nearest computed, t={} {wanted} is being computed]", f.t)
    };
    format!(
        "{} · t={t}{noise} · {shown} · ensemble {} · seed {} · {size}{prompt} · {view}{stale}",
        model.summary.name, f.ensemble, f.seed
    )
}

/// `up_blocks.1+up_blocks.2 (6 attention layers)`.
fn attention_layers(modules: &[String]) -> String {
    let mut blocks: Vec<&str> = modules.iter().map(|m| block_of(m)).collect();
    blocks.dedup();
    format!(
        "{} ({} attention layer{})",
        blocks.join("+"),
        modules.len(),
        if modules.len() == 1 { "" } else { "s" }
    )
}
