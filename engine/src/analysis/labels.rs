//! Label maps (one segment or cluster id per cell) and their upsampling to image resolution.

use crate::analysis::coords::{linear_taps, GridSize, ImageSize};
use crate::analysis::normalized::{dot_cells, l2_normalize, l2_normalize_cells};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// One label per cell, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMap {
    pub grid: GridSize,
    pub labels: Vec<u32>,
}

impl LabelMap {
    /// Labels are 0..count; this is the largest label plus one (0 for an empty map).
    pub fn count(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// Renumber labels in order of first appearance in raster order, so equal segmentations compare equal.
    pub fn canonical(&self) -> LabelMap {
        let mut new_id = vec![u32::MAX; self.count()];
        let mut next = 0;
        let labels = self
            .labels
            .iter()
            .map(|&l| {
                let slot = &mut new_id[l as usize];
                if *slot == u32::MAX {
                    *slot = next;
                    next += 1;
                }
                *slot
            })
            .collect();
        LabelMap {
            grid: self.grid,
            labels,
        }
    }

    /// Nearest-cell upsampling to an image: each pixel takes the label of the cell that covers it
    /// (pixel-centre convention of [`crate::analysis::coords`]).
    pub fn upsample_nearest(&self, image: ImageSize) -> Result<LabelMap> {
        image.ensure_nonempty("label upsampling")?;
        let rows = nearest_cells(self.grid.height, image.height);
        let cols = nearest_cells(self.grid.width, image.width);
        let labels = rows
            .iter()
            .flat_map(|&r| cols.iter().map(move |&c| (r, c)))
            .map(|(r, c)| {
                self.labels
                    .get(r * self.grid.width + c)
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        Ok(LabelMap {
            grid: GridSize::new(image.height, image.width),
            labels,
        })
    }
}

/// For each of `to` pixels, the index of the cell that covers it among `from` cells: floor((p+0.5)*from/to).
fn nearest_cells(from: usize, to: usize) -> Vec<usize> {
    (0..to)
        .map(|p| {
            (((p as f64 + 0.5) * from as f64 / to as f64) as usize).min(from.saturating_sub(1))
        })
        .collect()
}

/// Soft upsampling (DiffCut's last step): each segment's embedding is the mean of its cells' unit feature
/// vectors, re-normalised; every pixel takes the segment whose cosine similarity, bilinearly upsampled from
/// the grid, is largest. Upsampling the similarity equals comparing with bilinearly upsampled features,
/// because both are linear, at a fraction of the cost. (DiffCut compares with the un-normalised mean; we
/// normalise so that a segment does not win by the norm of its mean.)
pub fn upsample_by_similarity(
    map: &FeatureMap,
    labels: &LabelMap,
    image: ImageSize,
) -> Result<LabelMap> {
    map.ensure_finite("segmented map")?;
    image.ensure_nonempty("label upsampling")?;
    if labels.grid != GridSize::new(map.height, map.width) || labels.labels.len() != map.cells() {
        return Err(Error::invalid(format!(
            "label map is {}x{}, the feature map {}x{}",
            labels.grid.height, labels.grid.width, map.height, map.width
        )));
    }
    let cells = map.cells();
    let unit = l2_normalize_cells(&map.data, map.channels, cells);
    let count = labels.count();
    let mut embeddings = vec![vec![0f32; map.channels]; count];
    let mut members = vec![0usize; count];
    for &l in &labels.labels {
        members[l as usize] += 1;
    }
    for (c, row) in unit.chunks_exact(cells).enumerate() {
        for (&l, &v) in labels.labels.iter().zip(row) {
            embeddings[l as usize][c] += v;
        }
    }
    // Similarity planes [segment][cell]; unused label ids get none.
    let planes: Vec<Option<Vec<f32>>> = embeddings
        .iter_mut()
        .zip(&members)
        .map(|(e, &m)| {
            (m > 0).then(|| {
                l2_normalize(e);
                dot_cells(&unit, cells, e)
            })
        })
        .collect();
    let grid = labels.grid;
    let rows: Vec<_> = (0..image.height)
        .map(|p| {
            linear_taps(
                (p as f32 + 0.5) * grid.height as f32 / image.height as f32 - 0.5,
                grid.height,
            )
        })
        .collect();
    let cols: Vec<_> = (0..image.width)
        .map(|p| {
            linear_taps(
                (p as f32 + 0.5) * grid.width as f32 / image.width as f32 - 0.5,
                grid.width,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(image.width * image.height);
    for &(y0, y1, wy) in &rows {
        for &(x0, x1, wx) in &cols {
            let mut best = (0u32, f32::NEG_INFINITY);
            for (label, plane) in planes.iter().enumerate() {
                let Some(p) = plane else { continue };
                let at = |y: usize, x: usize| p[y * grid.width + x];
                let top = at(y0, x0) + wx * (at(y0, x1) - at(y0, x0));
                let bottom = at(y1, x0) + wx * (at(y1, x1) - at(y1, x0));
                let s = top + wy * (bottom - top);
                if s > best.1 {
                    best = (label as u32, s);
                }
            }
            out.push(best.0);
        }
    }
    Ok(LabelMap {
        grid: GridSize::new(image.height, image.width),
        labels: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_upsampling_repeats_cells() {
        let labels = LabelMap {
            grid: GridSize::new(1, 2),
            labels: vec![3, 1],
        };
        let up = labels.upsample_nearest(ImageSize::new(4, 2)).unwrap();
        assert_eq!(up.labels, vec![3, 3, 1, 1, 3, 3, 1, 1]);
        assert_eq!(labels.canonical().labels, vec![0, 1]);
    }

    #[test]
    fn soft_upsampling_follows_the_features() {
        // Two cells with orthogonal features: the boundary falls halfway, as with nearest.
        let map = FeatureMap::new(2, 1, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let labels = LabelMap {
            grid: GridSize::new(1, 2),
            labels: vec![0, 1],
        };
        let up = upsample_by_similarity(&map, &labels, ImageSize::new(8, 1)).unwrap();
        assert_eq!(up.labels, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let wrong = LabelMap {
            grid: GridSize::new(2, 1),
            labels: vec![0, 1],
        };
        assert!(upsample_by_similarity(&map, &wrong, ImageSize::new(8, 1)).is_err());
    }
}
