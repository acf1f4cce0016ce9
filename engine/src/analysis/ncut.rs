//! Recursive normalized cut, after DiffCut (Couairon et al. 2024).
//!
//! Affinity: cosine similarity of the unit feature vectors of all cells, min-max normalised over the whole
//! matrix to [0, 1], raised to the power alpha (10 by default: only strong similarities keep weight). A part of
//! the grid (at first all of it) is split in two by the Fiedler vector: the generalised eigenvector
//! `y = D^-1/2 v` of the second smallest eigenvalue of the normalised Laplacian `I - D^-1/2 W D^-1/2`, on the
//! affinity restricted to that part, with `y`'s largest-magnitude entry made positive. The threshold on `y`
//! is the one that minimises `NCut = cut(A,B)/assoc(A,V) + cut(A,B)/assoc(B,V)` over every split between
//! consecutive distinct values of `y` (DiffCut tries 100 evenly spaced thresholds; the exhaustive sweep finds
//! a cut at least as good). The split is kept while its NCut is below tau (0.5 by default), and both halves
//! are split again the same way.

use std::borrow::Cow;

use candle_core::{Device, Tensor};

use crate::analysis::coords::GridSize;
use crate::analysis::eigen::{top_eigenpairs, EigenSettings};
use crate::analysis::labels::LabelMap;
use crate::analysis::normalized::l2_normalize_cells;
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// Settings of the recursive cut.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NCutOptions {
    /// Exponent of the normalised affinity.
    pub alpha: f32,
    /// A split is kept when its NCut is below this.
    pub tau: f64,
    /// Parts with fewer cells are not split further (at least 2).
    pub min_cells: usize,
    /// No split that would make more segments than this.
    pub max_segments: usize,
    /// Relative residual at which the Fiedler vector counts as converged.
    pub eigen_tolerance: f64,
    pub eigen_max_iterations: usize,
}

impl Default for NCutOptions {
    fn default() -> Self {
        Self {
            alpha: 10.0,
            tau: 0.5,
            min_cells: 2,
            max_segments: 64,
            eigen_tolerance: 1e-5,
            eigen_max_iterations: 1000,
        }
    }
}

/// One attempted split, in the order they were tried (depth-first, lower side of the threshold first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cut {
    pub depth: usize,
    pub cells: usize,
    /// The smallest NCut over the thresholds (infinite when the part could not be split at all).
    pub ncut: f64,
    pub accepted: bool,
}

/// The segmentation: labels numbered by first appearance in raster order.
#[derive(Clone, Debug, PartialEq)]
pub struct NCutSegmentation {
    pub labels: LabelMap,
    pub segments: usize,
    pub cuts: Vec<Cut>,
}

/// Segment one feature map. Errors on an empty map, NaN/inf, or alpha/tau that are not positive numbers.
pub fn recursive_ncut(map: &FeatureMap, options: &NCutOptions) -> Result<NCutSegmentation> {
    check(map, options)?;
    let n = map.cells();
    let affinity = affinity(map, options.alpha)?;
    let mut leaves: Vec<Vec<usize>> = Vec::new();
    let mut pending: Vec<(Vec<usize>, usize)> = vec![((0..n).collect(), 0)];
    let mut cuts = Vec::new();
    while let Some((part, depth)) = pending.pop() {
        let room = leaves.len() + pending.len() + 2 <= options.max_segments;
        if part.len() < options.min_cells.max(2) || !room {
            leaves.push(part);
            continue;
        }
        match bipartition(&affinity, n, &part, options)? {
            Some(Split { low, high, ncut }) if ncut < options.tau => {
                cuts.push(Cut {
                    depth,
                    cells: part.len(),
                    ncut,
                    accepted: true,
                });
                pending.push((high, depth + 1));
                pending.push((low, depth + 1));
            }
            found => {
                let ncut = found.map_or(f64::INFINITY, |f| f.ncut);
                cuts.push(Cut {
                    depth,
                    cells: part.len(),
                    ncut,
                    accepted: false,
                });
                leaves.push(part);
            }
        }
    }
    let mut labels = vec![0u32; n];
    for (label, leaf) in leaves.iter().enumerate() {
        for &cell in leaf {
            labels[cell] = label as u32;
        }
    }
    let labels = LabelMap {
        grid: GridSize::new(map.height, map.width),
        labels,
    }
    .canonical();
    Ok(NCutSegmentation {
        segments: leaves.len(),
        labels,
        cuts,
    })
}

/// The Fiedler vector of the whole grid (row-major, largest |value| positive): the relaxed first cut, worth
/// showing as a heat map. All zeros when the affinity has no weight.
pub fn fiedler_vector(map: &FeatureMap, options: &NCutOptions) -> Result<Vec<f32>> {
    check(map, options)?;
    let n = map.cells();
    let weights = affinity(map, options.alpha)?;
    Ok(match fiedler_of_part(&weights, n, options)? {
        Some(y) => y.into_iter().map(|v| v as f32).collect(),
        None => vec![0.0; n],
    })
}

