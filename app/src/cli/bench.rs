//! `diffscope bench`: time one stage of the extraction recipe on a loaded model and print one JSON
//! line (wall seconds per step, peak memory), for `bench/bench_vs_diffusers.py` to compare with diffusers.
//!
//! Every stage runs the engine's own code paths: `DiffusionModel::encode` (the VAE encoder),
//! `DiffusionModel::condition` (the text encoder) and `extract_from_latents` (noising, the UNet up
//! to the tap, the ensemble average). Inputs are a deterministic pseudo-random pattern that the
//! Python script reproduces exactly, so both sides compute the same thing from the same weights.

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use diffscope_engine::device::{memory_info, peak_memory, reset_peak_memory, synchronize};
use diffscope_engine::features::recipe::{
    draws_per_batch, extract_from_latents, NoiseSource, UNetRequest,
};
use diffscope_engine::io::image::parse_size;
use diffscope_engine::model::conditioning::Conditioning;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use serde_json::{json, Value};

use super::compute_args::ComputeArgs;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Stage {
    /// One UNet pass (batch 1) that stops after `up_blocks.1`.
    UnetUp1,
    /// One full UNet pass (batch 1) to `conv_out`.
    UnetFull,
    /// The VAE encoder on one image.
    Vae,
    /// The whole recipe: encode once, embed the empty prompt, K noisy UNet passes to `up_blocks.1`, average.
    Recipe,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::UnetUp1 => "unet-up1",
            Stage::UnetFull => "unet-full",
            Stage::Vae => "vae",
            Stage::Recipe => "recipe",
        }
    }

    /// Warm-up runs before timing unless `--warmup` says otherwise: one for single passes (to
    /// leave first-call costs out), none for the recipe (its K passes amortise them).
    fn default_warmup(self) -> usize {
        match self {
            Stage::Recipe => 0,
            _ => 1,
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A diffusers pipeline folder (see `extract --model`).
    #[arg(long)]
    model: String,
    /// Image size WIDTHxHEIGHT (the UNet stages use the matching latent size).
    #[arg(long, default_value = "512x512")]
    size: String,
    /// What to time.
    #[arg(long, value_enum)]
    stage: Stage,
    /// Noise draws in the recipe (DIFT uses 8).
    #[arg(long, default_value_t = 8)]
    ensemble: usize,
    /// Timestep (DIFT's default is 261).
    #[arg(long, default_value_t = 261)]
    t: usize,
    /// Timed runs; the report gives each and the fastest.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Untimed runs first (default: 1, none for the recipe).
    #[arg(long)]
    warmup: Option<usize>,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// The tap each stage stops at.
const DIFT_TAP: &str = "up_blocks.1";
const LAST_TAP: &str = "conv_out";

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let (width, height) = parse_size(&args.size)?;
    let compute = args.compute.open()?;
    let device = compute.device.clone();

    let start = Instant::now();
    let model = DiffusionModel::load_on(&args.model, &compute)
        .with_context(|| format!("loading {}", args.model))?;
    synchronize(&device)?;
    let load_s = start.elapsed().as_secs_f64();
    let load_peak_mib = memory::peak_rss_mib();
    let rss_after_load_mib = memory::rss_mib();
    let peak_reset = memory::reset_peak_rss();
    let device_after_load = device_memory_in_use(&device);
    reset_peak_memory(&device);
    eprintln!(
        "bench: loaded {} in {load_s:.1} s ({})",
        args.model,
        compute.describe()
    );

    let bench = StageBench::new(&model, &args, (width, height))?;
    let warmup = args.warmup.unwrap_or(args.stage.default_warmup());
    let mut warmup_s = Vec::new();
    for i in 0..warmup {
        eprintln!("bench: warm-up {}/{warmup}", i + 1);
        warmup_s.push(bench.run_once()?.total_s);
    }
    let mut runs = Vec::new();
    for i in 0..args.repeat {
        eprintln!("bench: run {}/{}", i + 1, args.repeat);
        let cpu_start = memory::cpu_seconds();
        let mut run = bench.run_once()?;
        run.cpu_s = cpu_start.zip(memory::cpu_seconds()).map(|(a, b)| b - a);
        runs.push(run);
    }
    let stage_peak_mib = memory::peak_rss_mib();
    let device_peak = peak_memory(&device);

    let best = runs
        .iter()
        .min_by(|a, b| a.total_s.total_cmp(&b.total_s))
        .context("no timed run")?;
    let last = runs.last().map(|r| r.output_stats.clone());
    let report = json!({
        "tool": "diffscope",
        "stage": args.stage.name(),
        "model": args.model,
        "size": [width, height],
        "ensemble": if args.stage == Stage::Recipe { args.ensemble } else { 1 },
        "t": args.t,
        "tap": bench.tap,
        "threads": candle_core::utils::get_num_threads(),
        "device": compute.describe(),
        "dtype": compute.precision.name(),
        "draws_per_batch": bench.draws_per_batch(),
        "load_s": load_s,
        "warmup_s": warmup_s,
        "wall_s": best.total_s,
        // Process CPU seconds (all threads) of that run: steadier than wall time on a shared machine.
        "cpu_s": best.cpu_s,
        "runs": runs.iter().map(Run::to_json).collect::<Vec<_>>(),
        "rss_after_load_mib": rss_after_load_mib,
        "load_peak_mib": load_peak_mib,
        // Peak during warm-up and timed runs, measured from the RSS after loading.
        "stage_peak_mib": if peak_reset { stage_peak_mib } else { None },
        "peak_mib": max_option(load_peak_mib, stage_peak_mib),
        // On a GPU: what the weights hold after loading, and the most the engine held at once
        // during the warm-up and timed runs (weights included), as PyTorch's
        // max_memory_allocated counts it; `reserved` is what the allocator took from the driver.
        "gpu_after_load_mib": device_after_load.map(mib),
        "gpu_peak_allocated_mib": device_peak.map(|p| mib(p.allocated)),
        "gpu_peak_reserved_mib": device_peak.map(|p| mib(p.reserved)),
        "output": last,
    });
    println!("{report}");
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Memory the device's allocator holds now (on a GPU): the weights, after loading.
fn device_memory_in_use(device: &Device) -> Option<u64> {
    memory_info(device).map(|m| m.total - m.free)
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One stage, its inputs made once.
struct StageBench<'a> {
    model: &'a DiffusionModel,
    stage: Stage,
    t: usize,
    ensemble: usize,
    tap: &'static str,
    /// The image `[1,3,H,W]` in [-1,1] (VAE and recipe).
    image: Tensor,
    /// The clean latent `[1,C,h,w]` (UNet stages).
    latents: Tensor,
    /// The noise of the single UNet pass (UNet stages): given, so that diffusers can use the same.
    noise: Tensor,
    /// The empty prompt's embeddings (UNet stages; the recipe embeds the prompt inside its timing).
    context: Option<Conditioning>,
    /// The image size (SDXL's time ids).
    size: (u32, u32),
}

struct Run {
    total_s: f64,
    cpu_s: Option<f64>,
    encode_s: Option<f64>,
    text_s: Option<f64>,
    unet_pass_s: Vec<f64>,
    output_stats: Value,
}

impl Run {
    fn to_json(&self) -> Value {
        json!({
            "total_s": self.total_s,
            "cpu_s": self.cpu_s,
            "encode_s": self.encode_s,
            "text_s": self.text_s,
            "unet_pass_s": self.unet_pass_s,
        })
    }
}

impl<'a> StageBench<'a> {
    fn new(
        model: &'a DiffusionModel,
        args: &BenchArgs,
        (width, height): (u32, u32),
    ) -> anyhow::Result<Self> {
        let stride = model.summary().input_stride;
        let (w, h) = (width as usize, height as usize);
        if w % stride != 0 || h % stride != 0 {
            bail!("--size {w}x{h} is not a multiple of {stride}, which this model's VAE needs");
        }
        if matches!(args.stage, Stage::Vae | Stage::Recipe) && model.vae.is_none() {
            bail!("{}: this model has no VAE", args.model);
        }
        let device = &model.device;
        let image = pattern(&[1, 3, h, w], 1.0, 1, device)?;
        // Uniform with unit variance, like a scaled SD latent.
        let latents = pattern(
            &[1, model.unet.in_channels, h / stride, w / stride],
            3f64.sqrt(),
            2,
            device,
        )?;
        let noise = pattern(latents.dims(), 3f64.sqrt(), 3, device)?;
        let context = match args.stage {
            Stage::UnetUp1 | Stage::UnetFull => model
                .condition(&PromptSource::default())?
                .map(|c| c.at_size((width, height), None)),
            _ => None,
        };
        Ok(Self {
            model,
            stage: args.stage,
            t: args.t,
            ensemble: args.ensemble,
            tap: match args.stage {
                Stage::UnetFull => LAST_TAP,
                _ => DIFT_TAP,
            },
            image,
            latents,
            noise,
            context,
            size: (width, height),
        })
    }

    /// Seconds since `start`, once the device has finished what was queued (GPU work is
    /// asynchronous: without the wait a timer reads when the work was queued, not done).
    fn elapsed(&self, start: Instant) -> anyhow::Result<f64> {
        synchronize(&self.model.device)?;
        Ok(start.elapsed().as_secs_f64())
    }

    fn draws_per_batch(&self) -> usize {
        let (_, _, h, w) = self.latents.dims4().unwrap_or((1, 1, 1, 1));
        let taps = [self.tap.to_string()];
        draws_per_batch(&self.model.unet, &taps, (h, w), &self.model.device).min(self.ensemble)
    }

    fn run_once(&self) -> anyhow::Result<Run> {
        synchronize(&self.model.device)?;
        let start = Instant::now();
        match self.stage {
            Stage::Vae => {
                let z = self.model.encode(&self.image)?;
                Ok(Run {
                    total_s: self.elapsed(start)?,
                    cpu_s: None,
                    encode_s: None,
                    text_s: None,
                    unet_pass_s: vec![],
                    output_stats: stats(&z)?,
                })
            }
            Stage::UnetUp1 | Stage::UnetFull => {
                let noise = NoiseSource::Given(self.noise.clone());
                let (out, unet_pass_s) =
                    self.unet_passes(&self.latents, self.context.as_ref(), noise)?;
                Ok(Run {
                    total_s: self.elapsed(start)?,
                    cpu_s: None,
                    encode_s: None,
                    text_s: None,
                    unet_pass_s,
                    output_stats: stats(&out)?,
                })
            }
            Stage::Recipe => {
                let z = self.model.encode(&self.image)?;
                let encode_s = self.elapsed(start)?;
                let text_start = Instant::now();
                let context = self
                    .model
                    .condition(&PromptSource::default())?
                    .map(|c| c.at_size(self.size, None));
                let text_s = self.elapsed(text_start)?;
                let noise = NoiseSource::Seeded {
                    seed: 0,
                    ensemble: self.ensemble,
                };
                let (out, unet_pass_s) = self.unet_passes(&z, context.as_ref(), noise)?;
                Ok(Run {
                    total_s: self.elapsed(start)?,
                    cpu_s: None,
                    encode_s: Some(encode_s),
                    text_s: Some(text_s),
                    unet_pass_s,
                    output_stats: stats(&out)?,
                })
            }
        }
    }

    /// `extract_from_latents` over the noise's draws; returns the averaged tap and each pass's seconds.
    fn unet_passes(
        &self,
        latents: &Tensor,
        context: Option<&Conditioning>,
        noise: NoiseSource,
    ) -> anyhow::Result<(Tensor, Vec<f64>)> {
        let k = noise.ensemble();
        let request = UNetRequest {
            t: self.t,
            taps: vec![self.tap.to_string()],
            noise,
        };
        // The progress callback fires before each batch of draws and once at the end: its gaps
        // are the passes (one per batch).
        let mut marks = Vec::with_capacity(k + 1);
        let device = &self.model.device;
        let mut progress = |_: usize, _: usize| {
            // A failed wait shows up at the next timer read, which returns the error.
            let _ = synchronize(device);
            marks.push(Instant::now());
        };
        let mut maps = extract_from_latents(
            &self.model.unet,
            &self.model.schedule,
            latents,
            context,
            &request,
            None,
            &mut progress,
        )?;
        let pass_s = marks
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let out = maps
            .remove(self.tap)
            .with_context(|| format!("the UNet gave no `{}` tap", self.tap))?;
        Ok((out, pass_s))
    }
}

/// The deterministic input both benchmarks use: element i is `(2 u_i - 1) * scale` with
/// `u_i = ((i + offset) * 2654435761 mod 2^32) / 2^32` (a multiplicative hash), as float32.
fn pattern(shape: &[usize], scale: f64, offset: u64, device: &Device) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u =
                ((i + offset).wrapping_mul(2_654_435_761) & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
            ((2.0 * u - 1.0) * scale) as f32
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Shape, mean and mean absolute value of an output: enough to see both sides computed the same.
fn stats(t: &Tensor) -> anyhow::Result<Value> {
    let shape = t.dims().to_vec();
    let t = t.to_dtype(candle_core::DType::F32)?.flatten_all()?;
    let mean = t.mean_all()?.to_scalar::<f32>()?;
    let abs_mean = t.abs()?.mean_all()?.to_scalar::<f32>()?;
    Ok(
        json!({ "shape": shape, "mean": mean, "abs_mean": abs_mean, "finite": mean.is_finite() && abs_mean.is_finite() }),
    )
}

/// Resident memory from Linux's /proc (None elsewhere).
mod memory {
    fn status_kib(field: &str) -> Option<f64> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Peak resident set size (VmHWM), MiB.
    pub fn peak_rss_mib() -> Option<f64> {
        status_kib("VmHWM:").map(|k| k / 1024.0)
    }

    pub fn rss_mib() -> Option<f64> {
        status_kib("VmRSS:").map(|k| k / 1024.0)
    }

    /// User + system CPU seconds of the whole process, from /proc/self/stat (clock ticks of 1/100 s,
    /// Linux's fixed USER_HZ).
    pub fn cpu_seconds() -> Option<f64> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) end with `)`; utime and stime are fields 14 and 15.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0)
    }

    /// Reset the peak to the current RSS (`clear_refs` 5), so the next peak is that of the stage.
    pub fn reset_peak_rss() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
}
