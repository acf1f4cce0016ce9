//! Correspondence of points: the source and target maps normalised once, then any number of point
//! queries, under one of two rules for where a match lands ([`MatchRule`]), each of which says what
//! it does.

use crate::analysis::coords::{ImagePoint, ImageSize};
use crate::analysis::correspond::{
    argmax, correspond_point, similarity_map, source_vector, CorrespondOptions, PointMatch, Target,
};
use crate::analysis::normalized::NormalizedMap;
use crate::analysis::upsampled_cosine::{upsampled_cosine, NeighbourGram};
use crate::error::{Error, Result};
use crate::features::map::FeatureMap;

/// Where the match of a point lands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MatchRule {
    /// The argmax cell refined by a soft-argmax at feature resolution, with the mutual check
    /// ([`correspond_point`]): the workbench and `diffscope correspond`.
    SoftArgmax(CorrespondOptions),
    /// The argmax pixel of the similarity upsampled bilinearly to the target image: DIFT's
    /// protocol made cheap (DIFT upsamples the features instead; the two agree to first order).
    UpsampledArgmax,
    /// DIFT's `eval_spair.py` exactly: both maps upsampled bilinearly to their images before the
    /// cosine (computed without holding the upsampled maps), match = the argmax pixel.
    UpsampledFeatures,
}

impl MatchRule {
    /// One line for captions.
    pub fn describe(&self) -> String {
        match self {
            MatchRule::SoftArgmax(o) => {
                let side = 2 * o.window_radius + 1;
                format!(
                    "cosine similarity at feature resolution, bilinear sample at the click, match = argmax + {side}x{side} soft-argmax"
                )
            }
            MatchRule::UpsampledArgmax => "cosine similarity at feature resolution, bilinear sample at the point, match = argmax of the similarity upsampled bilinearly to the target image (DIFT's protocol, similarity upsampled)".to_string(),
            MatchRule::UpsampledFeatures => "features upsampled bilinearly to each image before the cosine, match = argmax pixel (DIFT's eval_spair.py exactly)".to_string(),
        }
    }

    /// The settings behind [`Self::describe`]'s line, for figure files and reports (empty when it
    /// has none).
    pub fn parameters(&self) -> String {
        match self {
            MatchRule::SoftArgmax(o) => format!(
                "soft-argmax temperature {}; mutual = the match matches back within {} cell of the point",
                o.temperature, o.mutual_tolerance
            ),
            MatchRule::UpsampledArgmax | MatchRule::UpsampledFeatures => String::new(),
        }
    }
}

/// A source and its targets, normalised once for any number of queries.
#[derive(Clone, Debug)]
pub struct Correspondence {
    source: NormalizedMap,
    source_image: ImageSize,
    targets: Vec<(NormalizedMap, ImageSize)>,
    /// Each target's neighbour dot products, made at the first [`MatchRule::UpsampledFeatures`] query.
    grams: Vec<std::sync::OnceLock<NeighbourGram>>,
}

