//! Timings of the analysis engine on DIFT-sized inputs (synthetic smooth maps, see support/mod.rs).
//! Short measurement times: this is a shared 2-core machine; run with `cargo bench --bench analysis`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use diffscope_engine::analysis::correspond::{
    correspond_point, dense_matches, CorrespondOptions, DenseOptions, Target,
};
use diffscope_engine::analysis::kmeans::{kmeans, KMeansOptions};
use diffscope_engine::analysis::ncut::{recursive_ncut, NCutOptions};
use diffscope_engine::analysis::pca::{to_rgb_u8, PcaBasis, PcaOptions, RgbRange};
use diffscope_engine::analysis::{ImagePoint, ImageSize, NormalizedMap};
use diffscope_engine::FeatureMap;
use support::{dift_click, smooth_map};

/// DIFT's click at full size (768) needs 3 GB per upsampled map and seconds per click; we time it at this
/// size (1/16 of the pixels, so 1/16 of the work and memory) and scale.
const DIFT_BENCH_SIZE: usize = 192;

fn correspondence(c: &mut Criterion) {
    let maps: Vec<FeatureMap> = (0..6).map(|i| smooth_map(1280, 48, 48, i)).collect();
    let normalized: Vec<NormalizedMap> = maps
        .iter()
        .map(|m| NormalizedMap::new(m, "map").unwrap())
        .collect();
    let image = ImageSize::new(768, 768);
    let targets: Vec<Target> = normalized[1..]
        .iter()
        .map(|map| Target { map, image })
        .collect();
    let click = ImagePoint::new(301.5, 422.25);
    let options = CorrespondOptions::default();
    let mut group = c.benchmark_group("correspond 48x48x1280");
    group.bench_function("normalize one map", |b| {
        b.iter(|| NormalizedMap::new(black_box(&maps[0]), "map").unwrap())
    });
    group.bench_function("query, 1 target", |b| {
        b.iter(|| {
            correspond_point(
                &normalized[0],
                image,
                black_box(click),
                &targets[..1],
                &options,
            )
            .unwrap()
        })
    });
    group.bench_function("query, 5 targets", |b| {
        b.iter(|| {
            correspond_point(&normalized[0], image, black_box(click), &targets, &options).unwrap()
        })
    });
    group.bench_function(
        format!("DIFT upsample-then-cosine at {DIFT_BENCH_SIZE}, 1 target"),
        |b| b.iter(|| dift_click(&maps[0], &maps[1..2], DIFT_BENCH_SIZE, 75, 105)),
    );
    group.bench_function(
        format!("DIFT upsample-then-cosine at {DIFT_BENCH_SIZE}, 5 targets"),
        |b| b.iter(|| dift_click(&maps[0], &maps[1..], DIFT_BENCH_SIZE, 75, 105)),
    );
    group.bench_function("dense matches, 1 target", |b| {
        b.iter(|| dense_matches(&normalized[0], &normalized[1], &DenseOptions::default()).unwrap())
    });
    group.finish();
}

fn pca(c: &mut Criterion) {
    let maps: Vec<FeatureMap> = (0..6).map(|i| smooth_map(640, 96, 96, 10 + i)).collect();
    let options = PcaOptions::default();
    let mut group = c.benchmark_group("pca 96x96x640");
    for count in [1usize, 2, 4, 6] {
        let refs: Vec<&FeatureMap> = maps[..count].iter().collect();
        group.bench_function(format!("fit k=3 on {count} map(s)"), |b| {
            b.iter(|| PcaBasis::fit(&refs, &options).unwrap())
        });
    }
    let basis = PcaBasis::fit(&[&maps[0]], &options).unwrap();
    let range = RgbRange::fit(&[&basis.project(&maps[0]).unwrap()], 1.0, 99.0).unwrap();
    group.bench_function("apply a fitted basis and colour one map", |b| {
        b.iter(|| to_rgb_u8(&basis.project(black_box(&maps[1])).unwrap(), &range).unwrap())
    });
    group.finish();
}

fn clustering(c: &mut Criterion) {
    let map = smooth_map(640, 96, 96, 20);
    let mut group = c.benchmark_group("segmentation");
    group.bench_function("k-means K=8 on 96x96x640", |b| {
        b.iter(|| {
            kmeans(
                &[&map],
                &KMeansOptions {
                    k: 8,
                    ..Default::default()
                },
            )
            .unwrap()
        })
    });
    for side in [32usize, 64] {
        let map = smooth_map(640, side, side, 30);
        group.bench_function(format!("recursive NCut on {side}x{side}x640"), |b| {
            b.iter(|| recursive_ncut(&map, &NCutOptions::default()).unwrap())
        });
    }
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

criterion_group! { name = benches; config = short(); targets = correspondence, pca, clustering }
criterion_main!(benches);
