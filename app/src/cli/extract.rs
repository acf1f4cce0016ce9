//! `diffscope extract`: features of one image, or of a whole dataset, at one timestep, written for
//! numpy and PyTorch. A dataset run can be split into shards (one per process of a cluster job
//! array), skips what an earlier run already wrote with the same settings, and ends with an
//! index of every image and its feature file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, ValueEnum};
use diffscope_engine::data::spair::{PairQuery, SpairDataset};
use diffscope_engine::features::batch::{plan_outputs, BatchItem, Shard};
use diffscope_engine::features::dump::{read_dump_metadata, write_npy_dir, write_safetensors};
use diffscope_engine::features::extract::{extract_features, ExtractSettings, Extraction};
use diffscope_engine::io::atomic::write_bytes_atomically;
use diffscope_engine::io::image::find_images;

use super::feature_args::FeatureArgs;
use super::progress::Progress;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DumpFormat {
    /// One .safetensors file: a [C,h,w] tensor per tap plus `latents`, settings in __metadata__.
    Safetensors,
    /// A folder with <tap>.npy per tap plus latents.npy and meta.json.
    Npy,
}

/// The metadata key that holds the run's settings as JSON: what a rerun compares to skip files.
const SETTINGS_KEY: &str = "settings";

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["image", "images", "image_dir", "data"])))]
pub struct ExtractArgs {
    /// One image (PNG or JPEG); --out is then the output file (or folder with --format npy).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Several images, comma-separated: one output per image in the --out folder, named after
    /// the image.
    #[arg(long, value_delimiter = ',')]
    images: Vec<PathBuf>,
    /// Every PNG/JPEG under this folder (recursively): outputs keep the subfolders.
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// A SPair-71k-style dataset folder: the images of --split's pairs, named as under
    /// JPEGImages/ (category/name).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The dataset split whose images --data takes.
    #[arg(long, default_value = "test", requires = "data")]
    split: String,
    /// Take only part of a many-image run: I/N is every N-th image from the I-th (counting from
    /// 0) of the sorted list, so N processes with I = 0..N-1 write each image once; `auto` reads
    /// the index and count from a Slurm array or a Kubernetes Indexed Job.
    #[arg(long)]
    shard: Option<String>,
    #[command(flatten)]
    features: FeatureArgs,
    /// Output .safetensors file (one --image), or the output folder (many images).
    #[arg(long)]
    out: PathBuf,
    /// How the features are written.
    #[arg(long, value_enum, default_value_t = DumpFormat::Safetensors)]
    format: DumpFormat,
}

pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    if args.features.fusion.active() {
        bail!("extract writes one model's taps: fuse features with correspond, pca, segment or eval pck");
    }
    match &args.image {
        Some(image) => {
            if args.shard.is_some() {
                bail!("--shard splits many images: give --images, --image-dir or --data");
            }
            extract_one(&args, image)
        }
        None => extract_many(&args),
    }
}

