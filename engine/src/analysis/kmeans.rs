//! k-means on L2-normalised feature vectors: every cell of every map is one sample, its channel vector scaled
//! to unit length. k-means++ seeding (seeded, deterministic), then Lloyd iterations until no label changes.
//! Distances are Euclidean between unit vectors (`|x - c|^2 = 1 - 2 x.c + |c|^2`); centroids are plain
//! means (not re-normalised), as in scikit-learn on normalised data.
//!
//! Several maps clustered together get one shared set of centroids and labels per map; maps clustered apart
//! can be put in correspondence with [`match_clusters`] (Hungarian on centroid cosine similarity).

use candle_core::{Device, Tensor};

use crate::analysis::coords::GridSize;
use crate::analysis::hungarian::max_weight_assignment;
use crate::analysis::labels::LabelMap;
use crate::analysis::normalized::l2_normalize_cells;
use crate::analysis::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// Settings of k-means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KMeansOptions {
    /// Number of clusters.
    pub k: usize,
    /// Seed of k-means++; the same seed gives the same clustering.
    pub seed: u64,
    /// Lloyd iterations at most; a run that hits it is returned with `converged: false`.
    pub max_iterations: usize,
    /// Also stop when the centroids moved less than this in total (sum of squared shifts), relative to the
    /// mean per-channel variance of the samples, like scikit-learn's `tol`; 0 waits until no label changes.
    pub tolerance: f64,
    /// Independent seedings (seeds `seed`, `seed+1`, ...); the one with the lowest inertia is kept.
    pub restarts: usize,
}

impl Default for KMeansOptions {
    fn default() -> Self {
        Self {
            k: 8,
            seed: 0,
            max_iterations: 300,
            tolerance: 1e-4,
            restarts: 1,
        }
    }
}

/// The result of k-means over one or several maps.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    pub channels: usize,
    /// `k` centroids of `channels` values each (means of unit vectors, so their norm is at most 1).
    pub centroids: Vec<Vec<f32>>,
    /// One label map per input map, labels in 0..k.
    pub labels: Vec<LabelMap>,
    /// Sum over all cells of the squared distance to their centroid.
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// The unit vectors of all maps, ready for repeated runs (elbow, restarts).
struct Samples {
    channels: usize,
    grids: Vec<GridSize>,
    /// Per map: unit vectors `[C, cells]` and the same as a tensor.
    unit: Vec<Vec<f32>>,
    tensors: Vec<Tensor>,
    /// Squared norm of each sample (1, or 0 for an all-zero cell), all maps concatenated.
    squared_norms: Vec<f32>,
}

impl Samples {
    fn new(maps: &[&FeatureMap]) -> Result<Self> {
        let first = maps
            .first()
            .ok_or_else(|| Error::invalid("k-means needs at least one feature map"))?;
        let channels = first.channels;
        let mut samples = Samples {
            channels,
            grids: vec![],
            unit: vec![],
            tensors: vec![],
            squared_norms: vec![],
        };
        for (i, map) in maps.iter().enumerate() {
            map.ensure_finite(&format!("k-means map {i}"))?;
            if map.channels != channels {
                return Err(Error::invalid(format!(
                    "k-means map {i} has {} channels, map 0 has {channels}; cluster jointly only maps of the same tap",
                    map.channels
                )));
            }
            let unit = l2_normalize_cells(&map.data, channels, map.cells());
            let mut norms = vec![0f32; map.cells()];
            for row in unit.chunks_exact(map.cells()) {
                norms.iter_mut().zip(row).for_each(|(n, v)| *n += v * v);
            }
            samples.squared_norms.extend(norms);
            samples.tensors.push(Tensor::from_slice(
                &unit,
                (channels, map.cells()),
                &Device::Cpu,
            )?);
            samples.unit.push(unit);
            samples.grids.push(GridSize::new(map.height, map.width));
        }
        Ok(samples)
    }

    /// Mean over channels of the variance of the samples (scikit-learn's scale for `tol`).
    fn mean_variance(&self) -> f64 {
        let n = self.total() as f64;
        let mut total = 0f64;
        for c in 0..self.channels {
            let (mut sum, mut squares) = (0f64, 0f64);
            for (grid, unit) in self.grids.iter().zip(&self.unit) {
                let cells = grid.cells();
                for &v in &unit[c * cells..(c + 1) * cells] {
                    sum += f64::from(v);
                    squares += f64::from(v) * f64::from(v);
                }
            }
            total += (squares / n - (sum / n).powi(2)).max(0.0);
        }
        total / self.channels.max(1) as f64
    }

