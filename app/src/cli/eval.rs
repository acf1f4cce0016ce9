//! `diffscope eval pck`: correspondence accuracy of a model's features on an SPair-layout dataset,
//! per block and timestep, against pixel-colour and untrained-weight baselines.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use diffscope_engine::analysis::recipes::correspondence::MatchRule;
use diffscope_engine::data::spair::{PairQuery, SpairDataset};
use diffscope_engine::eval::pck::ThresholdBase;
use diffscope_engine::eval::sweep::{
    run_sweep, Descriptor, PromptChoice, SecondSource, SweepRecipe, SweepRow, SweepSettings,
};
use diffscope_engine::export::colormap::palette;
use diffscope_engine::export::plot::{LinePlot, Series};
use diffscope_engine::model::feature_model::FeatureModel;
use diffscope_engine::model::unet::UNet;
use diffscope_engine::model::weights::{TrainableParams, Weights};

use super::feature_args::{FusionArgs, RecipeArgs};
use super::progress::Progress;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// PCK@alpha of keypoint matching per block x timestep, as the papers count it (see --match, --threshold).
    #[command(after_help = "Example:
  diffscope eval pck --model default --data SPair-71k --blocks up_blocks.0,up_blocks.1 \\
      --t 100,300 --limit 200 --out pck/")]
    Pck(PckArgs),
}

/// How a keypoint's match is found.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum MatchChoice {
    /// The cosine at feature resolution, its map upsampled to the target image, argmax pixel.
    UpsampledSimilarity,
    /// DIFT's eval_spair.py exactly: both feature maps upsampled to their images before the cosine.
    Dift,
}

/// What alpha is a fraction of.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ThresholdChoice {
    /// The larger side of the target's bounding box (alpha_bbox, SPair's standard).
    Bbox,
    /// The larger side of the target image (alpha_img).
    Img,
}

#[derive(Args, Debug)]
pub struct PckArgs {
    /// The model: `default` (bundled), a diffusers folder (pipeline or unet/), a DINOv2 folder
    /// (transformers Dinov2Model), a Hugging Face cache folder (models--org--name), or a Hugging
    /// Face name `org/name[@revision]` (a branch, tag or commit) found in the local hub cache;
    /// nothing is downloaded.
    #[arg(long, default_value = "default")]
    model: String,
    /// Dataset folder in SPair-71k's layout (SPair-71k itself, or `diffscope synth` output).
    #[arg(long)]
    data: PathBuf,
    /// Taps to evaluate by diffusers module path, comma-separated (e.g. up_blocks.0,up_blocks.1).
    #[arg(long, value_delimiter = ',', required = true)]
    blocks: Vec<String>,
    /// Timesteps to evaluate, comma-separated (ignored for DINOv2).
    #[arg(long, value_delimiter = ',', default_values_t = [261])]
    t: Vec<usize>,
    /// PCK thresholds as fractions of the threshold base (--threshold).
    #[arg(long, value_delimiter = ',', default_values_t = [0.1])]
    alpha: Vec<f64>,
    /// What alpha is a fraction of: the target's box (bbox) or the whole target image (img).
    #[arg(long, value_enum, default_value_t = ThresholdChoice::Bbox)]
    threshold: ThresholdChoice,
    /// How matches are found: upsampled-similarity (cheap), or dift (features upsampled first, as eval_spair.py).
    #[arg(long = "match", value_enum, default_value_t = MatchChoice::UpsampledSimilarity)]
    match_rule: MatchChoice,
    /// A prompt per pair from its category, e.g. "a photo of a {category}" (DIFT's for SPair).
    #[arg(long, conflicts_with_all = ["prompt", "prompt_embeds"])]
    prompt_template: Option<String>,
    /// Score all --blocks (and the second source) as one descriptor instead of a row per block.
    #[arg(long)]
    together: bool,
    /// Weights of the blocks in a --together descriptor (default: all 1).
    #[arg(long, value_delimiter = ',')]
    tap_weights: Option<Vec<f32>>,
    /// Which pairs: PairAnnotation/<split>/ (SPair uses trn, val, test).
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
    #[command(flatten)]
    recipe: RecipeArgs,
    #[command(flatten)]
    fusion: FusionArgs,
}

pub fn run(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Pck(args) => run_pck(args),
    }
}

/// The same diffusion model with its UNet's weights drawn afresh (the untrained baseline).
fn untrained_copy(args: &PckArgs) -> anyhow::Result<Option<FeatureModel>> {
    let FeatureModel::Diffusion(mut model) = args.recipe.load(&args.model)? else {
        return Ok(None);
    };
    let compute = args.recipe.compute.open()?;
    let config = model.folders.unet.join("config.json");
    let config = if config.is_file() {
        config
    } else {
        // `--unet FILE`: the pipeline's own config describes it.
        model.folders.root.join("unet/config.json")
    };
    let weights = Weights::trainable(TrainableParams::random(args.recipe.seed), &compute.device)
        .in_dtype(compute.dtype());
    model.unet = UNet::with_weights(&config, &weights)?;
    Ok(Some(FeatureModel::Diffusion(model)))
}