fn extract_one(args: &ExtractArgs, image: &Path) -> anyhow::Result<()> {
    let model = args.features.load_model()?;
    let settings = args.features.settings(&model)?;
    let mut bar = Progress::new("extract", 0, "UNet passes");
    let ex = extract_features(&model, image, &settings, None, &mut |done, total| {
        bar.set_total(total);
        bar.set(done, "");
    })?;
    bar.finish();
    let ex = with_settings(ex, &settings_json(args, &settings));
    write_dump(&ex, &args.out, args.format)?;
    for (name, t) in ex.taps.iter().chain(&ex.tokens) {
        println!("{name}\t{:?}", t.dims());
    }
    println!("latents\t{:?}", ex.latents.dims());
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The run's settings as the JSON text every output records: the flags that change the numbers,
/// with the timestep the model resolved.
fn settings_json(args: &ExtractArgs, settings: &ExtractSettings) -> String {
    let mut m = args.features.settings_json(false);
    m.insert("t".into(), settings.t.into());
    m.insert(
        "dtype".into(),
        args.features.recipe.compute.dtype.name().into(),
    );
    serde_json::Value::Object(m).to_string()
}

fn with_settings(mut ex: Extraction, settings: &str) -> Extraction {
    ex.metadata
        .insert(SETTINGS_KEY.to_string(), settings.to_string());
    ex
}

fn write_dump(ex: &Extraction, path: &Path, format: DumpFormat) -> anyhow::Result<()> {
    match format {
        DumpFormat::Safetensors => write_safetensors(ex, path)?,
        DumpFormat::Npy => write_npy_dir(ex, path)?,
    }
    Ok(())
}

/// The images a many-image run names, with their outputs, sorted.
fn plan(args: &ExtractArgs) -> anyhow::Result<Vec<BatchItem>> {
    let items = if let Some(dir) = &args.image_dir {
        plan_outputs(&find_images(dir, "images")?, Some(dir))?
    } else if let Some(root) = &args.data {
        let dataset = SpairDataset::open(root)?;
        let pairs = dataset.load_pairs(&PairQuery {
            split: args.split.clone(),
            category: None,
            limit: None,
        })?;
        let images: Vec<PathBuf> = pairs
            .iter()
            .flat_map(|p| [p.src_image.clone(), p.trg_image.clone()])
            .collect();
        plan_outputs(&images, Some(&root.join("JPEGImages")))?
    } else {
        plan_outputs(&args.images, None)?
    };
    if items.is_empty() {
        bail!("no images to extract");
    }
    Ok(items)
}

fn output_path(args: &ExtractArgs, item: &BatchItem) -> PathBuf {
    let path = args.out.join(&item.output);
    match args.format {
        DumpFormat::Safetensors => path.with_extension("safetensors"),
        DumpFormat::Npy => path,
    }
}

/// Whether `path` is already written with `settings` (skip it); an output written with other
/// settings is an error rather than a silent mix of two runs in one folder.
fn already_written(path: &Path, settings: &str) -> anyhow::Result<bool> {
    let Some(metadata) = read_dump_metadata(path)? else {
        return Ok(false);
    };
    match metadata.get(SETTINGS_KEY) {
        Some(written) if written == settings => Ok(true),
        Some(written) => bail!(
            "{} was written with other settings ({written}; this run: {settings}): write to \
             another --out folder, or delete it to extract it again",
            path.display()
        ),
        None => bail!(
            "{} was not written by a dataset run of diffscope extract (it records no settings): \
             write to another --out folder, or delete it",
            path.display()
        ),
    }
}

fn extract_many(args: &ExtractArgs) -> anyhow::Result<()> {
    let items = plan(args)?;
    let shard = match &args.shard {
        Some(text) => Shard::parse(text, |name| std::env::var(name).ok())?,
        None => Shard::All,
    };
    let mine = shard.select(&items);
    // The model resolves the settings (its suggested t) that the outputs record and a rerun
    // compares, so it is loaded even when everything is written already.
    let model = args.features.load_model()?;
    let settings = args.features.settings(&model)?;
    let json = settings_json(args, &settings);
    eprintln!(
        "{} images; this process takes {}{}",
        items.len(),
        mine.len(),
        match shard {
            Shard::All => String::new(),
            Shard::Part { index, count } => format!(" (shard {index}/{count})"),
        }
    );
    let mut bar = Progress::new("extract", mine.len(), "images");
    let (mut written, mut skipped) = (0, 0);
    for (i, item) in mine.iter().enumerate() {
        let path = output_path(args, item);
        let note = item.image.display().to_string();
        bar.set(i, &note);
        if already_written(&path, &json)? {
            skipped += 1;
            continue;
        }
        let ex = extract_features(&model, &item.image, &settings, None, &mut |done, total| {
            bar.set(i, format!("{note}: UNet pass {done}/{total}"))
        })
        .with_context(|| format!("extracting {}", item.image.display()))?;
        write_dump(&with_settings(ex, &json), &path, args.format)?;
        written += 1;
    }
    bar.finish();
    let indexed = write_index(args, &items, &json)?;
    eprintln!(
        "wrote {written}, skipped {skipped} already written; the index lists {indexed} of {} images: {}",
        items.len(),
        args.out.join("index.csv").display()
    );
    Ok(())
}

/// `OUT/index.csv` (image, features) and `OUT/index.json` (the settings and the same rows): every
/// image of the whole run (all shards) whose output exists, in the planned order. Each shard
/// rewrites it at its end, so the last to finish leaves the full index; no timestamps, so equal
/// runs give equal bytes.
fn write_index(args: &ExtractArgs, items: &[BatchItem], settings: &str) -> anyhow::Result<usize> {
    let mut csv = String::from("image,features\n");
    let mut rows = vec![];
    for item in items {
        let path = output_path(args, item);
        if read_dump_metadata(&path)?.is_none() {
            continue;
        }
        let relative = path.strip_prefix(&args.out).unwrap_or(&path);
        let image = item.image.display().to_string();
        let features = relative.display().to_string();
        csv.push_str(&format!("{},{}\n", csv_field(&image), csv_field(&features)));
        rows.push(serde_json::json!({ "image": image, "features": features }));
    }
    let settings: serde_json::Value =
        serde_json::from_str(settings).context("the run's settings")?;
    let json = serde_json::json!({
        "settings": settings,
        "format": match args.format {
            DumpFormat::Safetensors => "safetensors",
            DumpFormat::Npy => "npy",
        },
        "images": rows,
    });
    write_bytes_atomically(&args.out.join("index.csv"), csv.as_bytes())?;
    let text = serde_json::to_string_pretty(&json)?;
    write_bytes_atomically(&args.out.join("index.json"), text.as_bytes())?;
    Ok(rows.len())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
