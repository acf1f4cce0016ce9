//! Command-line interface. Each subcommand lives in its own module with its `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod extract;
mod feature_args;
mod sample;
mod train;

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
    /// Train a pixel-space diffusion model (UNet2DModel, DDPM) on a folder of images.
    Train(train::TrainArgs),
    /// Draw samples from a pixel-space model with DDIM and save them as an image grid.
    Sample(sample::SampleArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Extract(args) => extract::run(args),
        Command::Train(args) => train::run(args),
        Command::Sample(args) => sample::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
