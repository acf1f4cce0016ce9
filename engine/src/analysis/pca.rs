//! PCA of feature maps, and PCA to RGB.
//!
//! Every cell of every map given to [`PcaBasis::fit`] is one sample of C channels. The samples are centred
//! on their joint mean, the covariance `X^T X / (N-1)` is formed with candle matmul, and its top k
//! eigenvectors are found by subspace iteration (see `eigen.rs`). A fitted basis can be applied to any map
//! with the same channels, so colours stay comparable while t or the image changes.
//!
//! Choices that change pictures, stated so they can be reported:
//! - sign: each component is flipped so that its largest-magnitude loading is positive (first one on ties);
//! - colour range: per component, the `low`..`high` percentiles (numpy's linear interpolation) of the
//!   scores over the maps given to [`RgbRange::fit`] map to 0..1, values outside are clipped;
//! - foreground mask: the first component's score scaled by that range, compared with a threshold; which
//!   side is foreground is chosen by the user or, by default, as the side that covers fewer border cells.

use candle_core::{DType, Device, Tensor};

use crate::analysis::coords::GridSize;
use crate::analysis::eigen::{top_eigenpairs, EigenSettings};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// Settings of a fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PcaOptions {
    /// Number of components (3 for RGB).
    pub components: usize,
    /// Subspace-iteration limit; a fit that hits it is still returned, with `converged: false`.
    pub max_iterations: usize,
    /// Relative residual of the eigenpairs at which the iteration stops.
    pub tolerance: f64,
}

impl Default for PcaOptions {
    fn default() -> Self {
        Self {
            components: 3,
            max_iterations: 1000,
            tolerance: 1e-7,
        }
    }
}

/// A fitted PCA basis.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaBasis {
    pub channels: usize,
    /// The joint mean of the samples, per channel.
    pub mean: Vec<f32>,
    /// Unit principal axes, `components[i]` has `channels` loadings; descending variance.
    pub components: Vec<Vec<f32>>,
    /// Variance along each axis (covariance eigenvalue, normalised by N-1 like numpy and sklearn).
    pub explained_variance: Vec<f64>,
    /// `explained_variance / total_variance`.
    pub explained_variance_ratio: Vec<f64>,
    /// Sum of the per-channel variances.
    pub total_variance: f64,
    /// How many cells were samples, and from how many maps.
    pub samples: usize,
    pub maps: usize,
    /// Whether the eigen solver met its tolerance (it always does on real features; see `eigen.rs`), after
    /// how many iterations, and its final relative residual.
    pub converged: bool,
    pub iterations: usize,
    pub residual: f64,
}

/// Scores of a map on the components: `scores[i]` is component i over the grid, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaProjection {
    pub grid: GridSize,
    pub scores: Vec<Vec<f32>>,
}

impl PcaBasis {
    /// Fit on all cells of one or several maps (jointly).
    pub fn fit(maps: &[&FeatureMap], options: &PcaOptions) -> Result<Self> {
        Self::fit_masked(maps, None, options)
    }

