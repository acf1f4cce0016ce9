//! `diffscope segment`: k-means or recursive normalized cut on features, per image or joint.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use diffscope_engine::analysis::labels::upsample_by_similarity;
use diffscope_engine::analysis::recipes::segment::{segment, SegmentMethod, SegmentOptions};
use diffscope_engine::analysis::ImageSize;
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
    /// The images (PNG or JPEG), comma-separated.
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

pub fn run(args: SegmentArgs) -> anyhow::Result<()> {
    let method = match (args.k, args.ncut) {
        (Some(k), false) => SegmentMethod::KMeans {
            k,
            seed: args.kmeans_seed,
        },
        (None, true) => SegmentMethod::NCut {
            tau: args.tau,
            alpha: args.alpha,
        },
        _ => bail!("choose --k K (k-means) or --ncut"),
    };
    let features = args
        .features
        .image_features(&args.images, args.feature_files.as_deref())?;
    let maps: Vec<&FeatureMap> = features.iter().map(|f| &f.map).collect();
    let segmentation = segment(
        &maps,
        &SegmentOptions {
            method,
            joint: args.joint,
        },
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut image_row = vec![];
    let mut label_row = vec![];
    for ((f, map), grid_labels) in features.iter().zip(&maps).zip(&segmentation.labels) {
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
            format!("{}; labels upsampled to image size by cosine similarity to each segment's mean feature", segmentation.description),
        ],
    };
    figure.render()?.save_png(&args.out.join("figure.png"))?;
    println!("{}", segmentation.summary);
    println!("wrote {}", args.out.display());
    Ok(())
}
