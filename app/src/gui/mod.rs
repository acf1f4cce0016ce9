//! The workbench: an eframe/egui app over the engine thread, with overlays drawn by our WGSL
//! shader through egui_wgpu paint callbacks.

pub mod app;
pub mod colormap;
mod export;
pub mod frame_stats;
pub mod heatmap;
pub mod panels;
pub mod samples;
pub mod session;
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
