//! `diffscope correspond`, `pca` and `segment` end to end, from feature files and from a model.

use std::path::{Path, PathBuf};
use std::process::Command;

use diffscope_engine::analysis::correspond::{correspond_point, CorrespondOptions, Target};
use diffscope_engine::analysis::{ImagePoint, ImageSize, NormalizedMap};
use diffscope_engine::export::matches::{MatchExport, CSV_HEADER};
use diffscope_engine::io::npy::read_npy;
use diffscope_engine::FeatureMap;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn diffscope(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_diffscope"))
        .args(args)
        .output()
        .expect("run diffscope");
    assert!(
        out.status.success(),
        "diffscope {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Features of two fixture images from the tiny SD model, written by `diffscope extract`.
fn feature_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let model = fixtures().join("models/sd1_tiny");
    let (a, b) = (
        fixtures().join("images/sd_64x48.png"),
        fixtures().join("images/sd_square_32.png"),
    );
    let (fa, fb) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    for (img, f) in [(&a, &fa), (&b, &fb)] {
        diffscope(&[
            "extract",
            "--model",
            model.to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--t",
            "261",
            "--blocks",
            "up_blocks.1,up_blocks.2",
            "--ensemble",
            "2",
            "--out",
            f.to_str().unwrap(),
        ]);
    }
    (a, b, fa, fb)
}

#[test]
fn correspond_from_feature_files_matches_the_engine_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, fa, fb) = feature_files(tmp.path());
    let out = tmp.path().join("corr");
    diffscope(&[
        "correspond",
        "--source",
        a.to_str().unwrap(),
        "--targets",
        b.to_str().unwrap(),
        "--points",
        "20.5,20;40,30",
        "--blocks",
        "up_blocks.1",
        "--source-features",
        fa.to_str().unwrap(),
        "--target-features",
        fb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let export = MatchExport::read_json(&out.join("matches.json")).unwrap();
    assert_eq!(export.settings["taps"], serde_json::json!(["up_blocks.1"]));
    let records = export.matches;
    assert_eq!(records.len(), 2);

    // The same query through the engine API on the same maps.
    let load = |f: &Path| {
        let t = candle_core::safetensors::load(f, &candle_core::Device::Cpu).unwrap();
        FeatureMap::from_tensor(&t["up_blocks.1"]).unwrap()
    };
    let (sa, sb) = (
        NormalizedMap::new(&load(&fa), "a").unwrap(),
        NormalizedMap::new(&load(&fb), "b").unwrap(),
    );
    let target = [Target {
        map: &sb,
        image: ImageSize::new(32, 32),
    }];
    let expected = correspond_point(
        &sa,
        ImageSize::new(64, 48),
        ImagePoint::new(20.5, 20.0),
        &target,
        &CorrespondOptions::default(),
    )
    .unwrap();
    assert_eq!(records[0].source_point, [20.5, 20.0]);
    assert_eq!(
        records[0].matched,
        [expected[0].point.x, expected[0].point.y]
    );
    assert_eq!(records[0].similarity, expected[0].best_similarity);
    assert_eq!(records[0].mutual, expected[0].mutual);

    let csv = std::fs::read_to_string(out.join("matches.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("# "), "{}", lines[0]);
    assert_eq!(lines[1], CSV_HEADER);
    let fields: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(fields[0], "1");
    assert_eq!(fields[5].parse::<f32>().unwrap(), records[0].matched[0]);
    assert_eq!(fields[7].parse::<f32>().unwrap(), records[0].similarity);
    let figure = image::open(out.join("figure.png")).unwrap();
    assert!(figure.width() > 300 && figure.height() > 200);
}

#[test]
fn pca_and_segment_write_images_and_label_maps_at_image_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, fa, fb) = feature_files(tmp.path());
    let images = format!("{},{}", a.display(), b.display());
    let files = format!("{},{}", fa.display(), fb.display());
    let pca = tmp.path().join("pca");
    diffscope(&[
        "pca",
        "--images",
        &images,
        "--features",
        &files,
        "--blocks",
        "up_blocks.1,up_blocks.2",
        "--joint",
        "--out",
        pca.to_str().unwrap(),
    ]);
    assert_eq!(
        image::open(pca.join("sd_64x48_pca.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (64, 48)
    );
    assert_eq!(
        image::open(pca.join("sd_square_32_pca.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (32, 32)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pca.join("pca.json")).unwrap()).unwrap();
    let ratios = report["fits"][0]["explained_variance_ratio"]
        .as_array()
        .unwrap();
    assert_eq!(ratios.len(), 3);
    assert!(ratios[0].as_f64().unwrap() >= ratios[1].as_f64().unwrap());

    let seg = tmp.path().join("seg");
    let stdout = diffscope(&[
        "segment",
        "--images",
        &images,
        "--features",
        &files,
        "--blocks",
        "up_blocks.1",
        "--k",
        "3",
        "--joint",
        "--out",
        seg.to_str().unwrap(),
    ]);
    assert!(stdout.contains("K=3, joint"), "{stdout}");
    let labels = read_npy(seg.join("sd_64x48_labels.npy")).unwrap();
    assert_eq!(labels.shape, [48, 64]);
    let diffscope_engine::io::npy::NpyData::I64(values) = &labels.data else {
        panic!("labels are int64")
    };
    assert!(values.iter().all(|&v| (0..3).contains(&v)));
    assert!(
        values.iter().any(|&v| v != values[0]),
        "more than one segment"
    );

    let ncut = tmp.path().join("ncut");
    diffscope(&[
        "segment",
        "--images",
        &images,
        "--features",
        &files,
        "--blocks",
        "up_blocks.1",
        "--ncut",
        "--tau",
        "0.3",
        "--out",
        ncut.to_str().unwrap(),
    ]);
    assert_eq!(
        read_npy(ncut.join("sd_square_32_labels.npy"))
            .unwrap()
            .shape,
        [32, 32]
    );
}

#[test]
fn bad_analysis_input_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, fa, fb) = feature_files(tmp.path());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_diffscope"))
            .args(args)
            .output()
            .unwrap()
    };
    let common = [
        "--blocks",
        "up_blocks.1",
        "--source-features",
        fa.to_str().unwrap(),
        "--target-features",
        fb.to_str().unwrap(),
    ];
    let out = run(&[
        &[
            "correspond",
            "--source",
            a.to_str().unwrap(),
            "--targets",
            b.to_str().unwrap(),
            "--points",
            "500,5",
            "--out",
            "/tmp/x",
        ][..],
        &common,
    ]
    .concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("outside"), "{err}");
    let images = format!("{},{}", a.display(), b.display());
    let files = format!("{},{}", fa.display(), fb.display());
    let out = run(&[
        "segment",
        "--images",
        &images,
        "--features",
        &files,
        "--blocks",
        "up_blocks.1",
        "--k",
        "100000",
        "--out",
        "/tmp/x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("larger than the number of cells"),
        "{err}"
    );
    let out = run(&[
        "pca",
        "--images",
        &images,
        "--features",
        fa.to_str().unwrap(),
        "--blocks",
        "up_blocks.1",
        "--out",
        "/tmp/x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("1 feature files for 2 images"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}
