//! Segmentation of feature maps into parts: k-means on L2-normalised features, jointly (one set of
//! centroids for all images) or per image with each image's clusters matched to the first image's
//! by the Hungarian method (so a colour means the same part everywhere); or DiffCut's recursive
//! normalized cut, per image or jointly.

use crate::analysis::coords::GridSize;
use crate::analysis::kmeans::{kmeans, match_clusters, KMeansOptions};
use crate::analysis::labels::LabelMap;
use crate::analysis::ncut::{recursive_ncut, NCutOptions};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SegmentMethod {
    /// k-means++ with K clusters, seeded.
    KMeans { k: usize, seed: u64 },
    /// Recursive normalized cut: affinity = min-max normalised cosine ^ alpha, 2-way cuts kept
    /// while their NCut is below tau.
    NCut { tau: f64, alpha: f32 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentOptions {
    pub method: SegmentMethod,
    /// Segment all images as one set of cells; otherwise each image alone.
    pub joint: bool,
}

/// Labels per image and what was done.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmentation {
    /// Per image: a label per cell.
    pub labels: Vec<LabelMap>,
    /// How many labels there are (labels are below this).
    pub segments: usize,
    /// k-means: the sum over all images of the squared distances to the centroids.
    pub inertia: Option<f64>,
    /// Every choice, for captions.
    pub description: String,
    /// The method in a few words, for a terminal line.
    pub summary: String,
}

pub fn segment(maps: &[&FeatureMap], options: &SegmentOptions) -> Result<Segmentation> {
    if maps.is_empty() {
        return Err(Error::invalid("add an image first"));
    }
    match options.method {
        SegmentMethod::KMeans { k, seed } if options.joint => kmeans_joint(maps, k, seed),
        SegmentMethod::KMeans { k, seed } => kmeans_matched(maps, k, seed),
        SegmentMethod::NCut { tau, alpha } if options.joint => ncut_joint(maps, tau, alpha),
        SegmentMethod::NCut { tau, alpha } => ncut_per_image(maps, tau, alpha),
    }
}

/// The k-means inertia `segment` would report for K clusters with the default seed (the elbow plot).
pub fn kmeans_inertia(maps: &[&FeatureMap], k: usize, joint: bool) -> Result<f64> {
    let options = kmeans_options(k, KMeansOptions::default().seed);
    if joint {
        return Ok(kmeans(maps, &options)?.inertia);
    }
    maps.iter()
        .map(|m| Ok(kmeans(&[m], &options)?.inertia))
        .sum()
}

fn kmeans_options(k: usize, seed: u64) -> KMeansOptions {
    KMeansOptions {
        k,
        seed,
        ..KMeansOptions::default()
    }
}

fn kmeans_joint(maps: &[&FeatureMap], k: usize, seed: u64) -> Result<Segmentation> {
    let c = kmeans(maps, &kmeans_options(k, seed))?;
    Ok(Segmentation {
        labels: c.labels,
        segments: k,
        inertia: Some(c.inertia),
        description: format!(
            "k-means++ (seed {seed}), K={k}, on L2-normalised features of all {} images jointly: one set of centroids",
            maps.len()
        ),
        summary: format!("k-means, K={k}, joint over all images"),
    })
}

fn kmeans_matched(maps: &[&FeatureMap], k: usize, seed: u64) -> Result<Segmentation> {
    let options = kmeans_options(k, seed);
    let clusterings = maps
        .iter()
        .map(|m| kmeans(&[m], &options))
        .collect::<Result<Vec<_>>>()?;
    let first = &clusterings[0];
    let mut labels = Vec::with_capacity(clusterings.len());
    let mut segments = k;
    for (i, c) in clusterings.iter().enumerate() {
        let own = c
            .labels
            .first()
            .cloned()
            .ok_or_else(|| Error::invalid("k-means returned no labels"))?;
        if i == 0 {
            labels.push(own);
        } else {
            let relabelled = match_clusters(first, c)?.relabel_b(&own, c.centroids.len());
            segments = segments.max(relabelled.count());
            labels.push(relabelled);
        }
    }
    Ok(Segmentation {
        labels,
        segments,
        inertia: Some(clusterings.iter().map(|c| c.inertia).sum()),
        description: format!(
            "k-means++ (seed {seed}), K={k}, on L2-normalised features of each image alone; clusters matched to the first image's by the Hungarian method on centroid cosine"
        ),
        summary: format!(
            "k-means, K={k}, per image, clusters matched to the first image (Hungarian on centroid cosine)"
        ),
    })
}

fn ncut_options(tau: f64, alpha: f32) -> NCutOptions {
    NCutOptions {
        tau,
        alpha,
        ..NCutOptions::default()
    }
}

fn ncut_per_image(maps: &[&FeatureMap], tau: f64, alpha: f32) -> Result<Segmentation> {
    let options = ncut_options(tau, alpha);
    let segmentations = maps
        .iter()
        .map(|m| recursive_ncut(m, &options))
        .collect::<Result<Vec<_>>>()?;
    let counts: Vec<String> = segmentations
        .iter()
        .map(|s| s.segments.to_string())
        .collect();
    Ok(Segmentation {
        segments: segmentations.iter().map(|s| s.segments).max().unwrap_or(0),
        inertia: None,
        description: format!(
            "recursive normalized cut (DiffCut) per image: affinity = min-max normalised cosine ^ {alpha}, 2-way cuts kept while NCut < {tau}; segments: {} (colours are not matched across images)",
            counts.join(", ")
        ),
        summary: format!("recursive NCut, tau={tau}, alpha={alpha}, per image"),
        labels: segmentations.into_iter().map(|s| s.labels).collect(),
    })
}

fn ncut_joint(maps: &[&FeatureMap], tau: f64, alpha: f32) -> Result<Segmentation> {
    let cut = recursive_ncut(&stack(maps)?, &ncut_options(tau, alpha))?;
    Ok(Segmentation {
        labels: unstack(&cut.labels, maps),
        segments: cut.segments,
        inertia: None,
        description: format!(
            "recursive normalized cut (DiffCut) on the cells of all {} images jointly: affinity = min-max normalised cosine ^ {alpha}, 2-way cuts kept while NCut < {tau}; segments: {}",
            maps.len(),
            cut.segments
        ),
        summary: format!(
            "recursive NCut, tau={tau}, alpha={alpha}, joint ({} segments)",
            cut.segments
        ),
    })
}

/// Maps of equal width stacked on top of each other: NCut's affinity has no spatial term, so a cut
/// of the stack is exactly a joint cut.
fn stack(maps: &[&FeatureMap]) -> Result<FeatureMap> {
    let (c, w) = (maps[0].channels, maps[0].width);
    if maps.iter().any(|m| m.channels != c || m.width != w) {
        return Err(Error::invalid(
            "joint NCut needs feature maps of the same width and channels: give the images one size",
        ));
    }
    let h: usize = maps.iter().map(|m| m.height).sum();
    let mut data = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for m in maps {
            data.extend_from_slice(&m.data[ch * m.cells()..(ch + 1) * m.cells()]);
        }
    }
    FeatureMap::new(c, h, w, data)
}

