//! Several taps (or timesteps) combined into one descriptor, usable wherever a single tap is.
//!
//! Each map is resized to a common grid (bilinear, PyTorch `align_corners=False`; by default the grid with the
//! most cells), then L2-normalised over its channels per cell, then multiplied by its weight; the channels
//! are concatenated in the order given. Because each normalised part has unit norm, the cosine similarity of
//! two aggregated descriptors is `sum_i w_i^2 cos_i / sum_i w_i^2`: tap i's share of the cosine is
//! `w_i^2 / sum w^2` (the aggregate itself has norm `sqrt(sum w^2)`, which cosine ignores).

use crate::analysis::coords::GridSize;
use crate::analysis::normalized::l2_normalize_cells;
use crate::analysis::resize::resize_bilinear;
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// One input of an aggregate: a map and its weight (>= 0, applied after normalisation).
#[derive(Clone, Copy, Debug)]
pub struct WeightedTap<'a> {
    pub map: &'a FeatureMap,
    pub weight: f32,
}

/// The grid of the aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AggregateGrid {
    /// The input grid with the most cells (the first of equals).
    #[default]
    Finest,
    /// A chosen size.
    Size(GridSize),
}

/// Concatenate normalised, weighted, resized taps into one `[sum C_i, h, w]` map.
pub fn aggregate(taps: &[WeightedTap<'_>], grid: AggregateGrid) -> Result<FeatureMap> {
    if taps.is_empty() {
        return Err(Error::invalid("aggregate needs at least one tap"));
    }
    for (i, tap) in taps.iter().enumerate() {
        tap.map.ensure_finite(&format!("aggregate tap {i}"))?;
        if !(tap.weight >= 0.0 && tap.weight.is_finite()) {
            return Err(Error::invalid(format!(
                "aggregate tap {i}: weight must be a number >= 0, got {}",
                tap.weight
            )));
        }
    }
    if taps.iter().all(|t| t.weight == 0.0) {
        return Err(Error::invalid("aggregate: every weight is 0"));
    }
    let target = match grid {
        AggregateGrid::Size(size) => size,
        AggregateGrid::Finest => taps
            .iter()
            .map(|t| GridSize::new(t.map.height, t.map.width))
            .fold(GridSize::new(0, 0), |best, g| {
                if g.cells() > best.cells() {
                    g
                } else {
                    best
                }
            }),
    };
    if target.cells() == 0 {
        return Err(Error::invalid(format!(
            "aggregate: grid {}x{} is empty",
            target.height, target.width
        )));
    }
    let channels: usize = taps.iter().map(|t| t.map.channels).sum();
    let mut data = Vec::with_capacity(channels * target.cells());
    for tap in taps {
        let resized = resize_bilinear(tap.map, target)?;
        let unit = l2_normalize_cells(&resized.data, resized.channels, target.cells());
        data.extend(unit.into_iter().map(|v| v * tap.weight));
    }
    FeatureMap::new(channels, target.height, target.width, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_share_the_cosine() {
        // Two one-cell taps; cosine of the aggregates = (w1^2 cos1 + w2^2 cos2) / (w1^2 + w2^2).
        let a1 = FeatureMap::new(2, 1, 1, vec![1.0, 0.0]).unwrap();
        let b1 = FeatureMap::new(2, 1, 1, vec![0.0, 3.0]).unwrap(); // cos1 = 0
        let a2 = FeatureMap::new(1, 1, 1, vec![2.0]).unwrap();
        let b2 = FeatureMap::new(1, 1, 1, vec![5.0]).unwrap(); // cos2 = 1
        let (w1, w2) = (1.0f32, 2.0f32);
        let a = aggregate(
            &[
                WeightedTap {
                    map: &a1,
                    weight: w1,
                },
                WeightedTap {
                    map: &a2,
                    weight: w2,
                },
            ],
            AggregateGrid::Finest,
        )
        .unwrap();
        let b = aggregate(
            &[
                WeightedTap {
                    map: &b1,
                    weight: w1,
                },
                WeightedTap {
                    map: &b2,
                    weight: w2,
                },
            ],
            AggregateGrid::Finest,
        )
        .unwrap();
        let dot: f32 = a.data.iter().zip(b.data.iter()).map(|(x, y)| x * y).sum();
        let norm = |m: &FeatureMap| m.data.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = dot / (norm(&a) * norm(&b));
        assert!((cosine - 4.0 / 5.0).abs() < 1e-6);
        assert_eq!(a.channels, 3);
    }

    #[test]
    fn finest_grid_and_errors() {
        let coarse = FeatureMap::new(1, 2, 2, vec![1.0; 4]).unwrap();
        let fine = FeatureMap::new(2, 4, 4, vec![1.0; 32]).unwrap();
        let out = aggregate(
            &[
                WeightedTap {
                    map: &coarse,
                    weight: 1.0,
                },
                WeightedTap {
                    map: &fine,
                    weight: 1.0,
                },
            ],
            AggregateGrid::Finest,
        )
        .unwrap();
        assert_eq!((out.channels, out.height, out.width), (3, 4, 4));
        assert!(aggregate(&[], AggregateGrid::Finest).is_err());
        assert!(aggregate(
            &[WeightedTap {
                map: &coarse,
                weight: -1.0
            }],
            AggregateGrid::Finest
        )
        .is_err());
        assert!(aggregate(
            &[WeightedTap {
                map: &coarse,
                weight: 0.0
            }],
            AggregateGrid::Finest
        )
        .is_err());
        assert!(aggregate(
            &[WeightedTap {
                map: &coarse,
                weight: 1.0
            }],
            AggregateGrid::Size(GridSize::new(0, 2))
        )
        .is_err());
    }
}
