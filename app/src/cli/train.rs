//! `diffscope train`: train a pixel-space UNet2DModel (DDPM epsilon objective) on a folder of images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::progress::duration_text;
use anyhow::Context;
use clap::Args;
use diffscope_engine::device::DeviceChoice;
use diffscope_engine::train::arch::UNetArchitecture;
use diffscope_engine::train::checkpoint;
use diffscope_engine::train::config::TrainConfig;
use diffscope_engine::train::dataset::ImageDataset;
use diffscope_engine::train::trainer::{StepReport, Trainer};

/// The bundled default model's architecture; the other defaults of these flags are its recipe
/// too (see the README for how it was chosen).
pub const DEFAULT_CHANNELS: [usize; 3] = [32, 64, 128];
pub const DEFAULT_ATTENTION_LEVELS: [usize; 0] = [];

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Where to train: cpu, cuda, cuda:N (default: the first GPU this build supports when one
    /// is present, else the CPU). Training runs in float32.
    #[arg(long, default_value = "auto", value_parser = super::compute_args::parse_device)]
    pub device: DeviceChoice,
    /// Folder of training images (PNG/JPEG, searched recursively; all the same size).
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: a diffusers DDPMPipeline folder, with checkpoints/ inside.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from a checkpoint folder, or from the newest checkpoint of a run folder.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Total optimizer steps of the run (a resumed run counts the steps already done).
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Images per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate of AdamW (reached after the warm-up).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Channels of each level, e.g. 32,64,128 (default: the bundled model's).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<usize>>,
    /// ResNet blocks per level on the way down.
    #[arg(long)]
    pub layers_per_block: Option<usize>,
    /// Levels (0 = finest) whose blocks get self-attention, comma-separated, or `none`.
    #[arg(long)]
    pub attention_levels: Option<String>,
    /// Self-attention in the mid block: true or false.
    #[arg(long)]
    pub mid_attention: Option<bool>,
    /// Attention head size.
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// Image side in pixels (the images must have this size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Noise schedule: linear or squaredcos_cap_v2.
    #[arg(long)]
    pub beta_schedule: Option<String>,
    /// Write a checkpoint (and refresh the model folder) every N steps; 0: only at the end.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Seed of the initial weights, the image order, the noise and the timesteps.
    #[arg(long)]
    pub seed: Option<u64>,
    /// EMA decay of the exported weights (0 turns the EMA off).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Print a progress line every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
}

fn parse_levels(text: &str) -> anyhow::Result<Vec<usize>> {
    if text.trim().is_empty() || text.trim() == "none" {
        return Ok(vec![]);
    }
    text.split(',')
        .map(|s| {
            s.trim().parse::<usize>().with_context(|| {
                format!("--attention-levels `{text}`: expected level numbers like 1,2 or `none`")
            })
        })
        .collect()
}

/// The run's settings: the flags given, else the checkpoint's (when resuming), else the defaults.
fn config_from(args: &TrainArgs, base: Option<&TrainConfig>) -> anyhow::Result<TrainConfig> {
    let default_arch = UNetArchitecture {
        channels: DEFAULT_CHANNELS.to_vec(),
        layers_per_block: 1,
        attention_levels: DEFAULT_ATTENTION_LEVELS.to_vec(),
        mid_attention: true,
        head_dim: 32,
        size: 64,
    };
    let arch0 = base.map(|b| b.arch.clone()).unwrap_or(default_arch);
    let attention_levels = match &args.attention_levels {
        Some(text) => parse_levels(text)?,
        None => arch0.attention_levels.clone(),
    };
    let arch = UNetArchitecture {
        channels: args.channels.clone().unwrap_or(arch0.channels),
        layers_per_block: args.layers_per_block.unwrap_or(arch0.layers_per_block),
        attention_levels,
        mid_attention: args.mid_attention.unwrap_or(arch0.mid_attention),
        head_dim: args.head_dim.unwrap_or(arch0.head_dim),
        size: args.size.unwrap_or(arch0.size),
    };
    let ema_decay = match args.ema {
        Some(0.0) => None,
        Some(d) => Some(d),
        None => base.map_or(Some(0.999), |b| b.ema_decay),
    };
    Ok(TrainConfig {
        arch,
        beta_schedule: args
            .beta_schedule
            .clone()
            .or_else(|| base.map(|b| b.beta_schedule.clone()))
            .unwrap_or_else(|| "linear".into()),
        batch_size: args.batch.or(base.map(|b| b.batch_size)).unwrap_or(16),
        learning_rate: args.lr.or(base.map(|b| b.learning_rate)).unwrap_or(1e-3),
        warmup_steps: args.warmup,
        adamw: base.map(|b| b.adamw).unwrap_or_default(),
        max_grad_norm: base.map_or(1.0, |b| b.max_grad_norm),
        ema_decay,
        seed: args.seed.or(base.map(|b| b.seed)).unwrap_or(0),
    })
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    diffscope_engine::train::keep_freed_memory();
    diffscope_engine::train::inline_candle_elementwise();
    let device = args.device.open()?;
    let started = Instant::now();
    let dataset = ImageDataset::load(&args.data)?;
    eprintln!(
        "data: {} images of {}x{} from {} (decoded in {:.1} s)",
        dataset.len(),
        dataset.width,
        dataset.height,
        args.data.display(),
        started.elapsed().as_secs_f64()
    );
    let mut trainer = match &args.resume {
        Some(path) => {
            let ckpt = checkpoint::load(path, &device)?;
            let config = config_from(&args, Some(&ckpt.state.config))?;
            eprintln!(
                "resuming from {} at step {}",
                ckpt.dir.display(),
                ckpt.state.step
            );
            Trainer::resume(ckpt, config, dataset, &args.out, &device)?
        }
        None => Trainer::new(config_from(&args, None)?, dataset, &args.out, &device)?,
    };
    let c = &trainer.config;
    eprintln!(
        "model: UNet2DModel, {}, {} parameters; {} schedule; batch {}, lr {:e}, EMA {}, seed {}",
        c.arch.describe(),
        trainer.parameter_count(),
        c.beta_schedule,
        c.batch_size,
        c.learning_rate,
        c.ema_decay.map_or("off".to_string(), |d| d.to_string()),
        c.seed
    );
    if trainer.step >= args.steps {
        eprintln!(
            "already at step {} of {}: writing the model folder only",
            trainer.step, args.steps
        );
        trainer.write_model()?;
        return Ok(());
    }
    let mut progress = Progress::new(
        trainer.step,
        args.steps,
        trainer.config.batch_size,
        args.log_every,
        device.clone(),
    );
    trainer.train_until(args.steps, args.checkpoint_every, &mut |report, saved| {
        progress.on_step(report, saved)
    })?;
    eprintln!(
        "done: {} steps in {}; model written to {}",
        args.steps,
        duration_text(started.elapsed().as_secs_f64()),
        args.out.display()
    );
    Ok(())
}

/// Progress lines: step, mean loss since the last line, images/s, time left.
struct Progress {
    first_step: usize,
    total: usize,
    batch: usize,
    every: usize,
    started: Instant,
    losses: Vec<f32>,
    /// On a GPU each line also says how much memory the engine holds.
    device: candle_core::Device,
}

impl Progress {
    fn new(
        first_step: usize,
        total: usize,
        batch: usize,
        every: usize,
        device: candle_core::Device,
    ) -> Self {
        Self {
            first_step,
            total,
            batch,
            every: every.max(1),
            started: Instant::now(),
            losses: vec![],
            device,
        }
    }

    fn on_step(&mut self, report: &StepReport, saved: Option<&Path>) {
        self.losses.push(report.loss);
        let last = report.step == self.total;
        if report.step.is_multiple_of(self.every) || last {
            let secs = self.started.elapsed().as_secs_f64();
            let done = report.step - self.first_step;
            let rate = (done * self.batch) as f64 / secs.max(1e-9);
            let left = (self.total - report.step) as f64 * secs / done.max(1) as f64;
            let mean = self.losses.iter().sum::<f32>() / self.losses.len().max(1) as f32;
            let memory = diffscope_engine::device::memory_info(&self.device)
                .map(|m| {
                    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                    format!("  gpu {:.2} GiB in use", gib(m.total - m.free))
                })
                .unwrap_or_default();
            eprintln!(
                "step {}/{}  loss {:.5}  grad {:.3}  lr {:.2e}  {:.1} img/s  elapsed {}  ETA {}{memory}",
                report.step,
                self.total,
                mean,
                report.grad_norm,
                report.learning_rate,
                rate,
                duration_text(secs),
                duration_text(left)
            );
            self.losses.clear();
        }
        if let Some(dir) = saved {
            eprintln!("checkpoint: {}", dir.display());
        }
    }
}
