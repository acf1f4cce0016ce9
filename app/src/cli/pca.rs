//! `diffscope pca`: features as RGB, per image or with one basis fitted jointly on all images.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use diffscope_engine::analysis::recipes::pca_rgb::{pca_rgb, PcaRgbOptions};
use diffscope_engine::analysis::resize::resize_plane_bilinear;
use diffscope_engine::analysis::GridSize;
use diffscope_engine::export::figure::{Figure, Overlay, Panel};
use image::RgbImage;

use super::correspond::file_name;
use super::feature_args::FeatureArgs;

#[derive(Args, Debug)]
pub struct PcaArgs {
    /// Images to show.
    #[arg(long, value_delimiter = ',', required = true)]
    images: Vec<PathBuf>,
    /// Fit one basis on all images together (colours comparable across images); otherwise one per image.
    #[arg(long)]
    joint: bool,
    #[command(flatten)]
    features: FeatureArgs,
    /// Precomputed features (`diffscope extract` files), one per image, instead of running the model.
    #[arg(long = "features", value_delimiter = ',')]
    feature_files: Option<Vec<PathBuf>>,
    /// Percentiles of each component mapped to 0 and 255.
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 99.0])]
    percentiles: Vec<f32>,
    /// Output folder: figure.png, <image>_pca.png per image, pca.json.
    #[arg(long)]
    out: PathBuf,
}

/// RGB in [0,1] at image resolution, bilinear from `[h, w, 3]` RGB on the feature grid.
fn rgb_at_image(rgb: &[f32], grid: GridSize, image: &RgbImage) -> Vec<f32> {
    let to = GridSize::new(image.height() as usize, image.width() as usize);
    let planes: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            let plane: Vec<f32> = rgb.chunks_exact(3).map(|px| px[c]).collect();
            resize_plane_bilinear(&plane, grid, to)
        })
        .collect();
    (0..to.cells())
        .flat_map(|i| [planes[0][i], planes[1][i], planes[2][i]])
        .collect()
}

pub fn run(args: PcaArgs) -> anyhow::Result<()> {
    let [low, high] = args.percentiles[..] else {
        anyhow::bail!("--percentiles takes two numbers, e.g. 1,99");
    };
    let features = args
        .features
        .image_features(&args.images, args.feature_files.as_deref())?;
    let maps: Vec<_> = features.iter().map(|f| &f.map).collect();
    let options = PcaRgbOptions {
        joint: args.joint,
        percentiles: (low, high),
    };
    let pca = pca_rgb(&maps, &options, None)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut image_row = vec![];
    let mut pca_row = vec![];
    for (i, (f, rgb)) in features.iter().zip(&pca.rgb).enumerate() {
        let grid = GridSize::new(f.map.height, f.map.width);
        let rgb = rgb_at_image(rgb, grid, &f.image);
        let out_png = args.out.join(format!("{}_pca.png", stem(&f.path)));
        let bytes: Vec<u8> = rgb
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        RgbImage::from_raw(f.image.width(), f.image.height(), bytes)
            .context("RGB buffer size")?
            .save(&out_png)
            .with_context(|| format!("writing {}", out_png.display()))?;
        image_row.push(Panel {
            image: f.image.clone(),
            overlay: Overlay::None,
            markers: vec![],
            title: file_name(&f.path),
        });
        let ratio = pca
            .fit
            .of_image(i)
            .map(|(basis, _)| basis.explained_variance_ratio.clone())
            .unwrap_or_default();
        pca_row.push(Panel {
            image: f.image.clone(),
            overlay: Overlay::Rgb {
                values: rgb,
                opacity: 1.0,
            },
            markers: vec![],
            title: format!(
                "PCA {:.0}/{:.0}/{:.0}%",
                ratio.first().unwrap_or(&0.0) * 100.0,
                ratio.get(1).unwrap_or(&0.0) * 100.0,
                ratio.get(2).unwrap_or(&0.0) * 100.0
            ),
        });
    }
    let report: Vec<serde_json::Value> = pca
        .fit
        .fits
        .iter()
        .enumerate()
        .map(|(i, (basis, _))| {
            let members = &features[pca.fit.images_of(i, features.len())];
            serde_json::json!({
                "images": members.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
                "explained_variance_ratio": basis.explained_variance_ratio,
                "samples": basis.samples,
                "description": basis.describe(),
                "range_percentiles": [low, high],
            })
        })
        .collect();
    let figure = Figure {
        rows: vec![image_row, pca_row],
        colorbar: None,
        caption: vec![
            args.features.describe(args.feature_files.is_some()),
            format!("{}; bilinear to image size", pca.description),
        ],
    };
    figure.render()?.save_png(&args.out.join("figure.png"))?;
    let json = serde_json::json!({ "joint": args.joint, "fits": report, "description": pca.description, "features": args.features.describe(args.feature_files.is_some()) });
    std::fs::write(
        args.out.join("pca.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "image".into())
}