    /// Fit on the cells where `masks[m][cell]` is true (e.g. a foreground mask, as DINOv2's figures do).
    pub fn fit_masked(
        maps: &[&FeatureMap],
        masks: Option<&[Vec<bool>]>,
        options: &PcaOptions,
    ) -> Result<Self> {
        let channels = check_maps(maps)?;
        if let Some(masks) = masks {
            if masks.len() != maps.len() {
                return Err(Error::invalid(format!(
                    "PCA: {} masks for {} maps",
                    masks.len(),
                    maps.len()
                )));
            }
            for (i, (mask, map)) in masks.iter().zip(maps).enumerate() {
                if mask.len() != map.cells() {
                    return Err(Error::invalid(format!(
                        "PCA: mask {i} has {} cells, its map {}",
                        mask.len(),
                        map.cells()
                    )));
                }
            }
        }
        let selected = |m: usize, cell: usize| masks.is_none_or(|masks| masks[m][cell]);
        let samples: usize = maps
            .iter()
            .enumerate()
            .map(|(m, map)| (0..map.cells()).filter(|&c| selected(m, c)).count())
            .sum();
        let k = options.components;
        if k == 0 || k > channels {
            return Err(Error::invalid(format!(
                "PCA: {k} components asked of {channels}-channel maps"
            )));
        }
        if samples <= k {
            return Err(Error::invalid(format!(
                "PCA: {k} components need more than {k} samples (cells), got {samples}"
            )));
        }
        // Joint mean in float64.
        let mut sums = vec![0f64; channels];
        for (m, map) in maps.iter().enumerate() {
            for (sum, row) in sums.iter_mut().zip(map.data.chunks_exact(map.cells())) {
                *sum += row
                    .iter()
                    .enumerate()
                    .filter(|(cell, _)| selected(m, *cell))
                    .map(|(_, &v)| f64::from(v))
                    .sum::<f64>();
            }
        }
        let mean: Vec<f64> = sums.iter().map(|s| s / samples as f64).collect();
        // Covariance, accumulated map by map so only one centred copy exists at a time.
        let device = Device::Cpu;
        let mut scatter = Tensor::zeros((channels, channels), DType::F32, &device)?;
        let mut total_squares = 0f64;
        for (m, map) in maps.iter().enumerate() {
            let cells: Vec<usize> = (0..map.cells()).filter(|&c| selected(m, c)).collect();
            if cells.is_empty() {
                continue;
            }
            let mut centred = Vec::with_capacity(channels * cells.len());
            for (row, &mu) in map.data.chunks_exact(map.cells()).zip(&mean) {
                for &cell in &cells {
                    let v = f64::from(row[cell]) - mu;
                    total_squares += v * v;
                    centred.push(v as f32);
                }
            }
            let x = Tensor::from_vec(centred, (channels, cells.len()), &device)?;
            scatter = (scatter + x.matmul(&x.t()?)?)?;
        }
        let covariance = (scatter.to_dtype(DType::F64)? / (samples - 1) as f64)?;
        let total_variance = total_squares / (samples - 1) as f64;
        let settings = EigenSettings {
            count: k,
            oversample: 10,
            max_iterations: options.max_iterations,
            tolerance: options.tolerance,
            shift: 0.0,
            seed: 0x5EED_0001,
        };
        let top = top_eigenpairs(&covariance, &[], &settings)?;
        let components: Vec<Vec<f32>> = top
            .vectors
            .iter()
            .map(|v| with_sign_convention(v))
            .collect();
        let explained_variance: Vec<f64> = top.values.iter().map(|v| v.max(0.0)).collect();
        let explained_variance_ratio = explained_variance
            .iter()
            .map(|v| {
                if total_variance > 0.0 {
                    v / total_variance
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            channels,
            mean: mean.iter().map(|&m| m as f32).collect(),
            components,
            explained_variance,
            explained_variance_ratio,
            total_variance,
            samples,
            maps: maps.len(),
            converged: top.converged,
            iterations: top.iterations,
            residual: top.relative_residual,
        })
    }

    /// Scores of every cell of a map: `(x - mean) . component`.
    pub fn project(&self, map: &FeatureMap) -> Result<PcaProjection> {
        map.ensure_finite("PCA input map")?;
        if map.channels != self.channels {
            return Err(Error::invalid(format!(
                "PCA basis was fitted on {}-channel maps, this map has {}",
                self.channels, map.channels
            )));
        }
        let device = Device::Cpu;
        let k = self.components.len();
        let axes: Vec<f32> = self.components.iter().flatten().copied().collect();
        let axes = Tensor::from_vec(axes, (k, self.channels), &device)?;
        let data = Tensor::from_slice(map.data.as_slice(), (self.channels, map.cells()), &device)?;
        let raw = axes.matmul(&data)?.to_vec2::<f32>()?;
        let scores = raw
            .into_iter()
            .zip(&self.components)
            .map(|(row, axis)| {
                let offset: f64 = axis
                    .iter()
                    .zip(&self.mean)
                    .map(|(&a, &m)| f64::from(a) * f64::from(m))
                    .sum();
                row.into_iter()
                    .map(|s| (f64::from(s) - offset) as f32)
                    .collect()
            })
            .collect();
        Ok(PcaProjection {
            grid: GridSize::new(map.height, map.width),
            scores,
        })
    }

    /// One line that says what was done, for the UI and figure captions.
    pub fn describe(&self) -> String {
        let ratios: Vec<String> = self
            .explained_variance_ratio
            .iter()
            .map(|r| format!("{:.1}%", 100.0 * r))
            .collect();
        format!(
            "PCA fitted jointly on {} map(s), {} cells as samples, centred on their joint mean, no per-channel scaling; \
             {} components explaining {} of the variance; sign: largest loading positive{}",
            self.maps,
            self.samples,
            self.components.len(),
            ratios.join(", "),
            if self.converged { "" } else { " (eigen solver stopped before its tolerance)" }
        )
    }
}

fn check_maps(maps: &[&FeatureMap]) -> Result<usize> {
    let first = maps
        .first()
        .ok_or_else(|| Error::invalid("PCA needs at least one feature map"))?;
    for (i, map) in maps.iter().enumerate() {
        map.ensure_finite(&format!("PCA map {i}"))?;
        if map.channels != first.channels {
            return Err(Error::invalid(format!(
                "PCA map {i} has {} channels, map 0 has {}; fit jointly only maps of the same tap",
                map.channels, first.channels
            )));
        }
    }
    Ok(first.channels)
}

/// Flip the vector so that its largest-magnitude entry (the first on ties) is positive.
fn with_sign_convention(vector: &[f64]) -> Vec<f32> {
    let pivot = vector.iter().enumerate().fold(0, |best, (i, v)| {
        if v.abs() > vector[best].abs() {
            i
        } else {
            best
        }
    });
    let sign = if vector.get(pivot).is_some_and(|v| *v < 0.0) {
        -1.0
    } else {
        1.0
    };
    vector.iter().map(|v| (sign * v) as f32).collect()
}

/// Per-component colour range: scores at `low` map to 0, at `high` to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbRange {
    pub low: Vec<f32>,
    pub high: Vec<f32>,
    /// The percentiles used, for the record (e.g. 1.0 and 99.0).
    pub percentiles: (f32, f32),
}

