//! Bilinear resizing of feature maps and scalar planes, identical to PyTorch's
//! `F.interpolate(mode="bilinear", align_corners=False, antialias=False)` (the pixel-centre convention of
//! [`crate::analysis::coords`]). Shrinking does not low-pass first, like PyTorch's default.

use crate::analysis::coords::{linear_taps, GridSize};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// For each output index: the two source indices and the weight of the second.
fn axis_taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
    let scale = from as f32 / to as f32;
    (0..to)
        .map(|i| linear_taps((i as f32 + 0.5) * scale - 0.5, from))
        .collect()
}

/// Resize one row-major plane. An empty source gives an empty result.
pub fn resize_plane_bilinear(values: &[f32], from: GridSize, to: GridSize) -> Vec<f32> {
    if from.cells() == 0 || to.cells() == 0 || values.len() < from.cells() {
        return Vec::new();
    }
    let rows = axis_taps(from.height, to.height);
    let cols = axis_taps(from.width, to.width);
    let mut out = Vec::with_capacity(to.cells());
    let mut blended = vec![0f32; from.width];
    for &(y0, y1, wy) in &rows {
        let top = &values[y0 * from.width..(y0 + 1) * from.width];
        let bottom = &values[y1 * from.width..(y1 + 1) * from.width];
        for ((b, &t), &u) in blended.iter_mut().zip(top).zip(bottom) {
            *b = t + wy * (u - t);
        }
        out.extend(
            cols.iter()
                .map(|&(x0, x1, wx)| blended[x0] + wx * (blended[x1] - blended[x0])),
        );
    }
    out
}

/// Resize every channel of a map to a new grid.
pub fn resize_bilinear(map: &FeatureMap, to: GridSize) -> Result<FeatureMap> {
    if to.cells() == 0 {
        return Err(Error::invalid(format!(
            "cannot resize a feature map to an empty {}x{} grid",
            to.height, to.width
        )));
    }
    if map.cells() == 0 {
        return Err(Error::invalid("cannot resize an empty feature map"));
    }
    let from = GridSize::new(map.height, map.width);
    if from == to {
        return Ok(map.clone());
    }
    let mut data = Vec::with_capacity(map.channels * to.cells());
    for channel in map.data.chunks_exact(from.cells()) {
        data.extend(resize_plane_bilinear(channel, from, to));
    }
    FeatureMap::new(map.channels, to.height, to.width, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False) gives rows [0, .25, .75, 1], [.5, .75, 1.25, 1.5], ...
        let out = resize_plane_bilinear(
            &[0.0, 1.0, 2.0, 3.0],
            GridSize::new(2, 2),
            GridSize::new(4, 4),
        );
        let expected = [
            0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0,
        ];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn shrinking_by_two_averages_pairs() {
        let out = resize_plane_bilinear(
            &[0.0, 1.0, 2.0, 3.0],
            GridSize::new(1, 4),
            GridSize::new(1, 2),
        );
        assert_eq!(out, vec![0.5, 2.5]);
    }

    #[test]
    fn empty_grids_are_errors() {
        let map = FeatureMap::new(1, 2, 2, vec![0.0; 4]).unwrap();
        assert!(resize_bilinear(&map, GridSize::new(0, 3)).is_err());
    }
}
