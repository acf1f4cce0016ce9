//! The cosine of a query vector with a target's features upsampled bilinearly to the image, as
//! DIFT's `eval_spair.py` computes it, without holding the upsampled features (DIFT's hold `C x H x W`
//! floats: 1280 x 768 x 768 is 3 GB).
//!
//! An upsampled feature is a bilinear mix of at most four neighbouring cells, `f = sum_k w_k F_k`.
//! Its dot product with the query mixes the cells' dot products; its squared norm is the quadratic
//! form `sum_kl w_k w_l F_k . F_l`, which needs only the dot products of each cell with itself and
//! its right, lower and two diagonal neighbours, computed once per target.

use crate::analysis::coords::ImageSize;
use crate::analysis::normalized::dot_cells;
use crate::analysis::resize::axis_taps;
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// Dot products of every cell with itself and its neighbours, float64.
#[derive(Clone, Debug)]
pub struct NeighbourGram {
    width: usize,
    height: usize,
    own: Vec<f64>,
    /// `(y, x) . (y, x + 1)`
    right: Vec<f64>,
    /// `(y, x) . (y + 1, x)`
    down: Vec<f64>,
    /// `(y, x) . (y + 1, x + 1)`
    diagonal: Vec<f64>,
    /// `(y, x + 1) . (y + 1, x)`
    anti_diagonal: Vec<f64>,
}

impl NeighbourGram {
    pub fn new(map: &FeatureMap) -> Self {
        let (h, w, cells) = (map.height, map.width, map.cells());
        let at = |y: usize, x: usize| y * w + x;
        let mut gram = Self {
            width: w,
            height: h,
            own: vec![0.0; cells],
            right: vec![0.0; cells],
            down: vec![0.0; cells],
            diagonal: vec![0.0; cells],
            anti_diagonal: vec![0.0; cells],
        };
        for channel in map.data.chunks_exact(cells).take(map.channels) {
            for y in 0..h {
                for x in 0..w {
                    let v = f64::from(channel[at(y, x)]);
                    gram.own[at(y, x)] += v * v;
                    if x + 1 < w {
                        gram.right[at(y, x)] += v * f64::from(channel[at(y, x + 1)]);
                    }
                    if y + 1 < h {
                        gram.down[at(y, x)] += v * f64::from(channel[at(y + 1, x)]);
                        if x + 1 < w {
                            gram.diagonal[at(y, x)] += v * f64::from(channel[at(y + 1, x + 1)]);
                            gram.anti_diagonal[at(y, x)] +=
                                f64::from(channel[at(y, x + 1)]) * f64::from(channel[at(y + 1, x)]);
                        }
                    }
                }
            }
        }
        gram
    }

    /// `F_(y1,x1) . F_(y2,x2)` for cells at most one row and one column apart.
    fn dot(&self, (y1, x1): (usize, usize), (y2, x2): (usize, usize)) -> f64 {
        let (top, left) = (y1.min(y2), x1.min(x2));
        let at = top * self.width + left;
        match (y1.abs_diff(y2), x1.abs_diff(x2)) {
            (0, 0) => self.own[at],
            (0, _) => self.right[at],
            (_, 0) => self.down[at],
            _ if (y1 < y2) == (x1 < x2) => self.diagonal[at],
            _ => self.anti_diagonal[at],
        }
    }
}

/// The cosine of `vector` (unit, or any: only the target is normalised per pixel) with `target`
/// upsampled bilinearly (PyTorch `align_corners=False`) to `image`, row-major `H x W`.
pub fn upsampled_cosine(
    vector: &[f32],
    target: &FeatureMap,
    gram: &NeighbourGram,
    image: ImageSize,
) -> Result<Vec<f32>> {
    if vector.len() != target.channels {
        return Err(Error::invalid(format!(
            "query vector has {} channels, the target map {}",
            vector.len(),
            target.channels
        )));
    }
    if (gram.height, gram.width) != (target.height, target.width) {
        return Err(Error::invalid("the Gram terms are of another map"));
    }
    image.ensure_nonempty("target image")?;
    let dots = dot_cells(&target.data, target.cells(), vector);
    let rows = axis_taps(target.height, image.height);
    let cols = axis_taps(target.width, image.width);
    let mut out = Vec::with_capacity(image.height * image.width);
    for &(y0, y1, wy) in &rows {
        for &(x0, x1, wx) in &cols {
            let (wy, wx) = (f64::from(wy), f64::from(wx));
            let corners = [
                ((y0, x0), (1.0 - wy) * (1.0 - wx)),
                ((y0, x1), (1.0 - wy) * wx),
                ((y1, x0), wy * (1.0 - wx)),
                ((y1, x1), wy * wx),
            ];
            let mut dot = 0f64;
            let mut norm2 = 0f64;
            for (k, &(cell_k, weight_k)) in corners.iter().enumerate() {
                dot += weight_k * f64::from(dots[cell_k.0 * target.width + cell_k.1]);
                norm2 += weight_k * weight_k * gram.dot(cell_k, cell_k);
                for &(cell_l, weight_l) in &corners[k + 1..] {
                    norm2 += 2.0 * weight_k * weight_l * gram.dot(cell_k, cell_l);
                }
            }
            // F.normalize's floor on the norm.
            out.push((dot / norm2.max(0.0).sqrt().max(1e-12)) as f32);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::coords::GridSize;
    use crate::analysis::resize::resize_bilinear;

    /// Against the literal computation: upsample the features, normalise each pixel, dot.
    #[test]
    fn equals_upsampling_the_features_first() {
        let (c, h, w) = (5, 3, 4);
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7919 % 101) as f32 / 50.0 - 1.0) + if i % 3 == 0 { 0.5 } else { 0.0 })
            .collect();
        let map = FeatureMap::new(c, h, w, data).unwrap();
        let image = ImageSize::new(11, 7);
        let query = [0.3, -0.2, 0.8, 0.1, -0.4];
        let fast = upsampled_cosine(&query, &map, &NeighbourGram::new(&map), image).unwrap();
        let up = resize_bilinear(&map, GridSize::new(7, 11)).unwrap();
        for (p, &ours) in fast.iter().enumerate() {
            let f: Vec<f32> = (0..c).map(|ch| up.data[ch * 77 + p]).collect();
            let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt();
            let cos = f.iter().zip(query).map(|(a, b)| a * b).sum::<f32>() / norm;
            assert!((ours - cos).abs() < 1e-5, "pixel {p}: {ours} vs {cos}");
        }
    }
}
