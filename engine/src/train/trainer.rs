//! The training loop: the DDPM epsilon objective (uniform t, MSE against the drawn noise) on the
//! engine's own UNet built on trainable variables, AdamW with gradient clipping, an EMA of the
//! weights, periodic checkpoints and the diffusers model folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::adamw::{gradient_norm, AdamW, Ema, Moments};
use super::arch::UNetArchitecture;
use super::checkpoint::{self, Checkpoint, CheckpointState, CheckpointTensors};
use super::config::TrainConfig;
use super::dataset::{BatchOrder, ImageDataset};
use super::export::write_model_folder;
use crate::error::{Error, Result};
use crate::model::schedule::NoiseSchedule;
use crate::model::unet::UNet;
use crate::model::weights::{TrainableParams, Weights};

/// What one step did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The step just finished (1-based: the number of steps taken so far).
    pub step: usize,
    pub loss: f32,
    pub grad_norm: f64,
    pub learning_rate: f64,
}

pub struct Trainer {
    pub config: TrainConfig,
    /// Steps taken so far.
    pub step: usize,
    run_dir: PathBuf,
    dataset: ImageDataset,
    order: BatchOrder,
    params: Vec<(String, Var)>,
    unet: UNet,
    schedule: NoiseSchedule,
    optimizer: AdamW,
    ema: Option<Ema>,
    device: Device,
    /// Shards a CPU batch is split into; 0: one per core.
    shards: usize,
}

impl Trainer {
    /// A fresh run writing into `run_dir` (the diffusers model folder, with `checkpoints/` inside).
    pub fn new(
        config: TrainConfig,
        dataset: ImageDataset,
        run_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        check_dataset_fits(&config.arch, &dataset)?;
        let trainable = TrainableParams::random(config.seed);
        let unet = build_unet(&config.arch, run_dir, &trainable, device)?;
        let params = trainable.named();
        let optimizer = AdamW::new(config.adamw, &params)?;
        let ema = config.ema_decay.map(|d| Ema::new(d, &params)).transpose()?;
        Self::assemble(
            config, 0, dataset, run_dir, params, unet, optimizer, ema, device,
        )
    }