impl RgbRange {
    /// Percentile range of each component over the cells of all given projections (jointly, so several images
    /// share one colour scale). Percentiles are in [0, 100] with `low < high`; 0 and 100 give min and max.
    pub fn fit(
        projections: &[&PcaProjection],
        low_percentile: f32,
        high_percentile: f32,
    ) -> Result<Self> {
        if !(0.0..=100.0).contains(&low_percentile)
            || !(0.0..=100.0).contains(&high_percentile)
            || low_percentile >= high_percentile
        {
            return Err(Error::invalid(format!(
                "colour range percentiles must satisfy 0 <= low < high <= 100, got {low_percentile} and {high_percentile}"
            )));
        }
        let first = projections
            .first()
            .ok_or_else(|| Error::invalid("colour range needs at least one projection"))?;
        let k = first.scores.len();
        if projections.iter().any(|p| p.scores.len() != k) {
            return Err(Error::invalid(
                "colour range: projections have different numbers of components",
            ));
        }
        let mut low = Vec::with_capacity(k);
        let mut high = Vec::with_capacity(k);
        for component in 0..k {
            let mut values: Vec<f32> = projections
                .iter()
                .flat_map(|p| p.scores[component].iter().copied())
                .collect();
            if values.is_empty() {
                return Err(Error::invalid("colour range: projections have no cells"));
            }
            values.sort_by(f32::total_cmp);
            low.push(percentile_sorted(&values, low_percentile));
            high.push(percentile_sorted(&values, high_percentile));
        }
        Ok(Self {
            low,
            high,
            percentiles: (low_percentile, high_percentile),
        })
    }

