//! `diffscope correspond`: where source points land in target images.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use diffscope_engine::analysis::correspond::CorrespondOptions;
use diffscope_engine::analysis::recipes::correspondence::{Correspondence, MatchRule};
use diffscope_engine::analysis::{ImagePoint, ImageSize};
use diffscope_engine::export::colormap::{palette, Colormap};
use diffscope_engine::export::figure::{Figure, Marker, MarkerKind, Overlay, Panel};
use diffscope_engine::export::matches::{MatchExport, MatchRecord};

use super::feature_args::{FeatureArgs, ImageFeatures};

#[derive(Args, Debug)]
pub struct CorrespondArgs {
    /// The image the points are on.
    #[arg(long)]
    source: PathBuf,
    /// Images to find the points in.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<PathBuf>,
    /// Points on the source in its pixel coordinates (x right, y down): `X,Y[;X,Y...]`.
    #[arg(long)]
    points: String,
    #[command(flatten)]
    features: FeatureArgs,
    /// Precomputed features of the source (a `diffscope extract` file) instead of running the model.
    #[arg(long, requires = "target_features")]
    source_features: Option<PathBuf>,
    /// Precomputed features of the targets, one file per target.
    #[arg(long, value_delimiter = ',')]
    target_features: Option<Vec<PathBuf>>,
    /// Colormap of the similarity heatmaps (matplotlib's): viridis, magma, inferno, plasma,
    /// cividis, turbo, diverging (coolwarm) or gray.
    #[arg(long, default_value = "turbo")]
    colormap: String,
    /// Output folder: matches.json, matches.csv, figure.png.
    #[arg(long)]
    out: PathBuf,
}

pub fn parse_points(text: &str) -> anyhow::Result<Vec<ImagePoint>> {
    text.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (x, y) = p
                .split_once(',')
                .with_context(|| format!("point `{p}` is not X,Y"))?;
            let x: f32 = x
                .trim()
                .parse()
                .with_context(|| format!("point `{p}`: bad x"))?;
            let y: f32 = y
                .trim()
                .parse()
                .with_context(|| format!("point `{p}`: bad y"))?;
            Ok(ImagePoint::new(x, y))
        })
        .collect()
}

fn image_size(f: &ImageFeatures) -> ImageSize {
    ImageSize::new(f.image.width() as usize, f.image.height() as usize)
}

pub fn run(args: CorrespondArgs) -> anyhow::Result<()> {
    let points = parse_points(&args.points)?;
    if points.is_empty() {
        bail!("--points names no point");
    }
    let colormap = Colormap::parse(&args.colormap)?;
    let images: Vec<PathBuf> = std::iter::once(args.source.clone())
        .chain(args.targets.iter().cloned())
        .collect();
    let files: Option<Vec<PathBuf>> = args.source_features.as_ref().map(|s| {
        std::iter::once(s.clone())
            .chain(args.target_features.clone().unwrap_or_default())
            .collect()
    });
    let features = args.features.image_features(&images, files.as_deref())?;
    let (source, targets) = features.split_first().context("no source")?;
    let correspondence = Correspondence::new(
        &features.iter().map(|f| &f.map).collect::<Vec<_>>(),
        &features.iter().map(image_size).collect::<Vec<_>>(),
    )?;
    let options = CorrespondOptions::default();
    let rule = MatchRule::SoftArgmax(options);

    let mut records = vec![];
    let mut rows = vec![];
    let mut range = (f32::INFINITY, f32::NEG_INFINITY);
    let mut heatmaps = vec![];
    for (p, point) in points.iter().enumerate() {
        let matches = correspondence
            .match_point(*point, &options)
            .with_context(|| {
                format!("point {},{} on {}", point.x, point.y, source.path.display())
            })?;
        let mut row_maps = vec![];
        for (m, target) in matches.iter().zip(targets) {
            records.push(MatchRecord {
                point: p + 1,
                source: source.path.display().to_string(),
                source_point: [point.x, point.y],
                target: target.path.display().to_string(),
                matched: [m.point.x, m.point.y],
                similarity: m.best_similarity,
                mutual: m.mutual,
            });
            let up = m.similarity.upsample_bilinear(image_size(target));
            for v in &up {
                range = (range.0.min(*v), range.1.max(*v));
            }
            row_maps.push((up, m.point, m.best_similarity, m.mutual));
        }
        heatmaps.push((p, row_maps));
    }
    for (p, row_maps) in heatmaps {
        let colour = palette(p);
        let point = points[p];
        let mut row = vec![Panel {
            image: source.image.clone(),
            overlay: Overlay::None,
            markers: vec![Marker {
                x: point.x,
                y: point.y,
                colour,
                kind: MarkerKind::Ring,
            }],
            title: format!("source ({:.0},{:.0})", point.x, point.y),
        }];
        for ((values, at, sim, mutual), target) in row_maps.into_iter().zip(targets) {
            row.push(Panel {
                image: target.image.clone(),
                overlay: Overlay::Heatmap {
                    values,
                    range,
                    colormap,
                    opacity: 0.6,
                },
                markers: vec![Marker {
                    x: at.x,
                    y: at.y,
                    colour,
                    kind: MarkerKind::Ring,
                }],
                title: format!(
                    "{} {sim:.2}{}",
                    file_name(&target.path),
                    if mutual { " mutual" } else { "" }
                ),
            });
        }
        rows.push(row);
    }
    let figure = Figure {
        rows,
        colorbar: Some((colormap, range, "cosine".into())),
        caption: vec![
            args.features.describe(files.is_some()),
            format!(
                "{}; {}; similarity upsampled bilinearly for display",
                rule.describe(),
                rule.parameters()
            ),
        ],
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let export = MatchExport::new(
        args.features.settings_json(args.source_features.is_some()),
        records,
    );
    export.write_json(&args.out.join("matches.json"))?;
    export.write_csv(&args.out.join("matches.csv"))?;
    figure.render()?.save_png(&args.out.join("figure.png"))?;
    for r in &export.matches {
        println!(
            "({:.1},{:.1}) -> {} ({:.1},{:.1}) similarity {:.3}{}",
            r.source_point[0],
            r.source_point[1],
            r.target,
            r.matched[0],
            r.matched[1],
            r.similarity,
            if r.mutual { " mutual" } else { "" }
        );
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}
