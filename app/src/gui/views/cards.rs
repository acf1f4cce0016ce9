//! One card per image: the image, its overlay, keypoints, clicked points and matches.

use diffscope_engine::worker::ViewResult;
use eframe::egui::{self, Color32, Pos2, Rect, Sense, Stroke, Vec2};

use super::{result_matches_view, OverlayCache};
use crate::gui::colormap::palette;
use crate::gui::context::{PanelContext, Slot};
use crate::gui::heatmap::{OverlayCallback, OverlayStyle};
use crate::gui::state::{AttentionMode, Settings, ViewKind};

/// Space under the cards for the colorbar and the caption.
const LEGEND_HEIGHT: f32 = 64.0;
const TITLE_HEIGHT: f32 = 18.0;

/// Image pixel coordinates (integer values at pixel centres) to the screen.
pub fn to_screen(rect: Rect, size: [u32; 2], p: [f32; 2]) -> Pos2 {
    Pos2::new(
        rect.min.x + (p[0] + 0.5) / size[0] as f32 * rect.width(),
        rect.min.y + (p[1] + 0.5) / size[1] as f32 * rect.height(),
    )
}

/// The screen to image pixel coordinates, clamped inside the image.
pub fn to_image(rect: Rect, size: [u32; 2], pos: Pos2) -> [f32; 2] {
    let x = (pos.x - rect.min.x) / rect.width() * size[0] as f32 - 0.5;
    let y = (pos.y - rect.min.y) / rect.height() * size[1] as f32 - 0.5;
    [
        x.clamp(-0.5, size[0] as f32 - 0.5),
        y.clamp(-0.5, size[1] as f32 - 0.5),
    ]
}

/// Draw the cards; returns where each slot's image was drawn.
pub fn show(
    ui: &mut egui::Ui,
    cx: &PanelContext,
    settings: &mut Settings,
    overlays: &OverlayCache,
) -> Vec<Rect> {
    let n = cx.slots.len();
    let available = ui.available_size() - Vec2::new(0.0, LEGEND_HEIGHT);
    let sizes: Vec<Vec2> = cx
        .slots
        .iter()
        .map(|s| Vec2::new(s.image.rgb.width() as f32, s.image.rgb.height() as f32))
        .collect();
    let (columns, card) = best_grid(available, &sizes);
    let origin = ui.cursor().min;
    let mut image_rects = Vec::with_capacity(n);
    for i in 0..n {
        let cell = Rect::from_min_size(
            origin + Vec2::new((i % columns) as f32 * card.x, (i / columns) as f32 * card.y),
            card,
        );
        image_rects.push(show_card(ui, cx, settings, overlays, i, cell.shrink(4.0)));
    }
    let bottom = image_rects.iter().map(|r| r.max.y).fold(origin.y, f32::max);
    ui.allocate_rect(
        Rect::from_min_max(origin, egui::pos2(origin.x + available.x, bottom + 6.0)),
        Sense::hover(),
    );
    image_rects
}

