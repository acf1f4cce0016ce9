//! Attention maps aggregated as DAAM does it (Tang et al., "What the DAAM", castorini/daam): for
//! each chosen layer, the map of a token (one column of its cross-attention) or of a point (the
//! self-attention row of the cell under it) is upsampled bicubically to a common grid and
//! clamped at 0 (DAAM's fix for the cubic's undershoot), summed over the heads (or one head) and
//! over the layers with a weight each; the weighted mean is then min-max normalised to [0, 1].

use crate::analysis::aggregate::AggregateGrid;
use crate::analysis::coords::{cell_of, GridSize, ImagePoint, ImageSize};
use crate::analysis::resize::resize_plane_bicubic;
use crate::error::{Error, Result};
use crate::features::attention::AttentionMap;
use crate::model::attention_probs::AttentionKind;

/// What the aggregated map shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionTarget {
    /// Where the prompt token at this index lands: the cross-attention layers' column of it.
    Token(usize),
    /// Where a point looks: the self-attention layers' row of the cell under it.
    Point(ImagePoint),
}

/// How the layers are combined.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionAggregation {
    /// One head's maps only (layers with fewer heads are left out); None sums every head.
    pub head: Option<usize>,
    /// The grid the layers' maps are upsampled to: the finest of theirs, or a chosen size (the
    /// image's, for maps at image resolution).
    pub grid: AggregateGrid,
}

/// An aggregated attention map.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionHeatmap {
    pub grid: GridSize,
    /// Row-major, min-max normalised to [0, 1] (all 0 when the map is flat).
    pub values: Vec<f32>,
    /// The weighted mean probability's smallest and largest value, before normalising.
    pub range: (f32, f32),
    /// The layers used, in order.
    pub layers: Vec<String>,
    /// What was done, for captions.
    pub description: String,
}

