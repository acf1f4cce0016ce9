//! The workbench: an eframe/egui app over the engine thread, with overlays drawn by our WGSL
//! shader through egui_wgpu paint callbacks.
//!
//! The panels (`panels/`, `views/`) read a [`context::PanelContext`], edit the settings they own
//! and push [`actions::Action`]s; the app (`app.rs`) applies the actions after drawing, sends the
//! engine its commands, and keeps the one job table (`jobs.rs`) and the results (`results.rs`).

pub mod actions;
pub mod app;
pub mod colormap;
pub mod context;
mod export;
pub mod frame_stats;
pub mod heatmap;
pub mod jobs;
pub mod panels;
pub mod remembered;
pub mod results;
pub mod samples;
pub mod session;
pub mod shortcuts;
pub mod state;
pub mod views;

pub use app::{GuiOptions, WorkbenchApp};

/// Open the workbench window; returns when it is closed.
pub fn run(options: GuiOptions) -> Result<(), String> {
    let native = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("diffscope")
            .with_inner_size([1440.0, 900.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "diffscope",
        native,
        Box::new(move |cc| Ok(Box::new(WorkbenchApp::new(cc, options)))),
    )
    .map_err(|e| format!("cannot open the workbench window: {e}"))
}
