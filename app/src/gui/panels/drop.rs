//! The cue shown while files are dragged over the window: the window dims and says what
//! dropping them does (see `WorkbenchApp::handle_dropped_files`).

use eframe::egui::{self, Align2, Color32, Id, LayerId, Order};

use crate::gui::context::MAX_IMAGES;

pub fn show(ctx: &egui::Context) {
    let count = ctx.input(|i| i.raw.hovered_files.len());
    if count == 0 {
        return;
    }
    let screen = ctx.content_rect();
    ctx.layer_painter(LayerId::new(Order::Foreground, Id::unique("drop-dim")))
        .rect_filled(screen, 0.0, Color32::from_black_alpha(160));
    let files = if count == 1 {
        "the file".to_string()
    } else {
        format!("the {count} files")
    };
    egui::Area::new(Id::unique("drop-cue"))
        .order(Order::Tooltip)
        .anchor(Align2::CENTER_CENTER, egui::Vec2::ZERO)
        .interactable(false)
        .show(ctx, |ui| {
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                ui.heading(format!("Drop {files} to open them"));
                ui.label(format!(
                    "images are added (at most {MAX_IMAGES} open), a .json file is opened as a \
                     session, a folder is loaded as a model"
                ));
            });
        });
}