fn check(map: &FeatureMap, options: &NCutOptions) -> Result<()> {
    map.ensure_finite("NCut feature map")?;
    if !(options.alpha > 0.0 && options.alpha.is_finite()) {
        return Err(Error::invalid(format!(
            "NCut alpha must be a positive number, got {}",
            options.alpha
        )));
    }
    if !(options.tau > 0.0 && options.tau.is_finite()) {
        return Err(Error::invalid(format!(
            "NCut tau must be a positive number, got {}",
            options.tau
        )));
    }
    Ok(())
}

/// DiffCut's affinity, `[n, n]` row-major: ((cos - min) / (max - min))^alpha; all ones when every cosine is equal.
pub fn affinity(map: &FeatureMap, alpha: f32) -> Result<Vec<f32>> {
    let n = map.cells();
    let unit = l2_normalize_cells(&map.data, map.channels, n);
    let u = Tensor::from_vec(unit, (map.channels, n), &Device::Cpu)?;
    let mut cosine = u.t()?.matmul(&u)?.flatten_all()?.to_vec1::<f32>()?;
    let (lo, hi) = cosine
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    // Integer exponents (DiffCut's 10) by repeated multiplication: several times faster than powf.
    let integer_alpha = (alpha.fract() == 0.0 && alpha <= 64.0).then_some(alpha as i32);
    for v in cosine.iter_mut() {
        let x = if range > 0.0 {
            ((*v - lo) / range).clamp(0.0, 1.0)
        } else {
            1.0
        };
        *v = match integer_alpha {
            Some(power) => x.powi(power),
            None => x.powf(alpha),
        };
    }
    Ok(cosine)
}

/// A two-way split of a part: the cells on each side of the threshold (global indices) and its NCut.
struct Split {
    low: Vec<usize>,
    high: Vec<usize>,
    ncut: f64,
}

/// The best two-way split of `part` (cells of the full `n`-cell affinity), or
/// None when no threshold separates it (all Fiedler values equal, or a side without weight).
fn bipartition(
    affinity: &[f32],
    n: usize,
    part: &[usize],
    options: &NCutOptions,
) -> Result<Option<Split>> {
    let m = part.len();
    let weights: Cow<[f32]> = if m == n {
        Cow::Borrowed(affinity)
    } else {
        Cow::Owned(
            part.iter()
                .flat_map(|&i| part.iter().map(move |&j| affinity[i * n + j]))
                .collect(),
        )
    };
    let fiedler = match fiedler_of_part(&weights, m, options)? {
        Some(y) => y,
        None => return Ok(None),
    };
    let degrees: Vec<f64> = weights
        .chunks_exact(m)
        .map(|row| row.iter().map(|&w| f64::from(w)).sum())
        .collect();
    let total: f64 = degrees.iter().sum();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| fiedler[a].total_cmp(&fiedler[b]).then(a.cmp(&b)));
    // Sweep: move cells to the low side in order of y, keeping cut and assoc up to date in O(m) per cell.
    let mut low = vec![false; m];
    let (mut cut, mut assoc_low) = (0f64, 0f64);
    let mut best: Option<(usize, f64)> = None;
    for t in 0..m.saturating_sub(1) {
        let i = order[t];
        let row = &weights[i * m..(i + 1) * m];
        let to_low: f64 = row
            .iter()
            .zip(&low)
            .filter(|(_, &l)| l)
            .map(|(&w, _)| f64::from(w))
            .sum();
        let to_high = degrees[i] - f64::from(row[i]) - to_low;
        cut = (cut - to_low + to_high).max(0.0);
        low[i] = true;
        assoc_low += degrees[i];
        if fiedler[order[t]] == fiedler[order[t + 1]] {
            continue; // no threshold separates equal values
        }
        let assoc_high = total - assoc_low;
        if assoc_low <= 0.0 || assoc_high <= 0.0 {
            continue;
        }
        let ncut = cut / assoc_low + cut / assoc_high;
        if best.is_none_or(|(_, b)| ncut < b) {
            best = Some((t, ncut));
        }
    }
    Ok(best.map(|(t, ncut)| {
        let low_cells = order[..=t].iter().map(|&i| part[i]).collect();
        let high_cells = order[t + 1..].iter().map(|&i| part[i]).collect();
        Split {
            low: low_cells,
            high: high_cells,
            ncut,
        }
    }))
}