    /// Continue from a checkpoint. `config` must describe the same architecture and schedule;
    /// the batch size, learning rate, EMA decay and seed may change (the run then differs from an
    /// uninterrupted one from this step on).
    pub fn resume(
        checkpoint: Checkpoint,
        config: TrainConfig,
        dataset: ImageDataset,
        run_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let saved = &checkpoint.state.config;
        if saved.arch != config.arch || saved.beta_schedule != config.beta_schedule {
            return Err(Error::file(
                &checkpoint.dir,
                format!(
                    "this checkpoint is of another model ({}, {} schedule) than the one asked for ({}, {} schedule); \
                     resume with the checkpoint's settings or start a new run",
                    saved.arch.describe(),
                    saved.beta_schedule,
                    config.arch.describe(),
                    config.beta_schedule
                ),
            ));
        }
        check_dataset_fits(&config.arch, &dataset)?;
        let tensors = checkpoint.tensors;
        let on_device = |m: BTreeMap<String, Tensor>| -> Result<BTreeMap<String, Tensor>> {
            m.into_iter()
                .map(|(n, t)| Ok((n, t.to_device(device)?)))
                .collect()
        };
        let param_tensors = on_device(tensors.params)?;
        let trainable = TrainableParams::from_tensors(param_tensors.into_iter().collect())?;
        let unet = build_unet(&config.arch, run_dir, &trainable, device)
            .map_err(|e| Error::file(&checkpoint.dir, format!("does not fit this model: {e}")))?;
        let params = trainable.named();
        if unet.parameters != trainable.count() {
            return Err(Error::file(
                &checkpoint.dir,
                "the checkpoint holds weights this model does not have (another architecture?)",
            ));
        }
        let (adam_m, adam_v) = (on_device(tensors.adam_m)?, on_device(tensors.adam_v)?);
        let mut moments = BTreeMap::new();
        for (name, _) in &params {
            let (Some(m), Some(v)) = (adam_m.get(name), adam_v.get(name)) else {
                return Err(Error::file(
                    &checkpoint.dir,
                    format!("optimizer state for `{name}` is missing"),
                ));
            };
            moments.insert(
                name.clone(),
                Moments {
                    m: m.clone(),
                    v: v.clone(),
                },
            );
        }
        let optimizer = AdamW {
            config: config.adamw,
            steps: checkpoint.state.optimizer_steps,
            moments,
        };
        let ema = match config.ema_decay {
            None => None,
            Some(decay) if tensors.ema.is_empty() => Some(Ema::new(decay, &params)?),
            Some(decay) => Some(Ema {
                decay,
                weights: on_device(tensors.ema)?,
            }),
        };
        let step = checkpoint.state.step;
        Self::assemble(
            config, step, dataset, run_dir, params, unet, optimizer, ema, device,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: TrainConfig,
        step: usize,
        dataset: ImageDataset,
        run_dir: &Path,
        params: Vec<(String, Var)>,
        unet: UNet,
        optimizer: AdamW,
        ema: Option<Ema>,
        device: &Device,
    ) -> Result<Self> {
        let schedule = NoiseSchedule::new(config.scheduler_config()?)?;
        let order = BatchOrder::new(config.seed, dataset.len());
        Ok(Self {
            config,
            step,
            run_dir: run_dir.to_path_buf(),
            dataset,
            order,
            params,
            unet,
            schedule,
            optimizer,
            ema,
            device: device.clone(),
            shards: 0,
        })
    }

    /// Split each CPU batch into `shards` parts run on their own threads (0: one per core). The
    /// result is the same up to the order of float sums.
    pub fn set_shards(&mut self, shards: usize) {
        self.shards = shards;
    }

    pub fn parameter_count(&self) -> usize {
        self.unet.parameters
    }

    pub fn dataset(&self) -> &ImageDataset {
        &self.dataset
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The UNet being trained (built on the trainable weights).
    pub fn unet(&self) -> &UNet {
        &self.unet
    }

    /// The denoising loss on the images at `indices` with noise and timesteps drawn from `seed`
    /// (the same for every call): a fixed yardstick to compare weights by. Changes nothing.
    pub fn evaluate_loss(&self, indices: &[usize], seed: u64) -> Result<f32> {
        let clean = self.dataset.batch(indices, &self.device)?;
        let (noise, timesteps) =
            draw_noise(seed, self.schedule.steps(), clean.dims(), &self.device)?;
        let predicted = self.predict(&self.add_noise(&clean, &noise, &timesteps)?, &timesteps)?;
        Ok((predicted - &noise)?
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()?)
    }

    fn predict(&self, noisy: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let ts: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
        self.unet.forward(noisy, &ts, None)
    }

    /// The next step's images, noise and timesteps.
    fn next_batch(&mut self) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let indices = self.order.indices(self.step, self.config.batch_size);
        let clean = self.dataset.batch(&indices, &self.device)?;
        let seed = self.config.seed
            ^ 0xD1FF_5C0F_E000_0000
            ^ (self.step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (noise, timesteps) =
            draw_noise(seed, self.schedule.steps(), clean.dims(), &self.device)?;
        Ok((clean, noise, timesteps))
    }

    /// The loss and the gradients, by diffusers name, that the next step will take. Changes
    /// nothing.
    pub fn next_gradients(&mut self) -> Result<(f32, BTreeMap<String, Tensor>)> {
        let (clean, noise, timesteps) = self.next_batch()?;
        let (loss, grads) = self.loss_and_gradients(&clean, &noise, &timesteps)?;
        let by_name = self
            .params
            .iter()
            .filter_map(|(name, var)| {
                grads
                    .get(var.as_tensor())
                    .map(|g| (name.clone(), g.clone()))
            })
            .collect();
        Ok((loss, by_name))
    }

    /// One optimizer step on the next batch.
    pub fn step(&mut self) -> Result<StepReport> {
        let (clean, noise, timesteps) = self.next_batch()?;
        let (loss, grads) = self.loss_and_gradients(&clean, &noise, &timesteps)?;
        let grad_norm = gradient_norm(&self.params, &grads)?;
        let max = self.config.max_grad_norm;
        let scale = if max > 0.0 && grad_norm > max {
            max / (grad_norm + 1e-6)
        } else {
            1.0
        };
        let lr = self.config.learning_rate_at(self.step);
        self.optimizer.step(&self.params, &grads, lr, scale)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params, self.optimizer.steps)?;
        }
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss,
            grad_norm,
            learning_rate: lr,
        })
    }

    /// The batch's mean squared noise-prediction error and its gradients. On the CPU the batch is
    /// split into one shard per core, each run forward and backward on its own thread with
    /// single-threaded kernels, and the shards' gradients summed: the step's many small ops
    /// scale poorly across cores, whole shards do. Each shard's loss is its squared error over
    /// the whole batch's element count, so the sums are the full batch's mean and gradients.
    fn loss_and_gradients(
        &self,
        clean: &Tensor,
        noise: &Tensor,
        timesteps: &[usize],
    ) -> Result<(f32, GradStore)> {
        let batch = timesteps.len();
        let elements = noise.elem_count() as f64;
        let shard = |range: std::ops::Range<usize>| -> Result<(f32, GradStore)> {
            let (start, n) = (range.start, range.len());
            let (clean, noise) = (clean.narrow(0, start, n)?, noise.narrow(0, start, n)?);
            let timesteps = &timesteps[range];
            let predicted = self.predict(&self.add_noise(&clean, &noise, timesteps)?, timesteps)?;
            let loss = ((predicted - &noise)?.sqr()?.sum_all()? / elements)?;
            let grads = loss.backward()?;
            Ok((loss.to_scalar::<f32>()?, grads))
        };
        let shards = match self.shards {
            _ if !self.device.is_cpu() => 1,
            0 => crate::parallel::threads().min(batch),
            n => n.min(batch),
        };
        if shards <= 1 {
            return shard(0..batch);
        }
        let per = batch.div_ceil(shards);
        let results: Vec<Result<(f32, GradStore)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..batch)
                .step_by(per)
                .map(|start| {
                    let shard = &shard;
                    let range = start..(start + per).min(batch);
                    scope.spawn(move || crate::parallel::serial(|| shard(range)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::invalid("a training shard panicked")))
                })
                .collect()
        });
        let mut results = results.into_iter();
        let (mut loss, mut summed) = results
            .next()
            .ok_or_else(|| Error::invalid("an empty training batch"))??;
        for result in results {
            let (shard_loss, grads) = result?;
            loss += shard_loss;
            for (_, var) in &self.params {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let added = match summed.get(var.as_tensor()) {
                        Some(have) => (have + g)?,
                        None => g.clone(),
                    };
                    summed.insert(var.as_tensor(), added);
                }
            }
        }
        Ok((loss, summed))
    }

    /// `sqrt(ab[t]) x + sqrt(1 - ab[t]) noise` with each sample's own t (diffusers' `add_noise`).
    fn add_noise(&self, clean: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let mut signal = Vec::with_capacity(timesteps.len());
        let mut sigma = Vec::with_capacity(timesteps.len());
        for &t in timesteps {
            let ab = self.schedule.alpha_bar(t)?;
            signal.push(ab.sqrt());
            sigma.push((1.0 - ab).sqrt());
        }
        let shape = (timesteps.len(), 1, 1, 1);
        let signal = Tensor::from_vec(signal, shape, &self.device)?;
        let sigma = Tensor::from_vec(sigma, shape, &self.device)?;
        Ok((clean.broadcast_mul(&signal)? + noise.broadcast_mul(&sigma)?)?)
    }

    /// The current weights, by diffusers name.
    pub fn weights(&self) -> Result<BTreeMap<String, Tensor>> {
        self.params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?.detach())))
            .collect()
    }

    /// The weights to export: the EMA when on, else the current weights.
    pub fn export_weights(&self) -> Result<BTreeMap<String, Tensor>> {
        match &self.ema {
            Some(ema) => Ok(ema.weights.clone()),
            None => self.weights(),
        }
    }

    /// Everything a checkpoint holds.
    pub fn checkpoint_parts(&self) -> Result<(CheckpointState, CheckpointTensors)> {
        let state = CheckpointState {
            format: checkpoint::FORMAT.into(),
            step: self.step,
            config: self.config.clone(),
            optimizer_steps: self.optimizer.steps,
            images: self.dataset.len(),
            image_size: [self.dataset.width, self.dataset.height],
        };
        let mut adam_m = BTreeMap::new();
        let mut adam_v = BTreeMap::new();
        for (name, m) in &self.optimizer.moments {
            adam_m.insert(name.clone(), m.m.clone());
            adam_v.insert(name.clone(), m.v.clone());
        }
        let tensors = CheckpointTensors {
            params: self.weights()?,
            adam_m,
            adam_v,
            ema: self
                .ema
                .as_ref()
                .map(|e| e.weights.clone())
                .unwrap_or_default(),
        };
        Ok((state, tensors))
    }

    /// Write a checkpoint and refresh the diffusers model folder; returns the checkpoint folder.
    pub fn save(&self) -> Result<PathBuf> {
        let (state, tensors) = self.checkpoint_parts()?;
        let dir = checkpoint::save(&self.run_dir, &state, &tensors)?;
        self.write_model()?;
        Ok(dir)
    }

    /// Write the diffusers model folder (`model_index.json`, `unet/`, `scheduler/`) into the run folder.
    pub fn write_model(&self) -> Result<()> {
        write_model_folder(
            &self.run_dir,
            &self.config.arch,
            &self.config.beta_schedule,
            &self.export_weights()?,
        )
    }

    /// Train until `total_steps` steps are done, checkpointing every `checkpoint_every` steps (0:
    /// only at the end) and at the end; `on_step` sees every step.
    pub fn train_until(
        &mut self,
        total_steps: usize,
        checkpoint_every: usize,
        on_step: &mut dyn FnMut(&StepReport, Option<&Path>),
    ) -> Result<()> {
        while self.step < total_steps {
            let report = self.step()?;
            if !report.loss.is_finite() {
                return Err(Error::invalid(format!(
                    "the loss became {} at step {}: lower --lr and resume from the last checkpoint",
                    report.loss, report.step
                )));
            }
            let due = checkpoint_every > 0 && self.step.is_multiple_of(checkpoint_every);
            let saved = if due || self.step == total_steps {
                Some(self.save()?)
            } else {
                None
            };
            on_step(&report, saved.as_deref());
        }
        Ok(())
    }
}