    fn total(&self) -> usize {
        self.grids.iter().map(GridSize::cells).sum()
    }

    /// Sample `index` (over all maps) as a vector.
    fn vector(&self, index: usize) -> Vec<f32> {
        let (map, cell) = self.locate(index);
        let cells = self.grids[map].cells();
        (0..self.channels)
            .map(|c| self.unit[map][c * cells + cell])
            .collect()
    }

    fn locate(&self, mut index: usize) -> (usize, usize) {
        for (map, grid) in self.grids.iter().enumerate() {
            if index < grid.cells() {
                return (map, index);
            }
            index -= grid.cells();
        }
        (self.grids.len().saturating_sub(1), 0)
    }

    /// For every sample: the nearest centroid and the squared distance to it (ties: the lower index).
    fn assign(&self, centroids: &[Vec<f32>]) -> Result<(Vec<u32>, Vec<f32>)> {
        let k = centroids.len();
        let flat: Vec<f32> = centroids.iter().flatten().copied().collect();
        let centroid_tensor = Tensor::from_vec(flat, (k, self.channels), &Device::Cpu)?;
        let centroid_norms: Vec<f32> = centroids
            .iter()
            .map(|c| c.iter().map(|v| v * v).sum())
            .collect();
        let mut labels = Vec::with_capacity(self.total());
        let mut distances = Vec::with_capacity(self.total());
        let mut offset = 0;
        for (grid, tensor) in self.grids.iter().zip(&self.tensors) {
            let cells = grid.cells();
            // [k, C] x [C, cells]: dot products of every centroid with every cell.
            let dots = centroid_tensor
                .matmul(tensor)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for cell in 0..cells {
                let mut best = (0u32, f32::INFINITY);
                for (j, norm) in centroid_norms.iter().enumerate() {
                    let d = norm - 2.0 * dots[j * cells + cell];
                    if d < best.1 {
                        best = (j as u32, d);
                    }
                }
                labels.push(best.0);
                distances.push((best.1 + self.squared_norms[offset + cell]).max(0.0));
            }
            offset += cells;
        }
        Ok((labels, distances))
    }

    /// Means of the assigned samples (sums as samples x one-hot matmuls). An empty cluster takes the sample
    /// farthest from its centroid.
    fn update(&self, labels: &[u32], distances: &[f32], k: usize) -> Result<Vec<Vec<f32>>> {
        let mut sums = Tensor::zeros((self.channels, k), candle_core::DType::F32, &Device::Cpu)?;
        let mut offset = 0;
        for (grid, tensor) in self.grids.iter().zip(&self.tensors) {
            let cells = grid.cells();
            let mut one_hot = vec![0f32; cells * k];
            for (cell, &l) in labels[offset..offset + cells].iter().enumerate() {
                one_hot[cell * k + l as usize] = 1.0;
            }
            let one_hot = Tensor::from_vec(one_hot, (cells, k), &Device::Cpu)?;
            // [C, cells] x [cells, k]: both operands contiguous, which gemm handles best for a thin k.
            sums = (sums + tensor.matmul(&one_hot)?)?;
            offset += cells;
        }
        let sums = sums.t()?.to_vec2::<f32>()?;
        let mut counts = vec![0usize; k];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        let mut taken = vec![false; labels.len()];
        Ok((0..k)
            .map(|j| {
                if counts[j] > 0 {
                    return sums[j].iter().map(|s| s / counts[j] as f32).collect();
                }
                let farthest = (0..labels.len())
                    .filter(|&i| !taken[i])
                    .fold(None, |best: Option<usize>, i| match best {
                        Some(b) if distances[b] >= distances[i] => Some(b),
                        _ => Some(i),
                    })
                    .unwrap_or(0);
                if let Some(t) = taken.get_mut(farthest) {
                    *t = true;
                }
                self.vector(farthest)
            })
            .collect())
    }

    /// k-means++: the first centre uniformly at random, each next one with probability proportional to the
    /// squared distance to the nearest centre chosen so far.
    fn seed_centroids(&self, k: usize, rng: &mut SplitMix64) -> Result<Vec<Vec<f32>>> {
        let total = self.total();
        let mut centroids = vec![self.vector(rng.below(total))];
        let mut nearest = self.assign(&centroids)?.1;
        while centroids.len() < k {
            let sum: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
            let chosen = if sum > 0.0 {
                let target = rng.next_f64() * sum;
                let mut running = 0f64;
                let mut chosen = total - 1;
                for (i, &d) in nearest.iter().enumerate() {
                    running += f64::from(d);
                    if running > target && d > 0.0 {
                        chosen = i;
                        break;
                    }
                }
                chosen
            } else {
                // Every sample coincides with a centre already: any pick is as good.
                rng.below(total)
            };
            let centre = self.vector(chosen);
            let latest = self.assign(std::slice::from_ref(&centre))?.1;
            centroids.push(centre);
            nearest
                .iter_mut()
                .zip(latest)
                .for_each(|(n, d)| *n = n.min(d));
        }
        Ok(centroids)
    }

