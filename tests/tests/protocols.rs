//! The research protocols against Python implementations of their reference code, on committed
//! features (`tests/fixtures/protocol/`, written by `make_protocol_fixtures.py`): SD-DINO's fusion
//! formula, and DIFT's `eval_spair.py` PCK counting.

use diffscope_engine::analysis::aggregate::AggregateGrid;
use diffscope_engine::analysis::recipes::correspondence::{predict_keypoints, MatchRule};
use diffscope_engine::analysis::recipes::fusion::{fuse, FusionSource, FusionTap};
use diffscope_engine::analysis::ImageSize;
use diffscope_engine::eval::pck::{PckAccumulator, ThresholdBase};
use diffscope_engine::features::map::{read_feature_map, FeatureMap};
use diffscope_tests::fixtures;
use serde_json::Value;

fn map(name: &str) -> FeatureMap {
    read_feature_map(fixtures().join("protocol").join(format!("{name}.npy"))).unwrap()
}

fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures().join("protocol/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn fusion_equals_sd_dino_formula() {
    let cases = cases();
    let dims = &cases["fusion"]["dims"];
    let maps: Vec<Vec<FeatureMap>> = ["s5", "s4", "s3", "dino"]
        .iter()
        .map(|tap| (0..2).map(|i| map(&format!("fusion_{tap}_{i}"))).collect())
        .collect();
    for (label, case) in cases["fusion"]["cases"].as_object().unwrap() {
        let sd_taps = ["s5", "s4", "s3"]
            .iter()
            .enumerate()
            .map(|(k, tap)| FusionTap {
                name: tap.to_string(),
                maps: maps[k].iter().collect(),
                pca_dims: Some(dims[tap].as_u64().unwrap() as usize),
                weight: 1.0,
            })
            .collect();
        let sources = [
            FusionSource {
                name: "sd".into(),
                taps: sd_taps,
                weight: case["sd_weight"].as_f64().unwrap() as f32,
            },
            FusionSource {
                name: "dino".into(),
                taps: vec![FusionTap {
                    name: "dino".into(),
                    maps: maps[3].iter().collect(),
                    pca_dims: None,
                    weight: 1.0,
                }],
                weight: case["dino_weight"].as_f64().unwrap() as f32,
            },
        ];
        let fused = fuse(&sources, AggregateGrid::Finest).unwrap();
        for (i, ours) in fused.maps.iter().enumerate() {
            let theirs = map(&format!("fusion_{label}_{i}"));
            assert_eq!(
                (ours.channels, ours.height, ours.width),
                (theirs.channels, theirs.height, theirs.width)
            );
            let scale = theirs.data.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = ours
                .data
                .iter()
                .zip(theirs.data.iter())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-4 * scale,
                "{label} image {i}: {err:.2e} of {scale}"
            );
            eprintln!(
                "fusion {label} image {i}: max error {:.2e} of the largest value",
                err / scale
            );
        }
        assert!(
            fused.description.contains("joint PCA to 4 over 2 images"),
            "{}",
            fused.description
        );
        assert!(fused.pca.iter().all(|(_, _, converged)| *converged));
    }
}

fn points(v: &Value) -> Vec<[f64; 2]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
        .collect()
}

#[test]
fn dift_protocol_counts_as_dift_eval_spair_does() {
    let cases = cases();
    let pck = &cases["pck"];
    for (base, key) in [
        (ThresholdBase::BoundingBox, "bbox"),
        (ThresholdBase::Image, "img"),
    ] {
        let expected = &pck["results"][key];
        let mut counted = PckAccumulator::new(&[0.1]).unwrap();
        for (i, pair) in pck["pairs"].as_array().unwrap().iter().enumerate() {
            let size = |k: &str| {
                ImageSize::new(
                    pair[k][0].as_u64().unwrap() as usize,
                    pair[k][1].as_u64().unwrap() as usize,
                )
            };
            let (src, trg) = (map(&format!("pck_src_{i}")), map(&format!("pck_trg_{i}")));
            let predicted = predict_keypoints(
                (&src, size("src_imsize")),
                (&trg, size("trg_imsize")),
                &points(&pair["src_kps"]),
                &MatchRule::UpsampledFeatures,
            )
            .unwrap();
            assert_eq!(predicted, points(&expected["predictions"][i]), "pair {i}");
            let bbox: Vec<f64> = pair["trg_bndbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let trg = size("trg_imsize");
            let scale = base.size(
                [bbox[0], bbox[1], bbox[2], bbox[3]],
                (trg.width as f64, trg.height as f64),
            );
            counted
                .add_pair_scaled(
                    pair["category"].as_str().unwrap(),
                    &predicted,
                    &points(&pair["trg_kps"]),
                    scale,
                )
                .unwrap();
        }
        let report = counted.report();
        let (per_image, per_point) = (report.overall.per_image[0], report.overall.per_point[0]);
        assert!(
            (per_image - expected["per_image"].as_f64().unwrap()).abs() < 1e-12,
            "{key} per image {per_image}"
        );
        assert!(
            (per_point - expected["per_point"].as_f64().unwrap()).abs() < 1e-12,
            "{key} per point {per_point}"
        );
        eprintln!("DIFT counting, {key}: per image {per_image:.4}, per point {per_point:.4} (equal to eval_spair.py's)");
    }
}
