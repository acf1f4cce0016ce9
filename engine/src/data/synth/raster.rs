//! A supersampling painter: shapes are filled with hard edges on a grid `ss` times finer than
//! the image, each sample keeping a colour and a label (which part covers it), and the image is
//! the box average of its `ss x ss` samples (anti-aliasing). The label grid is the ground truth
//! the tests check keypoints against.

use image::{GrayImage, RgbImage};

use super::color::Rgb;
use super::geometry::{pt, ImageShape, Pose, Pt};

/// How a shape is coloured, as a function of the creature's local coordinates (so textures move
/// and turn with the creature).
#[derive(Clone, Debug)]
pub enum Paint {
    Solid(Rgb),
    /// Colour `b` where `fract(q . dir / period + phase) < duty`, else `a`.
    Stripes {
        a: Rgb,
        b: Rgb,
        dir: Pt,
        period: f64,
        duty: f64,
        phase: f64,
    },
    /// Colour `spot` inside any of the discs (centre, radius), else `base`.
    Spots {
        base: Rgb,
        spot: Rgb,
        spots: Vec<(Pt, f64)>,
    },
}

impl Paint {
    pub fn color_at(&self, q: Pt) -> Rgb {
        match self {
            Paint::Solid(c) => *c,
            Paint::Stripes {
                a,
                b,
                dir,
                period,
                duty,
                phase,
            } => {
                let t = q.dot(*dir) / period + phase;
                if t - t.floor() < *duty {
                    *b
                } else {
                    *a
                }
            }
            Paint::Spots { base, spot, spots } => {
                let inside = spots.iter().any(|(c, r)| {
                    let d = q.minus(*c);
                    d.dot(d) <= r * r
                });
                if inside {
                    *spot
                } else {
                    *base
                }
            }
        }
    }
}

pub struct Canvas {
    size: usize,
    ss: usize,
    /// Samples per side: `size * ss`.
    n: usize,
    color: Vec<Rgb>,
    label: Vec<u8>,
}