/// The labels of a stack, split back into one map per image.
fn unstack(labels: &LabelMap, maps: &[&FeatureMap]) -> Vec<LabelMap> {
    let mut start = 0;
    maps.iter()
        .map(|m| {
            let part = labels.labels[start..start + m.cells()].to_vec();
            start += m.cells();
            LabelMap {
                grid: GridSize::new(m.height, m.width),
                labels: part,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two parts: the left half of every map points one way, the right half another; `flip` swaps
    /// them, so per-image clusters come out in another order unless matched.
    fn halves(h: usize, w: usize, flip: bool) -> FeatureMap {
        crate::analysis::recipes::map_from_fn(3, h, w, |c, y, x| {
            let left = (x < w / 2) != flip;
            match (c, left) {
                (0, true) | (1, false) => 1.0,
                (0, false) | (1, true) => 0.1,
                _ => 0.01 * ((x + y) % 2) as f32,
            }
        })
    }

    #[test]
    fn per_image_clusters_are_matched_to_the_first_image() {
        let (a, b) = (halves(4, 6, false), halves(4, 6, true));
        let options = SegmentOptions {
            method: SegmentMethod::KMeans { k: 2, seed: 0 },
            joint: false,
        };
        let s = segment(&[&a, &b], &options).unwrap();
        assert_eq!(s.segments, 2);
        // The same part gets the same label in both images: a's left is b's right.
        let label = |m: &LabelMap, x: usize| m.labels[x];
        assert_eq!(label(&s.labels[0], 0), label(&s.labels[1], 5));
        assert_ne!(label(&s.labels[0], 0), label(&s.labels[0], 5));
        assert!(s.description.contains("K=2") && s.description.contains("Hungarian"));
        let joint = segment(
            &[&a, &b],
            &SegmentOptions {
                joint: true,
                ..options
            },
        )
        .unwrap();
        assert_eq!(joint.labels[0].labels, s.labels[0].labels);
        assert!(joint.summary.contains("K=2, joint"), "{}", joint.summary);
        assert_eq!(
            kmeans_inertia(&[&a, &b], 2, false).unwrap(),
            s.inertia.unwrap()
        );
        assert_eq!(
            kmeans_inertia(&[&a, &b], 2, true).unwrap(),
            joint.inertia.unwrap()
        );
    }

    #[test]
    fn joint_ncut_cuts_the_stacked_cells_and_splits_them_back() {
        let (a, b) = (halves(4, 6, false), halves(2, 6, true));
        let ncut = |maps: &[&FeatureMap], joint: bool| {
            let method = SegmentMethod::NCut {
                tau: 0.5,
                alpha: 10.0,
            };
            segment(maps, &SegmentOptions { method, joint })
        };
        let joint = ncut(&[&a, &b], true).unwrap();
        assert_eq!(joint.labels[0].grid, GridSize::new(4, 6));
        assert_eq!(joint.labels[1].grid, GridSize::new(2, 6));
        assert_eq!(joint.labels[0].labels[0], joint.labels[1].labels[5]);
        assert!(joint.description.contains("all 2 images jointly"));
        let alone = ncut(&[&a, &b], false).unwrap();
        assert_eq!(alone.inertia, None);
        assert!(alone
            .description
            .contains("(colours are not matched across images)"));
        let err = ncut(&[&a, &halves(4, 5, false)], true).unwrap_err();
        assert!(err.to_string().contains("same width"), "{err}");
        assert!(ncut(&[], false).is_err());
    }
}
