//! `diffscope eval pck`: correspondence accuracy of a model's features on an SPair-layout dataset,
//! per block and timestep, against pixel-colour and untrained-weight baselines.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use diffscope_engine::data::spair::{PairQuery, SpairDataset};
use diffscope_engine::device::default_device;
use diffscope_engine::eval::sweep::{run_sweep, SweepRow, SweepSettings};
use diffscope_engine::export::colormap::palette;
use diffscope_engine::export::plot::{LinePlot, Series};
use diffscope_engine::model::pipeline::DiffusionModel;
use diffscope_engine::model::unet::UNet;
use diffscope_engine::model::weights::{TrainableParams, Weights};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// PCK@alpha of nearest-neighbour keypoint matching (the DIFT protocol) per block x timestep.
    Pck(PckArgs),
}

#[derive(Args, Debug)]
pub struct PckArgs {
    #[arg(long, default_value = "default")]
    model: String,
    /// Dataset folder in SPair-71k's layout (SPair-71k itself, or `diffscope synth` output).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_delimiter = ',', required = true)]
    blocks: Vec<String>,
    /// Timesteps to evaluate, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    t: Vec<usize>,
    #[arg(long, default_value_t = 8)]
    ensemble: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// PCK thresholds as fractions of the target's bounding box (max side).
    #[arg(long, value_delimiter = ',', default_values_t = [0.1])]
    alpha: Vec<f64>,
    #[arg(long, default_value = "test")]
    split: String,
    /// Only this category.
    #[arg(long)]
    category: Option<String>,
    /// At most this many pairs.
    #[arg(long)]
    limit: Option<usize>,
    /// Skip the untrained-weights baseline (it costs as much as the model itself).
    #[arg(long)]
    no_untrained: bool,
    /// Output folder: pck.csv, pck.json, pck_by_t.png.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Pck(args) => run_pck(args),
    }
}

fn untrained_copy(
    spec: &str,
    device: &candle_core::Device,
    seed: u64,
) -> anyhow::Result<DiffusionModel> {
    let mut model = DiffusionModel::load(spec, device)?;
    let config = model.folders.unet.join("config.json");
    model.unet = UNet::with_weights(
        &config,
        &Weights::trainable(TrainableParams::random(seed), device),
    )?;
    Ok(model)
}

