//! The status bar: progress of long jobs with their cancel buttons, messages, and frame time.

use diffscope_engine::worker::ViewKey;
use eframe::egui::{self, Color32};

use crate::gui::app::{WorkbenchApp, SHOW_PROGRESS_AFTER};

fn view_name(view: ViewKey) -> &'static str {
    match view {
        ViewKey::Model => "model",
        ViewKey::Analysis => "view",
        ViewKey::Sweep => "t sweep",
        ViewKey::Elbow => "inertia vs K",
        ViewKey::Pck => "PCK",
    }
}

pub fn show(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    egui::Panel::bottom("status").show(ui, |ui| {
        let mut dismiss = None;
        for (i, m) in app.messages.iter().enumerate() {
            ui.horizontal(|ui| {
                let colour = if m.error {
                    Color32::from_rgb(230, 90, 80)
                } else {
                    ui.visuals().text_color()
                };
                if ui.small_button("x").on_hover_text("dismiss").clicked() {
                    dismiss = Some(i);
                }
                ui.label(egui::RichText::new(&m.text).color(colour));
            });
        }
        if let Some(i) = dismiss {
            app.messages.remove(i);
        }
        ui.horizontal(|ui| {
            let mut cancel = None;
            let mut views: Vec<ViewKey> = app.running.keys().copied().collect();
            views.sort_by_key(|v| view_name(*v));
            for view in views {
                let Some(r) = app.running.get(&view) else {
                    continue;
                };
                if r.sent.elapsed() < SHOW_PROGRESS_AFTER {
                    continue;
                }
                let (fraction, text) = r.progress.clone().unwrap_or((0.0, "waiting".into()));
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(160.0)
                        .text(format!("{}: {:.0}%", view_name(view), 100.0 * fraction)),
                )
                .on_hover_text(text);
                if ui.small_button("Cancel").clicked() {
                    cancel = Some(view);
                }
            }
            if let Some(view) = cancel {
                app.cancel(view);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if !app.show_frame_times {
                    return;
                }
                if let (Some(p50), Some(p99)) = (
                    app.frame_times.recent_quantile(0.5),
                    app.frame_times.recent_quantile(0.99),
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