    fn run(&self, k: usize, seed: u64, options: &KMeansOptions) -> Result<Clustering> {
        let mut rng = SplitMix64::new(seed);
        let centroids = self.seed_centroids(k, &mut rng)?;
        self.lloyd(centroids, options)
    }

    /// Lloyd iterations from the given centroids.
    fn lloyd(&self, mut centroids: Vec<Vec<f32>>, options: &KMeansOptions) -> Result<Clustering> {
        let k = centroids.len();
        let shift_limit = options.tolerance.max(0.0) * self.mean_variance();
        let (mut labels, mut distances) = self.assign(&centroids)?;
        let mut iterations = 0;
        let mut converged = false;
        while iterations < options.max_iterations {
            iterations += 1;
            let moved = self.update(&labels, &distances, k)?;
            let shift: f64 = moved
                .iter()
                .zip(&centroids)
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)))
                .sum();
            centroids = moved;
            let (new_labels, new_distances) = self.assign(&centroids)?;
            distances = new_distances;
            let unchanged = new_labels == labels;
            labels = new_labels;
            if unchanged || shift <= shift_limit {
                converged = true;
                break;
            }
        }
        let inertia = distances.iter().map(|&d| f64::from(d)).sum();
        let mut per_map = Vec::with_capacity(self.grids.len());
        let mut offset = 0;
        for grid in &self.grids {
            per_map.push(LabelMap {
                grid: *grid,
                labels: labels[offset..offset + grid.cells()].to_vec(),
            });
            offset += grid.cells();
        }
        Ok(Clustering {
            channels: self.channels,
            centroids,
            labels: per_map,
            inertia,
            iterations,
            converged,
        })
    }
}

/// k-means over all cells of one or several maps (jointly). Errors when maps differ in channels, hold NaN/inf,
/// or have fewer cells in total than k.
pub fn kmeans(maps: &[&FeatureMap], options: &KMeansOptions) -> Result<Clustering> {
    let samples = Samples::new(maps)?;
    check_k(options.k, samples.total())?;
    run_best(&samples, options.k, options)
}

/// k-means started from given centroids instead of k-means++ (k = their number; `seed` and `restarts` are
/// not used). Starting from the previous frame's centroids while scrubbing t converges in a few iterations
/// and keeps cluster ids, hence colours, stable from frame to frame.
pub fn kmeans_from(
    maps: &[&FeatureMap],
    centroids: &[Vec<f32>],
    options: &KMeansOptions,
) -> Result<Clustering> {
    let samples = Samples::new(maps)?;
    check_k(centroids.len(), samples.total())?;
    for (i, centroid) in centroids.iter().enumerate() {
        if centroid.len() != samples.channels {
            return Err(Error::invalid(format!(
                "k-means: initial centroid {i} has {} channels, the maps {}",
                centroid.len(),
                samples.channels
            )));
        }
        if centroid.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "k-means: initial centroid {i} has a non-finite value"
            )));
        }
    }
    samples.lloyd(centroids.to_vec(), options)
}

fn run_best(samples: &Samples, k: usize, options: &KMeansOptions) -> Result<Clustering> {
    let mut best: Option<Clustering> = None;
    for restart in 0..options.restarts.max(1) {
        let run = samples.run(k, options.seed.wrapping_add(restart as u64), options)?;
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    best.ok_or_else(|| Error::invalid("k-means: no run"))
}

fn check_k(k: usize, cells: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::invalid("k-means: k must be at least 1"));
    }
    if k > cells {
        return Err(Error::invalid(format!(
            "k-means: k = {k} is larger than the number of cells ({cells})"
        )));
    }
    Ok(())
}

/// Inertia for each k in `ks` (the elbow curve); other settings from `options`.
pub fn elbow(
    maps: &[&FeatureMap],
    ks: &[usize],
    options: &KMeansOptions,
) -> Result<Vec<(usize, f64)>> {
    let samples = Samples::new(maps)?;
    ks.iter()
        .map(|&k| {
            check_k(k, samples.total())?;
            Ok((k, run_best(&samples, k, options)?.inertia))
        })
        .collect()
}