fn run_pck(args: PckArgs) -> anyhow::Result<()> {
    let device = default_device()?;
    let model = DiffusionModel::load(&args.model, &device)?;
    let untrained = if args.no_untrained {
        None
    } else {
        Some(untrained_copy(&args.model, &device, args.seed)?)
    };
    let dataset = SpairDataset::open(&args.data)?;
    let mut query = PairQuery::split(args.split.clone());
    if let Some(c) = &args.category {
        query = query.category(c.clone());
    }
    if let Some(n) = args.limit {
        query = query.limit(n);
    }
    let settings = SweepSettings {
        blocks: args.blocks.clone(),
        timesteps: args.t.clone(),
        alphas: args.alpha.clone(),
        ensemble: args.ensemble,
        seed: args.seed,
        query,
    };
    let rows = run_sweep(
        &model,
        untrained.as_ref(),
        &dataset,
        &settings,
        None,
        &mut |s| eprint!("\r{s:<70}"),
    )?;
    eprintln!();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_csv(&rows, &args.alpha, &args.out.join("pck.csv"))?;
    let json = serde_json::json!({
        "model": args.model, "data": args.data, "split": args.split, "ensemble": args.ensemble, "seed": args.seed,
        "protocol": "cosine of the source keypoint's feature with every target cell, similarity upsampled bilinearly to the target image, argmax",
        "rows": rows,
    });
    std::fs::write(
        args.out.join("pck.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    plot(&rows, &args, &model)?.save_png(&args.out.join("pck_by_t.png"))?;
    print_table(&rows, &args);
    println!("wrote {}", args.out.display());
    Ok(())
}

fn write_csv(rows: &[SweepRow], alphas: &[f64], path: &std::path::Path) -> anyhow::Result<()> {
    let mut text =
        String::from("method,block,t,category,alpha,pck_per_image,pck_per_point,pairs,points\n");
    for r in rows {
        let t = r.t.map(|t| t.to_string()).unwrap_or_default();
        let summaries = std::iter::once(("all", &r.report.overall))
            .chain(r.report.per_category.iter().map(|(c, s)| (c.as_str(), s)));
        for (category, s) in summaries {
            for (i, a) in alphas.iter().enumerate() {
                text.push_str(&format!(
                    "{},{},{t},{category},{a},{:.4},{:.4},{},{}\n",
                    r.method, r.block, s.per_image[i], s.per_point[i], s.pairs, s.points
                ));
            }
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The markdown table: one row per method and block, one column per t (PCK per point at the first alpha).
fn print_table(rows: &[SweepRow], args: &PckArgs) {
    let pairs = rows.first().map_or(0, |r| r.report.overall.pairs);
    println!(
        "PCK@{} per point (per image in brackets), {pairs} pairs, split {}",
        args.alpha[0], args.split
    );
    let header: Vec<String> = args.t.iter().map(|t| format!("t={t}")).collect();
    println!("| method | block | {} |", header.join(" | "));
    println!("|---|---|{}", "---|".repeat(args.t.len()));
    let mut keys: Vec<(String, String)> = vec![];
    for r in rows {
        let key = (r.method.clone(), r.block.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (method, block) in keys {
        let cells: Vec<String> = args
            .t
            .iter()
            .map(|&t| {
                rows.iter()
                    .find(|r| {
                        r.method == method && r.block == block && r.t.is_none_or(|rt| rt == t)
                    })
                    .map(|r| {
                        format!(
                            "{:.1} ({:.1})",
                            100.0 * r.report.overall.per_point[0],
                            100.0 * r.report.overall.per_image[0]
                        )
                    })
                    .unwrap_or_default()
            })
            .collect();
        println!("| {method} | {block} | {} |", cells.join(" | "));
    }
    if let Some(best) = rows
        .iter()
        .filter(|r| r.method == "model")
        .max_by(|a, b| a.report.overall.per_point[0].total_cmp(&b.report.overall.per_point[0]))
    {
        println!(
            "best: {} at t={} ({:.1})",
            best.block,
            best.t.unwrap_or(0),
            100.0 * best.report.overall.per_point[0]
        );
    }
}

fn plot(
    rows: &[SweepRow],
    args: &PckArgs,
    model: &DiffusionModel,
) -> anyhow::Result<diffscope_engine::export::canvas::Canvas> {
    let mut series = vec![];
    let mut blocks: Vec<&String> = vec![];
    for r in rows.iter().filter(|r| r.method == "model") {
        if !blocks.contains(&&r.block) {
            blocks.push(&r.block);
        }
    }
    for (i, block) in blocks.iter().enumerate() {
        for (method, faint) in [("model", false), ("untrained", true)] {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.method == method && &&r.block == block)
                .filter_map(|r| r.t.map(|t| (t as f64, r.report.overall.per_point[0])))
                .collect();
            if !points.is_empty() {
                let label = if faint {
                    format!("{block} (untrained)")
                } else {
                    block.to_string()
                };
                series.push(Series {
                    label,
                    colour: palette(i),
                    points,
                    faint,
                });
            }
        }
    }
    if let Some(px) = rows.iter().find(|r| r.method == "pixels") {
        series.push(Series {
            label: "pixel colours".into(),
            colour: [90, 90, 90],
            points: vec![(0.0, px.report.overall.per_point[0])],
            faint: true,
        });
    }
    Ok(LinePlot {
        title: format!(
            "PCK@{} vs t: {} on {}",
            args.alpha[0],
            model.name,
            args.data.display()
        ),
        x_label: "timestep t".into(),
        y_label: "PCK (per point)".into(),
        series,
        y_range: Some((0.0, 1.0)),
    }
    .render()?)
}
