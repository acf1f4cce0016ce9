//! Colormaps for heatmaps and the palette for labels and points: one definition for exported
//! figures and the workbench (which uploads [`lookup_table`] for its WGSL shader), so both draw
//! the same colours.
//!
//! The maps are piecewise linear through stops read off the reference maps (matplotlib's viridis
//! and magma at ninths, Google's turbo at tenths, a cool-warm diverging map), in sRGB.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    #[default]
    #[serde(alias = "Viridis")]
    Viridis,
    #[serde(alias = "Turbo")]
    Turbo,
    #[serde(alias = "Magma")]
    Magma,
    #[serde(alias = "Gray")]
    Gray,
    /// Blue - white - red, for signed values around a centre.
    #[serde(alias = "Diverging")]
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

    /// The row of this map in [`lookup_table`].
    pub fn row(self) -> u32 {
        self as u32
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|c| c.name()).collect();
                Error::invalid(format!(
                    "unknown colormap `{name}` (choose from {})",
                    names.join(", ")
                ))
            })
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

    /// Colour of `x` in [0,1] (clamped), as 8-bit sRGB.
    pub fn rgb8(self, x: f32) -> [u8; 3] {
        let stops = self.stops();
        let x = x.clamp(0.0, 1.0) * (stops.len() - 1) as f32;
        let i = (x.floor() as usize).min(stops.len() - 2);
        let f = x - i as f32;
        let (a, b) = (hex_rgb(stops[i]), hex_rgb(stops[i + 1]));
        std::array::from_fn(|c| {
            (f32::from(a[c]) + f * (f32::from(b[c]) - f32::from(a[c]))).round() as u8
        })
    }

    /// Colour of `x` in [0,1] (clamped), as RGB in [0,1].
    pub fn rgb(self, x: f32) -> [f32; 3] {
        self.rgb8(x).map(|v| f32::from(v) / 255.0)
    }
}

fn hex_rgb(hex: u32) -> [u8; 3] {
    [(hex >> 16) as u8, (hex >> 8) as u8, hex as u8]
}

/// matplotlib's tab20, in an order that puts the strong colours first.
const PALETTE: [u32; 20] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x17becf, 0xbcbd22,
    0x7f7f7f, 0xaec7e8, 0xffbb78, 0x98df8a, 0xff9896, 0xc5b0d5, 0xc49c94, 0xf7b6d2, 0x9edae5,
    0xdbdb8d, 0xc7c7c7,
];

/// Distinct colour number `i` (segments, pinned points) as 8-bit sRGB: 20 fixed ones, then hues
/// by the golden angle.
pub fn palette(i: usize) -> [u8; 3] {
    if let Some(&hex) = PALETTE.get(i) {
        return hex_rgb(hex);
    }
    let hue = (i as f32 * 0.618_034).fract();
    hsv_rgb8(hue, 0.65, 0.9)
}

fn hsv_rgb8(h: f32, s: f32, v: f32) -> [u8; 3] {
    let h6 = h * 6.0;
    let f = h6.fract();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let rgb = match h6 as u32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|c| (c * 255.0).round() as u8)
}

pub const LUT_WIDTH: u32 = 256;
/// Rows: the five colormaps, then the palette.
pub const LUT_ROWS: u32 = 6;

/// The maps and the palette as RGBA8 rows of [`LUT_WIDTH`] entries (the shader's texture).
pub fn lookup_table() -> Vec<u8> {
    let mut out = Vec::with_capacity((LUT_WIDTH * LUT_ROWS * 4) as usize);
    let entries = Colormap::ALL
        .into_iter()
        .flat_map(|map| (0..LUT_WIDTH).map(move |i| map.rgb8(i as f32 / (LUT_WIDTH - 1) as f32)))
        .chain((0..LUT_WIDTH as usize).map(palette));
    for [r, g, b] in entries {
        out.extend_from_slice(&[r, g, b, 255]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_middle_of_the_maps_are_matplotlibs() {
        assert_eq!(Colormap::Viridis.rgb8(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(Colormap::Viridis.rgb8(1.0), [0xfd, 0xe7, 0x25]);
        assert_eq!(Colormap::Viridis.rgb8(0.5), [0x21, 0x91, 0x8c]);
        assert_eq!(Colormap::Magma.rgb8(1.0), [0xfc, 0xfd, 0xbf]);
        assert_eq!(Colormap::Gray.rgb8(0.5), [128, 128, 128]);
        assert_eq!(Colormap::Magma.rgb8(-3.0), Colormap::Magma.rgb8(0.0));
        assert_eq!(Colormap::parse("turbo").unwrap(), Colormap::Turbo);
        assert!(Colormap::parse("jet").is_err());
    }

    #[test]
    fn lookup_table_rows_are_the_maps_then_the_palette() {
        let lut = lookup_table();
        assert_eq!(lut.len(), (LUT_WIDTH * LUT_ROWS * 4) as usize);
        let entry = |row: u32, i: u32| {
            let at = ((row * LUT_WIDTH + i) * 4) as usize;
            [lut[at], lut[at + 1], lut[at + 2]]
        };
        assert_eq!(
            entry(Colormap::Viridis.row(), LUT_WIDTH - 1),
            [0xfd, 0xe7, 0x25]
        );
        assert_eq!(entry(Colormap::Gray.row(), 0), [0, 0, 0]);
        assert_eq!(entry(LUT_ROWS - 1, 3), palette(3));
        assert_ne!(palette(25), palette(26));
    }

    #[test]
    fn session_files_with_the_old_names_still_read() {
        let map: Colormap = serde_json::from_str("\"Turbo\"").unwrap();
        assert_eq!(map, Colormap::Turbo);
        assert_eq!(
            serde_json::to_string(&Colormap::Magma).unwrap(),
            "\"magma\""
        );
    }
}
