//! The plots under the images (egui_plot): the current match's similarity across t, PCA explained
//! variance, k-means inertia against K, and the PCK-by-t table of annotated images.

use diffscope_engine::analysis::ImagePoint;
use diffscope_engine::worker::ViewResult;
use eframe::egui;
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, Points, VLine};

use crate::gui::actions::Action;
use crate::gui::colormap::palette;
use crate::gui::context::PanelContext;
use crate::gui::state::{Settings, ViewKind};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlotTab {
    #[default]
    Sweep,
    Variance,
    Inertia,
    Pck,
}

/// Timesteps of a sweep: every 25th.
const SWEEP_STEP: usize = 25;
/// Timesteps of the PCK table.
const PCK_STEP: usize = 100;

/// The panel reads the settings and owns which tab is shown.
pub fn show(ui: &mut egui::Ui, cx: &PanelContext, settings: &Settings, tab: &mut PlotTab) {
    egui::Panel::bottom("plots")
        .resizable(true)
        .default_size(190.0)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                for (choice, name, what) in [
                    (
                        PlotTab::Sweep,
                        "Similarity across t",
                        "the active point's best-match similarity at each t",
                    ),
                    (
                        PlotTab::Variance,
                        "PCA explained variance",
                        "the share of variance (%) each principal component explains",
                    ),
                    (
                        PlotTab::Inertia,
                        "Inertia vs K",
                        "k-means inertia against the number of clusters K (the elbow)",
                    ),
                    (
                        PlotTab::Pck,
                        "PCK by t",
                        "keypoint matching accuracy (PCK@0.1, %) of the annotated images per t and block",
                    ),
                ] {
                    ui.selectable_value(&mut *tab, choice, name)
                        .on_hover_text(what);
                }
            });
            ui.separator();
            match *tab {
                PlotTab::Sweep => sweep(ui, cx, settings),
                PlotTab::Variance => variance(ui, cx),
                PlotTab::Inertia => inertia(ui, cx, settings),
                PlotTab::Pck => pck(ui, cx),
            }
        });
}

fn timesteps(cx: &PanelContext, step: usize) -> Vec<usize> {
    let n = cx.model.map_or(1000, |m| m.alpha_bar.len());
    (0..n).step_by(step).collect()
}

fn sweep(ui: &mut egui::Ui, cx: &PanelContext, settings: &Settings) {
    ui.horizontal(|ui| {
        let point = settings.points.get(settings.active_point).copied();
        let ready = point.is_some() && cx.slots.len() >= 2;
        if ui
            .add_enabled(ready, egui::Button::new("Run t sweep"))
            .on_hover_text("similarity of the active point's best match at t = 0, 25, …, computed in the background (the features are cached, so scrubbing t afterwards is instant)")
            .clicked()
        {
            if let Some(p) = point {
                cx.send(Action::RunSweep {
                    point: ImagePoint::new(p[0], p[1]),
                    ts: timesteps(cx, SWEEP_STEP),
                });
            }
        }
        if !ready {
            ui.label("click a point on the source, with at least one target");
        }
        if let Some(s) = &cx.results.sweep {
            let current = settings.points.get(settings.active_point);
            let p = s.request.point;
            if current.is_none_or(|c| (c[0], c[1]) != (p.x, p.y)) {
                ui.label(format!("(for the point at {:.1}, {:.1})", p.x, p.y));
            }
        }
    });
    let Some(s) = &cx.results.sweep else {
        return;
    };
    let t_now = settings.features.t as f64;
    Plot::new("sweep")
        .legend(Legend::default())
        .x_axis_label("t")
        .y_axis_label("similarity of the best match")
        .include_x(0.0)
        .include_y(0.0)
        .include_y(1.0)
        .show(ui, |plot| {
            for (target, values) in s.similarity.iter().enumerate() {
                let points: Vec<[f64; 2]> =
                    s.ts.iter()
                        .zip(values)
                        .map(|(&t, &v)| [t as f64, f64::from(v)])
                        .collect();
                let colour = palette(target + 10);
                plot.line(
                    Line::new(
                        format!("target {}", target + 1),
                        PlotPoints::new(points.clone()),
                    )
                    .color(colour),
                );
                let mutual: Vec<[f64; 2]> = points
                    .iter()
                    .zip(&s.mutual[target])
                    .filter(|(_, m)| **m)
                    .map(|(p, _)| *p)
                    .collect();
                plot.points(
                    Points::new(
                        format!("target {} mutual", target + 1),
                        PlotPoints::new(mutual),
                    )
                    .radius(3.0)
                    .color(colour),
                );
            }
            plot.vline(VLine::new("current t", t_now));
        });
}