/// `y = D^-1/2 v` for the second largest eigenvector v of `D^-1/2 W D^-1/2` (the largest, `D^1/2 1`, is
/// known and deflated; the iteration runs on the matrix plus the identity, whose spectrum is in [0, 2]).
/// Sign: largest |y| positive. None when the part has no weight at all.
fn fiedler_of_part(weights: &[f32], m: usize, options: &NCutOptions) -> Result<Option<Vec<f64>>> {
    let degrees: Vec<f64> = weights
        .chunks_exact(m)
        .map(|row| row.iter().map(|&w| f64::from(w)).sum())
        .collect();
    let inv_sqrt: Vec<f64> = degrees
        .iter()
        .map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 })
        .collect();
    let sqrt_degrees: Vec<f64> = degrees.iter().map(|&d| d.max(0.0).sqrt()).collect();
    let norm = sqrt_degrees.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm <= 0.0 {
        return Ok(None);
    }
    let known: Vec<f64> = sqrt_degrees.iter().map(|x| x / norm).collect();
    let mut normalized = Vec::with_capacity(m * m);
    for (i, row) in weights.chunks_exact(m).enumerate() {
        normalized.extend(
            row.iter()
                .zip(&inv_sqrt)
                .map(|(&w, &s)| (f64::from(w) * inv_sqrt[i] * s) as f32),
        );
    }
    let matrix = Tensor::from_vec(normalized, (m, m), &Device::Cpu)?;
    let settings = EigenSettings {
        count: 1,
        oversample: 7,
        max_iterations: options.eigen_max_iterations,
        tolerance: options.eigen_tolerance,
        shift: 1.0,
        seed: 0x5EED_0002,
    };
    let top = top_eigenpairs(&matrix, &[known], &settings)?;
    let v = top.vectors.into_iter().next().unwrap_or_default();
    let mut y: Vec<f64> = v.iter().zip(&inv_sqrt).map(|(a, b)| a * b).collect();
    let pivot = y.iter().enumerate().fold(
        0,
        |best, (i, v)| if v.abs() > y[best].abs() { i } else { best },
    );
    if y.get(pivot).is_some_and(|v| *v < 0.0) {
        y.iter_mut().for_each(|v| *v = -*v);
    }
    Ok(Some(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::rng::SplitMix64;

    /// A map whose left `split` columns carry direction a and the rest direction b, plus noise.
    fn two_blocks(h: usize, w: usize, split: usize, seed: u64) -> FeatureMap {
        let channels = 6;
        let mut rng = SplitMix64::new(seed);
        let a = [1.0, 0.2, 0.0, 0.3, 0.0, 0.1];
        let b = [0.0, 0.1, 1.0, 0.0, 0.4, 0.2];
        let mut data = vec![0f32; channels * h * w];
        for y in 0..h {
            for x in 0..w {
                let base = if x < split { &a } else { &b };
                for c in 0..channels {
                    data[(c * h + y) * w + x] = base[c] + 0.05 * (rng.next_f64() as f32 - 0.5);
                }
            }
        }
        FeatureMap::new(channels, h, w, data).unwrap()
    }

    #[test]
    fn splits_a_planted_two_block_affinity() {
        let map = two_blocks(6, 8, 3, 1);
        let result = recursive_ncut(&map, &NCutOptions::default()).unwrap();
        assert_eq!(result.segments, 2, "{:?}", result.cuts);
        for y in 0..6 {
            for x in 0..8 {
                assert_eq!(result.labels.labels[y * 8 + x], u32::from(x >= 3));
            }
        }
        assert!(
            result.cuts[0].accepted && result.cuts[0].ncut < 0.05,
            "{:?}",
            result.cuts
        );
        assert!(result.cuts[1..].iter().all(|c| !c.accepted));
        // A tau below the first cut's NCut keeps everything in one segment.
        let strict = NCutOptions {
            tau: result.cuts[0].ncut * 0.5,
            ..Default::default()
        };
        let one = recursive_ncut(&map, &strict).unwrap();
        assert_eq!(one.segments, 1);
        assert!(one.labels.labels.iter().all(|&l| l == 0));
    }

    #[test]
    fn affinity_is_min_max_normalised() {
        let map = FeatureMap::new(2, 1, 3, vec![1.0, 0.0, -1.0, 0.0, 1.0, 0.0]).unwrap();
        let w = affinity(&map, 2.0).unwrap();
        // cosines: diag 1, (0,1) 0, (0,2) -1, (1,2) 0 -> normalised 1, .5, 0 -> squared 1, .25, 0
        assert_eq!(w, vec![1.0, 0.25, 0.0, 0.25, 1.0, 0.25, 0.0, 0.25, 1.0]);
    }

    #[test]
    fn errors_and_tiny_maps() {
        let one_cell = FeatureMap::new(3, 1, 1, vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            recursive_ncut(&one_cell, &NCutOptions::default())
                .unwrap()
                .segments,
            1
        );
        let constant = FeatureMap::new(2, 2, 2, vec![1.0; 8]).unwrap();
        assert_eq!(
            recursive_ncut(&constant, &NCutOptions::default())
                .unwrap()
                .segments,
            1
        );
        let nan = FeatureMap::new(1, 1, 2, vec![f32::NAN, 0.0]).unwrap();
        assert!(recursive_ncut(&nan, &NCutOptions::default()).is_err());
        let bad = NCutOptions {
            alpha: -1.0,
            ..Default::default()
        };
        assert!(recursive_ncut(&constant, &bad).is_err());
    }
}
