//! `diffscope sample`: DDIM samples of a pixel-space model, saved as one image grid.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use diffscope_engine::features::recipe::{member_seed, seeded_normal};
use diffscope_engine::model::pipeline::DiffusionModel;
use diffscope_engine::train::ddim::{ddim_sample, image_grid};

use super::compute_args::ComputeArgs;
use super::progress::Progress;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Model folder (a diffusers DDPMPipeline folder, or `default`).
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// DDIM eta: 0 is deterministic DDIM (diffusers' default), 1 adds DDPM's noise at every
    /// step (better samples from an undertrained model).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Seed of the starting noise (and of the noise eta adds).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image side in pixels (default: the model's sample_size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Images per row of the grid (default: about the square root of the count).
    #[arg(long)]
    pub columns: Option<usize>,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        anyhow::bail!("--count must be at least 1");
    }
    let compute = args.compute.open()?;
    let device = compute.device.clone();
    let model = DiffusionModel::load_on(&args.model, &compute)?;
    if model.vae.is_some() || model.unet.context_dim.is_some() {
        anyhow::bail!(
            "{}: sample draws only from pixel-space unconditional models (UNet2DModel without a VAE)",
            model.folders.root.display()
        );
    }
    let size = match args.size {
        Some(s) => s,
        None => sample_size(&model.folders.unet.join("config.json"))?,
    };
    model.unet.check_input_size(size, size)?;
    let shape = [args.count, model.unet.in_channels, size, size];
    let noise = seeded_normal(args.seed, &shape, &device)?;
    let started = Instant::now();
    let mut bar = Progress::new("sample", args.steps, "DDIM steps");
    let images = ddim_sample(
        &model.unet,
        &model.schedule,
        &noise,
        args.steps,
        args.eta,
        // Draw 0 is the starting noise; step i adds draw i + 1.
        &mut |i| seeded_normal(member_seed(args.seed, i + 1), &shape, &device),
        &mut |i, n| {
            bar.set_total(n);
            bar.set(i, "");
        },
    )?;
    bar.finish();
    let columns = args
        .columns
        .unwrap_or_else(|| (args.count as f64).sqrt().ceil() as usize);
    let grid = image_grid(&images, columns, 2)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    grid.save(&args.out)
        .with_context(|| format!("{}: cannot write the grid", args.out.display()))?;
    eprintln!(
        "{} samples ({size}x{size}, {} DDIM steps, eta {}, seed {}) in {:.1} s -> {}",
        args.count,
        args.steps,
        args.eta,
        args.seed,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// The `sample_size` of a UNet2DModel config (a number, or [height, width] with equal sides).
fn sample_size(config: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(config).with_context(|| config.display().to_string())?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| config.display().to_string())?;
    let value = json.get("sample_size");
    let side = match value {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::Array(a)) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
        _ => None,
    };
    side.map(|s| s as usize)
        .with_context(|| format!("{}: no usable sample_size; pass --size", config.display()))
}
