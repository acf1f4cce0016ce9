//! The block picker, drawn as the U-Net itself: the down blocks going down on the left, the mid
//! block at the bottom, the up blocks coming back up on the right, skip connections between them.
//! Each block shows its channels and feature resolution; the resnets, attentions and
//! down/upsamplers of the chosen block are listed under it.

use diffscope_engine::model::taps::TapInfo;
use eframe::egui::{self, Color32, Rect, Stroke, Vec2};

use crate::gui::app::WorkbenchApp;

const ROW: f32 = 34.0;
const GAP: f32 = 6.0;

/// The block a tap belongs to: `up_blocks.1.resnets.2` -> `up_blocks.1`.
pub fn block_of(tap: &str) -> &str {
    let mut parts = tap.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(kind @ ("down_blocks" | "up_blocks")), Some(_)) => {
            let end = kind.len()
                + 1
                + tap[kind.len() + 1..]
                    .find('.')
                    .unwrap_or(tap.len() - kind.len() - 1);
            &tap[..end]
        }
        (Some("mid_block"), _) => "mid_block",
        _ => tap,
    }
}

/// Feature resolution of a tap for an input of `side` pixels.
fn resolution(app: &WorkbenchApp, tap: &TapInfo) -> Option<String> {
    let model = app.model.as_ref()?;
    let (w, h) = match app.feature_settings()?.size {
        Some(size) => size,
        None => app.slots.first().map(|s| s.image.rgb.dimensions())?,
    };
    let stride = (model.summary.input_stride * tap.stride) as u32;
    Some(format!("{}×{}", w / stride.max(1), h / stride.max(1)))
}

fn short_name(tap: &str) -> String {
    tap.replace("down_blocks.", "down ")
        .replace("up_blocks.", "up ")
        .replace("mid_block", "mid")
}

fn label(app: &WorkbenchApp, tap: &TapInfo) -> String {
    format!(
        "{}\n{} ch · {}",
        short_name(&tap.name),
        tap.channels,
        resolution(app, tap).unwrap_or_default()
    )
}

pub fn show(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    let Some(model) = app.model.clone() else {
        ui.label("(load a model to pick a block)");
        return;
    };
    let taps = &model.summary.taps;
    let block = |name: &str| taps.iter().find(|t| t.name == name);
    let downs: Vec<&TapInfo> = taps
        .iter()
        .filter(|t| t.block_level && t.name.starts_with("down_blocks."))
        .collect();
    let ups: Vec<&TapInfo> = taps
        .iter()
        .filter(|t| t.block_level && t.name.starts_with("up_blocks."))
        .collect();
    let levels = downs.len().max(ups.len()) + 1;
    let width = ui.available_width().min(320.0);
    let column = (width - 3.0 * GAP) / 2.0;
    // Laid out by hand: the buttons are put at their places, then the cursor moves past the area.
    let area = Rect::from_min_size(
        ui.cursor().min,
        Vec2::new(width, (levels as f32 + 1.0) * (ROW + GAP)),
    );
    let painter = ui.painter_at(area);
    let left = |row: usize| {
        Rect::from_min_size(
            area.min + Vec2::new(0.0, row as f32 * (ROW + GAP)),
            Vec2::new(column, ROW),
        )
    };
    let right = |row: usize| left(row).translate(Vec2::new(column + 3.0 * GAP, 0.0));
    let selected_block = block_of(&app.settings.features.tap).to_string();
    let mut clicked: Option<String> = None;
    let mut place = |ui: &mut egui::Ui, rect: Rect, tap: &TapInfo| {
        let selected = selected_block == tap.name;
        if ui
            .put(rect, egui::Button::new(label(app, tap)).selected(selected))
            .on_hover_text(format!("tap `{}`", tap.name))
            .clicked()
        {
            clicked = Some(tap.name.clone());
        }
    };
    // Skip connections first, so the blocks draw over them.
    for i in 0..downs.len().min(ups.len()) {
        let (a, b) = (left(i + 1), right(ups.len() - i));
        painter.line_segment(
            [a.right_center(), b.left_center()],
            Stroke::new(1.0, Color32::from_gray(110)),
        );
    }
    if let Some(tap) = block("conv_in") {
        place(ui, left(0), tap);
    }
    for (i, tap) in downs.iter().enumerate() {
        place(ui, left(i + 1), tap);
    }
    if let Some(tap) = block("mid_block") {
        let rect = Rect::from_center_size(
            egui::pos2(area.center().x, left(levels).center().y),
            Vec2::new(column, ROW),
        );
        place(ui, rect, tap);
    }
    for (i, tap) in ups.iter().enumerate() {
        place(ui, right(ups.len() - i), tap);
    }
    if let Some(tap) = block("conv_out") {
        place(ui, right(0), tap);
    }
    ui.advance_cursor_after_rect(area);
    if let Some(name) = clicked {
        app.settings.features.tap = name;
    }
    // The modules inside the chosen block.
    let inner: Vec<&TapInfo> = taps
        .iter()
        .filter(|t| {
            !t.block_level && block_of(&t.name) == selected_block && t.name != selected_block
        })
        .collect();
    if !inner.is_empty() {
        ui.label(format!("Inside {selected_block}:"));
        ui.horizontal_wrapped(|ui| {
            let mut whole = app.settings.features.tap == selected_block;
            if ui.toggle_value(&mut whole, "whole block").clicked() {
                app.settings.features.tap = selected_block.clone();
            }
            for tap in inner {
                let name = tap.name[selected_block.len() + 1..].to_string();
                let selected = app.settings.features.tap == tap.name;
                if ui
                    .selectable_label(selected, name)
                    .on_hover_text(format!(
                        "`{}`: {} ch · {}",
                        tap.name,
                        tap.channels,
                        resolution(app, tap).unwrap_or_default()
                    ))
                    .clicked()
                {
                    app.settings.features.tap = tap.name.clone();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::block_of;

    #[test]
    fn blocks_of_taps() {
        assert_eq!(block_of("up_blocks.1.resnets.2"), "up_blocks.1");
        assert_eq!(block_of("up_blocks.1"), "up_blocks.1");
        assert_eq!(block_of("down_blocks.0.downsamplers.0"), "down_blocks.0");
        assert_eq!(block_of("mid_block.attentions.0"), "mid_block");
        assert_eq!(block_of("conv_in"), "conv_in");
    }
}
