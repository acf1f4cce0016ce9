//! Backgrounds: a linear or radial gradient between two colours, overlaid with a texture (smooth
//! value noise, stripes, a checkerboard, dots or nothing) in a third colour.

use rand::Rng;

use super::color::{contrasting_color, hsv, Rgb};
use super::detmath::{hash_unit, sin_cos};
use super::geometry::{pt, Pt};

#[derive(Clone, Debug)]
enum Gradient {
    /// From `a` to `b` along the unit direction `dir` across the image.
    Linear { a: Rgb, b: Rgb, dir: Pt },
    /// From `a` at `center` to `b` at distance `radius` (image units in [0,1]).
    Radial {
        a: Rgb,
        b: Rgb,
        center: Pt,
        radius: f64,
    },
}

#[derive(Clone, Debug)]
enum Texture {
    Plain,
    /// Two octaves of value noise with `cells` lattice cells across the image.
    Noise {
        cells: f64,
        seed: u64,
    },
    Stripes {
        dir: Pt,
        period: f64,
    },
    Checker {
        dir: Pt,
        period: f64,
    },
    Dots {
        period: f64,
        radius: f64,
    },
}

#[derive(Clone, Debug)]
pub struct Background {
    gradient: Gradient,
    texture: Texture,
    texture_color: Rgb,
    /// How strongly the texture pulls towards `texture_color`, in [0,1].
    strength: f32,
}

impl Background {
    /// A random background that contrasts with `creature` (a colour of the creature's body).
    pub fn random(rng: &mut impl Rng, creature: Rgb) -> Self {
        let a = contrasting_color(rng, creature, 0.25);
        // The second gradient colour stays near the first in brightness so the contrast holds.
        let b = a.mix(
            hsv(rng.random::<f32>(), 0.4, a.luma()),
            rng.random_range(0.3f32..0.9),
        );
        let gradient = if rng.random_bool(0.6) {
            Gradient::Linear {
                a,
                b,
                dir: unit(rng.random_range(0.0..std::f64::consts::TAU)),
            }
        } else {
            Gradient::Radial {
                a,
                b,
                center: pt(rng.random_range(0.0..1.0), rng.random_range(0.0..1.0)),
                radius: rng.random_range(0.5..1.2),
            }
        };
        let texture = match rng.random_range(0u32..6) {
            0 => Texture::Plain,
            1 | 2 => Texture::Noise {
                cells: rng.random_range(3.0..9.0),
                seed: rng.random(),
            },
            3 => Texture::Stripes {
                dir: unit(rng.random_range(0.0..std::f64::consts::PI)),
                period: rng.random_range(0.08..0.25),
            },
            4 => Texture::Checker {
                dir: unit(rng.random_range(0.0..std::f64::consts::FRAC_PI_2)),
                period: rng.random_range(0.1..0.3),
            },
            _ => {
                let period = rng.random_range(0.1..0.25);
                Texture::Dots {
                    period,
                    radius: period * rng.random_range(0.15..0.35),
                }
            }
        };
        let texture_color = a.mix(hsv(rng.random::<f32>(), 0.5, a.luma()), 0.8);
        Self {
            gradient,
            texture,
            texture_color,
            strength: rng.random_range(0.25f32..0.7),
        }
    }

    /// One flat colour.
    pub fn plain(color: Rgb) -> Self {
        Self {
            gradient: Gradient::Linear {
                a: color,
                b: color,
                dir: pt(1.0, 0.0),
            },
            texture: Texture::Plain,
            texture_color: color,
            strength: 0.0,
        }
    }

    /// The colour at an image point, with the image spanning [0, size) on both axes.
    pub fn color_at(&self, p: Pt, size: f64) -> Rgb {
        let q = pt(p.x / size, p.y / size);
        let base = match &self.gradient {
            Gradient::Linear { a, b, dir } => {
                // Projection of q onto dir, normalised over the unit square's extent.
                let t = q.minus(pt(0.5, 0.5)).dot(*dir) / (dir.x.abs() + dir.y.abs()) + 0.5;
                a.mix(*b, t.clamp(0.0, 1.0) as f32)
            }
            Gradient::Radial {
                a,
                b,
                center,
                radius,
            } => {
                let d = q.minus(*center);
                a.mix(*b, (d.dot(d).sqrt() / radius).min(1.0) as f32)
            }
        };
        let t = self.texture_value(q);
        base.mix(self.texture_color, t * self.strength)
    }

    /// The texture's weight at q (unit-square coordinates), in [0,1].
    fn texture_value(&self, q: Pt) -> f32 {
        match &self.texture {
            Texture::Plain => 0.0,
            Texture::Noise { cells, seed } => {
                let coarse = value_noise(q.scale(*cells), *seed);
                let fine = value_noise(q.scale(cells * 2.3), seed.wrapping_add(1));
                (0.7 * coarse + 0.3 * fine) as f32
            }
            Texture::Stripes { dir, period } => smooth_square(q.dot(*dir) / period),
            Texture::Checker { dir, period } => {
                let u = q.dot(*dir) / period;
                let v = (dir.x * q.y - dir.y * q.x) / period;
                let parity = (u.floor() + v.floor()).rem_euclid(2.0);
                parity as f32
            }
            Texture::Dots { period, radius } => {
                let cell = q.scale(1.0 / period);
                let d =
                    pt(cell.x - cell.x.floor() - 0.5, cell.y - cell.y.floor() - 0.5).scale(*period);
                let dist = d.dot(d).sqrt();
                // A soft edge one hundredth of the image wide.
                ((radius - dist) / 0.01 + 0.5).clamp(0.0, 1.0) as f32
            }
        }
    }
}

fn unit(angle: f64) -> Pt {
    let (s, c) = sin_cos(angle);
    pt(c, s)
}

/// A square wave of period 1 with soft edges: 0 then 1.
fn smooth_square(t: f64) -> f32 {
    let f = t - t.floor();
    let tri = 1.0 - (2.0 * f - 1.0).abs(); // 0 at edges of the period, 1 in the middle
    ((tri - 0.5) * 6.0 + 0.5).clamp(0.0, 1.0) as f32
}

/// Smooth value noise in [0,1]: random values on the integer lattice, smoothstep-interpolated.
fn value_noise(p: Pt, seed: u64) -> f64 {
    let (fx, fy) = (p.x.floor(), p.y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let smooth = |t: f64| t * t * (3.0 - 2.0 * t);
    let (tx, ty) = (smooth(p.x - fx), smooth(p.y - fy));
    let v00 = hash_unit(seed, ix, iy);
    let v10 = hash_unit(seed, ix + 1, iy);
    let v01 = hash_unit(seed, ix, iy + 1);
    let v11 = hash_unit(seed, ix + 1, iy + 1);
    let top = v00 + (v10 - v00) * tx;
    let bottom = v01 + (v11 - v01) * tx;
    top + (bottom - top) * ty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_noise_is_continuous_and_hits_lattice_values() {
        assert_eq!(value_noise(pt(3.0, 5.0), 9), hash_unit(9, 3, 5));
        let a = value_noise(pt(2.999_999, 1.5), 9);
        let b = value_noise(pt(3.000_001, 1.5), 9);
        assert!((a - b).abs() < 1e-4);
    }
}
