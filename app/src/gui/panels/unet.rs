//! The block picker, drawn as the U-Net itself: the down blocks going down on the left, the mid
//! block at the bottom, the up blocks coming back up on the right, skip connections between them.
//! Each block shows its channels, feature resolution and transformer depth (SDXL stacks up to 10
//! transformer blocks per attention); the resnets, attentions and down/upsamplers of the chosen
//! block are listed under it. A vision transformer (DINOv2) is a list of its layers. The
//! attention view picks its attention layers on the same drawing.

use diffscope_engine::model::attention_probs::AttentionInfo;
use diffscope_engine::model::pipeline::ModelFamily;
use diffscope_engine::model::taps::{block_of, TapInfo};
use eframe::egui::{self, Color32, Rect, Stroke, Vec2};

use crate::gui::context::PanelContext;
use crate::gui::state::{AttentionChoice, FeatureChoice, ALL_BLOCKS};

const ROW: f32 = 34.0;
const GAP: f32 = 6.0;

/// Feature resolution of a tap for the input size chosen (the source's own size when each image
/// keeps its own).
fn resolution(cx: &PanelContext, features: &FeatureChoice, tap: &TapInfo) -> Option<String> {
    let model = cx.model?;
    let (w, h) = match features.for_model(model, None).size {
        Some(size) => size,
        None => cx.slots.first().map(|s| s.image.rgb.dimensions())?,
    };
    let stride = (model.summary.input_stride * tap.stride) as u32;
    Some(format!("{}×{}", w / stride.max(1), h / stride.max(1)))
}

fn short_name(tap: &str) -> String {
    tap.replace("down_blocks.", "down ")
        .replace("up_blocks.", "up ")
        .replace("mid_block", "mid")
}

/// The transformer depths inside a block, e.g. `tf ×10` or `tf ×2/1` (SSD-1B's per layer).
fn depths(taps: &[TapInfo], block: &str) -> Option<String> {
    let mut found: Vec<usize> = taps
        .iter()
        .filter(|t| block_of(&t.name) == block)
        .filter_map(|t| t.transformer_depth)
        .collect();
    if found.is_empty() {
        return None;
    }
    let all_same = found.iter().all(|&d| d == found[0]);
    if all_same {
        found.truncate(1);
    }
    let list: Vec<String> = found.iter().map(|d| d.to_string()).collect();
    Some(format!("tf ×{}", list.join("/")))
}

fn label(cx: &PanelContext, features: &FeatureChoice, taps: &[TapInfo], tap: &TapInfo) -> String {
    let depth = depths(taps, &tap.name)
        .map(|d| format!(" · {d}"))
        .unwrap_or_default();
    format!(
        "{}\n{} ch · {}{depth}",
        short_name(&tap.name),
        tap.channels,
        resolution(cx, features, tap).unwrap_or_default()
    )
}

/// A vision transformer's layers as a list: every tap has the same grid.
fn layer_list(ui: &mut egui::Ui, cx: &PanelContext, features: &mut FeatureChoice) {
    let Some(model) = cx.model else { return };
    ui.label("Layers (patch tokens as a map):");
    for tap in &model.summary.taps {
        let text = format!(
            "{} · {} ch · {}",
            tap.name,
            tap.channels,
            resolution(cx, features, tap).unwrap_or_default()
        );
        if ui
            .selectable_label(features.tap == tap.name, text)
            .on_hover_text(format!("tap `{}`", tap.name))
            .clicked()
        {
            features.tap = tap.name.clone();
        }
    }
}

