//! PCK@alpha (percentage of correct keypoints) the way DIFT and its successors report it on
//! SPair-71k: a predicted target point is correct when its distance to the true target keypoint
//! is at most `alpha * max(w, h)` of the target's bounding box, `w = x2 - x1`, `h = y2 - y1`.
//!
//! Papers report two averages, and they differ: **per image** (the PCK of each pair, averaged
//! over pairs) and **per point** (all correct points over all points). Both are given overall
//! and per category, for several alphas at once; the mean over categories is given too (some
//! papers average the categories instead of the pairs).
//!
//! The threshold's base is the target's box (`alpha_bbox`, SPair's standard) or the whole target
//! image (`alpha_img`, max of its width and height, as PF-Pascal papers and SD-DINO's
//! `--IMG_THRESHOLD` count): [`ThresholdBase`]. A point is correct when `distance / base <= alpha`,
//! DIFT's `eval_spair.py` comparison.
//!
//! Pure computation: predictions come from elsewhere. Points and the box must be in the same
//! pixel frame (if images were resized for the model, scale the predictions back or scale the
//! truth and the box alike).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The distance threshold of PCK@alpha for a target box [x1, y1, x2, y2].
pub fn pck_threshold(bndbox: [f64; 4], alpha: f64) -> f64 {
    alpha * box_size(bndbox)
}

fn box_size([x1, y1, x2, y2]: [f64; 4]) -> f64 {
    (x2 - x1).max(y2 - y1)
}

/// What alpha is a fraction of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum ThresholdBase {
    /// The larger side of the target's bounding box (`alpha_bbox`).
    #[default]
    BoundingBox,
    /// The larger side of the target image (`alpha_img`).
    Image,
}

impl ThresholdBase {
    /// The length alpha multiplies, for a target box and a target image `(width, height)`.
    pub fn size(self, bndbox: [f64; 4], (width, height): (f64, f64)) -> f64 {
        match self {
            ThresholdBase::BoundingBox => box_size(bndbox),
            ThresholdBase::Image => width.max(height),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ThresholdBase::BoundingBox => {
                "alpha_bbox: threshold = alpha x the larger side of the target's bounding box"
            }
            ThresholdBase::Image => {
                "alpha_img: threshold = alpha x the larger side of the target image"
            }
        }
    }
}

/// The result of one pair.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PairPck {
    pub category: String,
    /// Euclidean distance of each prediction to its true keypoint (NaN for a non-finite prediction).
    pub distances: Vec<f64>,
    /// Per alpha: the threshold in pixels.
    pub thresholds: Vec<f64>,
    /// Per alpha, per point: whether the prediction is correct.
    pub correct: Vec<Vec<bool>>,
}

impl PairPck {
    /// Per alpha: correct points / points of this pair (None if the pair has no points).
    pub fn pck(&self) -> Vec<Option<f64>> {
        self.correct
            .iter()
            .map(|c| {
                (!c.is_empty()).then(|| c.iter().filter(|&&ok| ok).count() as f64 / c.len() as f64)
            })
            .collect()
    }
}

/// Averages of a set of pairs, one entry per alpha.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PckSummary {
    /// Pairs with at least one point.
    pub pairs: usize,
    pub points: usize,
    /// Per alpha: correct points over all points.
    pub correct_points: Vec<usize>,
    /// Per alpha: mean over pairs of each pair's PCK.
    pub per_image: Vec<f64>,
    /// Per alpha: correct points / points.
    pub per_point: Vec<f64>,
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PckReport {
    pub alphas: Vec<f64>,
    pub overall: PckSummary,
    pub per_category: BTreeMap<String, PckSummary>,
    /// Per alpha: the mean over categories of their per-image PCK.
    pub category_mean_per_image: Vec<f64>,
    /// Per alpha: the mean over categories of their per-point PCK.
    pub category_mean_per_point: Vec<f64>,
    /// Pairs given with no keypoints (left out of every average).
    pub empty_pairs: usize,
}

/// Collects pairs and reports PCK at several alphas.
#[derive(Clone, Debug)]
pub struct PckAccumulator {
    alphas: Vec<f64>,
    pairs: Vec<PairPck>,
}

