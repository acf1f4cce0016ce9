//! `diffscope gui` (and `diffscope` alone): open the workbench.

use std::path::PathBuf;

use clap::Args;
use diffscope::gui::{run as run_workbench, GuiOptions};

use super::compute_args::ComputeArgs;

#[derive(Args, Debug, Default)]
pub struct GuiArgs {
    /// The model: `default` (bundled), a diffusers folder, a Hugging Face cache folder, or a
    /// Hugging Face name `org/name[@revision]` found in the local hub cache.
    #[arg(long)]
    model: Option<String>,
    /// Images to open, comma-separated (the first is the source). Default: two bundled samples.
    #[arg(long, value_delimiter = ',')]
    images: Vec<PathBuf>,
    /// Open a saved session instead.
    #[arg(long, conflicts_with_all = ["model", "images"])]
    session: Option<PathBuf>,
    /// Start with the bundled model and samples instead of what was open when the workbench
    /// last closed (the recent models and sessions stay in the menus).
    #[arg(long, conflicts_with = "session")]
    fresh: bool,
    /// Keep extracted features on disk in this folder too (reused by later runs).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Measure frame times while the first analysis runs, write them to this JSON file, and quit.
    #[arg(long, hide = true)]
    measure_frames: Option<PathBuf>,
    #[command(flatten)]
    compute: ComputeArgs,
}

pub fn run(args: GuiArgs) -> anyhow::Result<()> {
    let mut options = GuiOptions::bundled();
    // Without anything to open, the workbench comes back as it was left.
    options.restore =
        !args.fresh && args.model.is_none() && args.images.is_empty() && args.session.is_none();
    if let Some(model) = args.model {
        options.model = model;
    }
    if !args.images.is_empty() {
        options.images = args.images;
    }
    options.session = args.session;
    options.cache_dir = args
        .cache_dir
        .or_else(|| std::env::var_os("DIFFSCOPE_CACHE_DIR").map(PathBuf::from));
    options.measure_frames = args.measure_frames;
    options.device = args.compute.device;
    options.precision = args.compute.dtype;
    run_workbench(options).map_err(anyhow::Error::msg)
}