fn variance(ui: &mut egui::Ui, cx: &PanelContext) {
    let Some(ViewResult::Pca {
        explained_variance_ratio,
        ..
    }) = cx.results.analysis.as_ref().map(|r| &r.view)
    else {
        ui.label("Switch the view to PCA to see how much variance each component explains.");
        return;
    };
    let fits = explained_variance_ratio.clone();
    Plot::new("variance")
        .legend(Legend::default())
        .x_axis_label("component")
        .y_axis_label("explained variance (%)")
        .include_y(0.0)
        .show(ui, |plot| {
            for (f, ratios) in fits.iter().enumerate() {
                let width = 0.8 / fits.len() as f64;
                let bars = ratios
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Bar::new(
                            i as f64 + 1.0 + (f as f64 - (fits.len() - 1) as f64 / 2.0) * width,
                            100.0 * r,
                        )
                        .width(width)
                    })
                    .collect();
                let name = if fits.len() == 1 {
                    "joint fit".to_string()
                } else {
                    format!("image {}", f + 1)
                };
                plot.bar_chart(BarChart::new(name, bars).color(palette(f)));
            }
        });
}

fn inertia(ui: &mut egui::Ui, cx: &PanelContext, settings: &Settings) {
    ui.horizontal(|ui| {
        let ready = !cx.slots.is_empty() && cx.model.is_some();
        if ui
            .add_enabled(ready, egui::Button::new("Compute inertia for K = 2…12"))
            .on_hover_text("run k-means for K = 2 to 12 on the current features, in the background")
            .on_disabled_hover_text("load a model and add an image first")
            .clicked()
        {
            cx.send(Action::ComputeInertia {
                joint: settings.segment.joint,
                ks: (2..=12).collect(),
            });
        }
        ui.label(if settings.segment.joint {
            "k-means on all images jointly"
        } else {
            "sum over images clustered alone"
        });
    });
    let Some(e) = &cx.results.elbow else {
        return;
    };
    let k_now = settings.segment.k as f64;
    let show_k = settings.view == ViewKind::Segmentation;
    Plot::new("inertia")
        .x_axis_label("K")
        .y_axis_label("inertia")
        .include_y(0.0)
        .show(ui, |plot| {
            let points: Vec<[f64; 2]> = e.inertia.iter().map(|&(k, v)| [k as f64, v]).collect();
            plot.line(Line::new("inertia", PlotPoints::new(points.clone())));
            plot.points(Points::new("K", PlotPoints::new(points)).radius(3.0));
            if show_k {
                plot.vline(VLine::new("current K", k_now));
            }
        });
}

fn pck(ui: &mut egui::Ui, cx: &PanelContext) {
    let annotated: Vec<u64> = cx
        .slots
        .iter()
        .filter(|s| s.image.keypoints.is_some())
        .map(|s| s.image.key)
        .collect();
    let source_annotated = cx
        .slots
        .first()
        .is_some_and(|s| s.image.keypoints.is_some());
    ui.horizontal(|ui| {
        let ready = source_annotated && annotated.len() >= 2;
        if ui
            .add_enabled(ready, egui::Button::new("Compute PCK@0.1 by t and block"))
            .on_hover_text("match the source's keypoints in the annotated targets at t = 0, 100, … for every block, in the background")
            .on_disabled_hover_text("needs an annotated source and at least one annotated target")
            .clicked()
        {
            if let Some(model) = cx.model {
                let taps: Vec<String> = model
                    .summary
                    .taps
                    .iter()
                    .filter(|t| t.block_level)
                    .map(|t| t.name.clone())
                    .collect();
                cx.send(Action::ComputePck {
                    images: annotated.clone(),
                    taps,
                    ts: timesteps(cx, PCK_STEP),
                    alpha: 0.1,
                });
            }
        }
        if !ready {
            ui.label("needs an annotated source and at least one annotated target (e.g. the bundled samples)");
        }
    });
    let Some(table) = &cx.results.pck else {
        return;
    };
    ui.label(format!(
        "fraction of the source's {} keypoints matched within {} × max(bbox side) of the target's; rows: t, columns: tap",
        table.keypoints, table.request.alpha
    ));
    egui::ScrollArea::both().show(ui, |ui| {
        egui::Grid::new("pck").striped(true).show(ui, |ui| {
            ui.label("t");
            for tap in &table.request.taps {
                ui.label(tap);
            }
            ui.end_row();
            // The best cell is bold.
            let best = table
                .pck
                .iter()
                .flatten()
                .flatten()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            for (ti, t) in table.request.ts.iter().enumerate() {
                ui.label(t.to_string());
                for row in &table.pck {
                    match row.get(ti).copied().flatten() {
                        Some(v) => {
                            let text = egui::RichText::new(format!("{:.1}", 100.0 * v));
                            ui.label(if v == best { text.strong() } else { text });
                        }
                        None => {
                            ui.label("…");
                        }
                    }
                }
                ui.end_row();
            }
        });
    });
}