impl PckAccumulator {
    /// Alphas must be positive and finite (SPair papers use 0.05, 0.1, 0.15).
    pub fn new(alphas: &[f64]) -> Result<Self> {
        if alphas.is_empty() {
            return Err(Error::invalid("PCK needs at least one alpha"));
        }
        if let Some(a) = alphas.iter().find(|a| !(a.is_finite() && **a > 0.0)) {
            return Err(Error::invalid(format!(
                "PCK alpha must be a positive number, got {a}"
            )));
        }
        Ok(Self {
            alphas: alphas.to_vec(),
            pairs: Vec::new(),
        })
    }

    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }

    /// Score one pair: `predicted[i]` is the match found for source keypoint i, `truth[i]` the
    /// annotated target keypoint, `trg_bndbox` the target's box [x1, y1, x2, y2].
    pub fn add_pair(
        &mut self,
        category: &str,
        predicted: &[[f64; 2]],
        truth: &[[f64; 2]],
        trg_bndbox: [f64; 4],
    ) -> Result<&PairPck> {
        let [x1, y1, x2, y2] = trg_bndbox;
        if !trg_bndbox.iter().all(|v| v.is_finite()) || x2 < x1 || y2 < y1 {
            return Err(Error::invalid(format!(
                "PCK of a {category} pair: bad target box {trg_bndbox:?}"
            )));
        }
        self.add_pair_scaled(category, predicted, truth, box_size(trg_bndbox))
    }

    /// Score one pair against `size`, the length alpha is a fraction of ([`ThresholdBase::size`]).
    pub fn add_pair_scaled(
        &mut self,
        category: &str,
        predicted: &[[f64; 2]],
        truth: &[[f64; 2]],
        size: f64,
    ) -> Result<&PairPck> {
        if !(size.is_finite() && size >= 0.0) {
            return Err(Error::invalid(format!(
                "PCK of a {category} pair: bad threshold size {size}"
            )));
        }
        if predicted.len() != truth.len() {
            return Err(Error::invalid(format!(
                "PCK of a {category} pair: {} predictions for {} keypoints",
                predicted.len(),
                truth.len()
            )));
        }
        if truth.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "PCK of a {category} pair: a true keypoint is not finite"
            )));
        }
        let distances: Vec<f64> = predicted
            .iter()
            .zip(truth)
            .map(|(p, t)| ((p[0] - t[0]).powi(2) + (p[1] - t[1]).powi(2)).sqrt())
            .collect();
        let thresholds: Vec<f64> = self.alphas.iter().map(|&a| a * size).collect();
        // DIFT's comparison, distance / size <= alpha. A NaN distance (non-finite prediction)
        // compares false: incorrect.
        let correct = self
            .alphas
            .iter()
            .map(|&a| {
                distances
                    .iter()
                    .map(|&d| if size > 0.0 { d / size <= a } else { d <= 0.0 })
                    .collect()
            })
            .collect();
        self.pairs.push(PairPck {
            category: category.to_string(),
            distances,
            thresholds,
            correct,
        });
        let last = self.pairs.len() - 1;
        Ok(&self.pairs[last])
    }

    /// Every pair scored so far, in the order added.
    pub fn pairs(&self) -> &[PairPck] {
        &self.pairs
    }

    pub fn report(&self) -> PckReport {
        let n = self.alphas.len();
        let overall = summarize(self.pairs.iter(), n);
        let mut categories: BTreeMap<String, Vec<&PairPck>> = BTreeMap::new();
        for p in &self.pairs {
            categories.entry(p.category.clone()).or_default().push(p);
        }
        let per_category: BTreeMap<String, PckSummary> = categories
            .into_iter()
            .map(|(c, pairs)| (c, summarize(pairs.into_iter(), n)))
            .collect();
        let scored: Vec<&PckSummary> = per_category.values().filter(|s| s.pairs > 0).collect();
        let mean_of = |get: fn(&PckSummary) -> &Vec<f64>| -> Vec<f64> {
            (0..n)
                .map(|a| {
                    if scored.is_empty() {
                        0.0
                    } else {
                        scored.iter().map(|s| get(s)[a]).sum::<f64>() / scored.len() as f64
                    }
                })
                .collect()
        };
        PckReport {
            alphas: self.alphas.clone(),
            category_mean_per_image: mean_of(|s| &s.per_image),
            category_mean_per_point: mean_of(|s| &s.per_point),
            overall,
            per_category,
            empty_pairs: self.pairs.iter().filter(|p| p.distances.is_empty()).count(),
        }
    }
}

