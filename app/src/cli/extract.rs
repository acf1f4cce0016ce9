//! `diffscope extract`: features of one image at one timestep, written for numpy and PyTorch.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use diffscope_engine::features::dump::{write_npy_dir, write_safetensors};
use diffscope_engine::features::extract::extract_features;

use super::feature_args::FeatureArgs;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DumpFormat {
    /// One .safetensors file: a [C,h,w] tensor per tap plus `latents`, settings in __metadata__.
    Safetensors,
    /// A folder with <tap>.npy per tap plus latents.npy and meta.json.
    Npy,
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// The image (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    features: FeatureArgs,
    /// Output .safetensors file, or a folder with --format npy.
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
    let model = args.features.load_model()?;
    let settings = args.features.settings(&model)?;
    let mut report = |done: usize, total: usize| eprint!("\rUNet passes: {done}/{total}");
    let ex = extract_features(&model, &args.image, &settings, None, &mut report)?;
    eprintln!();
    match args.format {
        DumpFormat::Safetensors => write_safetensors(&ex, &args.out)?,
        DumpFormat::Npy => write_npy_dir(&ex, &args.out)?,
    }
    for (name, t) in ex.taps.iter().chain(&ex.tokens) {
        println!("{name}\t{:?}", t.dims());
    }
    println!("latents\t{:?}", ex.latents.dims());
    println!("wrote {}", args.out.display());
    Ok(())
}
