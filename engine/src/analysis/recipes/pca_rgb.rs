//! PCA to RGB: the top three principal components of the features as R, G and B. Fitted on all
//! images jointly (one basis and one colour range, so colours compare across images) or on each
//! image alone; a fit can be kept and applied again (the workbench's "lock basis"), so colours stay
//! comparable across t and blocks.

use crate::analysis::pca::{to_rgb_f32, PcaBasis, PcaOptions, RgbRange};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// The colour range used unless asked otherwise: these percentiles of each component's scores map
/// to 0 and 1.
pub const DEFAULT_PERCENTILES: (f32, f32) = (1.0, 99.0);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PcaRgbOptions {
    /// One basis and one colour range for all images; otherwise one of each per image.
    pub joint: bool,
    /// Percentiles of each component's scores that map to 0 and 1.
    pub percentiles: (f32, f32),
}

impl PcaRgbOptions {
    pub fn new(joint: bool) -> Self {
        Self {
            joint,
            percentiles: DEFAULT_PERCENTILES,
        }
    }
}

/// A fit: for each group of images fitted together (all of them when joint, each alone otherwise)
/// the basis and its colour range over the group's scores.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaRgbFit {
    pub joint: bool,
    pub fits: Vec<(PcaBasis, RgbRange)>,
}

impl PcaRgbFit {
    pub fn fit(maps: &[&FeatureMap], options: &PcaRgbOptions) -> Result<Self> {
        let groups: Vec<&[&FeatureMap]> = if options.joint {
            vec![maps]
        } else {
            maps.chunks(1).collect()
        };
        let (low, high) = options.percentiles;
        let fits = groups
            .into_iter()
            .map(|group| {
                let basis = PcaBasis::fit(group, &PcaOptions::default())?;
                let projections = group
                    .iter()
                    .map(|m| basis.project(m))
                    .collect::<Result<Vec<_>>>()?;
                let range = RgbRange::fit(&projections.iter().collect::<Vec<_>>(), low, high)?;
                Ok((basis, range))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            joint: options.joint,
            fits,
        })
    }

    /// The basis and colour range that colour image `i`.
    pub fn of_image(&self, i: usize) -> Option<&(PcaBasis, RgbRange)> {
        self.fits.get(if self.joint { 0 } else { i })
    }

    /// The images (of `images`) that fit number `fit` was fitted on and colours.
    pub fn images_of(&self, fit: usize, images: usize) -> std::ops::Range<usize> {
        if self.joint {
            0..images
        } else {
            fit..fit + 1
        }
    }

    /// Whether this fit can colour `maps` as asked: the same grouping, the channels of its basis,
    /// and one fit per map when per image.
    pub fn applies_to(&self, maps: &[&FeatureMap], joint: bool) -> bool {
        let channels = maps.first().map_or(0, |m| m.channels);
        self.joint == joint
            && (joint || self.fits.len() == maps.len())
            && self
                .fits
                .first()
                .is_some_and(|(b, _)| b.channels == channels)
    }

    /// Each map as `[h, w, 3]` RGB in [0, 1], at feature resolution.
    pub fn apply(&self, maps: &[&FeatureMap]) -> Result<Vec<Vec<f32>>> {
        maps.iter()
            .enumerate()
            .map(|(i, map)| {
                let (basis, range) = self.of_image(i).ok_or_else(|| {
                    Error::invalid(format!("PCA to RGB: no fit for image {}", i + 1))
                })?;
                to_rgb_f32(&basis.project(map)?, range)
            })
            .collect()
    }

    /// The share of the variance each component explains, per fit.
    pub fn explained_variance_ratio(&self) -> Vec<Vec<f64>> {
        self.fits
            .iter()
            .map(|(b, _)| b.explained_variance_ratio.clone())
            .collect()
    }

    /// What was done, for captions; `reused`: the fit was made earlier, at other features.
    pub fn describe(&self, reused: bool) -> String {
        let Some((basis, range)) = self.fits.first() else {
            return String::new();
        };
        let mut description = basis.describe();
        if !self.joint {
            description = format!("PCA fitted on each image alone. First image: {description}");
        }
        description.push_str(&format!(
            "; colours: components 1-3 as R, G, B, each scaled from its {}th to {}th percentile{}",
            range.percentiles.0,
            range.percentiles.1,
            if reused {
                " (basis and colour range locked: fitted at an earlier t/block)"
            } else {
                ""
            }
        ));
        description
    }
}