impl Canvas {
    pub fn new(size: usize, ss: usize) -> Self {
        let n = size * ss;
        Self {
            size,
            ss,
            n,
            color: vec![Rgb(0.0, 0.0, 0.0); n * n],
            label: vec![0; n * n],
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The image point a sample stands for (its centre).
    fn sample_point(&self, ix: usize, iy: usize) -> Pt {
        let ss = self.ss as f64;
        pt((ix as f64 + 0.5) / ss, (iy as f64 + 0.5) / ss)
    }

    /// Paint every sample with `f(image point)` and label 0 (background).
    pub fn fill(&mut self, f: impl Fn(Pt) -> Rgb) {
        for iy in 0..self.n {
            for ix in 0..self.n {
                let i = iy * self.n + ix;
                self.color[i] = f(self.sample_point(ix, iy));
                self.label[i] = 0;
            }
        }
    }

    /// Fill `shape` (already in the image) with `paint` (evaluated in the local frame of `pose`).
    pub fn draw(&mut self, shape: &ImageShape, paint: &Paint, pose: &Pose, label: u8) {
        let (lo, hi) = shape.bounds();
        let Some((x0, x1)) = self.sample_range(lo.x, hi.x) else {
            return;
        };
        let Some((y0, y1)) = self.sample_range(lo.y, hi.y) else {
            return;
        };
        for iy in y0..y1 {
            for ix in x0..x1 {
                let p = self.sample_point(ix, iy);
                if shape.contains(p) {
                    let i = iy * self.n + ix;
                    self.color[i] = paint.color_at(pose.to_local(p));
                    self.label[i] = label;
                }
            }
        }
    }

    /// Sample indices whose centres may fall in [lo, hi] (image units), clipped to the canvas.
    fn sample_range(&self, lo: f64, hi: f64) -> Option<(usize, usize)> {
        let ss = self.ss as f64;
        let start = (lo * ss - 0.5).floor().max(0.0);
        let end = ((hi * ss - 0.5).ceil() + 1.0).min(self.n as f64);
        (end > start).then_some((start as usize, end as usize))
    }

    /// The label of the sample nearest to an image point, or None outside the canvas.
    pub fn label_at(&self, p: Pt) -> Option<u8> {
        let ss = self.ss as f64;
        let (fx, fy) = ((p.x * ss).floor(), (p.y * ss).floor());
        if fx < 0.0 || fy < 0.0 || fx >= self.n as f64 || fy >= self.n as f64 {
            return None;
        }
        self.label.get(fy as usize * self.n + fx as usize).copied()
    }

    /// Box-average the samples into the image.
    pub fn to_image(&self) -> RgbImage {
        let weight = 1.0 / (self.ss * self.ss) as f32;
        RgbImage::from_fn(self.size as u32, self.size as u32, |x, y| {
            let mut sum = Rgb(0.0, 0.0, 0.0);
            for c in self.block(x as usize, y as usize) {
                sum = Rgb(sum.0 + c.0, sum.1 + c.1, sum.2 + c.2);
            }
            image::Rgb(Rgb(sum.0 * weight, sum.1 * weight, sum.2 * weight).to_u8())
        })
    }

    fn block(&self, x: usize, y: usize) -> impl Iterator<Item = &Rgb> + '_ {
        let (ss, n) = (self.ss, self.n);
        (0..ss).flat_map(move |dy| {
            let row = (y * ss + dy) * n + x * ss;
            self.color[row..row + ss].iter()
        })
    }

    /// Per pixel, the label covering most of its samples (ties go to the higher label, which is
    /// drawn later in the creature's order: parts over the body).
    pub fn label_image(&self) -> GrayImage {
        let (ss, n) = (self.ss, self.n);
        GrayImage::from_fn(self.size as u32, self.size as u32, |x, y| {
            let mut counts = [0u16; 256];
            for dy in 0..ss {
                let row = (y as usize * ss + dy) * n + x as usize * ss;
                for &l in &self.label[row..row + ss] {
                    counts[l as usize] += 1;
                }
            }
            let mut best = 0usize;
            for (l, &c) in counts.iter().enumerate() {
                if c >= counts[best] {
                    best = l;
                }
            }
            image::Luma([best as u8])
        })
    }

    /// How many samples carry a label that passes `keep`.
    pub fn count_labels(&self, keep: impl Fn(u8) -> bool) -> usize {
        self.label.iter().filter(|&&l| keep(l)).count()
    }

    /// The image-space box (min, max corner, continuous coordinates) of the samples whose label
    /// passes `keep`, or None if there are none.
    pub fn label_bounds(&self, keep: impl Fn(u8) -> bool) -> Option<(Pt, Pt)> {
        let mut bounds: Option<(usize, usize, usize, usize)> = None;
        for iy in 0..self.n {
            for ix in 0..self.n {
                if keep(self.label[iy * self.n + ix]) {
                    bounds = Some(match bounds {
                        None => (ix, iy, ix, iy),
                        Some((x0, y0, x1, y1)) => (x0.min(ix), y0.min(iy), x1.max(ix), y1.max(iy)),
                    });
                }
            }
        }
        let ss = self.ss as f64;
        bounds.map(|(x0, y0, x1, y1)| {
            (
                pt(x0 as f64 / ss, y0 as f64 / ss),
                pt((x1 + 1) as f64 / ss, (y1 + 1) as f64 / ss),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::geometry::{circle, Shape};

    #[test]
    fn coverage_is_antialiased_and_labels_follow_the_shape() {
        let mut canvas = Canvas::new(8, 4);
        canvas.fill(|_| Rgb(0.0, 0.0, 0.0));
        // The square [2,4) x [2,4) in image units covers pixels (2..4, 2..4) fully, and
        // the half-pixel-wide strip x in [4, 4.5) covers half of column 4.
        let pose = Pose::new(pt(0.0, 0.0), 1.0, 0.0, false);
        let square = Shape::Polygon(vec![pt(2.0, 2.0), pt(4.5, 2.0), pt(4.5, 4.0), pt(2.0, 4.0)]);
        canvas.draw(
            &square.to_image(&pose),
            &Paint::Solid(Rgb(1.0, 1.0, 1.0)),
            &pose,
            7,
        );
        let img = canvas.to_image();
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(3, 3).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(4, 3).0, [128, 128, 128]); // 8 of 16 samples: 127.5 rounds up
        assert_eq!(img.get_pixel(1, 3).0, [0, 0, 0]);
        let labels = canvas.label_image();
        assert_eq!(labels.get_pixel(3, 3).0, [7]);
        assert_eq!(labels.get_pixel(4, 3).0, [7]); // a tie goes to the later (higher) label
        assert_eq!(labels.get_pixel(5, 3).0, [0]);
        let (lo, hi) = canvas.label_bounds(|l| l == 7).unwrap();
        assert_eq!((lo, hi), (pt(2.0, 2.0), pt(4.5, 4.0)));
    }

    #[test]
    fn a_circle_area_matches_pi_r_squared() {
        let mut canvas = Canvas::new(32, 4);
        canvas.fill(|_| Rgb(0.0, 0.0, 0.0));
        let pose = Pose::new(pt(0.0, 0.0), 1.0, 0.0, false);
        canvas.draw(
            &circle(pt(16.0, 16.0), 10.0).to_image(&pose),
            &Paint::Solid(Rgb(1.0, 0.0, 0.0)),
            &pose,
            1,
        );
        let img = canvas.to_image();
        let area: f64 = img.pixels().map(|p| p.0[0] as f64 / 255.0).sum();
        let expected = std::f64::consts::PI * 100.0;
        assert!((area - expected).abs() < 1.0, "area {area} vs {expected}");
    }
}
