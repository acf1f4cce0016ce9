//! The status bar: progress of long jobs with their cancel buttons, messages, and frame time.

use std::time::Duration;

use diffscope_engine::worker::ViewKey;
use eframe::egui::{self, Color32};

use crate::gui::actions::Action;
use crate::gui::context::PanelContext;

/// Progress is shown for jobs that have run this long.
pub const SHOW_PROGRESS_AFTER: Duration = Duration::from_millis(500);

fn view_name(view: ViewKey) -> &'static str {
    match view {
        ViewKey::Model => "model",
        ViewKey::Analysis => "view",
        ViewKey::Sweep => "t sweep",
        ViewKey::Elbow => "inertia vs K",
        ViewKey::Pck => "PCK",
        ViewKey::FusionModel => "second source",
    }
}

pub fn show(ui: &mut egui::Ui, cx: &PanelContext) {
    egui::Panel::bottom("status").show(ui, |ui| {
        for (i, m) in cx.messages.iter().enumerate() {
            ui.horizontal(|ui| {
                let colour = if m.error {
                    Color32::from_rgb(230, 90, 80)
                } else {
                    ui.visuals().text_color()
                };
                if ui
                    .small_button("x")
                    .on_hover_text("dismiss this message")
                    .clicked()
                {
                    cx.send(Action::DismissMessage(i));
                }
                ui.label(egui::RichText::new(&m.text).color(colour));
            });
        }
        ui.horizontal(|ui| {
            let mut views: Vec<_> = cx.jobs.views().collect();
            views.sort_by_key(|(view, _)| view_name(*view));
            for (view, job) in views {
                if job.sent.elapsed() < SHOW_PROGRESS_AFTER {
                    continue;
                }
                let (fraction, text) = job.progress.clone().unwrap_or((0.0, "waiting".into()));
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(160.0)
                        .text(format!("{}: {:.0}%", view_name(view), 100.0 * fraction)),
                )
                .on_hover_text(text);
                if ui
                    .small_button("Cancel")
                    .on_hover_text("stop this job (Escape stops every running job)")
                    .clicked()
                {
                    cx.send(Action::Cancel(view));
                }
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let Some(frame_times) = cx.frame_times else {
                    return;
                };
                if let (Some(p50), Some(p99)) = (
                    frame_times.recent_quantile(0.5),
                    frame_times.recent_quantile(0.99),
                ) {
                    ui.label(
                        egui::RichText::new(format!(
                            "UI frame p50 {:.1} ms, p99 {:.1} ms",
                            p50.as_secs_f64() * 1e3,
                            p99.as_secs_f64() * 1e3
                        ))
                        .small(),
                    );
                }
            });
        });
    });
}