/// Aggregate `layers` (each map with its weight, >= 0) for `target` on an image of `image`
/// pixels. Only the layers of the target's kind are used (cross-attention for a token,
/// self-attention for a point); none of them is an error.
pub fn aggregate_attention(
    layers: &[(&AttentionMap, f32)],
    target: AttentionTarget,
    image: ImageSize,
    options: &AttentionAggregation,
) -> Result<AttentionHeatmap> {
    let kind = match target {
        AttentionTarget::Token(_) => AttentionKind::CrossAttention,
        AttentionTarget::Point(_) => AttentionKind::SelfAttention,
    };
    let used: Vec<(&AttentionMap, f32)> = layers
        .iter()
        .filter(|(m, _)| m.kind == kind && options.head.is_none_or(|h| h < m.heads))
        .copied()
        .collect();
    if used.is_empty() {
        return Err(Error::invalid(match options.head {
            Some(h) => format!(
                "no {}-attention layer with a head {h} is chosen",
                kind.name()
            ),
            None => format!("no {}-attention layer is chosen", kind.name()),
        }));
    }
    for (map, weight) in &used {
        if !(weight.is_finite() && *weight >= 0.0) {
            return Err(Error::invalid(format!(
                "attention layer `{}`: weight must be a number >= 0, got {weight}",
                map.module
            )));
        }
    }
    let total_weight: f32 = used
        .iter()
        .map(|(m, w)| w * heads_of(m, options.head).len() as f32)
        .sum();
    if total_weight <= 0.0 {
        return Err(Error::invalid("attention: every layer's weight is 0"));
    }
    let grid = match options.grid {
        AggregateGrid::Size(size) => size,
        AggregateGrid::Finest => used
            .iter()
            .map(|(m, _)| GridSize::new(m.grid.0, m.grid.1))
            .max_by_key(|g| g.cells())
            .unwrap_or(GridSize::new(0, 0)),
    };
    if grid.cells() == 0 {
        return Err(Error::invalid("attention: the common grid is empty"));
    }
    let mut sum = vec![0f32; grid.cells()];
    for (map, weight) in &used {
        let from = GridSize::new(map.grid.0, map.grid.1);
        for head in heads_of(map, options.head) {
            let plane = plane_of(map, head, target, image)?;
            let up = resize_plane_bicubic(&plane, from, grid);
            for (s, v) in sum.iter_mut().zip(up) {
                *s += weight * v.max(0.0);
            }
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| s / total_weight).collect();
    let lo = mean.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = mean.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let values = if hi > lo {
        mean.iter().map(|v| (v - lo) / (hi - lo)).collect()
    } else {
        vec![0.0; mean.len()]
    };
    let weights: Vec<String> = used.iter().map(|(_, w)| format!("{w}")).collect();
    let what = match target {
        AttentionTarget::Token(t) => format!("token {t}'s cross-attention"),
        AttentionTarget::Point(p) => format!(
            "the self-attention row of the cell under ({:.1}, {:.1})",
            p.x, p.y
        ),
    };
    let heads = match options.head {
        Some(h) => format!("head {h}"),
        None => "all heads".to_string(),
    };
    let description = format!(
        "DAAM: {what} in {} layer{}, each upsampled bicubically to {}x{} and clamped at 0, summed over {heads} and the layers (weights {}), min-max normalised (mean probability {lo:.4}..{hi:.4})",
        used.len(),
        if used.len() == 1 { "" } else { "s" },
        grid.width,
        grid.height,
        weights.join(", "),
    );
    Ok(AttentionHeatmap {
        grid,
        values,
        range: (lo, hi),
        layers: used.iter().map(|(m, _)| m.module.clone()).collect(),
        description,
    })
}

fn heads_of(map: &AttentionMap, head: Option<usize>) -> Vec<usize> {
    match head {
        Some(h) => vec![h],
        None => (0..map.heads).collect(),
    }
}

/// One head's map of the target on the layer's own grid.
fn plane_of(
    map: &AttentionMap,
    head: usize,
    target: AttentionTarget,
    image: ImageSize,
) -> Result<Vec<f32>> {
    match target {
        AttentionTarget::Token(token) => map.column(head, token).ok_or_else(|| {
            Error::invalid(format!(
                "attention layer `{}` has no token {token} (it has {})",
                map.module, map.keys
            ))
        }),
        AttentionTarget::Point(point) => {
            let grid = GridSize::new(map.grid.0, map.grid.1);
            let (row, column) = cell_of(point, image, grid);
            let query = row * grid.width + column;
            map.row_of(head, query).map(<[f32]>::to_vec).ok_or_else(|| {
                Error::invalid(format!(
                    "attention layer `{}` does not hold the row of the point ({}, {})",
                    map.module, point.x, point.y
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cross(module: &str, heads: usize, grid: (usize, usize), probs: Vec<f32>) -> AttentionMap {
        let keys = probs.len() / (heads * grid.0 * grid.1);
        AttentionMap {
            module: module.into(),
            kind: AttentionKind::CrossAttention,
            heads,
            grid,
            keys,
            row: None,
            probs: Arc::new(probs),
        }
    }

    #[test]
    fn one_layer_at_its_own_grid_is_its_column_normalised() {
        // 1 head, 2x2 queries, 2 keys: token 1's column is [0.1, 0.3, 0.2, 0.5].
        let map = cross("a", 1, (2, 2), vec![0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.5, 0.5]);
        let options = AttentionAggregation {
            head: None,
            grid: AggregateGrid::Finest,
        };
        let image = ImageSize::new(8, 8);
        let out = aggregate_attention(&[(&map, 1.0)], AttentionTarget::Token(1), image, &options)
            .unwrap();
        let expected = [0.0, 0.5, 0.25, 1.0];
        for (a, b) in out.values.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{:?}", out.values);
        }
        assert_eq!(out.range, (0.1, 0.5));
        assert!(out
            .description
            .starts_with("DAAM: token 1's cross-attention in 1 layer"));
        // The wrong kind of target, a missing token, a head the layer lacks: errors.
        let point = AttentionTarget::Point(ImagePoint::new(1.0, 1.0));
        let e = aggregate_attention(&[(&map, 1.0)], point, image, &options).unwrap_err();
        assert!(e.to_string().contains("no self-attention layer"), "{e}");
        let e = aggregate_attention(&[(&map, 1.0)], AttentionTarget::Token(2), image, &options);
        assert!(e.unwrap_err().to_string().contains("has no token 2"));
        let one_head = AttentionAggregation {
            head: Some(1),
            ..options
        };
        let e = aggregate_attention(&[(&map, 1.0)], AttentionTarget::Token(1), image, &one_head);
        assert!(e.unwrap_err().to_string().contains("with a head 1"));
    }

    #[test]
    fn layers_and_heads_are_weighted_sums_and_points_pick_their_cell() {
        // Two heads of a 1x2 self-attention grid (keys = the 2 cells); the point is in cell 1.
        let map = AttentionMap {
            module: "s".into(),
            kind: AttentionKind::SelfAttention,
            heads: 2,
            grid: (1, 2),
            keys: 2,
            row: None,
            // head 0: rows [1, 0], [0.2, 0.8]; head 1: rows [0.5, 0.5], [0.6, 0.4].
            probs: Arc::new(vec![1.0, 0.0, 0.2, 0.8, 0.5, 0.5, 0.6, 0.4]),
        };
        let options = AttentionAggregation {
            head: None,
            grid: AggregateGrid::Finest,
        };
        let point = AttentionTarget::Point(ImagePoint::new(3.0, 0.0));
        let image = ImageSize::new(4, 1);
        let out = aggregate_attention(&[(&map, 2.0)], point, image, &options).unwrap();
        // Mean of [0.2, 0.8] and [0.6, 0.4]: [0.4, 0.6].
        assert!((out.range.0 - 0.4).abs() < 1e-6 && (out.range.1 - 0.6).abs() < 1e-6);
        let head1 = AttentionAggregation {
            head: Some(1),
            ..options
        };
        let out = aggregate_attention(&[(&map, 1.0)], point, image, &head1).unwrap();
        assert!((out.range.0 - 0.4).abs() < 1e-6 && (out.range.1 - 0.6).abs() < 1e-6);
        assert_eq!(out.values, vec![1.0, 0.0]);
        // Only the row of the point held: the same; another point's row: an error.
        let one_row = AttentionMap {
            row: Some(1),
            probs: Arc::new(vec![0.2, 0.8, 0.6, 0.4]),
            ..map.clone()
        };
        let same = aggregate_attention(&[(&one_row, 1.0)], point, image, &options).unwrap();
        let whole = aggregate_attention(&[(&map, 1.0)], point, image, &options).unwrap();
        assert_eq!(same.values, whole.values);
        let other = AttentionTarget::Point(ImagePoint::new(0.0, 0.0));
        let e = aggregate_attention(&[(&one_row, 1.0)], other, image, &options).unwrap_err();
        assert!(e.to_string().contains("does not hold the row"), "{e}");
    }
}
