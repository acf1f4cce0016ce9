//! A feature map with every cell's channel vector scaled to unit L2 norm: computed once per map and kept,
//! so that each click or frame costs only dot products.

use std::sync::Arc;

use crate::analysis::coords::GridSize;
use crate::error::Result;
use crate::features::map::FeatureMap;

/// Norms below this are treated as this (like PyTorch's `F.normalize(eps=1e-12)`), so an all-zero cell stays
/// zero and has cosine 0 with everything.
pub const NORM_EPS: f32 = 1e-12;

/// A feature map and its unit-normalised copy (same `[C,h,w]` channel-major layout).
#[derive(Clone, Debug)]
pub struct NormalizedMap {
    raw: FeatureMap,
    unit: Arc<Vec<f32>>,
}

impl NormalizedMap {
    /// Normalise a map; errors (naming `name`) on an empty map or a NaN/inf value.
    pub fn new(map: &FeatureMap, name: &str) -> Result<Self> {
        map.ensure_finite(name)?;
        let unit = l2_normalize_cells(&map.data, map.channels, map.cells());
        Ok(Self {
            raw: map.clone(),
            unit: Arc::new(unit),
        })
    }

    /// The map as given (shared, not copied).
    pub fn raw(&self) -> &FeatureMap {
        &self.raw
    }

    /// The unit vectors, `[C, h*w]` channel-major: channel c of cell n at `c*cells + n`.
    pub fn unit(&self) -> &[f32] {
        &self.unit
    }

    /// The unit vectors as a feature map (shares the buffer).
    pub fn unit_map(&self) -> FeatureMap {
        FeatureMap {
            channels: self.raw.channels,
            height: self.raw.height,
            width: self.raw.width,
            data: self.unit.clone(),
        }
    }

    pub fn channels(&self) -> usize {
        self.raw.channels
    }

    pub fn grid(&self) -> GridSize {
        GridSize::new(self.raw.height, self.raw.width)
    }

    pub fn cells(&self) -> usize {
        self.raw.cells()
    }

    /// The unit vector of one cell (row-major index), gathered across channels.
    pub fn cell_vector(&self, cell: usize) -> Vec<f32> {
        let n = self.cells();
        (0..self.channels())
            .map(|c| self.unit.get(c * n + cell).copied().unwrap_or(0.0))
            .collect()
    }

    /// Cosine similarity of a unit vector with every cell: `[h*w]`, row-major.
    pub(crate) fn dot_all(&self, vector: &[f32]) -> Vec<f32> {
        dot_cells(&self.unit, self.cells(), vector)
    }
}

/// Scale each cell's vector (`data` is `[C, cells]` channel-major) to unit norm.
pub(crate) fn l2_normalize_cells(data: &[f32], channels: usize, cells: usize) -> Vec<f32> {
    let mut sum_squares = vec![0f32; cells];
    for row in data.chunks_exact(cells).take(channels) {
        for (s, &v) in sum_squares.iter_mut().zip(row) {
            *s += v * v;
        }
    }
    let inverse: Vec<f32> = sum_squares
        .iter()
        .map(|s| 1.0 / s.sqrt().max(NORM_EPS))
        .collect();
    let mut unit = Vec::with_capacity(data.len());
    for row in data.chunks_exact(cells).take(channels) {
        unit.extend(row.iter().zip(&inverse).map(|(v, inv)| v * inv));
    }
    unit
}

/// Scale a vector to unit norm (zero stays zero).
pub(crate) fn l2_normalize(vector: &mut [f32]) {
    let norm = vector
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(NORM_EPS);
    vector.iter_mut().for_each(|v| *v /= norm);
}

/// `out[n] = sum_c vector[c] * data[c*cells + n]`: one pass over contiguous channel rows.
pub(crate) fn dot_cells(data: &[f32], cells: usize, vector: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; cells];
    for (row, &weight) in data.chunks_exact(cells).zip(vector) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += weight * v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_norm_and_zero_cells() {
        // Two channels, three cells: (3,4), (0,0), (-1,0).
        let map = FeatureMap::new(2, 1, 3, vec![3.0, 0.0, -1.0, 4.0, 0.0, 0.0]).unwrap();
        let n = NormalizedMap::new(&map, "m").unwrap();
        assert_eq!(n.unit(), &[0.6, 0.0, -1.0, 0.8, 0.0, 0.0]);
        assert_eq!(n.cell_vector(0), vec![0.6, 0.8]);
        assert_eq!(n.dot_all(&[0.6, 0.8]), vec![1.0, 0.0, -0.6]);
    }

    #[test]
    fn refuses_nan_and_empty() {
        let map = FeatureMap::new(1, 1, 2, vec![1.0, f32::NAN]).unwrap();
        let err = NormalizedMap::new(&map, "target map 1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target map 1") && err.contains("column 1"),
            "{err}"
        );
        let empty = FeatureMap::new(0, 2, 2, vec![]).unwrap();
        assert!(NormalizedMap::new(&empty, "m").is_err());
    }
}
