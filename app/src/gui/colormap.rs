//! The engine's colormaps and label palette as egui colours. The shader's lookup table and the
//! exported figures come from the same definitions (`diffscope_engine::export::colormap`).

use eframe::egui::Color32;

pub use diffscope_engine::export::colormap::{
    lookup_table, Colormap, LUT_ROWS, LUT_WIDTH, PALETTE_ROW,
};

/// The colour of `map` at `u` in [0, 1] (clamped).
pub fn colour_at(map: Colormap, u: f32) -> Color32 {
    let [r, g, b] = map.rgb8(u);
    Color32::from_rgb(r, g, b)
}

/// Distinct colour number `i` (segments, pinned points).
pub fn palette(i: usize) -> Color32 {
    let [r, g, b] = diffscope_engine::export::colormap::palette(i);
    Color32::from_rgb(r, g, b)
}
