//! Colormaps and the label palette, as one lookup table shared by the shader (a texture) and the
//! CPU (colorbars, legends, point markers), so both always agree.
//!
//! The maps are piecewise linear through stops read off the reference maps (matplotlib's viridis
//! and magma at ninths, Google's turbo at tenths, a cool-warm diverging map), in sRGB.

use eframe::egui::Color32;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Colormap {
    #[default]
    Viridis,
    Turbo,
    Magma,
    Gray,
    Diverging,
}

impl Colormap {
    pub const ALL: [Colormap; 5] = [
        Colormap::Viridis,
        Colormap::Turbo,
        Colormap::Magma,
        Colormap::Gray,
        Colormap::Diverging,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Turbo => "turbo",
            Colormap::Magma => "magma",
            Colormap::Gray => "gray",
            Colormap::Diverging => "diverging",
        }
    }

    /// The row of this map in the lookup table.
    pub fn row(self) -> u32 {
        self as u32
    }

    fn stops(self) -> &'static [u32] {
        match self {
            Colormap::Viridis => &[
                0x440154, 0x472d7b, 0x3b528b, 0x2c728e, 0x21918c, 0x28ae80, 0x5ec962, 0xaddc30,
                0xfde725,
            ],
            Colormap::Turbo => &[
                0x30123b, 0x4454c4, 0x4490fe, 0x1fc8de, 0x29efa2, 0x7eff55, 0xc3f134, 0xf1ca3a,
                0xfe922a, 0xea4f0d, 0x7a0403,
            ],
            Colormap::Magma => &[
                0x000004, 0x1c1044, 0x4f127b, 0x812581, 0xb5367a, 0xe55964, 0xfb8761, 0xfec287,
                0xfcfdbf,
            ],
            Colormap::Gray => &[0x000000, 0xffffff],
            Colormap::Diverging => &[0x3b4cc0, 0x8db0fe, 0xdddddd, 0xf49a7b, 0xb40426],
        }
    }

    /// The colour at `u` in [0, 1] (clamped).
    pub fn at(self, u: f32) -> Color32 {
        let stops = self.stops();
        let x = u.clamp(0.0, 1.0) * (stops.len() - 1) as f32;
        let i = (x.floor() as usize).min(stops.len() - 2);
        let f = x - i as f32;
        let (a, b) = (rgb(stops[i]), rgb(stops[i + 1]));
        let mix = |p: u8, q: u8| (f32::from(p) + f * (f32::from(q) - f32::from(p))).round() as u8;
        Color32::from_rgb(mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2]))
    }
}

fn rgb(hex: u32) -> [u8; 3] {
    [(hex >> 16) as u8, (hex >> 8) as u8, hex as u8]
}

const PALETTE: [u32; 20] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x17becf, 0xbcbd22,
    0x7f7f7f, 0xaec7e8, 0xffbb78, 0x98df8a, 0xff9896, 0xc5b0d5, 0xc49c94, 0xf7b6d2, 0x9edae5,
    0xdbdb8d, 0xc7c7c7,
];

/// Distinct colour number `i` (segments, pinned points): 20 fixed ones, then hues by the golden angle.
pub fn palette(i: usize) -> Color32 {
    if let Some(&hex) = PALETTE.get(i) {
        let [r, g, b] = rgb(hex);
        return Color32::from_rgb(r, g, b);
    }
    let hue = (i as f32 * 0.618_034).fract();
    eframe::egui::ecolor::Hsva::new(hue, 0.65, 0.9, 1.0).into()
}

pub const LUT_WIDTH: u32 = 256;
/// Rows: the five colormaps, then the palette.
pub const LUT_ROWS: u32 = 6;

/// The lookup table as RGBA8 rows of 256 entries.
pub fn lookup_table() -> Vec<u8> {
    let mut out = Vec::with_capacity((LUT_WIDTH * LUT_ROWS * 4) as usize);
    for map in Colormap::ALL {
        for i in 0..LUT_WIDTH {
            out.extend_from_slice(&map.at(i as f32 / (LUT_WIDTH - 1) as f32).to_array());
        }
    }
    for i in 0..LUT_WIDTH as usize {
        out.extend_from_slice(&palette(i).to_array());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_middle_of_the_maps() {
        assert_eq!(
            Colormap::Viridis.at(0.0),
            Color32::from_rgb(0x44, 0x01, 0x54)
        );
        assert_eq!(
            Colormap::Viridis.at(1.0),
            Color32::from_rgb(0xfd, 0xe7, 0x25)
        );
        assert_eq!(
            Colormap::Viridis.at(0.5),
            Color32::from_rgb(0x21, 0x91, 0x8c)
        );
        assert_eq!(Colormap::Gray.at(0.5), Color32::from_rgb(128, 128, 128));
        assert_eq!(Colormap::Magma.at(-3.0), Colormap::Magma.at(0.0));
        let lut = lookup_table();
        assert_eq!(lut.len(), (LUT_WIDTH * LUT_ROWS * 4) as usize);
        // The last entry of the viridis row is viridis at 1.
        let i = (LUT_WIDTH as usize - 1) * 4;
        assert_eq!(&lut[i..i + 3], &[0xfd, 0xe7, 0x25]);
        assert_ne!(palette(25), palette(26));
    }
}