/// Standard normal noise of shape `dims` and one uniform timestep in `0..steps` per image, from
/// a generator seeded by `seed` alone (for a training step: by the run's seed and the step).
fn draw_noise(
    seed: u64,
    steps: usize,
    dims: &[usize],
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let batch = dims.first().copied().unwrap_or(0);
    let timesteps: Vec<usize> = (0..batch).map(|_| rng.random_range(0..steps)).collect();
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Ok((Tensor::from_vec(values, dims, device)?, timesteps))
}

fn check_dataset_fits(arch: &UNetArchitecture, dataset: &ImageDataset) -> Result<()> {
    if dataset.width != arch.size || dataset.height != arch.size {
        let first = dataset.files.first().map(|f| f.display().to_string());
        return Err(Error::invalid(format!(
            "the training images are {}x{} ({}) but the model is set to {}x{} (--size)",
            dataset.width,
            dataset.height,
            first.unwrap_or_default(),
            arch.size,
            arch.size
        )));
    }
    Ok(())
}

/// Build the UNet on `params`, writing its `unet/config.json` into the run folder first (the UNet
/// is built from that file, so what trains is exactly what the folder describes).
fn build_unet(
    arch: &UNetArchitecture,
    run_dir: &Path,
    params: &Arc<TrainableParams>,
    device: &Device,
) -> Result<UNet> {
    let config_path = super::export::write_unet_config(run_dir, arch)?;
    UNet::with_weights(&config_path, &Weights::trainable(params.clone(), device))
}
