//! A small raster canvas for exported figures: images, heatmap overlays, markers, text, colorbars.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

use super::colormap::Colormap;
use crate::error::{Error, Result};

pub struct Canvas {
    pub image: RgbImage,
    font: FontRef<'static>,
}

pub const WHITE: [u8; 3] = [255, 255, 255];
pub const BLACK: [u8; 3] = [0, 0, 0];

impl Canvas {
    pub fn new(width: u32, height: u32) -> Result<Self> {
        let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|e| Error::invalid(format!("built-in font: {e}")))?;
        Ok(Self {
            image: RgbImage::from_pixel(width.max(1), height.max(1), Rgb(WHITE)),
            font,
        })
    }

    fn put(&mut self, x: i64, y: i64, colour: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= self.image.width() as i64 || y >= self.image.height() as i64 {
            return;
        }
        let p = self.image.get_pixel_mut(x as u32, y as u32);
        for (channel, value) in p.0.iter_mut().zip(colour) {
            *channel = (*channel as f32 * (1.0 - alpha) + value as f32 * alpha).round() as u8;
        }
    }

    /// Copy an image with its top-left corner at (x, y), scaled by an integer factor (nearest).
    pub fn blit(&mut self, src: &RgbImage, x: u32, y: u32, scale: u32) {
        for sy in 0..src.height() * scale {
            for sx in 0..src.width() * scale {
                let p = src.get_pixel(sx / scale, sy / scale).0;
                self.put((x + sx) as i64, (y + sy) as i64, p, 1.0);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// Blend per-pixel colours (`width*height*3` in [0,1]) over the region at (x, y), scaled by an integer factor.
    pub fn overlay_rgb(
        &mut self,
        rgb: &[f32],
        width: u32,
        height: u32,
        x: u32,
        y: u32,
        scale: u32,
        opacity: f32,
    ) {
        for sy in 0..height * scale {
            for sx in 0..width * scale {
                let i = (((sy / scale) * width + sx / scale) * 3) as usize;
                let c = [rgb[i], rgb[i + 1], rgb[i + 2]]
                    .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
                self.put((x + sx) as i64, (y + sy) as i64, c, opacity);
            }
        }
    }

    /// Colour-map scalar values (`width*height`) over the range [lo, hi] and blend them in.
    #[allow(clippy::too_many_arguments)]
    pub fn overlay_heatmap(
        &mut self,
        values: &[f32],
        width: u32,
        height: u32,
        x: u32,
        y: u32,
        scale: u32,
        range: (f32, f32),
        map: Colormap,
        opacity: f32,
    ) {
        let span = (range.1 - range.0).max(f32::EPSILON);
        let rgb: Vec<f32> = values
            .iter()
            .flat_map(|v| map.rgb((v - range.0) / span))
            .collect();
        self.overlay_rgb(&rgb, width, height, x, y, scale, opacity);
    }

    /// Fill the pixels whose centres fall inside a rectangle.
    pub fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, colour: [u8; 3]) {
        for py in (y.round() as i64)..((y + h).round() as i64).max(y.round() as i64 + 1) {
            for px in (x.round() as i64)..((x + w).round() as i64).max(x.round() as i64 + 1) {
                self.put(px, py, colour, 1.0);
            }
        }
    }

    /// A ring with a dark outline and a centre dot: visible on any background.
    pub fn marker(&mut self, cx: f32, cy: f32, radius: f32, colour: [u8; 3]) {
        let r_out = radius + 1.5;
        for dy in -(r_out.ceil() as i64)..=(r_out.ceil() as i64) {
            for dx in -(r_out.ceil() as i64)..=(r_out.ceil() as i64) {
                let (px, py) = (cx.floor() as i64 + dx, cy.floor() as i64 + dy);
                let d = ((px as f32 + 0.5 - cx).powi(2) + (py as f32 + 0.5 - cy).powi(2)).sqrt();
                if (d - radius).abs() <= 1.0 {
                    self.put(px, py, colour, 1.0);
                } else if (d - radius).abs() <= 2.0 || d <= 1.0 {
                    self.put(px, py, if d <= 1.0 { colour } else { BLACK }, 0.8);
                }
            }
        }
    }

    /// A small cross, for ground-truth points.
    pub fn cross(&mut self, cx: f32, cy: f32, half: i64, colour: [u8; 3]) {
        let (x, y) = (cx.floor() as i64, cy.floor() as i64);
        for d in -half..=half {
            for w in -1..=1 {
                self.put(x + d, y + d + w, if w == 0 { colour } else { BLACK }, 0.9);
                self.put(x + d, y - d + w, if w == 0 { colour } else { BLACK }, 0.9);
            }
        }
    }

    /// Text with its top-left corner at (x, y); returns the width drawn.
    pub fn text(&mut self, x: f32, y: f32, size: f32, colour: [u8; 3], text: &str) -> f32 {
        let scale = PxScale::from(size);
        let font = self.font.clone();
        let scaled = font.as_scaled(scale);
        let mut caret = x;
        let mut previous = None;
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = previous {
                caret += scaled.kern(p, id);
            }
            let glyph =
                id.with_scale_and_position(scale, ab_glyph::point(caret, y + scaled.ascent()));
            caret += scaled.h_advance(id);
            previous = Some(id);
            if let Some(outlined) = font.outline_glyph(glyph) {
                let bounds = outlined.px_bounds();
                let mut hits = vec![];
                outlined.draw(|gx, gy, coverage| hits.push((gx, gy, coverage)));
                for (gx, gy, coverage) in hits {
                    self.put(
                        bounds.min.x as i64 + gx as i64,
                        bounds.min.y as i64 + gy as i64,
                        colour,
                        coverage.min(1.0),
                    );
                }
            }
        }
        caret - x
    }

    pub fn text_width(&self, size: f32, text: &str) -> f32 {
        let scaled = self.font.as_scaled(PxScale::from(size));
        text.chars()
            .map(|c| scaled.h_advance(scaled.glyph_id(c)))
            .sum()
    }

    #[allow(clippy::too_many_arguments)]
    /// A vertical colorbar with its range labelled at the ends.
    pub fn colorbar(
        &mut self,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        map: Colormap,
        range: (f32, f32),
        label: &str,
    ) {
        for row in 0..height {
            let t = 1.0 - row as f32 / (height.max(2) - 1) as f32;
            let c = map.rgb8(t);
            for col in 0..width {
                self.put((x + col) as i64, (y + row) as i64, c, 1.0);
            }
        }
        let tx = (x + width + 4) as f32;
        self.text(tx, y as f32 - 2.0, 12.0, BLACK, &format!("{:.2}", range.1));
        self.text(
            tx,
            (y + height) as f32 - 12.0,
            12.0,
            BLACK,
            &format!("{:.2}", range.0),
        );
        self.text(tx, (y + height / 2) as f32 - 6.0, 12.0, BLACK, label);
    }

    pub fn save_png(&self, path: &std::path::Path) -> Result<()> {
        crate::io::atomic::write_atomically(path, |tmp| {
            self.image
                .save_with_format(tmp, image::ImageFormat::Png)
                .map_err(|e| Error::file(tmp, format!("cannot write PNG: {e}")))
        })
    }
}
