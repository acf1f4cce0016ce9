//! Colours (sRGB in [0,1]) and the palettes creatures and backgrounds draw from.

use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rgb(pub f32, pub f32, pub f32);

impl Rgb {
    pub fn mix(self, o: Rgb, t: f32) -> Rgb {
        Rgb(
            self.0 + (o.0 - self.0) * t,
            self.1 + (o.1 - self.1) * t,
            self.2 + (o.2 - self.2) * t,
        )
    }

    /// Multiply the brightness (clamped to [0,1]).
    pub fn shade(self, k: f32) -> Rgb {
        Rgb(
            (self.0 * k).clamp(0.0, 1.0),
            (self.1 * k).clamp(0.0, 1.0),
            (self.2 * k).clamp(0.0, 1.0),
        )
    }

    /// Rec. 601 luma: what "light" or "dark" means here.
    pub fn luma(self) -> f32 {
        0.299 * self.0 + 0.587 * self.1 + 0.114 * self.2
    }

    pub fn to_u8(self) -> [u8; 3] {
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        [q(self.0), q(self.1), q(self.2)]
    }
}

/// Hue in turns [0,1), saturation and value in [0,1].
pub fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h6 = (h - h.floor()) * 6.0;
    let sector = h6.floor();
    let f = h6 - sector;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match sector as u32 {
        0 => Rgb(v, t, p),
        1 => Rgb(q, v, p),
        2 => Rgb(p, v, t),
        3 => Rgb(p, q, v),
        4 => Rgb(t, p, v),
        _ => Rgb(v, p, q),
    }
}

/// A creature's body colour: any hue, mid to light so the dark pupils stand out on it.
pub fn body_color(rng: &mut impl Rng) -> Rgb {
    let h = rng.random::<f32>();
    let s = rng.random_range(0.25f32..0.85);
    let v = rng.random_range(0.45f32..0.95);
    hsv(h, s, v)
}

/// A colour whose luma is at least `min_gap` away from `avoid`'s, so the creature stands out.
pub fn contrasting_color(rng: &mut impl Rng, avoid: Rgb, min_gap: f32) -> Rgb {
    let target = avoid.luma();
    let mut best = hsv(rng.random::<f32>(), 0.3, 0.5);
    for _ in 0..32 {
        let c = hsv(
            rng.random::<f32>(),
            rng.random_range(0.1f32..0.7),
            rng.random_range(0.1f32..1.0),
        );
        if (c.luma() - target).abs() >= min_gap {
            return c;
        }
        if (c.luma() - target).abs() > (best.luma() - target).abs() {
            best = c;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv(0.0, 1.0, 1.0), Rgb(1.0, 0.0, 0.0));
        assert_eq!(hsv(1.0 / 3.0, 1.0, 1.0).to_u8(), [0, 255, 0]);
        assert_eq!(hsv(2.0 / 3.0, 1.0, 1.0).to_u8(), [0, 0, 255]);
        assert_eq!(hsv(0.5, 0.0, 0.5), Rgb(0.5, 0.5, 0.5));
    }
}