fn summarize<'a>(pairs: impl Iterator<Item = &'a PairPck>, n_alphas: usize) -> PckSummary {
    let mut s = PckSummary {
        correct_points: vec![0; n_alphas],
        per_image: vec![0.0; n_alphas],
        per_point: vec![0.0; n_alphas],
        ..Default::default()
    };
    for p in pairs.filter(|p| !p.distances.is_empty()) {
        s.pairs += 1;
        s.points += p.distances.len();
        for (a, pck) in p.pck().into_iter().enumerate() {
            s.per_image[a] += pck.unwrap_or(0.0);
            s.correct_points[a] += p.correct[a].iter().filter(|&&ok| ok).count();
        }
    }
    for a in 0..n_alphas {
        if s.pairs > 0 {
            s.per_image[a] /= s.pairs as f64;
            s.per_point[a] = s.correct_points[a] as f64 / s.points as f64;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Worked by hand:
    /// - cat pair 1, target box [10, 20, 110, 70]: w = 100, h = 50, max 100, so the thresholds
    ///   are 5 (alpha 0.05) and 10 (alpha 0.1). Distances: (3,4) -> 5; (6,8) -> 10; (0,12) -> 12;
    ///   (0,0) -> 0. At 0.05: 5 and 0 are correct -> 2/4 = 0.5 (5 <= 5 counts). At 0.1: 5, 10, 0
    ///   -> 3/4 = 0.75.
    /// - cat pair 2, box [0, 0, 20, 40]: max 40, thresholds 2 and 4. Distance (3, 0) -> 3: wrong
    ///   at 0.05, right at 0.1 -> 0/1 and 1/1.
    /// - dog pair, box [0, 0, 30, 30]: thresholds 1.5 and 3. Distances (1, 0) -> 1 and (0, 2) -> 2:
    ///   at 0.05 only the first is within 1.5 -> 1/2; at 0.1 both -> 2/2.
    ///
    /// Overall per image: 0.05 -> (0.5 + 0 + 0.5) / 3 = 1/3; 0.1 -> (0.75 + 1 + 1) / 3 = 11/12.
    /// Overall per point: 0.05 -> (2 + 0 + 1) / 7 = 3/7; 0.1 -> (3 + 1 + 2) / 7 = 6/7.
    /// Cat per image: 0.05 -> 0.25, 0.1 -> 0.875; cat per point: 2/5, 4/5. Dog: 0.5 and 1 both ways.
    /// Category mean per image: 0.05 -> (0.25 + 0.5) / 2 = 0.375; 0.1 -> (0.875 + 1) / 2 = 0.9375.
    #[test]
    fn toy_case_checked_by_hand() {
        let mut acc = PckAccumulator::new(&[0.05, 0.1]).unwrap();
        let truth = [[50.0, 40.0], [20.0, 30.0], [60.0, 60.0], [15.0, 25.0]];
        let predicted = [[53.0, 44.0], [26.0, 38.0], [60.0, 72.0], [15.0, 25.0]];
        let p1 = acc
            .add_pair("cat", &predicted, &truth, [10.0, 20.0, 110.0, 70.0])
            .unwrap();
        assert_eq!(p1.distances, vec![5.0, 10.0, 12.0, 0.0]);
        assert_eq!(p1.thresholds, vec![5.0, 10.0]);
        assert_eq!(p1.pck(), vec![Some(0.5), Some(0.75)]);
        acc.add_pair(
            "cat",
            &[[13.0, 10.0]],
            &[[10.0, 10.0]],
            [0.0, 0.0, 20.0, 40.0],
        )
        .unwrap();
        acc.add_pair(
            "dog",
            &[[6.0, 5.0], [5.0, 7.0]],
            &[[5.0, 5.0], [5.0, 5.0]],
            [0.0, 0.0, 30.0, 30.0],
        )
        .unwrap();

        let r = acc.report();
        assert_eq!((r.overall.pairs, r.overall.points), (3, 7));
        assert_eq!(r.overall.correct_points, vec![3, 6]);
        assert!(
            close(r.overall.per_image[0], 1.0 / 3.0) && close(r.overall.per_image[1], 11.0 / 12.0)
        );
        assert!(
            close(r.overall.per_point[0], 3.0 / 7.0) && close(r.overall.per_point[1], 6.0 / 7.0)
        );
        let cat = &r.per_category["cat"];
        assert!(close(cat.per_image[0], 0.25) && close(cat.per_image[1], 0.875));
        assert!(close(cat.per_point[0], 0.4) && close(cat.per_point[1], 0.8));
        let dog = &r.per_category["dog"];
        assert!(close(dog.per_image[0], 0.5) && close(dog.per_point[1], 1.0));
        assert!(
            close(r.category_mean_per_image[0], 0.375)
                && close(r.category_mean_per_image[1], 0.9375)
        );
        assert_eq!(r.empty_pairs, 0);
    }

    #[test]
    fn bad_input_is_refused_and_nan_predictions_are_wrong() {
        assert!(PckAccumulator::new(&[]).is_err());
        assert!(PckAccumulator::new(&[0.1, -0.1]).is_err());
        let mut acc = PckAccumulator::new(&[0.1]).unwrap();
        assert!(acc
            .add_pair("cat", &[[0.0, 0.0]], &[], [0.0, 0.0, 1.0, 1.0])
            .is_err());
        assert!(acc
            .add_pair("cat", &[[0.0, 0.0]], &[[0.0, 0.0]], [5.0, 0.0, 1.0, 1.0])
            .is_err());
        let p = acc
            .add_pair(
                "cat",
                &[[f64::NAN, 0.0]],
                &[[0.0, 0.0]],
                [0.0, 0.0, 10.0, 10.0],
            )
            .unwrap();
        assert_eq!(p.correct, vec![vec![false]]);
        acc.add_pair("cat", &[], &[], [0.0, 0.0, 10.0, 10.0])
            .unwrap();
        let r = acc.report();
        assert_eq!((r.overall.pairs, r.empty_pairs), (1, 1));
        assert_eq!(r.overall.per_image, vec![0.0]);
    }
}
