//! Figures for papers: panels of images with overlays and markers, a colorbar, and a caption
//! that states every setting, rendered to PNG.

use image::RgbImage;

use super::canvas::{Canvas, BLACK};
use super::colormap::Colormap;
use crate::error::Result;

/// What is drawn over a panel's image, given at the image's resolution.
pub enum Overlay {
    None,
    /// Scalar values mapped through a colormap over `range`.
    Heatmap {
        values: Vec<f32>,
        range: (f32, f32),
        colormap: Colormap,
        opacity: f32,
    },
    /// Colours in [0,1], `width*height*3`.
    Rgb {
        values: Vec<f32>,
        opacity: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MarkerKind {
    /// A query point or a predicted match.
    Ring,
    /// A ground-truth point.
    Cross,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Marker {
    pub x: f32,
    pub y: f32,
    pub colour: [u8; 3],
    pub kind: MarkerKind,
}

pub struct Panel {
    pub image: RgbImage,
    pub overlay: Overlay,
    pub markers: Vec<Marker>,
    pub title: String,
}

pub struct Figure {
    pub rows: Vec<Vec<Panel>>,
    pub colorbar: Option<(Colormap, (f32, f32), String)>,
    pub caption: Vec<String>,
}

const PAD: u32 = 8;
const TITLE: u32 = 18;
const CAPTION_LINE: u32 = 16;
/// Small images (64x64) are enlarged by a whole factor so a figure is readable.
const MIN_PANEL_SIDE: u32 = 192;

impl Figure {
    fn scale(&self) -> u32 {
        let largest = self
            .rows
            .iter()
            .flatten()
            .map(|p| p.image.width().max(p.image.height()))
            .max()
            .unwrap_or(1)
            .max(1);
        MIN_PANEL_SIDE.div_ceil(largest).max(1)
    }

    pub fn render(&self) -> Result<Canvas> {
        let scale = self.scale();
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let col_width: Vec<u32> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|p| p.image.width() * scale)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let row_height: Vec<u32> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|p| p.image.height() * scale)
                    .max()
                    .unwrap_or(0)
                    + TITLE
            })
            .collect();
        let bar_width = if self.colorbar.is_some() { 70 } else { 0 };
        let panels_width: u32 = col_width.iter().sum::<u32>() + PAD * (columns as u32 + 1);
        let panels_height: u32 =
            row_height.iter().sum::<u32>() + PAD * (self.rows.len() as u32 + 1);
        let width = panels_width + bar_width;
        let caption = wrap_lines(
            &Canvas::new(1, 1)?,
            &self.caption,
            width.saturating_sub(2 * PAD) as f32,
        );
        let caption_height = caption.len() as u32 * CAPTION_LINE + PAD;
        let mut canvas = Canvas::new(width, panels_height + caption_height)?;

        let mut y = PAD;
        for (r, row) in self.rows.iter().enumerate() {
            let mut x = PAD;
            for (c, panel) in row.iter().enumerate() {
                let title = fit_title(&canvas, &panel.title, col_width[c]);
                canvas.text(x as f32, y as f32, 13.0, BLACK, &title);
                let top = y + TITLE;
                canvas.blit(&panel.image, x, top, scale);
                let (w, h) = panel.image.dimensions();
                match &panel.overlay {
                    Overlay::None => {}
                    Overlay::Heatmap {
                        values,
                        range,
                        colormap,
                        opacity,
                    } => canvas
                        .overlay_heatmap(values, w, h, x, top, scale, *range, *colormap, *opacity),
                    Overlay::Rgb { values, opacity } => {
                        canvas.overlay_rgb(values, w, h, x, top, scale, *opacity)
                    }
                }
                for m in &panel.markers {
                    let (mx, my) = (
                        x as f32 + m.x * scale as f32,
                        top as f32 + m.y * scale as f32,
                    );
                    match m.kind {
                        MarkerKind::Ring => canvas.marker(mx, my, 5.0, m.colour),
                        MarkerKind::Cross => canvas.cross(mx, my, 4, m.colour),
                    }
                }
                x += col_width[c] + PAD;
            }
            y += row_height[r] + PAD;
        }
        if let Some((map, range, label)) = &self.colorbar {
            canvas.colorbar(
                panels_width,
                PAD + TITLE,
                14,
                (panels_height - 2 * PAD - TITLE).max(20),
                *map,
                *range,
                label,
            );
        }
        for (i, line) in caption.iter().enumerate() {
            canvas.text(
                PAD as f32,
                (panels_height + i as u32 * CAPTION_LINE) as f32,
                12.0,
                BLACK,
                line,
            );
        }
        Ok(canvas)
    }
}

/// Break caption lines at spaces so each fits the figure's width.
fn wrap_lines(canvas: &Canvas, lines: &[String], width: f32) -> Vec<String> {
    let mut out = vec![];
    for line in lines {
        let mut current = String::new();
        for word in line.split(' ') {
            let candidate = if current.is_empty() {
                word.to_string()
            } else {
                format!("{current} {word}")
            };
            if !current.is_empty() && canvas.text_width(12.0, &candidate) > width {
                out.push(std::mem::replace(&mut current, word.to_string()));
            } else {
                current = candidate;
            }
        }
        out.push(current);
    }
    out
}

fn fit_title(canvas: &Canvas, title: &str, width: u32) -> String {
    let mut t = title.to_string();
    while t.chars().count() > 3 && canvas.text_width(13.0, &t) > width as f32 {
        t = format!("…{}", t.chars().skip(2).collect::<String>());
    }
    t
}
