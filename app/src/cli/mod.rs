//! Command-line interface. Each subcommand lives in its own module with its `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod attention;
mod bench;
mod compute_args;
mod correspond;
mod eval;
mod extract;
mod feature_args;
mod gui;
mod pca;
mod progress;
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
    /// Extract feature maps at timestep t from the chosen taps: of one image, or of many (a
    /// folder, a list, a dataset split) with the model loaded once, optionally one shard of them.
    #[command(after_help = "Examples:
  diffscope extract --model stabilityai/stable-diffusion-2-1 --image cat.jpg --t 261 \\
      --blocks up_blocks.1 --out cat.safetensors
  diffscope extract --model default --image cat.png --t 300 --blocks all --format npy --out cat/
  diffscope extract --model stabilityai/stable-diffusion-2-1 --data SPair-71k --split test \\
      --size 768x768 --t 261 --blocks up_blocks.1 --ensemble 8 --out spair/ --shard auto")]
    Extract(extract::ExtractArgs),
    /// Find where points on a source image land in target images (cosine similarity of features).
    #[command(after_help = "Examples:
  diffscope correspond --model default --source a.png --targets b.png,c.png \\
      --points '12,20;30,8' --t 300 --blocks up_blocks.0 --out matches/
  diffscope correspond --source a.png --targets b.png --points 12,20 --blocks up_blocks.1 \\
      --source-features a.safetensors --target-features b.safetensors --out matches/")]
    Correspond(correspond::CorrespondArgs),
    /// Where a prompt's words land and where a point looks: attention maps inside the UNet,
    /// per module and aggregated as DAAM does.
    #[command(after_help = "Examples:
  diffscope attention --model stabilityai/stable-diffusion-2-1 --image cat.jpg --t 261 \\
      --prompt 'a photo of a cat' --layers all --tokens all --out cat-attention/
  diffscope attention --model default --image cat.png --t 300 --layers mid_block \\
      --point 32,20 --out look/")]
    Attention(attention::AttentionArgs),
    /// Show features as RGB by PCA, per image or jointly.
    #[command(after_help = "Example:
  diffscope pca --model default --images a.png,b.png --t 300 --blocks up_blocks.0 --joint --out pca/")]
    Pca(pca::PcaArgs),
    /// Evaluate features on a keypoint dataset.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Segment images by clustering their features (k-means or normalized cut).
    #[command(
        group(clap::ArgGroup::new("method").args(["k", "ncut"]).required(true)),
        after_help = "Examples:
  diffscope segment --model default --images a.png,b.png --t 300 --blocks up_blocks.0 --k 6 \\
      --joint --out segments/
  diffscope segment --images a.png --features a.safetensors --blocks up_blocks.1 --ncut --out cuts/"
    )]
    Segment(segment::SegmentArgs),
    /// Generate the procedural creatures dataset (keypoints, pairs) in SPair-71k's layout.
    #[command(after_help = "Example:
  diffscope synth --out creatures --count 1000 --seed 0 --preview creatures.png")]
    Synth(synth::SynthArgs),
    /// Open the workbench (the default without a subcommand).
    #[command(after_help = "Examples:
  diffscope gui                      (what was open last time, or the bundled model and samples)
  diffscope gui --model stabilityai/stable-diffusion-2-1 --images cat.jpg,dog.jpg
  diffscope gui --session study.json
  diffscope gui --fresh              (the bundled model and samples, whatever was open before)")]
    Gui(gui::GuiArgs),
    /// Train a pixel-space diffusion model (UNet2DModel, DDPM) on a folder of images.
    #[command(after_help = "Examples:
  diffscope train --data creatures/JPEGImages --out my-model --steps 20000
  diffscope train --data creatures/JPEGImages --out my-model --resume my-model --steps 40000")]
    Train(train::TrainArgs),
    /// Draw samples from a pixel-space model with DDIM and save them as an image grid.
    #[command(after_help = "Example:
  diffscope sample --model my-model --count 16 --steps 50 --out grid.png")]
    Sample(sample::SampleArgs),
    /// Time one stage of the recipe (UNet, VAE, the whole recipe) and print one JSON line: see bench/README.md.
    #[command(after_help = "Example:
  diffscope bench --model stabilityai/stable-diffusion-2-1 --stage recipe --size 768x768 --ensemble 8")]
    Bench(bench::BenchArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Some(Command::Extract(args)) => extract::run(args),
        Some(Command::Correspond(args)) => correspond::run(args),
        Some(Command::Attention(args)) => attention::run(args),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand (and each of `eval`'s), with its path.
    fn leaves(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in command.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.has_subcommands() {
                leaves(sub, name, out);
            } else {
                out.push((name, sub.clone()));
            }
        }
    }

    #[test]
    fn every_flag_has_help_and_every_subcommand_an_example() {
        // Also checks that the names the parser's requirements refer to exist.
        Cli::command().debug_assert();
        let mut commands = Vec::new();
        leaves(&Cli::command(), "diffscope".into(), &mut commands);
        let mut missing = Vec::new();
        for (path, command) in &commands {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path} --{}: no help", arg.get_id()));
                }
            }
            let example = command
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            if !example.contains(&format!("{path} ")) {
                missing.push(format!("{path}: no example in --help"));
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    /// What a command cannot run without is refused by the parser, before any work.
    #[test]
    fn flags_a_command_needs_are_required() {
        let parse = |args: &str| Cli::try_parse_from(args.split_whitespace());
        let missing = |args: &str, flag: &str| {
            let err = parse(args).err().expect(args).to_string();
            assert!(
                err.contains("required") && err.contains(flag),
                "{args}: {err}"
            );
        };
        missing(
            "diffscope segment --images a --blocks x --t 5 --out o",
            "--k",
        );
        // --t is not the parser's to require: features from files, DINOv2 and CleanDIFT's recipe
        // (t=261 by default) need none, and a diffusion model without one is refused before any
        // work with a message that says so (tests/cli_models.rs).
        for ok in [
            "diffscope extract --image a.png --blocks all --out f",
            "diffscope pca --images a --features f --blocks x --out o",
            "diffscope segment --images a --features f --blocks x --ncut --out o",
            "diffscope correspond --source a --targets b --points 1,2 --blocks x \
             --source-features f --target-features g --out o",
            "diffscope extract --image a.png --blocks all --t 3 --out f",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
        }
    }
}