/// A one-to-one matching of the clusters of `a` with those of `b`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterMatching {
    /// For each cluster of `a`, its partner in `b` (None when `b` has fewer clusters and none is left).
    pub a_to_b: Vec<Option<usize>>,
    /// Cosine similarity of each matched pair of centroids.
    pub similarity: Vec<Option<f32>>,
    /// Sum of the matched similarities (maximal over all one-to-one matchings).
    pub total_similarity: f64,
}

impl ClusterMatching {
    /// `b`'s labels renamed to the matching cluster of `a`; clusters of `b` without partner get ids from
    /// `a`'s count upward.
    pub fn relabel_b(&self, labels: &LabelMap, b_clusters: usize) -> LabelMap {
        let mut b_to_a = vec![None; b_clusters.max(labels.count())];
        for (a, b) in self.a_to_b.iter().enumerate() {
            if let Some(slot) = b.and_then(|b| b_to_a.get_mut(b)) {
                *slot = Some(a as u32);
            }
        }
        let unmatched = b_to_a.iter_mut().filter(|s| s.is_none());
        for (next, slot) in (self.a_to_b.len() as u32..).zip(unmatched) {
            *slot = Some(next);
        }
        LabelMap {
            grid: labels.grid,
            labels: labels
                .labels
                .iter()
                .map(|&l| b_to_a[l as usize].unwrap_or(l))
                .collect(),
        }
    }
}