    /// A score scaled to [0, 1] for a component (0.5 when the range is empty).
    pub fn scale(&self, component: usize, score: f32) -> f32 {
        let (lo, hi) = (
            self.low.get(component).copied().unwrap_or(0.0),
            self.high.get(component).copied().unwrap_or(0.0),
        );
        if hi > lo {
            ((score - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }
}

/// numpy's default ("linear") percentile of sorted values.
fn percentile_sorted(sorted: &[f32], percentile: f32) -> f32 {
    let position = f64::from(percentile) / 100.0 * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    (f64::from(sorted[below]) + fraction * (f64::from(sorted[above]) - f64::from(sorted[below])))
        as f32
}

/// Components 0, 1, 2 as R, G, B in [0, 1], `[h, w, 3]` interleaved.
pub fn to_rgb_f32(projection: &PcaProjection, range: &RgbRange) -> Result<Vec<f32>> {
    if projection.scores.len() < 3 || range.low.len() < 3 {
        return Err(Error::invalid(format!(
            "PCA to RGB needs 3 components, the projection has {}",
            projection.scores.len()
        )));
    }
    let cells = projection.grid.cells();
    let mut rgb = Vec::with_capacity(cells * 3);
    for cell in 0..cells {
        for component in 0..3 {
            rgb.push(
                range.scale(
                    component,
                    projection.scores[component]
                        .get(cell)
                        .copied()
                        .unwrap_or(0.0),
                ),
            );
        }
    }
    Ok(rgb)
}

/// [`to_rgb_f32`] rounded to bytes.
pub fn to_rgb_u8(projection: &PcaProjection, range: &RgbRange) -> Result<Vec<u8>> {
    Ok(to_rgb_f32(projection, range)?
        .into_iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect())
}

/// Which side of the threshold on the first component is foreground.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForegroundSide {
    /// Scaled score above the threshold.
    High,
    /// Scaled score below the threshold.
    Low,
    /// The side that covers fewer cells on the border of the grid (objects rarely fill the border);
    /// `High` on a tie.
    Auto,
}

/// Settings of the foreground mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForegroundOptions {
    /// Threshold on the first component's score scaled to [0, 1] by the colour range.
    pub threshold: f32,
    pub side: ForegroundSide,
}

impl Default for ForegroundOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            side: ForegroundSide::Auto,
        }
    }
}