fn run_pck(args: PckArgs) -> anyhow::Result<()> {
    let model = args.recipe.load(&args.model)?;
    let second_model = match &args.fusion.fuse_model {
        Some(spec) => Some(
            args.recipe
                .load(spec)
                .with_context(|| format!("loading --fuse-model {spec}"))?,
        ),
        None => None,
    };
    if (args.fusion.active() || args.tap_weights.is_some()) && !args.together {
        bail!("--pca-dims, --fuse-model and --tap-weights make one descriptor of the blocks: add --together");
    }
    let untrained = if args.no_untrained {
        None
    } else {
        untrained_copy(&args)?
    };
    let dataset = SpairDataset::open(&args.data)?;
    let mut query = PairQuery::split(args.split.clone());
    if let Some(c) = &args.category {
        query = query.category(c.clone());
    }
    if let Some(n) = args.limit {
        query = query.limit(n);
    }
    let taps = diffscope_engine::features::extract::expand_taps(&args.blocks, model.taps());
    let descriptor = if args.together {
        args.fusion.check_weight()?;
        let second = match &second_model {
            Some(m) => Some(SecondSource {
                model: m,
                taps: args.fusion.taps(m)?,
                size: args.fusion.size()?,
                pca_dims: args.fusion.fuse_pca_dims,
                weight: args.fusion.fuse_weight,
            }),
            None => None,
        };
        Descriptor::Together {
            weights: match &args.tap_weights {
                Some(w) => w.clone(),
                None => vec![1.0; taps.len()],
            },
            pca_dims: args.fusion.tap_pca(taps.len())?,
            second,
        }
    } else {
        Descriptor::EachTap
    };
    let prompt = match &args.prompt_template {
        Some(t) if !t.contains("{category}") => {
            bail!("--prompt-template {t:?} has no {{category}} to fill")
        }
        Some(t) => PromptChoice::Template(t.clone()),
        None => PromptChoice::Fixed(args.recipe.prompt_source()?),
    };
    let settings = SweepSettings {
        blocks: args.blocks.clone(),
        timesteps: args.t.clone(),
        alphas: args.alpha.clone(),
        query,
        recipe: SweepRecipe {
            noise: args.recipe.noise()?,
            prompt,
            size: args.recipe.size()?,
            time_ids: args.recipe.time_ids()?,
        },
        descriptor,
        rule: match args.match_rule {
            MatchChoice::UpsampledSimilarity => MatchRule::UpsampledArgmax,
            MatchChoice::Dift => MatchRule::UpsampledFeatures,
        },
        threshold: match args.threshold {
            ThresholdChoice::Bbox => ThresholdBase::BoundingBox,
            ThresholdChoice::Img => ThresholdBase::Image,
        },
    };
    let mut bar = Progress::new("PCK", 0, "image extractions");
    let rows = run_sweep(
        &model,
        untrained.as_ref(),
        &dataset,
        &settings,
        None,
        &mut |p| {
            bar.set_total(p.total);
            bar.set(p.done, &p.note);
        },
    )?;
    bar.finish();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_csv(&rows, &args.alpha, &args.out.join("pck.csv"))?;
    let mut recipe = serde_json::Map::new();
    recipe.insert(
        "recipe".into(),
        format!("{:?}", args.recipe.recipe).to_lowercase().into(),
    );
    recipe.insert("ensemble".into(), args.recipe.ensemble.into());
    recipe.insert("seed".into(), args.recipe.seed.into());
    if let Some(t) = &args.prompt_template {
        recipe.insert("prompt_template".into(), t.clone().into());
    } else {
        recipe.insert(
            "prompt".into(),
            args.recipe.prompt.clone().unwrap_or_default().into(),
        );
    }
    for (key, value) in [
        ("size", &args.recipe.size),
        ("time_ids", &args.recipe.time_ids),
    ] {
        if let Some(v) = value {
            recipe.insert(key.into(), v.clone().into());
        }
    }
    if let Some(u) = &args.recipe.unet {
        recipe.insert("unet".into(), u.display().to_string().into());
    }
    let json = serde_json::json!({
        "model": args.model, "data": args.data, "split": args.split,
        "recipe": recipe,
        "protocol": settings.protocol(),
        "together": args.together,
        "fuse_model": args.fusion.fuse_model, "fuse_weight": args.fusion.fuse_weight, "pca_dims": args.fusion.pca_dims,
        "rows": rows,
    });
    std::fs::write(
        args.out.join("pck.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    plot(&rows, &args, &model)?.save_png(&args.out.join("pck_by_t.png"))?;
    println!("protocol: {}", settings.protocol());
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
            "best: {}{} ({:.1})",
            best.block,
            best.t.map(|t| format!(" at t={t}")).unwrap_or_default(),
            100.0 * best.report.overall.per_point[0]
        );
    }
}

fn plot(
    rows: &[SweepRow],
    args: &PckArgs,
    model: &FeatureModel,
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
            model.summary().name,
            args.data.display()
        ),
        x_label: "timestep t".into(),
        y_label: "PCK (per point)".into(),
        series,
        y_range: Some((0.0, 1.0)),
    }
    .render()?)
}
