//! Line plots for reports (PCK against t, one line per block), drawn on the figure canvas.

use super::canvas::{Canvas, BLACK};
use crate::error::Result;

pub struct Series {
    pub label: String,
    pub colour: [u8; 3],
    pub points: Vec<(f64, f64)>,
    /// Drawn thinner and lighter (baselines).
    pub faint: bool,
}

pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// The y axis range; None fits the data.
    pub y_range: Option<(f64, f64)>,
}

const W: u32 = 720;
const H: u32 = 420;
const LEFT: f32 = 60.0;
const RIGHT: f32 = 200.0;
const TOP: f32 = 52.0;
const BOTTOM: f32 = 50.0;

impl LinePlot {
    pub fn render(&self) -> Result<Canvas> {
        let mut c = Canvas::new(W, H)?;
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if let Some(r) = self.y_range {
            (y0, y1) = r;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let (pw, ph) = (W as f32 - LEFT - RIGHT, H as f32 - TOP - BOTTOM);
        let sx = |x: f64| LEFT + ((x - x0) / (x1 - x0)) as f32 * pw;
        let sy = |y: f64| TOP + ph - ((y - y0) / (y1 - y0)) as f32 * ph;

        c.text(LEFT, 8.0, 15.0, BLACK, &self.title);
        // Axes, ticks and grid.
        for i in 0..=5 {
            let fy = y0 + (y1 - y0) * i as f64 / 5.0;
            let py = sy(fy);
            line(&mut c, LEFT, py, LEFT + pw, py, [225, 225, 225], 1.0);
            c.text(8.0, py - 7.0, 11.0, BLACK, &format!("{fy:.2}"));
            let fx = x0 + (x1 - x0) * i as f64 / 5.0;
            let px = sx(fx);
            c.text(px - 10.0, TOP + ph + 6.0, 11.0, BLACK, &format!("{fx:.0}"));
        }
        line(&mut c, LEFT, TOP, LEFT, TOP + ph, BLACK, 1.0);
        line(&mut c, LEFT, TOP + ph, LEFT + pw, TOP + ph, BLACK, 1.0);
        c.text(
            LEFT + pw / 2.0 - 20.0,
            H as f32 - 22.0,
            13.0,
            BLACK,
            &self.x_label,
        );
        c.text(8.0, TOP - 20.0, 12.0, BLACK, &self.y_label);

        for (i, s) in self.series.iter().enumerate() {
            let width = if s.faint { 1.0 } else { 2.0 };
            let colour = if s.faint {
                s.colour.map(|v| ((v as u32 + 2 * 200) / 3) as u8)
            } else {
                s.colour
            };
            for w in s.points.windows(2) {
                line(
                    &mut c,
                    sx(w[0].0),
                    sy(w[0].1),
                    sx(w[1].0),
                    sy(w[1].1),
                    colour,
                    width,
                );
            }
            if let [(_, y)] = s.points[..] {
                // A single value (a t-independent baseline) is a horizontal line.
                line(&mut c, LEFT, sy(y), LEFT + pw, sy(y), colour, width);
            }
            for &(x, y) in &s.points {
                if s.points.len() > 1 {
                    c.marker(sx(x), sy(y), 2.0, colour);
                }
            }
            let ly = TOP + 4.0 + i as f32 * 18.0;
            line(
                &mut c,
                W as f32 - RIGHT + 12.0,
                ly + 7.0,
                W as f32 - RIGHT + 36.0,
                ly + 7.0,
                colour,
                2.0,
            );
            c.text(W as f32 - RIGHT + 42.0, ly, 12.0, BLACK, &s.label);
        }
        Ok(c)
    }
}

/// An anti-aliasing-free thick line, sampled densely.
fn line(c: &mut Canvas, xa: f32, ya: f32, xb: f32, yb: f32, colour: [u8; 3], width: f32) {
    let steps = ((xb - xa).abs().max((yb - ya).abs()) * 2.0).ceil().max(1.0) as usize;
    let half = (width / 2.0).max(0.5);
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        let (x, y) = (xa + (xb - xa) * t, ya + (yb - ya) * t);
        c.fill_rect(x - half, y - half, 2.0 * half, 2.0 * half, colour);
    }
}
