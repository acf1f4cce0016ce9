//! The SPair-71k-layout reader on a hand-written SPair fixture and on a generated creatures
//! dataset, and PCK over the pairs it reads.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use diffscope_engine::data::spair::{PairQuery, SpairDataset};
use diffscope_engine::data::synth::{generate_dataset, Category, ImageFormat, SynthConfig};
use diffscope_engine::eval::pck::PckAccumulator;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spair")
}

#[test]
fn reads_the_spair_fixture() {
    let ds = SpairDataset::open(fixture()).unwrap();
    assert_eq!(ds.splits().unwrap(), vec!["test"]);
    assert_eq!(ds.categories().unwrap(), vec!["cat"]);
    let pairs = ds.load_pairs(&PairQuery::split("test")).unwrap();
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!(p.name, "000001-2008_000001-2008_000002:cat");
    assert_eq!(
        (p.src_imname.as_str(), p.trg_imname.as_str()),
        ("2008_000001.jpg", "2008_000002.jpg")
    );
    assert_eq!((p.src_imsize, p.trg_imsize), ([12, 10], [10, 8]));
    assert_eq!(p.src_bndbox, [1.0, 1.0, 10.0, 8.0]);
    assert_eq!(p.trg_kps, vec![[2.0, 3.0], [6.0, 2.0], [4.0, 5.0]]);
    assert_eq!(
        p.kps_ids.as_deref(),
        Some(&["0".to_string(), "1".to_string(), "3".to_string()][..])
    );
    assert_eq!(p.flags.viewpoint_variation, Some(1));

    // The image files are real JPEGs of the annotated sizes.
    let src = image::open(&p.src_image).unwrap();
    assert_eq!((src.width(), src.height()), (12, 10));

    // The pair's keypoints are the image annotations' keypoints with the pair's ids.
    let trg = ds.read_image_annotation("cat", &p.trg_imname).unwrap();
    assert_eq!(trg.bndbox, p.trg_bndbox);
    assert_eq!(trg.kps.get(&2), Some(&Some([7.0, 6.0])));
    assert_eq!(trg.kps.get(&4), Some(&None));
    for (id, point) in p.kps_ids.as_ref().unwrap().iter().zip(&p.trg_kps) {
        assert_eq!(trg.kps[&id.parse::<u32>().unwrap()], Some(*point));
    }
    assert!(ds
        .list_pairs(&PairQuery::split("test").category("dog"))
        .is_err());
    assert_eq!(
        ds.list_pairs(&PairQuery::split("test").limit(0))
            .unwrap()
            .len(),
        0
    );
}

fn config(out: &Path, seed: u64) -> SynthConfig {
    let mut c = SynthConfig::new(out, 24, seed);
    c.pairs = 20;
    c.split = "trn".into();
    c
}

#[test]
fn a_generated_dataset_round_trips_through_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate_dataset(&config(dir.path(), 5), &mut |_| {}).unwrap();
    assert_eq!((summary.images, summary.pairs), (24, 20));

    let ds = SpairDataset::open(dir.path()).unwrap();
    assert_eq!(ds.categories().unwrap(), vec!["bird", "bug", "cat", "fish"]);
    let names = ds.keypoint_names().unwrap().unwrap();
    assert_eq!(names["fish"][&5], "tail");

    let pairs = ds.load_pairs(&PairQuery::split("trn")).unwrap();
    assert_eq!(pairs.len(), 20);
    let layout = fs::read_to_string(dir.path().join("Layout/large/trn.txt")).unwrap();
    let listed: Vec<&str> = layout.lines().collect();
    assert_eq!(
        listed,
        pairs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
    );

    let mut per_category: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pairs {
        *per_category.entry(p.category.clone()).or_default() += 1;
        assert_ne!(p.src_imname, p.trg_imname);
        assert_eq!((p.src_imsize, p.trg_imsize), ([64, 64], [64, 64]));
        let img = image::open(&p.src_image).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
        let ids = p.kps_ids.as_ref().unwrap();
        assert!(!ids.is_empty());
        // Pair keypoints are exactly the image annotations' visible keypoints, by id.
        for (imname, kps, bndbox) in [
            (&p.src_imname, &p.src_kps, p.src_bndbox),
            (&p.trg_imname, &p.trg_kps, p.trg_bndbox),
        ] {
            let ann = ds.read_image_annotation(&p.category, imname).unwrap();
            assert_eq!(ann.bndbox, bndbox);
            assert_eq!(
                ann.kps.len(),
                Category::from_name(&p.category).unwrap().parts().len()
            );
            for (id, point) in ids.iter().zip(kps) {
                assert_eq!(
                    ann.kps[&id.parse::<u32>().unwrap()],
                    Some(*point),
                    "{imname} keypoint {id}"
                );
            }
        }
    }
    assert_eq!(
        per_category.values().copied().collect::<Vec<_>>(),
        vec![5, 5, 5, 5]
    );

    // PCK over the read pairs: the truth itself scores 1; the source positions score less.
    let mut perfect = PckAccumulator::new(&[0.1]).unwrap();
    let mut identity = PckAccumulator::new(&[0.1]).unwrap();
    for p in &pairs {
        perfect
            .add_pair(&p.category, &p.trg_kps, &p.trg_kps, p.trg_bndbox)
            .unwrap();
        identity
            .add_pair(&p.category, &p.src_kps, &p.trg_kps, p.trg_bndbox)
            .unwrap();
    }
    assert_eq!(perfect.report().overall.per_point, vec![1.0]);
    assert!(identity.report().overall.per_point[0] < 0.5);
}

/// Every file under `root`, by relative path, with its bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn generation_is_deterministic_per_seed() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate_dataset(&config(a.path(), 9), &mut |_| {}).unwrap();
    generate_dataset(&config(b.path(), 9), &mut |_| {}).unwrap();
    generate_dataset(&config(c.path(), 10), &mut |_| {}).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(
        fa.len(),
        24 * 3 + 20 + 2,
        "images, part masks, image annotations, pairs, layout, keypoints.json"
    );
    assert!(fa == fb, "same seed, different files");
    let image = |f: &BTreeMap<PathBuf, Vec<u8>>, seed: u64| {
        f[&PathBuf::from(format!("JPEGImages/cat/syn{seed}_000000.jpg"))].clone()
    };
    assert_ne!(image(&fa, 9), image(&fc, 10));
}

#[test]
fn png_output_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 1);
    c.format = ImageFormat::Png;
    c.count = 8;
    c.pairs = 4;
    generate_dataset(&c, &mut |_| {}).unwrap();
    let ds = SpairDataset::open(dir.path()).unwrap();
    let pairs = ds
        .load_pairs(&PairQuery::split("trn").category("bug"))
        .unwrap();
    assert!(pairs.iter().all(|p| p.src_imname.ends_with(".png")));
    // A second run into the same split would mix two sets of pairs: refused.
    let err = generate_dataset(&c, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("PairAnnotation/trn") && err.contains("already holds"),
        "{err}"
    );
    c.split = "bad/split".into();
    assert!(generate_dataset(&c, &mut |_| {}).is_err());
    let mut one = config(dir.path(), 2);
    one.count = 1;
    one.split = "val".into();
    let err = generate_dataset(&one, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("at least two images"), "{err}");
}
