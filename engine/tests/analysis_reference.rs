//! The analysis engine against numpy references (tests/fixtures/analysis, made by
//! tests/fixtures/scripts/make_analysis_fixtures.py), and the npy reader against files numpy wrote.

use std::path::PathBuf;

use diffscope_engine::analysis::aggregate::{aggregate, AggregateGrid, WeightedTap};
use diffscope_engine::analysis::correspond::{
    correspond_point, dense_matches, CorrespondOptions, DenseOptions, Target,
};
use diffscope_engine::analysis::ncut::{affinity, fiedler_vector, recursive_ncut, NCutOptions};
use diffscope_engine::analysis::pca::{to_rgb_u8, PcaBasis, PcaOptions, RgbRange};
use diffscope_engine::analysis::{GridSize, ImagePoint, ImageSize, NormalizedMap};
use diffscope_engine::features::map::read_feature_map;
use diffscope_engine::io::npy::{encode_npy, read_npy, NpyData};
use diffscope_engine::FeatureMap;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/analysis")
        .join(name)
}

fn map(name: &str) -> FeatureMap {
    read_feature_map(fixture(&format!("{name}.npy"))).unwrap()
}

fn floats(name: &str) -> Vec<f64> {
    read_npy(fixture(&format!("{name}.npy")))
        .unwrap()
        .to_f64()
        .unwrap()
}

fn ints(name: &str) -> Vec<i64> {
    match read_npy(fixture(&format!("{name}.npy"))).unwrap().data {
        NpyData::I64(v) => v,
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
        other => panic!("{name}: expected integers, got {:?}", other.dtype()),
    }
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("cases.json")).unwrap()).unwrap()
}

