//! Runs one analysis case once, for measuring peak memory with `/usr/bin/time -v`:
//! `analysis_memory <case>` with case one of: baseline, query1, query5, dift1, dift5, dense, pca1, pca6,
//! kmeans, ncut32, ncut64. Inputs as in the `analysis` benchmark (support/mod.rs).

mod support;

use diffscope_engine::analysis::correspond::{
    correspond_point, dense_matches, CorrespondOptions, DenseOptions, Target,
};
use diffscope_engine::analysis::kmeans::{kmeans, KMeansOptions};
use diffscope_engine::analysis::ncut::{recursive_ncut, NCutOptions};
use diffscope_engine::analysis::pca::{PcaBasis, PcaOptions};
use diffscope_engine::analysis::{ImagePoint, ImageSize, NormalizedMap};
use diffscope_engine::FeatureMap;
use support::{dift_click, smooth_map};

fn main() {
    let case = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "baseline".into());
    let dift_size: usize = std::env::var("DIFT_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(192);
    let start = std::time::Instant::now();
    let summary = match case.as_str() {
        "baseline" => String::from("nothing"),
        "query1" | "query5" | "dift1" | "dift5" | "dense" => {
            let count = if case.ends_with('5') { 6 } else { 2 };
            let maps: Vec<FeatureMap> = (0..count).map(|i| smooth_map(1280, 48, 48, i)).collect();
            if case.starts_with("dift") {
                let sims = dift_click(&maps[0], &maps[1..], dift_size, 75, 105);
                format!(
                    "{} similarity maps of {} pixels at {dift_size}",
                    sims.len(),
                    sims[0].values.len()
                )
            } else {
                let normalized: Vec<NormalizedMap> = maps
                    .iter()
                    .map(|m| NormalizedMap::new(m, "map").unwrap())
                    .collect();
                if case == "dense" {
                    let dense =
                        dense_matches(&normalized[0], &normalized[1], &DenseOptions::default())
                            .unwrap();
                    format!("{} mutual pairs", dense.mutual_pairs().len())
                } else {
                    let image = ImageSize::new(768, 768);
                    let targets: Vec<Target> = normalized[1..]
                        .iter()
                        .map(|map| Target { map, image })
                        .collect();
                    let found = correspond_point(
                        &normalized[0],
                        image,
                        ImagePoint::new(301.5, 422.25),
                        &targets,
                        &CorrespondOptions::default(),
                    )
                    .unwrap();
                    format!("{} matches", found.len())
                }
            }
        }
        "pca1" | "pca6" => {
            let count = if case == "pca6" { 6 } else { 1 };
            let maps: Vec<FeatureMap> = (0..count)
                .map(|i| smooth_map(640, 96, 96, 10 + i))
                .collect();
            let refs: Vec<&FeatureMap> = maps.iter().collect();
            let basis = PcaBasis::fit(&refs, &PcaOptions::default()).unwrap();
            format!("{} ({} iterations)", basis.describe(), basis.iterations)
        }
        "kmeans" => {
            let map = smooth_map(640, 96, 96, 20);
            let result = kmeans(
                &[&map],
                &KMeansOptions {
                    k: 8,
                    ..Default::default()
                },
            )
            .unwrap();
            format!(
                "inertia {:.1} after {} iterations",
                result.inertia, result.iterations
            )
        }
        "ncut32" | "ncut64" => {
            let side = if case == "ncut64" { 64 } else { 32 };
            let map = smooth_map(640, side, side, 30);
            let result = recursive_ncut(&map, &NCutOptions::default()).unwrap();
            format!(
                "{} segments from {} cuts tried",
                result.segments,
                result.cuts.len()
            )
        }
        other => {
            eprintln!("unknown case {other}");
            std::process::exit(2);
        }
    };
    println!(
        "{case}: {summary} in {:.3} s",
        start.elapsed().as_secs_f64()
    );
}