/// The pictures, the fit that made them, and what was done.
#[derive(Clone, Debug)]
pub struct PcaRgb {
    /// Per map: `[h, w, 3]` RGB in [0, 1] at feature resolution.
    pub rgb: Vec<Vec<f32>>,
    pub fit: PcaRgbFit,
    /// Whether `kept`'s fit was applied instead of a new one.
    pub reused: bool,
    pub description: String,
}

/// Colour `maps` with `kept` when it applies to them (a locked basis), else with a new fit.
pub fn pca_rgb(
    maps: &[&FeatureMap],
    options: &PcaRgbOptions,
    kept: Option<&PcaRgbFit>,
) -> Result<PcaRgb> {
    let (fit, reused) = match kept.filter(|k| k.applies_to(maps, options.joint)) {
        Some(kept) => (kept.clone(), true),
        None => (PcaRgbFit::fit(maps, options)?, false),
    };
    Ok(PcaRgb {
        rgb: fit.apply(maps)?,
        description: fit.describe(reused),
        fit,
        reused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channels that grow along x, along y, with both, and a small ripple.
    fn ramp(h: usize, w: usize, shift: f32) -> FeatureMap {
        crate::analysis::recipes::map_from_fn(4, h, w, |c, y, x| match c {
            0 => x as f32 + shift,
            1 => 0.5 * y as f32,
            2 => 0.1 * (x * y) as f32,
            _ => ((x + 2 * y) % 3) as f32 * 0.01,
        })
    }

    #[test]
    fn joint_and_per_image_fits_colour_every_map_and_say_so() {
        let (a, b) = (ramp(4, 5, 0.0), ramp(3, 6, 2.0));
        let joint = pca_rgb(&[&a, &b], &PcaRgbOptions::new(true), None).unwrap();
        assert_eq!(joint.fit.fits.len(), 1);
        assert_eq!(joint.rgb[0].len(), 4 * 5 * 3);
        assert_eq!(joint.rgb[1].len(), 3 * 6 * 3);
        assert!(joint.rgb.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        assert!(joint
            .description
            .starts_with("PCA fitted jointly on 2 map(s), 38 cells"));
        assert!(joint
            .description
            .ends_with("each scaled from its 1th to 99th percentile"));
        let alone = pca_rgb(&[&a, &b], &PcaRgbOptions::new(false), None).unwrap();
        assert_eq!(alone.fit.fits.len(), 2);
        assert_eq!(
            (joint.fit.images_of(0, 2), alone.fit.images_of(1, 2)),
            (0..2, 1..2)
        );
        assert!(alone.description.starts_with(
            "PCA fitted on each image alone. First image: PCA fitted jointly on 1 map(s)"
        ));
        // The second image alone is coloured by its own fit.
        let own = PcaRgbFit::fit(&[&b], &PcaRgbOptions::new(true)).unwrap();
        assert_eq!(alone.rgb[1], own.apply(&[&b]).unwrap()[0]);
    }

    #[test]
    fn a_kept_fit_is_reused_only_where_it_applies() {
        let (a, b) = (ramp(4, 5, 0.0), ramp(4, 5, 3.0));
        let options = PcaRgbOptions {
            joint: true,
            percentiles: (5.0, 95.0),
        };
        let first = pca_rgb(&[&a], &options, None).unwrap();
        assert!(!first.reused);
        let again = pca_rgb(&[&b], &options, Some(&first.fit)).unwrap();
        assert!(again.reused);
        assert_eq!(again.fit, first.fit);
        assert!(
            again.description.ends_with(
                "from its 5th to 95th percentile (basis and colour range locked: fitted at an earlier t/block)"
            ),
            "{}",
            again.description
        );
        // Another grouping, or other channels: fitted anew.
        let per_image = PcaRgbOptions {
            joint: false,
            ..options
        };
        assert!(!pca_rgb(&[&b], &per_image, Some(&first.fit)).unwrap().reused);
        let narrow = FeatureMap::new(3, 4, 5, a.data[..60].to_vec()).unwrap();
        assert!(
            !pca_rgb(&[&narrow], &options, Some(&first.fit))
                .unwrap()
                .reused
        );
    }
}
