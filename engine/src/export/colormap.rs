//! Colormaps for heatmaps, as polynomial fits (the same ones the WGSL shader evaluates), so an
//! exported figure shows the colours the workbench shows.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    #[default]
    Viridis,
    Turbo,
    Magma,
    Gray,
    /// Blue - white - red, for signed values around a centre.
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

    /// Colour of `x` in [0,1] (clamped), as RGB in [0,1].
    pub fn rgb(self, x: f32) -> [f32; 3] {
        let t = x.clamp(0.0, 1.0);
        let c = match self {
            Colormap::Viridis => poly6(t, &VIRIDIS),
            Colormap::Magma => poly6(t, &MAGMA),
            Colormap::Turbo => poly5(t, &TURBO),
            Colormap::Gray => [t, t, t],
            Colormap::Diverging => {
                let (lo, mid, hi) = (
                    [0.230, 0.299, 0.754],
                    [0.865, 0.865, 0.865],
                    [0.706, 0.016, 0.150],
                );
                if t < 0.5 {
                    lerp(lo, mid, t * 2.0)
                } else {
                    lerp(mid, hi, t * 2.0 - 1.0)
                }
            }
        };
        c.map(|v| v.clamp(0.0, 1.0))
    }

    pub fn rgb8(self, x: f32) -> [u8; 3] {
        self.rgb(x).map(|v| (v * 255.0 + 0.5) as u8)
    }
}

fn lerp(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Horner evaluation of per-channel polynomials, coefficients from the constant term up.
fn horner(t: f32, coeffs: &[[f32; 3]]) -> [f32; 3] {
    let mut acc = [0f32; 3];
    for c in coeffs.iter().rev() {
        for ch in 0..3 {
            acc[ch] = acc[ch] * t + c[ch];
        }
    }
    acc
}

fn poly6(t: f32, coeffs: &[[f32; 3]; 7]) -> [f32; 3] {
    horner(t, coeffs)
}

fn poly5(t: f32, coeffs: &[[f32; 3]; 6]) -> [f32; 3] {
    horner(t, coeffs)
}

// Polynomial fits of matplotlib's viridis and magma (Matt Zucker) and Google's turbo.
const VIRIDIS: [[f32; 3]; 7] = [
    [0.277_727_3, 0.005_407_345, 0.334_099_8],
    [0.105_093_04, 1.404_613_5, 1.384_590_2],
    [-0.330_861_83, 0.214_847_56, 0.095_095_16],
    [-4.634_230_5, -5.799_101, -19.332_441],
    [6.228_27, 14.179_933, 56.690_55],
    [4.776_385, -13.745_145, -65.353_03],
    [-5.435_456, 4.645_852_6, 26.312_435],
];
const MAGMA: [[f32; 3]; 7] = [
    [-0.002_136_485, -0.000_749_655, -0.005_386_128],
    [0.251_660_54, 0.677_523_2, 2.494_026_6],
    [8.353_717, -3.577_719_4, 0.314_467_9],
    [-27.668_733, 14.264_731, -13.649_213],
    [52.176_14, -27.943_606, 12.944_169],
    [-50.768_524, 29.046_583, 4.234_153],
    [18.655_705, -11.489_774, -5.601_961_5],
];
const TURBO: [[f32; 3]; 6] = [
    [0.135_721_38, 0.091_402_61, 0.106_673_3],
    [4.615_392_6, 2.194_188_4, 12.641_946],
    [-42.660_324, 4.842_966_6, -60.582_05],
    [132.131_08, -14.185_033, 110.362_77],
    [-152.942_4, 4.277_298_5, -89.903_11],
    [59.286_38, 2.829_566, 27.348_25],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_match_matplotlib() {
        // matplotlib: viridis(0) = #440154, viridis(1) = #fde725; magma(1) = #fcfdbf. The polynomial fits
        // are within 6/255 of the tables.
        let close = |a: [u8; 3], b: [u8; 3]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (*x as i32 - y as i32).abs() <= 6)
        };
        assert!(
            close(Colormap::Viridis.rgb8(0.0), [0x44, 0x01, 0x54]),
            "{:?}",
            Colormap::Viridis.rgb8(0.0)
        );
        assert!(
            close(Colormap::Viridis.rgb8(1.0), [0xfd, 0xe7, 0x25]),
            "{:?}",
            Colormap::Viridis.rgb8(1.0)
        );
        assert!(
            close(Colormap::Magma.rgb8(1.0), [0xfc, 0xfd, 0xbf]),
            "{:?}",
            Colormap::Magma.rgb8(1.0)
        );
        assert_eq!(Colormap::Gray.rgb8(0.5), [128, 128, 128]);
        assert_eq!(Colormap::parse("turbo").unwrap(), Colormap::Turbo);
        assert!(Colormap::parse("jet").is_err());
    }
}