/// The number of columns that shows the images largest, and the card size.
fn best_grid(available: Vec2, sizes: &[Vec2]) -> (usize, Vec2) {
    let n = sizes.len().max(1);
    (1..=n)
        .map(|columns| {
            let rows = n.div_ceil(columns);
            let card = Vec2::new(
                available.x / columns as f32,
                (available.y / rows as f32).max(80.0),
            );
            let inner = card - Vec2::new(8.0, 8.0 + TITLE_HEIGHT);
            let smallest = sizes
                .iter()
                .map(|s| (inner.x / s.x.max(1.0)).min(inner.y / s.y.max(1.0)))
                .fold(f32::INFINITY, f32::min);
            (columns, card, smallest)
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map_or((1, available), |(c, card, _)| (c, card))
}

fn show_card(
    ui: &mut egui::Ui,
    cx: &PanelContext,
    settings: &mut Settings,
    overlays: &OverlayCache,
    index: usize,
    cell: Rect,
) -> Rect {
    let slot = &cx.slots[index];
    let (w, h) = slot.image.rgb.dimensions();
    let size = [w, h];
    let role = if index == 0 {
        "source".to_string()
    } else {
        format!("target {index}")
    };
    let grid = cx.results.analysis.as_ref().and_then(|r| {
        let j = r.request.images.iter().position(|k| *k == slot.image.key)?;
        r.grids
            .get(j)
            .map(|g| format!(", features {}×{}", g.width, g.height))
    });
    let title = format!(
        "{role}: {} ({w}×{h}{})",
        slot.name(),
        grid.unwrap_or_default()
    );
    let painter = ui.painter_at(cell);
    painter.text(
        cell.min,
        egui::Align2::LEFT_TOP,
        title,
        egui::FontId::proportional(13.0),
        ui.visuals().text_color(),
    );
    let area = Rect::from_min_max(cell.min + Vec2::new(0.0, TITLE_HEIGHT), cell.max);
    let scale = (area.width() / w as f32).min(area.height() / h as f32);
    let image_rect = Rect::from_min_size(area.min, Vec2::new(w as f32 * scale, h as f32 * scale));
    painter.image(
        slot.texture.id(),
        image_rect,
        Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
        Color32::WHITE,
    );
    let key = slot.image.key;
    if let Some(data) = overlays.by_image.get(&key).cloned() {
        let o = &settings.overlay;
        if o.opacity > 0.0 && cx.has_gpu {
            let (lo, hi) = o
                .range
                .map(|r| (r[0], r[1]))
                .or(overlays.value_range)
                .unwrap_or((0.0, 1.0));
            OverlayCallback {
                slot: index,
                data,
                style: OverlayStyle {
                    colormap: o.colormap,
                    opacity: o.opacity,
                    lo,
                    hi,
                    bilinear: o.bilinear,
                },
            }
            .paint(&painter, image_rect);
        }
    }
    if settings.show_keypoints {
        draw_keypoints(slot, &painter, image_rect);
    }
    let self_attention = cx
        .model
        .is_some_and(|m| settings.attention.mode_for(m) == AttentionMode::SelfAttention);
    if settings.view == ViewKind::Attention && self_attention {
        handle_attention_click(settings, ui, image_rect, size, index);
        if let Some((slot, p)) = settings.attention.point {
            if slot == index {
                marker(
                    &painter,
                    to_screen(image_rect, size, p),
                    palette(0),
                    true,
                    true,
                );
            }
        }
    }
    if settings.view == ViewKind::Correspondence {
        if index == 0 {
            handle_clicks(settings, ui, image_rect, size);
            draw_points(settings, &painter, image_rect, size);
        } else {
            draw_matches(cx, settings, &painter, index, image_rect, size);
        }
    }
    image_rect
}

fn draw_keypoints(slot: &Slot, painter: &egui::Painter, rect: Rect) {
    let Some(kps) = &slot.image.keypoints else {
        return;
    };
    let size = [slot.image.rgb.width(), slot.image.rgb.height()];
    for (id, p) in &kps.points {
        let pos = to_screen(rect, size, [p[0] as f32, p[1] as f32]);
        let r = 3.0;
        painter.rect_filled(
            Rect::from_center_size(pos, Vec2::splat(2.0 * r)),
            0.0,
            Color32::WHITE,
        );
        painter.rect_stroke(
            Rect::from_center_size(pos, Vec2::splat(2.0 * r)),
            0.0,
            Stroke::new(1.0, Color32::BLACK),
            egui::StrokeKind::Outside,
        );
        painter.text(
            pos + Vec2::new(4.0, -4.0),
            egui::Align2::LEFT_BOTTOM,
            id.to_string(),
            egui::FontId::proportional(10.0),
            Color32::WHITE,
        );
    }
}

fn handle_clicks(s: &mut Settings, ui: &mut egui::Ui, rect: Rect, size: [u32; 2]) {
    let response = ui.interact(
        rect,
        ui.scope_id().with("source-image"),
        Sense::click_and_drag(),
    );
    let Some(pos) = response.interact_pointer_pos() else {
        return;
    };
    if !(response.clicked() || response.dragged()) {
        return;
    }
    let point = to_image(rect, size, pos);
    let pin_new = response.clicked() && ui.input(|i| i.modifiers.shift);
    if s.points.is_empty() || pin_new {
        s.points.push(point);
        s.active_point = s.points.len() - 1;
    } else if let Some(p) = s.points.get_mut(s.active_point) {
        *p = point;
    }
}

/// A click or drag on any image moves the self-attention point there.
fn handle_attention_click(
    s: &mut Settings,
    ui: &mut egui::Ui,
    rect: Rect,
    size: [u32; 2],
    index: usize,
) {
    let response = ui.interact(
        rect,
        ui.scope_id().with(("attention-image", index)),
        Sense::click_and_drag(),
    );
    if let (Some(pos), true) = (
        response.interact_pointer_pos(),
        response.clicked() || response.dragged(),
    ) {
        s.attention.point = Some((index, to_image(rect, size, pos)));
    }
}

const MARKER_RADIUS: f32 = 5.0;
const ACTIVE_MARKER_RADIUS: f32 = 7.0;
/// From a marker's radius to the middle of its black outline (1 px wide).
const MARKER_OUTLINE_GAP: f32 = 1.5;
/// The dark box around a label, beyond its text.
const LABEL_PADDING: f32 = 2.0;

fn marker(painter: &egui::Painter, pos: Pos2, colour: Color32, filled: bool, active: bool) {
    let r = if active {
        ACTIVE_MARKER_RADIUS
    } else {
        MARKER_RADIUS
    };
    if filled {
        painter.circle_filled(pos, r, colour);
    }
    painter.circle_stroke(pos, r, Stroke::new(2.0, colour));
    painter.circle_stroke(
        pos,
        r + MARKER_OUTLINE_GAP,
        Stroke::new(1.0, Color32::BLACK),
    );
}

fn draw_points(settings: &Settings, painter: &egui::Painter, rect: Rect, size: [u32; 2]) {
    for (i, p) in settings.points.iter().enumerate() {
        let pos = to_screen(rect, size, *p);
        marker(painter, pos, palette(i), true, i == settings.active_point);
        painter.text(
            pos + Vec2::new(8.0, -8.0),
            egui::Align2::LEFT_BOTTOM,
            format!("P{}", i + 1),
            egui::FontId::proportional(12.0),
            Color32::WHITE,
        );
    }
}

fn draw_matches(
    cx: &PanelContext,
    settings: &Settings,
    painter: &egui::Painter,
    index: usize,
    rect: Rect,
    size: [u32; 2],
) {
    let Some(result) = &cx.results.analysis else {
        return;
    };
    if !result_matches_view(result, ViewKind::Correspondence) {
        return;
    }
    let ViewResult::Correspond { matches } = &result.view else {
        return;
    };
    let key = cx.slots[index].image.key;
    let Some(j) = result.request.images.iter().position(|k| *k == key) else {
        return;
    };
    if j == 0 {
        return;
    }
    // Every point's match on this image and where it is drawn, so a label can avoid the others.
    let placed: Vec<_> = matches
        .iter()
        .enumerate()
        .filter_map(|(p, per_target)| {
            let m = per_target.get(j - 1)?;
            Some((p, m, to_screen(rect, size, [m.point.x, m.point.y])))
        })
        .collect();
    for &(p, m, pos) in &placed {
        let active = p == settings.active_point;
        // Filled: mutual nearest neighbours; ring only: not mutual.
        marker(painter, pos, palette(p), m.mutual, active);
        if active {
            let text = format!(
                "{:.3}{}",
                m.best_similarity,
                if m.mutual { " mutual" } else { "" }
            );
            let font = egui::FontId::proportional(12.0);
            let galley = painter.layout_no_wrap(text, font, Color32::WHITE);
            let others: Vec<Pos2> = placed
                .iter()
                .filter(|(q, ..)| *q != p)
                .map(|(.., o)| *o)
                .collect();
            let label = label_rect(pos, galley.size(), &others, rect);
            painter.rect_filled(
                label.expand(LABEL_PADDING),
                2.0,
                Color32::from_black_alpha(180),
            );
            painter.galley(label.min, galley, Color32::WHITE);
        }
    }
}

/// Where a marker's label goes: beside the marker at `anchor`, on the first side (below right,
/// below left, above right, above left) where it covers no other marker and stays inside
/// `bounds`; below right when no side is free.
fn label_rect(anchor: Pos2, size: Vec2, others: &[Pos2], bounds: Rect) -> Rect {
    const GAP: f32 = 10.0;
    // The largest marker's outer edge (its outline is 1 px wide), plus the label's padding.
    const MARKER_REACH: f32 = ACTIVE_MARKER_RADIUS + MARKER_OUTLINE_GAP + 0.5 + LABEL_PADDING;
    let sides = [
        anchor + Vec2::new(GAP, GAP),
        anchor + Vec2::new(-GAP - size.x, GAP),
        anchor + Vec2::new(GAP, -GAP - size.y),
        anchor + Vec2::new(-GAP - size.x, -GAP - size.y),
    ];
    let covers = |r: Rect| others.iter().any(|o| r.expand(MARKER_REACH).contains(*o));
    sides
        .iter()
        .map(|min| Rect::from_min_size(*min, size))
        .find(|r| bounds.contains_rect(*r) && !covers(*r))
        .unwrap_or_else(|| Rect::from_min_size(sides[0], size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_moves_off_another_marker_and_stays_inside_the_image() {
        let bounds = Rect::from_min_size(Pos2::ZERO, Vec2::splat(500.0));
        let size = Vec2::new(80.0, 14.0);
        let anchor = Pos2::new(200.0, 200.0);
        let free = label_rect(anchor, size, &[], bounds);
        assert_eq!(free.min, Pos2::new(210.0, 210.0));
        // Another match just right of and below this one: the label goes to the left.
        let other = Pos2::new(250.0, 215.0);
        let moved = label_rect(anchor, size, &[other], bounds);
        assert_eq!(moved.min, Pos2::new(110.0, 210.0));
        assert!(!moved.expand(11.0).contains(other));
        // At the bottom right corner of the image the label goes above left.
        let corner = label_rect(Pos2::new(480.0, 490.0), size, &[], bounds);
        assert!(bounds.contains_rect(corner));
        assert_eq!(corner.min, Pos2::new(390.0, 466.0));
    }
}
