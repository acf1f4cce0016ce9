//! `diffscope segment`: k-means or recursive normalized cut on features, per image or joint.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use diffscope_engine::analysis::kmeans::{kmeans, match_clusters, KMeansOptions};
use diffscope_engine::analysis::labels::{upsample_by_similarity, LabelMap};
use diffscope_engine::analysis::ncut::{recursive_ncut, NCutOptions};
use diffscope_engine::analysis::{GridSize, ImageSize};
use diffscope_engine::export::colormap::palette;
use diffscope_engine::export::figure::{Figure, Overlay, Panel};
use diffscope_engine::io::npy::{write_npy, NpyArray, NpyData};
use diffscope_engine::FeatureMap;
use image::RgbImage;

use super::correspond::file_name;
use super::feature_args::FeatureArgs;
use super::pca::stem;

#[derive(Args, Debug)]
pub struct SegmentArgs {
    #[arg(long, value_delimiter = ',', required = true)]
    images: Vec<PathBuf>,
    /// k-means with K clusters (on L2-normalised features, k-means++ seeding).
    #[arg(long, conflicts_with = "ncut")]
    k: Option<usize>,
    /// Recursive normalized cut (DiffCut) instead of k-means.
    #[arg(long)]
    ncut: bool,
    /// NCut: keep splitting while the cut's NCut value is below tau.
    #[arg(long, default_value_t = 0.5)]
    tau: f64,
    /// NCut: exponent of the min-max normalised cosine affinity.
    #[arg(long, default_value_t = 10.0)]
    alpha: f32,
    /// Cluster all images together (one set of segments); otherwise per image, k-means clusters
    /// matched to the first image's by the Hungarian algorithm so colours agree.
    #[arg(long)]
    joint: bool,
    /// Seed of k-means++.
    #[arg(long, default_value_t = 0)]
    kmeans_seed: u64,
    #[command(flatten)]
    features: FeatureArgs,
    /// Precomputed features (`diffscope extract` files), one per image, instead of running the model.
    #[arg(long = "features", value_delimiter = ',')]
    feature_files: Option<Vec<PathBuf>>,
    /// Output folder: figure.png, <image>_labels.png and <image>_labels.npy per image.
    #[arg(long)]
    out: PathBuf,
}

/// Stack maps of equal width on top of each other: NCut's affinity has no spatial term, so this is
/// exactly a joint cut.
fn stack(maps: &[&FeatureMap]) -> anyhow::Result<FeatureMap> {
    let (c, w) = (maps[0].channels, maps[0].width);
    if maps.iter().any(|m| m.channels != c || m.width != w) {
        bail!("joint NCut needs feature maps of the same width and channels: give the images one --size");
    }
    let h: usize = maps.iter().map(|m| m.height).sum();
    let mut data = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for m in maps {
            data.extend_from_slice(&m.data[ch * m.cells()..(ch + 1) * m.cells()]);
        }
    }
    Ok(FeatureMap::new(c, h, w, data)?)
}

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

pub fn run(args: SegmentArgs) -> anyhow::Result<()> {
    let features = args
        .features
        .image_features(&args.images, args.feature_files.as_deref())?;
    let maps: Vec<&FeatureMap> = features.iter().map(|f| &f.map).collect();
    let (labels, method): (Vec<LabelMap>, String) = match (args.k, args.ncut) {
        (Some(k), false) => {
            let options = KMeansOptions {
                k,
                seed: args.kmeans_seed,
                ..Default::default()
            };
            if args.joint {
                (
                    kmeans(&maps, &options)?.labels,
                    format!("k-means, K={k}, joint over all images"),
                )
            } else {
                let runs = maps
                    .iter()
                    .map(|m| kmeans(&[m], &options))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut labels = vec![runs[0].labels[0].clone()];
                for run in &runs[1..] {
                    let matching = match_clusters(&runs[0], run)?;
                    labels.push(matching.relabel_b(&run.labels[0], k));
                }
                (labels, format!("k-means, K={k}, per image, clusters matched to the first image (Hungarian on centroid cosine)"))
            }
        }
        (None, true) => {
            let options = NCutOptions {
                tau: args.tau,
                alpha: args.alpha,
                ..Default::default()
            };
            if args.joint {
                let seg = recursive_ncut(&stack(&maps)?, &options)?;
                (
                    unstack(&seg.labels, &maps),
                    format!(
                        "recursive NCut, tau={}, alpha={}, joint ({} segments)",
                        args.tau, args.alpha, seg.segments
                    ),
                )
            } else {
                let segs = maps
                    .iter()
                    .map(|m| recursive_ncut(m, &options))
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    segs.into_iter().map(|s| s.labels).collect(),
                    format!(
                        "recursive NCut, tau={}, alpha={}, per image",
                        args.tau, args.alpha
                    ),
                )
            }
        }
        _ => bail!("choose --k K (k-means) or --ncut"),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut image_row = vec![];
    let mut label_row = vec![];
    for ((f, map), grid_labels) in features.iter().zip(&maps).zip(&labels) {
        let size = ImageSize::new(f.image.width() as usize, f.image.height() as usize);
        let pixel_labels = upsample_by_similarity(map, grid_labels, size)?;
        let bytes: Vec<u8> = pixel_labels
            .labels
            .iter()
            .flat_map(|&l| palette(l as usize))
            .collect();
        let rgb: Vec<f32> = bytes.iter().map(|&v| f32::from(v) / 255.0).collect();
        let name = stem(&f.path);
        let png = args.out.join(format!("{name}_labels.png"));
        RgbImage::from_raw(f.image.width(), f.image.height(), bytes)
            .context("label buffer size")?
            .save(&png)
            .with_context(|| format!("writing {}", png.display()))?;
        let values: Vec<i64> = pixel_labels.labels.iter().map(|&l| l as i64).collect();
        write_npy(
            args.out.join(format!("{name}_labels.npy")),
            &NpyArray::new(vec![size.height, size.width], NpyData::I64(values))?,
        )?;
        image_row.push(Panel {
            image: f.image.clone(),
            overlay: Overlay::None,
            markers: vec![],
            title: file_name(&f.path),
        });
        label_row.push(Panel {
            image: f.image.clone(),
            overlay: Overlay::Rgb {
                values: rgb,
                opacity: 0.55,
            },
            markers: vec![],
            title: format!("{} segments", grid_labels.count()),
        });
    }
    let figure = Figure {
        rows: vec![image_row, label_row],
        colorbar: None,
        caption: vec![
            args.features.describe(args.feature_files.is_some()),
            format!("{method}; labels upsampled to image size by cosine similarity to each segment's mean feature"),
        ],
    };
    figure.render()?.save_png(&args.out.join("figure.png"))?;
    println!("{method}");
    println!("wrote {}", args.out.display());
    Ok(())
}