/// Foreground mask (row-major, one per cell) from the first component; also says which side was taken.
pub fn foreground_mask(
    projection: &PcaProjection,
    range: &RgbRange,
    options: &ForegroundOptions,
) -> Result<(Vec<bool>, ForegroundSide)> {
    let first = projection
        .scores
        .first()
        .ok_or_else(|| Error::invalid("foreground mask needs a first component"))?;
    if !options.threshold.is_finite() {
        return Err(Error::invalid(format!(
            "foreground threshold must be finite, got {}",
            options.threshold
        )));
    }
    let high: Vec<bool> = first
        .iter()
        .map(|&s| range.scale(0, s) > options.threshold)
        .collect();
    let side = match options.side {
        ForegroundSide::Auto => {
            let grid = projection.grid;
            let border: Vec<usize> = (0..grid.cells())
                .filter(|&cell| {
                    let (r, c) = grid.row_col(cell);
                    r == 0 || c == 0 || r + 1 == grid.height || c + 1 == grid.width
                })
                .collect();
            let high_on_border = border
                .iter()
                .filter(|&&cell| high.get(cell).copied().unwrap_or(false))
                .count();
            if 2 * high_on_border > border.len() {
                ForegroundSide::Low
            } else {
                ForegroundSide::High
            }
        }
        side => side,
    };
    let mask = match side {
        ForegroundSide::Low => first
            .iter()
            .map(|&s| range.scale(0, s) < options.threshold)
            .collect(),
        _ => high,
    };
    Ok((mask, side))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_two_channel_fit() {
        // Samples on the line y = 2x (plus the mean (1, 1)): one component along (1, 2)/sqrt5.
        let xs = [-2.0f32, -1.0, 0.0, 1.0, 2.0, 3.0];
        let mut data: Vec<f32> = xs.iter().map(|x| x + 1.0).collect();
        data.extend(xs.iter().map(|x| 2.0 * x + 1.0));
        let map = FeatureMap::new(2, 2, 3, data).unwrap();
        let basis = PcaBasis::fit(
            &[&map],
            &PcaOptions {
                components: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let axis = &basis.components[0];
        assert!(
            (axis[0] - 1.0 / 5f32.sqrt()).abs() < 1e-6
                && (axis[1] - 2.0 / 5f32.sqrt()).abs() < 1e-6,
            "{axis:?}"
        );
        assert!((basis.explained_variance_ratio[0] - 1.0).abs() < 1e-9);
        assert!(basis.explained_variance[1].abs() < 1e-9);
        // Mean of xs is 0.5, so the mean is (1.5, 2.0); variance along the axis is 5 * var(xs) = 5 * 3.5.
        assert_eq!(basis.mean, vec![1.5, 2.0]);
        assert!((basis.explained_variance[0] - 17.5).abs() < 1e-4);
        let projection = basis.project(&map).unwrap();
        assert!((projection.scores[0][0] - (-2.5 * 5f32.sqrt())).abs() < 1e-5);
    }

    #[test]
    fn percentiles_like_numpy() {
        // np.percentile([1, 2, 3, 4], [10, 50, 99]) == [1.3, 2.5, 3.97]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile_sorted(&v, 10.0) - 1.3).abs() < 1e-6);
        assert!((percentile_sorted(&v, 50.0) - 2.5).abs() < 1e-6);
        assert!((percentile_sorted(&v, 99.0) - 3.97).abs() < 1e-6);
    }

    #[test]
    fn foreground_takes_the_side_away_from_the_border() {
        // A 4x4 grid whose centre 2x2 block has a low first score.
        let mut first = vec![1.0f32; 16];
        for cell in [5, 6, 9, 10] {
            first[cell] = -1.0;
        }
        let projection = PcaProjection {
            grid: GridSize::new(4, 4),
            scores: vec![first],
        };
        let range = RgbRange::fit(&[&projection], 0.0, 100.0).unwrap();
        let (mask, side) =
            foreground_mask(&projection, &range, &ForegroundOptions::default()).unwrap();
        assert_eq!(side, ForegroundSide::Low);
        assert_eq!(mask.iter().filter(|m| **m).count(), 4);
        assert!(mask[5] && mask[10] && !mask[0]);
        let forced = ForegroundOptions {
            side: ForegroundSide::High,
            ..Default::default()
        };
        assert_eq!(
            foreground_mask(&projection, &range, &forced)
                .unwrap()
                .0
                .iter()
                .filter(|m| **m)
                .count(),
            12
        );
    }

    #[test]
    fn errors() {
        let a = FeatureMap::new(2, 1, 3, vec![0.0; 6]).unwrap();
        let b = FeatureMap::new(3, 1, 3, vec![0.0; 9]).unwrap();
        assert!(PcaBasis::fit(&[&a, &b], &PcaOptions::default()).is_err());
        assert!(
            PcaBasis::fit(&[&a], &PcaOptions::default()).is_err(),
            "3 components of 2 channels"
        );
        assert!(PcaBasis::fit(&[], &PcaOptions::default()).is_err());
        let nan = FeatureMap::new(3, 1, 3, vec![f32::NAN; 9]).unwrap();
        assert!(PcaBasis::fit(&[&nan], &PcaOptions::default()).is_err());
        let projection = PcaProjection {
            grid: GridSize::new(1, 1),
            scores: vec![vec![0.0]],
        };
        assert!(RgbRange::fit(&[&projection], 99.0, 1.0).is_err());
    }
}
