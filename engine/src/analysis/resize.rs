//! Bilinear resizing of feature maps and scalar planes, identical to PyTorch's
//! `F.interpolate(mode="bilinear", align_corners=False, antialias=False)` (the pixel-centre convention of
//! [`crate::analysis::coords`]). Shrinking does not low-pass first, like PyTorch's default.
//! Bicubic resizing of planes as PyTorch's `mode="bicubic"` does it (what DAAM upsamples
//! attention maps with).

use crate::analysis::coords::{linear_taps, GridSize};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// For each output index: the two source indices and the weight of the second.
pub(crate) fn axis_taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
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

/// PyTorch's cubic convolution weights (A = -0.75) of the four taps around fraction `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index: four source indices (clamped to the input) and their weights.
fn cubic_axis(from: usize, to: usize) -> Vec<[(usize, f32); 4]> {
    let scale = from as f32 / to as f32;
    let last = from as isize - 1;
    (0..to)
        .map(|i| {
            let src = (i as f32 + 0.5) * scale - 0.5;
            let base = src.floor();
            let w = cubic_weights(src - base);
            std::array::from_fn(|k| {
                let index = (base as isize - 1 + k as isize).clamp(0, last) as usize;
                (index, w[k])
            })
        })
        .collect()
}

/// Resize one row-major plane bicubically, as PyTorch's
/// `F.interpolate(mode="bicubic", align_corners=False)`: taps beyond the border repeat it, and
/// values may overshoot the input's range. An empty source gives an empty result.
pub fn resize_plane_bicubic(values: &[f32], from: GridSize, to: GridSize) -> Vec<f32> {
    if from.cells() == 0 || to.cells() == 0 || values.len() < from.cells() {
        return Vec::new();
    }
    let cols = cubic_axis(from.width, to.width);
    let rows = cubic_axis(from.height, to.height);
    // Along the rows first: [from.height, to.width].
    let mut wide = Vec::with_capacity(from.height * to.width);
    for row in values[..from.cells()].chunks_exact(from.width) {
        wide.extend(
            cols.iter()
                .map(|taps| taps.iter().map(|&(j, w)| w * row[j]).sum::<f32>()),
        );
    }
    let mut out = Vec::with_capacity(to.cells());
    for taps in &rows {
        out.extend((0..to.width).map(|x| {
            taps.iter()
                .map(|&(i, w)| w * wide[i * to.width + x])
                .sum::<f32>()
        }));
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
    fn bicubic_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 4.]]]]), size=(3, 4),
        // mode="bicubic", align_corners=False)
        let out = resize_plane_bicubic(
            &[0.0, 1.0, 2.0, 4.0],
            GridSize::new(2, 2),
            GridSize::new(3, 4),
        );
        let expected = [
            -0.269925, 0.0332845, 0.532688, 0.835897, 0.841797, 1.33984, 2.16016, 2.6582, 1.95352,
            2.6464, 3.78762, 4.48051,
        ];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
        // The same size gives the plane back.
        let same = resize_plane_bicubic(&[1.0, 2.0, 3.0], GridSize::new(1, 3), GridSize::new(1, 3));
        assert_eq!(same, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn empty_grids_are_errors() {
        let map = FeatureMap::new(1, 2, 2, vec![0.0; 4]).unwrap();
        assert!(resize_bilinear(&map, GridSize::new(0, 3)).is_err());
    }
}
