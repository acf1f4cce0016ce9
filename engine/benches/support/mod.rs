//! Synthetic inputs and DIFT's click, shared by the analysis benchmarks.
//!
//! Maps are smooth random fields with a decaying spectrum, so that PCA, k-means and NCut see spatial
//! structure as they would on real features: 12 latent fields, field k a random coarse grid of (3+k/2)^2
//! values bilinearly upsampled and scaled by 1/(1+k), mixed into the channels by random loadings, plus 10%
//! per-cell noise. The cost of a correspondence query does not depend on the values.

#![allow(dead_code)]

use diffscope_engine::analysis::correspond::{similarity_map, SimilarityMap};
use diffscope_engine::analysis::resize::resize_bilinear;
use diffscope_engine::analysis::{GridSize, NormalizedMap};
use diffscope_engine::FeatureMap;

struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

pub fn smooth_map(channels: usize, height: usize, width: usize, seed: u64) -> FeatureMap {
    const FIELDS: usize = 12;
    let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let grid = GridSize::new(height, width);
    let fields: Vec<Vec<f32>> = (0..FIELDS)
        .map(|k| {
            let side = 3 + k / 2;
            let coarse: Vec<f32> = (0..side * side)
                .map(|_| rng.uniform() / (1.0 + k as f32))
                .collect();
            let coarse = FeatureMap::new(1, side, side, coarse).unwrap();
            resize_bilinear(&coarse, grid).unwrap().data.to_vec()
        })
        .collect();
    let mut data = Vec::with_capacity(channels * grid.cells());
    for _ in 0..channels {
        let loadings: Vec<f32> = (0..FIELDS).map(|_| rng.uniform()).collect();
        for cell in 0..grid.cells() {
            let mixed: f32 = loadings.iter().zip(&fields).map(|(l, f)| l * f[cell]).sum();
            data.push(mixed + 0.1 * rng.uniform());
        }
    }
    FeatureMap::new(channels, height, width, data).unwrap()
}

/// DIFT's demo click, as its notebook does it: bilinearly upsample the source map and every target map to
/// `size x size` pixels, take the source vector at pixel (x, y), L2-normalise, cosine with every pixel.
pub fn dift_click(
    source: &FeatureMap,
    targets: &[FeatureMap],
    size: usize,
    x: usize,
    y: usize,
) -> Vec<SimilarityMap> {
    let grid = GridSize::new(size, size);
    let up = resize_bilinear(source, grid).unwrap();
    let cells = grid.cells();
    let mut vector: Vec<f32> = (0..up.channels)
        .map(|c| up.data[c * cells + y * size + x])
        .collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    vector.iter_mut().for_each(|v| *v /= norm);
    drop(up);
    targets
        .iter()
        .map(|t| {
            let up = NormalizedMap::new(&resize_bilinear(t, grid).unwrap(), "target").unwrap();
            similarity_map(&vector, &up).unwrap()
        })
        .collect()
}