impl Correspondence {
    /// `maps[0]` is the source, the others the targets; `images` their image sizes, in order.
    pub fn new(maps: &[&FeatureMap], images: &[ImageSize]) -> Result<Self> {
        if maps.len() < 2 {
            return Err(Error::invalid(
                "correspondence needs a source and at least one target image",
            ));
        }
        if images.len() != maps.len() {
            return Err(Error::invalid(format!(
                "correspondence: {} feature maps for {} images",
                maps.len(),
                images.len()
            )));
        }
        let mut normalized = maps
            .iter()
            .enumerate()
            .map(|(i, m)| NormalizedMap::new(m, &format!("features of image {}", i + 1)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .zip(images.iter().copied());
        let (source, source_image) = normalized.next().expect("two maps at least");
        let targets: Vec<(NormalizedMap, ImageSize)> = normalized.collect();
        Ok(Self {
            source,
            source_image,
            grams: targets.iter().map(|_| Default::default()).collect(),
            targets,
        })
    }

    /// The full answer for a point in every target under the soft-argmax rule: similarity map,
    /// refined match and mutual flag.
    pub fn match_point(
        &self,
        point: ImagePoint,
        options: &CorrespondOptions,
    ) -> Result<Vec<PointMatch>> {
        let targets: Vec<Target> = self
            .targets
            .iter()
            .map(|(map, image)| Target { map, image: *image })
            .collect();
        correspond_point(&self.source, self.source_image, point, &targets, options)
    }

    /// [`Self::match_point`] for several points: `[point][target]`.
    pub fn match_points(
        &self,
        points: &[ImagePoint],
        options: &CorrespondOptions,
    ) -> Result<Vec<Vec<PointMatch>>> {
        points
            .iter()
            .map(|&p| self.match_point(p, options))
            .collect()
    }

    /// Where `point` lands in every target under `rule`.
    pub fn predict(&self, point: ImagePoint, rule: &MatchRule) -> Result<Vec<ImagePoint>> {
        match rule {
            MatchRule::SoftArgmax(options) => Ok(self
                .match_point(point, options)?
                .into_iter()
                .map(|m| m.point)
                .collect()),
            MatchRule::UpsampledArgmax => {
                let vector = source_vector(&self.source, self.source_image, point)?;
                self.targets
                    .iter()
                    .map(|(map, image)| {
                        let up = similarity_map(&vector, map)?.upsample_bilinear(*image);
                        let best = argmax(&up).0;
                        Ok(ImagePoint::new(
                            (best % image.width) as f32,
                            (best / image.width) as f32,
                        ))
                    })
                    .collect()
            }
            MatchRule::UpsampledFeatures => {
                let vector = source_vector(&self.source, self.source_image, point)?;
                self.targets
                    .iter()
                    .zip(&self.grams)
                    .map(|((map, image), gram)| {
                        let gram = gram.get_or_init(|| NeighbourGram::new(map.raw()));
                        let cosine = upsampled_cosine(&vector, map.raw(), gram, *image)?;
                        let best = argmax(&cosine).0;
                        Ok(ImagePoint::new(
                            (best % image.width) as f32,
                            (best / image.width) as f32,
                        ))
                    })
                    .collect()
            }
        }
    }
}

/// Where each source keypoint lands in the target under `rule`, in target pixels: the predictions
/// PCK scores ([`crate::eval::pck::PckAccumulator::add_pair`]).
pub fn predict_keypoints(
    source: (&FeatureMap, ImageSize),
    target: (&FeatureMap, ImageSize),
    keypoints: &[[f64; 2]],
    rule: &MatchRule,
) -> Result<Vec<[f64; 2]>> {
    let pair = Correspondence::new(&[source.0, target.0], &[source.1, target.1])?;
    keypoints
        .iter()
        .map(|kp| {
            let found = pair.predict(ImagePoint::new(kp[0] as f32, kp[1] as f32), rule)?;
            Ok([f64::from(found[0].x), f64::from(found[0].y)])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cell (r, c) of an h x w grid holds a one-hot vector at channel `(r + shift) % h * w + c`.
    fn one_hot(h: usize, w: usize, shift: usize) -> FeatureMap {
        let n = h * w;
        let mut data = vec![0f32; n * n];
        for r in 0..h {
            for c in 0..w {
                let channel = (r + shift) % h * w + c;
                data[channel * n + r * w + c] = 1.0;
            }
        }
        FeatureMap::new(n, h, w, data).unwrap()
    }

    #[test]
    fn the_description_names_the_window_actually_used() {
        let default = MatchRule::SoftArgmax(CorrespondOptions::default());
        assert_eq!(
            default.describe(),
            "cosine similarity at feature resolution, bilinear sample at the click, match = argmax + 3x3 soft-argmax"
        );
        let wide = MatchRule::SoftArgmax(CorrespondOptions {
            window_radius: 2,
            temperature: 0.1,
            mutual_tolerance: 0,
        });
        assert!(wide.describe().ends_with("argmax + 5x5 soft-argmax"));
        assert_eq!(
            wide.parameters(),
            "soft-argmax temperature 0.1; mutual = the match matches back within 0 cell of the point"
        );
        assert!(MatchRule::UpsampledArgmax.describe().contains("DIFT"));
    }

    #[test]
    fn both_rules_find_unique_features_and_agree_with_the_kernel() {
        // 8x8 one-hot cells on 64x64 images: cell (r, c) is centred on pixel (8c + 3.5, 8r + 3.5).
        // The target is the source moved one cell down.
        let (src, trg) = (one_hot(8, 8, 0), one_hot(8, 8, 7));
        let size = ImageSize::new(64, 64);
        let pair = Correspondence::new(&[&src, &trg], &[size, size]).unwrap();
        let point = ImagePoint::new(19.5, 27.5);
        let options = CorrespondOptions::default();
        let full = pair.match_point(point, &options).unwrap();
        let (s, t) = (
            NormalizedMap::new(&src, "s").unwrap(),
            NormalizedMap::new(&trg, "t").unwrap(),
        );
        let direct = correspond_point(
            &s,
            size,
            point,
            &[Target {
                map: &t,
                image: size,
            }],
            &options,
        )
        .unwrap();
        assert_eq!(full, direct);
        assert!((full[0].point.x - 19.5).abs() < 1e-3 && (full[0].point.y - 35.5).abs() < 1e-3);
        let dift = pair.predict(point, &MatchRule::UpsampledArgmax).unwrap();
        assert!((dift[0].x - 19.5).abs() <= 0.5 && (dift[0].y - 35.5).abs() <= 0.5);
        let kps = predict_keypoints(
            (&src, size),
            (&trg, size),
            &[[19.5, 27.5]],
            &MatchRule::SoftArgmax(options),
        )
        .unwrap();
        assert_eq!(
            kps,
            vec![[f64::from(full[0].point.x), f64::from(full[0].point.y)]]
        );
    }

    #[test]
    fn a_source_alone_is_an_error() {
        let map = one_hot(2, 2, 0);
        let err = Correspondence::new(&[&map], &[ImageSize::new(4, 4)]).unwrap_err();
        assert!(err.to_string().contains("at least one target"), "{err}");
    }
}