fn size(v: &Value) -> ImageSize {
    ImageSize::new(
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn point_correspondence_matches_numpy() {
    let cases = cases();
    let case = &cases["correspondence"];
    let source = NormalizedMap::new(&map("corr_source"), "source").unwrap();
    let targets_raw = [map("corr_target_0"), map("corr_target_1")];
    let targets_norm: Vec<NormalizedMap> = targets_raw
        .iter()
        .map(|m| NormalizedMap::new(m, "target").unwrap())
        .collect();
    let target_images: Vec<ImageSize> = case["target_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(size)
        .collect();
    let targets: Vec<Target> = targets_norm
        .iter()
        .zip(&target_images)
        .map(|(map, &image)| Target { map, image })
        .collect();
    let source_image = size(&case["source_image"]);
    let sims = [floats("corr_sim_0"), floats("corr_sim_1")];
    for tolerance in [0usize, 1] {
        let options = CorrespondOptions {
            window_radius: case["window_radius"].as_u64().unwrap() as usize,
            temperature: case["temperature"].as_f64().unwrap() as f32,
            mutual_tolerance: tolerance,
        };
        for (p, point) in case["points"].as_array().unwrap().iter().enumerate() {
            let point = ImagePoint::new(
                point[0].as_f64().unwrap() as f32,
                point[1].as_f64().unwrap() as f32,
            );
            let found = correspond_point(&source, source_image, point, &targets, &options).unwrap();
            for (t, (m, expected)) in found
                .iter()
                .zip(case["results"][p].as_array().unwrap())
                .enumerate()
            {
                let what = format!("point {p}, target {t}");
                let cells = m.similarity.values.len();
                for (i, (&ours, &theirs)) in m
                    .similarity
                    .values
                    .iter()
                    .zip(&sims[t][p * cells..(p + 1) * cells])
                    .enumerate()
                {
                    close(
                        f64::from(ours),
                        theirs,
                        1e-5,
                        &format!("{what}, similarity of cell {i}"),
                    );
                }
                assert_eq!(
                    [m.best_cell.0 as u64, m.best_cell.1 as u64],
                    [
                        expected["best_cell"][0].as_u64().unwrap(),
                        expected["best_cell"][1].as_u64().unwrap()
                    ],
                    "{what}"
                );
                close(
                    f64::from(m.best_similarity),
                    expected["best_similarity"].as_f64().unwrap(),
                    1e-5,
                    &what,
                );
                close(
                    f64::from(m.point.x),
                    expected["point"][0].as_f64().unwrap(),
                    1e-3,
                    &what,
                );
                close(
                    f64::from(m.point.y),
                    expected["point"][1].as_f64().unwrap(),
                    1e-3,
                    &what,
                );
                close(
                    f64::from(m.grid_point.x),
                    expected["grid_point"][0].as_f64().unwrap(),
                    1e-4,
                    &what,
                );
                assert_eq!(
                    [m.back_cell.0 as u64, m.back_cell.1 as u64],
                    [
                        expected["back_cell"][0].as_u64().unwrap(),
                        expected["back_cell"][1].as_u64().unwrap()
                    ],
                    "{what}"
                );
                let key = format!("mutual_tolerance_{tolerance}");
                assert_eq!(m.mutual, expected[&key].as_bool().unwrap(), "{what}, {key}");
            }
        }
    }
}

#[test]
fn dense_matches_match_numpy() {
    let source = NormalizedMap::new(&map("corr_source"), "source").unwrap();
    let target = NormalizedMap::new(&map("corr_target_0"), "target").unwrap();
    let forward = ints("dense_forward");
    let back = ints("dense_back");
    let mutual = ints("dense_mutual");
    let similarity = floats("dense_similarity");
    // Small chunks exercise the chunking; the answer must not depend on it.
    for chunk_cells in [5, 1024] {
        let dense = dense_matches(
            &source,
            &target,
            &DenseOptions {
                mutual_tolerance: 0,
                chunk_cells,
            },
        )
        .unwrap();
        for (i, m) in dense.matches.iter().enumerate() {
            assert_eq!(m.target_cell as i64, forward[i], "source cell {i}");
            close(
                f64::from(m.similarity),
                similarity[i],
                1e-5,
                "dense similarity",
            );
            assert_eq!(m.mutual, mutual[i] == 1, "source cell {i}");
        }
        assert_eq!(
            dense.back.iter().map(|&b| b as i64).collect::<Vec<_>>(),
            back
        );
    }
}

/// Compare unit vectors up to sign (the fixture applies the same sign rule, so the sign must agree too).
fn assert_components(ours: &[Vec<f32>], theirs: &[f64], tol: f64) {
    let c = ours[0].len();
    for (i, component) in ours.iter().enumerate() {
        for (j, &v) in component.iter().enumerate() {
            close(
                f64::from(v),
                theirs[i * c + j],
                tol,
                &format!("component {i}, loading {j}"),
            );
        }
    }
}

#[test]
fn pca_matches_numpy_svd() {
    let maps = [map("pca_map_0"), map("pca_map_1"), map("pca_map_2")];
    let refs: Vec<&FeatureMap> = maps.iter().collect();
    let joint = PcaBasis::fit(&refs, &PcaOptions::default()).unwrap();
    assert!(joint.converged);
    assert_components(&joint.components, &floats("pca_joint_components"), 2e-5);
    for (ours, theirs) in joint.mean.iter().zip(floats("pca_joint_mean")) {
        close(f64::from(*ours), theirs, 1e-5, "mean");
    }
    for (ours, theirs) in joint
        .explained_variance
        .iter()
        .zip(floats("pca_joint_variance"))
    {
        close(*ours, theirs, 1e-5 * theirs, "explained variance");
    }
    for (ours, theirs) in joint
        .explained_variance_ratio
        .iter()
        .zip(floats("pca_joint_ratio"))
    {
        close(*ours, theirs, 1e-6, "explained variance ratio");
    }
    let single = PcaBasis::fit(&refs[..1], &PcaOptions::default()).unwrap();
    assert_components(&single.components, &floats("pca_single_components"), 2e-5);
    for (ours, theirs) in single
        .explained_variance_ratio
        .iter()
        .zip(floats("pca_single_ratio"))
    {
        close(*ours, theirs, 1e-6, "single explained variance ratio");
    }
    // Scores and RGB of map 2 with the joint basis and a joint 1..99 percentile range.
    let projections: Vec<_> = maps.iter().map(|m| joint.project(m).unwrap()).collect();
    let scores = floats("pca_scores_2");
    let flat: Vec<f32> = projections[2].scores.iter().flatten().copied().collect();
    for (ours, theirs) in flat.iter().zip(&scores) {
        close(f64::from(*ours), *theirs, 1e-4, "score");
    }
    let range = RgbRange::fit(&projections.iter().collect::<Vec<_>>(), 1.0, 99.0).unwrap();
    let expected_range = floats("pca_range");
    for (i, (lo, hi)) in range.low.iter().zip(&range.high).enumerate() {
        close(f64::from(*lo), expected_range[i], 1e-4, "range low");
        close(f64::from(*hi), expected_range[3 + i], 1e-4, "range high");
    }
    let rgb = to_rgb_u8(&projections[2], &range).unwrap();
    let expected = ints("pca_rgb_2");
    assert_eq!(rgb.len(), expected.len());
    for (ours, theirs) in rgb.iter().zip(&expected) {
        assert!(
            (i64::from(*ours) - theirs).abs() <= 1,
            "rgb {ours} vs {theirs}"
        );
    }
}

#[test]
fn aggregate_matches_numpy() {
    let taps = [map("agg_tap_0"), map("agg_tap_1"), map("agg_tap_2")];
    let cases = cases();
    let weights: Vec<f32> = cases["aggregate"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap() as f32)
        .collect();
    let weighted: Vec<WeightedTap> = taps
        .iter()
        .zip(&weights)
        .map(|(map, &weight)| WeightedTap { map, weight })
        .collect();
    for (grid, name) in [
        (AggregateGrid::Finest, "agg_finest"),
        (AggregateGrid::Size(GridSize::new(10, 9)), "agg_10x9"),
    ] {
        let ours = aggregate(&weighted, grid).unwrap();
        let theirs = map(name);
        assert_eq!(
            (ours.channels, ours.height, ours.width),
            (theirs.channels, theirs.height, theirs.width)
        );
        for (a, b) in ours.data.iter().zip(theirs.data.iter()) {
            close(f64::from(*a), f64::from(*b), 1e-5, name);
        }
    }
}

#[test]
fn recursive_ncut_matches_numpy() {
    let cases = cases();
    let case = &cases["ncut"];
    let feature_map = map("ncut_map");
    let options = NCutOptions {
        alpha: case["alpha"].as_f64().unwrap() as f32,
        tau: case["tau"].as_f64().unwrap(),
        ..Default::default()
    };
    let ours = affinity(&feature_map, options.alpha).unwrap();
    for (a, b) in ours.iter().zip(floats("ncut_affinity")) {
        close(f64::from(*a), b, 1e-5, "affinity");
    }
    let fiedler = fiedler_vector(&feature_map, &options).unwrap();
    let expected = floats("ncut_fiedler");
    let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (a, b) in fiedler.iter().zip(&expected) {
        close(f64::from(*a), *b, 1e-4 * scale, "Fiedler vector");
    }
    let segmentation = recursive_ncut(&feature_map, &options).unwrap();
    assert_eq!(
        segmentation.segments as u64,
        case["segments"].as_u64().unwrap()
    );
    assert_eq!(
        segmentation
            .labels
            .labels
            .iter()
            .map(|&l| i64::from(l))
            .collect::<Vec<_>>(),
        ints("ncut_labels")
    );
    close(
        segmentation.cuts[0].ncut,
        case["first_ncut"].as_f64().unwrap(),
        1e-5,
        "first NCut",
    );
}

#[test]
fn npy_reader_reads_what_numpy_wrote() {
    let f32s = read_npy(fixture("npy_f32.npy")).unwrap();
    assert_eq!(f32s.shape, vec![2, 3, 4]);
    assert_eq!(
        f32s.data,
        NpyData::F32((0..24).map(|i| i as f32 / 8.0 - 1.0).collect())
    );
    // Re-encoding gives numpy's bytes exactly.
    assert_eq!(
        encode_npy(&f32s).unwrap(),
        std::fs::read(fixture("npy_f32.npy")).unwrap()
    );
    let f64s = read_npy(fixture("npy_f64.npy")).unwrap();
    assert_eq!(f64s.data, NpyData::F64(vec![-1.0, -0.5, 0.0, 0.5, 1.0]));
    assert_eq!(
        encode_npy(&f64s).unwrap(),
        std::fs::read(fixture("npy_f64.npy")).unwrap()
    );
    let i64s = read_npy(fixture("npy_i64.npy")).unwrap();
    assert_eq!(
        (i64s.shape.clone(), i64s.data.clone()),
        (
            vec![2, 3],
            NpyData::I64(vec![-(1 << 40), 0, 7, 1, 2, 1 << 62])
        )
    );
    assert_eq!(
        encode_npy(&i64s).unwrap(),
        std::fs::read(fixture("npy_i64.npy")).unwrap()
    );
    let u8s = read_npy(fixture("npy_u8.npy")).unwrap();
    assert_eq!(u8s.data, NpyData::U8(vec![0, 51, 102, 153, 204, 255]));
    assert_eq!(
        encode_npy(&u8s).unwrap(),
        std::fs::read(fixture("npy_u8.npy")).unwrap()
    );
    let scalar = read_npy(fixture("npy_scalar.npy")).unwrap();
    assert_eq!(
        (scalar.shape.len(), scalar.data.clone()),
        (0, NpyData::F32(vec![2.5]))
    );
    assert_eq!(
        encode_npy(&scalar).unwrap(),
        std::fs::read(fixture("npy_scalar.npy")).unwrap()
    );
    let v2 = read_npy(fixture("npy_f32_v2.npy")).unwrap();
    assert_eq!(
        (v2.shape.clone(), v2.data.clone()),
        (vec![3, 2], NpyData::F32((0..6).map(|i| i as f32).collect()))
    );
    // Unsupported files are errors that name the file and say why.
    for (name, why) in [
        ("npy_fortran.npy", "Fortran"),
        ("npy_f32_big_endian.npy", ">f4"),
        ("npy_i32.npy", "<i4"),
    ] {
        let err = read_npy(fixture(name)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(why), "{err}");
    }
    let err = read_npy(fixture("missing.npy")).unwrap_err().to_string();
    assert!(err.contains("missing.npy"), "{err}");
}
