//! Command-line interface. Each subcommand lives in its own module with its `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod correspond;
mod eval;
mod extract;
mod feature_args;
mod pca;
mod segment;
mod synth;

#[derive(Parser)]
#[command(
    name = "diffscope",
    version,
    about = "Look inside diffusion models: features, correspondence, PCA, segments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Extract(args) => extract::run(args),
        Command::Correspond(args) => correspond::run(args),
        Command::Pca(args) => pca::run(args),
        Command::Eval(command) => eval::run(command),
        Command::Segment(args) => segment::run(args),
        Command::Synth(args) => synth::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
