//! `diffscope synth`: generate the procedural creatures dataset in SPair-71k's layout.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use diffscope_engine::data::synth::{
    contact_sheet, generate_dataset, Category, ImageFormat, SynthConfig,
};

use super::progress::Progress;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Jpg,
    Png,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (created; images of different seeds can share one).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images, categories taking turns.
    #[arg(long)]
    pub count: usize,
    /// Random seed: the same seed gives the same files on every machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Number of image pairs to annotate (default: as many as images).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Split folder for the pairs: PairAnnotation/<split>/ (SPair uses trn, val, test).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Image file format (SPair uses jpg).
    #[arg(long, value_enum, default_value = "jpg")]
    pub format: FormatArg,
    /// JPEG quality, 1-100.
    #[arg(long, default_value_t = 95)]
    pub quality: u8,
    /// Only these categories (comma-separated: cat,bird,fish,bug).
    #[arg(long, value_delimiter = ',')]
    pub categories: Vec<String>,
    /// Also write a contact sheet of the first 16 images to this PNG, and the same with the
    /// keypoints marked next to it (`<name>_kps.png`).
    #[arg(long)]
    pub preview: Option<PathBuf>,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let categories = parse_categories(&args.categories)?;
    let mut config = SynthConfig::new(&args.out, args.count, args.seed);
    config.size = args.size;
    config.pairs = args.pairs.unwrap_or(args.count);
    config.split = args.split.clone();
    config.format = match args.format {
        FormatArg::Jpg => ImageFormat::Jpeg {
            quality: args.quality,
        },
        FormatArg::Png => ImageFormat::Png,
    };
    config.categories = categories;
    let mut bar = Progress::new("synth", config.count, "images");
    let summary = generate_dataset(&config, &mut |done| bar.set(done, ""))?;
    bar.finish();
    println!(
        "wrote {} images and {} pairs (split {}) to {}",
        summary.images,
        summary.pairs,
        config.split,
        config.out.display()
    );
    for (category, (images, pairs)) in &summary.per_category {
        println!("  {category}: {images} images, {pairs} pairs");
    }
    if let Some(path) = &args.preview {
        write_previews(path, &config)?;
    }
    Ok(())
}

fn parse_categories(names: &[String]) -> anyhow::Result<Vec<Category>> {
    if names.is_empty() {
        return Ok(Category::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Category::from_name(n.trim()).with_context(|| {
                let known: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "--categories: unknown category {n:?} (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

fn write_previews(path: &std::path::Path, config: &SynthConfig) -> anyhow::Result<()> {
    let count = config.count.min(16);
    let plain = contact_sheet(
        config.seed,
        config.size,
        &config.categories,
        count,
        4,
        3,
        false,
    );
    let marked = contact_sheet(
        config.seed,
        config.size,
        &config.categories,
        count,
        4,
        3,
        true,
    );
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("preview");
    let marked_path = path.with_file_name(format!("{stem}_kps.png"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    plain
        .save(path)
        .with_context(|| format!("{}: cannot write preview", path.display()))?;
    marked
        .save(&marked_path)
        .with_context(|| format!("{}: cannot write preview", marked_path.display()))?;
    println!("previews: {} and {}", path.display(), marked_path.display());
    Ok(())
}
