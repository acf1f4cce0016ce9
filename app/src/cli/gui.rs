//! `diffscope gui` (and `diffscope` alone): open the workbench.

use std::path::PathBuf;

use clap::Args;
use diffscope::gui::{run as run_workbench, GuiOptions};

#[derive(Args, Debug, Default)]
pub struct GuiArgs {
    /// The model: `default` (bundled), a diffusers folder, or a Hugging Face cache folder.
    #[arg(long)]
    model: Option<String>,
    /// Images to open, comma-separated (the first is the source). Default: two bundled samples.
    #[arg(long, value_delimiter = ',')]
    images: Vec<PathBuf>,
    /// Open a saved session instead.
    #[arg(long, conflicts_with_all = ["model", "images"])]
    session: Option<PathBuf>,
    /// Keep extracted features on disk in this folder too (reused by later runs).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Measure frame times while the first analysis runs, write them to this JSON file, and quit.
    #[arg(long, hide = true)]
    measure_frames: Option<PathBuf>,
}

pub fn run(args: GuiArgs) -> anyhow::Result<()> {
    let mut options = GuiOptions::bundled();
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
    run_workbench(options).map_err(anyhow::Error::msg)
}