/// Picks the tap: edits `features.tap`.
pub fn show(ui: &mut egui::Ui, cx: &PanelContext, features: &mut FeatureChoice) {
    let Some(model) = cx.model else {
        ui.label("(load a model to pick a block)");
        return;
    };
    if model.summary.family == ModelFamily::VisionTransformer {
        layer_list(ui, cx, features);
        return;
    }
    let taps = &model.summary.taps;
    let selected_block = block_of(&features.tap).to_string();
    if let Some(name) = block_grid(ui, cx, features, &selected_block, &|_| true) {
        features.tap = name;
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
            let mut whole = features.tap == selected_block;
            if ui
                .toggle_value(&mut whole, "whole block")
                .on_hover_text(format!("the output of {selected_block} itself"))
                .clicked()
            {
                features.tap = selected_block.clone();
            }
            for tap in inner {
                let depth = tap
                    .transformer_depth
                    .map(|d| format!(" ×{d}"))
                    .unwrap_or_default();
                let name = format!("{}{depth}", &tap.name[selected_block.len() + 1..]);
                let selected = features.tap == tap.name;
                if ui
                    .selectable_label(selected, name)
                    .on_hover_text(format!(
                        "`{}`: {} ch · {}",
                        tap.name,
                        tap.channels,
                        resolution(cx, features, tap).unwrap_or_default()
                    ))
                    .clicked()
                {
                    features.tap = tap.name.clone();
                }
            }
        });
    }
}

/// Picks the attention layers of the attention view: a block (those without attention of the
/// chosen kind are dimmed) or all, then all its layers or one.
pub fn show_attention(
    ui: &mut egui::Ui,
    cx: &PanelContext,
    features: &FeatureChoice,
    choice: &mut AttentionChoice,
) {
    let Some(model) = cx.model else {
        ui.label("(load a model to pick attention layers)");
        return;
    };
    let kind = choice.mode_for(model).kind();
    let modules: Vec<&AttentionInfo> = (model.summary.attention.iter())
        .filter(|a| a.kind == kind)
        .collect();
    let holds = |tap: &TapInfo| modules.iter().any(|a| block_of(&a.name) == tap.name);
    if let Some(block) = block_grid(ui, cx, features, &choice.block, &holds) {
        choice.block = block;
        choice.layer = None;
    }
    ui.horizontal_wrapped(|ui| {
        let mut all = choice.block == ALL_BLOCKS;
        if ui.toggle_value(&mut all, "all blocks").clicked() {
            choice.block = ALL_BLOCKS.into();
            choice.layer = None;
        }
        if choice.block == ALL_BLOCKS {
            return;
        }
        let inside: Vec<&&AttentionInfo> = (modules.iter())
            .filter(|a| block_of(&a.name) == choice.block)
            .collect();
        let mut whole = choice.layer.is_none();
        if ui.toggle_value(&mut whole, "all its layers").clicked() {
            choice.layer = None;
        }
        for a in inside {
            let short = a.name[choice.block.len() + 1..].replace("transformer_blocks.", "tb");
            let selected = choice.layer.as_ref() == Some(&a.name);
            if ui
                .selectable_label(selected, short)
                .on_hover_text(format!("`{}`: {} heads", a.name, a.heads))
                .clicked()
            {
                choice.layer = Some(a.name.clone());
            }
        }
    });
}

/// The U-Net's blocks as buttons; `usable` blocks can be picked, the others are dimmed. Returns
/// the block clicked.
fn block_grid(
    ui: &mut egui::Ui,
    cx: &PanelContext,
    features: &FeatureChoice,
    selected_block: &str,
    usable: &dyn Fn(&TapInfo) -> bool,
) -> Option<String> {
    let model = cx.model?;
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
    let mut clicked: Option<String> = None;
    let mut place = |ui: &mut egui::Ui, rect: Rect, tap: &TapInfo| {
        let selected = selected_block == tap.name;
        let usable = usable(tap);
        let text = egui::RichText::new(label(cx, features, taps, tap));
        let text = if usable { text } else { text.weak() };
        if ui
            .put(rect, egui::Button::new(text).selected(selected))
            .on_hover_text(format!(
                "`{}` ({} channels at {}); arrow keys up and down step through the blocks",
                tap.name,
                tap.channels,
                resolution(cx, features, tap).unwrap_or_default()
            ))
            .clicked()
            && usable
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
    clicked
}