/// Match the clusters of two clusterings by maximising total centroid cosine similarity (Hungarian).
pub fn match_clusters(a: &Clustering, b: &Clustering) -> Result<ClusterMatching> {
    if a.channels != b.channels {
        return Err(Error::invalid(format!(
            "cannot match clusters of {}-channel and {}-channel features",
            a.channels, b.channels
        )));
    }
    let cosine = |x: &[f32], y: &[f32]| {
        let dot: f64 = x
            .iter()
            .zip(y)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum();
        let nx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|q| f64::from(*q).powi(2)).sum::<f64>().sqrt();
        dot / (nx * ny).max(1e-12)
    };
    let (rows, cols) = (a.centroids.len(), b.centroids.len());
    let weights: Vec<f64> = a
        .centroids
        .iter()
        .flat_map(|x| b.centroids.iter().map(move |y| cosine(x, y)))
        .collect();
    let assignment = max_weight_assignment(&weights, rows, cols)?;
    let similarity = assignment
        .row_to_col
        .iter()
        .enumerate()
        .map(|(r, c)| c.map(|c| weights[r * cols + c] as f32))
        .collect();
    Ok(ClusterMatching {
        a_to_b: assignment.row_to_col,
        similarity,
        total_similarity: assignment.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k` planted directions in `channels` dimensions, each cell a noisy copy of its cluster's direction.
    fn planted(k: usize, channels: usize, h: usize, w: usize, seed: u64) -> (FeatureMap, Vec<u32>) {
        let mut rng = SplitMix64::new(seed);
        let centres: Vec<Vec<f32>> = (0..k)
            .map(|_| {
                (0..channels)
                    .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
                    .collect()
            })
            .collect();
        let truth: Vec<u32> = (0..h * w).map(|_| rng.below(k) as u32).collect();
        let mut data = vec![0f32; channels * h * w];
        for (cell, &t) in truth.iter().enumerate() {
            for c in 0..channels {
                data[c * h * w + cell] =
                    centres[t as usize][c] + 0.05 * (rng.next_f64() * 2.0 - 1.0) as f32;
            }
        }
        (FeatureMap::new(channels, h, w, data).unwrap(), truth)
    }

    /// Whether two labelings agree up to a renaming of the labels.
    fn same_partition(a: &[u32], b: &[u32]) -> bool {
        let mut forward = std::collections::HashMap::new();
        let mut backward = std::collections::HashMap::new();
        a.iter().zip(b).all(|(x, y)| {
            *forward.entry(*x).or_insert(*y) == *y && *backward.entry(*y).or_insert(*x) == *x
        })
    }

    #[test]
    fn recovers_planted_clusters() {
        let (map, truth) = planted(5, 16, 12, 10, 1);
        let result = kmeans(
            &[&map],
            &KMeansOptions {
                k: 5,
                restarts: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(result.converged);
        assert!(same_partition(&result.labels[0].labels, &truth));
        let again = kmeans(
            &[&map],
            &KMeansOptions {
                k: 5,
                restarts: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(result, again, "same seed, same result");
    }

    #[test]
    fn joint_clustering_and_matching_across_images() {
        let (a, truth_a) = planted(4, 8, 8, 8, 2);
        // b is a with its cells transposed and its features scaled (normalisation removes the scale).
        let (b_source, truth_b_source) = planted(4, 8, 8, 8, 2);
        let mut b_data = vec![0f32; b_source.data.len()];
        let mut truth_b = vec![0u32; 64];
        for c in 0..8 {
            for y in 0..8 {
                for x in 0..8 {
                    b_data[c * 64 + x * 8 + y] = b_source.data[c * 64 + y * 8 + x] * 1.5;
                    truth_b[x * 8 + y] = truth_b_source[y * 8 + x];
                }
            }
        }
        let b = FeatureMap::new(8, 8, 8, b_data).unwrap();
        let options = KMeansOptions {
            k: 4,
            restarts: 3,
            ..Default::default()
        };
        let joint = kmeans(&[&a, &b], &options).unwrap();
        assert_eq!(joint.labels.len(), 2);
        let both: Vec<u32> = joint.labels[0]
            .labels
            .iter()
            .chain(&joint.labels[1].labels)
            .copied()
            .collect();
        let truth: Vec<u32> = truth_a.iter().chain(&truth_b).copied().collect();
        assert!(same_partition(&both, &truth));
        // Apart, then matched: b's relabelled clusters equal a's on the planted truth.
        let (ca, cb) = (
            kmeans(&[&a], &options).unwrap(),
            kmeans(&[&b], &options).unwrap(),
        );
        let matching = match_clusters(&ca, &cb).unwrap();
        assert!(matching.similarity.iter().all(|s| s.unwrap() > 0.99));
        let relabelled = matching.relabel_b(&cb.labels[0], 4);
        for t in 0..4u32 {
            let label_in_a = ca.labels[0].labels[truth_a.iter().position(|&x| x == t).unwrap()];
            let label_in_b = relabelled.labels[truth_b.iter().position(|&x| x == t).unwrap()];
            assert_eq!(label_in_a, label_in_b);
        }
    }

    #[test]
    fn warm_start_keeps_the_clustering() {
        let (map, truth) = planted(4, 8, 10, 10, 5);
        let options = KMeansOptions {
            k: 4,
            restarts: 3,
            ..Default::default()
        };
        let cold = kmeans(&[&map], &options).unwrap();
        let warm = kmeans_from(&[&map], &cold.centroids, &options).unwrap();
        assert_eq!(warm.labels, cold.labels);
        assert!(warm.iterations <= 2 && same_partition(&warm.labels[0].labels, &truth));
        assert!(kmeans_from(&[&map], &[vec![0.0; 3]], &options).is_err());
        assert!(kmeans_from(&[&map], &[vec![f32::NAN; 8]], &options).is_err());
    }

    #[test]
    fn elbow_decreases() {
        let (map, _) = planted(3, 8, 10, 10, 3);
        let curve = elbow(
            &[&map],
            &[1, 2, 3, 4],
            &KMeansOptions {
                restarts: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            curve.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(
            curve.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-9),
            "{curve:?}"
        );
        // The planted k = 3 takes most of the drop.
        assert!(
            curve[2].1 < 0.1 * curve[0].1 && curve[3].1 > 0.5 * curve[2].1,
            "{curve:?}"
        );
    }

    #[test]
    fn degenerate_inputs() {
        let identical = FeatureMap::new(2, 2, 2, vec![1.0; 8]).unwrap();
        let result = kmeans(
            &[&identical],
            &KMeansOptions {
                k: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(result.inertia.abs() < 1e-9);
        assert!(kmeans(
            &[&identical],
            &KMeansOptions {
                k: 5,
                ..Default::default()
            }
        )
        .is_err());
        assert!(kmeans(
            &[&identical],
            &KMeansOptions {
                k: 0,
                ..Default::default()
            }
        )
        .is_err());
        let nan = FeatureMap::new(1, 1, 2, vec![0.0, f32::INFINITY]).unwrap();
        assert!(kmeans(
            &[&nan],
            &KMeansOptions {
                k: 1,
                ..Default::default()
            }
        )
        .is_err());
        let other = FeatureMap::new(3, 2, 2, vec![1.0; 12]).unwrap();
        assert!(kmeans(
            &[&identical, &other],
            &KMeansOptions {
                k: 1,
                ..Default::default()
            }
        )
        .is_err());
        assert!(kmeans(&[], &KMeansOptions::default()).is_err());
    }
}
