//! Command-line interface. Each subcommand lives in its own module with its `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod correspond;
mod eval;
mod extract;
mod feature_args;
mod gui;
mod pca;
mod sample;
mod segment;
mod synth;
mod train;

#[derive(Parser)]
#[command(
    name = "diffscope",
    version,
    about = "Look inside diffusion models: features, correspondence, PCA, segments"
)]
struct Cli {
    /// Without a subcommand the workbench opens.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Extract feature maps of one image at timestep t from the chosen UNet taps.
    Extract(extract::ExtractArgs),
    /// Find where points on a source image land in target images (cosine similarity of features).
    Correspond(correspond::CorrespondArgs),
    /// Show features as RGB by PCA, per image or jointly.
    Pca(pca::PcaArgs),
    /// Evaluate features on a keypoint dataset.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Segment images by clustering their features (k-means or normalized cut).
    Segment(segment::SegmentArgs),
    /// Generate the procedural creatures dataset (keypoints, pairs) in SPair-71k's layout.
    Synth(synth::SynthArgs),
    /// Open the workbench (the default without a subcommand).
    Gui(gui::GuiArgs),
    /// Train a pixel-space diffusion model (UNet2DModel, DDPM) on a folder of images.
    Train(train::TrainArgs),
    /// Draw samples from a pixel-space model with DDIM and save them as an image grid.
    Sample(sample::SampleArgs),
    /// Time one stage of the recipe (UNet, VAE, the whole recipe) and print one JSON line: see bench/README.md.
    Bench(bench::BenchArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Some(Command::Extract(args)) => extract::run(args),
        Some(Command::Correspond(args)) => correspond::run(args),
        Some(Command::Pca(args)) => pca::run(args),
        Some(Command::Eval(command)) => eval::run(command),
        Some(Command::Segment(args)) => segment::run(args),
        Some(Command::Synth(args)) => synth::run(args),
        Some(Command::Gui(args)) => gui::run(args),
        Some(Command::Train(args)) => train::run(args),
        Some(Command::Sample(args)) => sample::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        None => gui::run(gui::GuiArgs::default()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
