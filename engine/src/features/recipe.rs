//! The extraction recipe (DIFT's, made deterministic): noise the clean latent to timestep t with
//! each of K noise draws, run the UNet up to the deepest requested tap, average the taps over K.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::model::attention_probs::{validate_attention, AttentionRequest, RecordedAttention};
use crate::model::conditioning::Conditioning;
use crate::model::schedule::NoiseSchedule;
use crate::model::taps::{validate_taps, TapRecorder};
use crate::model::unet::UNet;

/// Where the ensemble's noise comes from.
#[derive(Clone, Debug)]
pub enum NoiseSource {
    /// `ensemble` draws from a seeded generator. Member k has its own stream, so the first k draws
    /// of a larger ensemble are the same as those of a smaller one.
    Seeded { seed: u64, ensemble: usize },
    /// Given noise `[K,C,h,w]`; K is the ensemble size.
    Given(Tensor),
    /// No noise, CleanDIFT's way: the clean latent goes through the UNet once, with t only in
    /// the time embedding.
    Clean,
}

impl NoiseSource {
    pub fn ensemble(&self) -> usize {
        match self {
            NoiseSource::Seeded { ensemble, .. } => *ensemble,
            NoiseSource::Given(t) => t.dim(0).unwrap_or(0),
            NoiseSource::Clean => 1,
        }
    }

    /// The noise of member `k` for a latent of shape `[1,C,h,w]`.
    pub fn member(&self, k: usize, latent_shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            NoiseSource::Seeded { seed, .. } => {
                seeded_normal(member_seed(*seed, k), latent_shape, device)
            }
            NoiseSource::Given(t) => {
                let dims = t.dims();
                if dims.len() != 4 || dims[1..] != latent_shape[1..] {
                    return Err(Error::invalid(format!(
                        "noise has shape {dims:?}; this model and image need [K,{},{},{}]",
                        latent_shape[1], latent_shape[2], latent_shape[3]
                    )));
                }
                Ok(t.narrow(0, k, 1)?.to_dtype(DType::F32)?.to_device(device)?)
            }
            NoiseSource::Clean => {
                Tensor::zeros(latent_shape, DType::F32, device).map_err(Into::into)
            }
        }
    }
}

/// The seed of the k-th draw of a run seeded with `seed` (draw 0 keeps the run's seed).
pub fn member_seed(seed: u64, k: usize) -> u64 {
    seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Standard normal float32 noise from a seed (rand's StdRng, ChaCha12).
pub fn seeded_normal(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// What to extract from a clean latent.
#[derive(Clone, Debug)]
pub struct UNetRequest {
    pub t: usize,
    pub taps: Vec<String>,
    pub noise: NoiseSource,
}

/// Progress of a long job: `done` of `total` noise draws through the UNet.
pub type ProgressFn<'a> = dyn FnMut(usize, usize) + 'a;

/// Run the ensemble: returns each tap averaged over the members, as float32 `[C,h,w]`.
/// `cond` is the text conditioning (context `[1,77,D]`) for conditional UNets.
///
/// The draws go through the UNet as batches, as many at once as [`draws_per_batch`] lets the
/// device hold; the result is the same as one draw at a time up to float rounding (the order of
/// the sums over draws).
pub fn extract_from_latents(
    unet: &UNet,
    schedule: &NoiseSchedule,
    latents: &Tensor,
    cond: Option<&Conditioning>,
    request: &UNetRequest,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<BTreeMap<String, Tensor>> {
    let mut outputs = run_ensemble(
        unet,
        schedule,
        std::slice::from_ref(latents),
        cond,
        request,
        None,
        cancel,
        progress,
    )?;
    Ok(outputs.remove(0).taps)
}

/// [`extract_from_latents`] for several images of one size at once: every image's draws (the
/// same noise draws for each image, as one image at a time would take them) go through the UNet
/// together, batched to what the device holds. Returns one map set per image, in order.
pub fn extract_from_many_latents(
    unet: &UNet,
    schedule: &NoiseSchedule,
    latents: &[Tensor],
    cond: Option<&Conditioning>,
    request: &UNetRequest,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<Vec<BTreeMap<String, Tensor>>> {
    let outputs = run_ensemble(
        unet, schedule, latents, cond, request, None, cancel, progress,
    )?;
    Ok(outputs.into_iter().map(|o| o.taps).collect())
}

/// What a run of the ensemble gives for one image, averaged over its draws.
pub struct EnsembleOutputs {
    /// Each requested tap, float32 `[C,h,w]`.
    pub taps: BTreeMap<String, Tensor>,
    /// Each requested attention map, its `probs` float32 `[heads, rows, keys]` averaged over the
    /// draws (`draws` is the ensemble size).
    pub attention: BTreeMap<String, RecordedAttention>,
}

/// The ensemble of every image in `latents` (one size), also recording the attention maps of
/// `attention` (one image only; then `request` may name no tap): the same passes give both.
#[allow(clippy::too_many_arguments)]
pub fn run_ensemble(
    unet: &UNet,
    schedule: &NoiseSchedule,
    latents: &[Tensor],
    cond: Option<&Conditioning>,
    request: &UNetRequest,
    attention: Option<&AttentionRequest>,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<Vec<EnsembleOutputs>> {
    schedule.check_timestep(request.t)?;
    match attention {
        Some(a) => {
            if latents.len() > 1 {
                return Err(Error::invalid(
                    "attention maps are recorded for one image at a time",
                ));
            }
            validate_attention(&a.modules, &unet.attention_modules())?;
            if !request.taps.is_empty() {
                validate_taps(&request.taps, unet.taps())?;
            }
        }
        None => validate_taps(&request.taps, unet.taps())?,
    }
    let Some(first) = latents.first() else {
        return Ok(Vec::new());
    };
    let dims = first.dims().to_vec();
    let (_, c, h, w) = first.dims4()?;
    if c != unet.in_channels {
        return Err(Error::invalid(format!(
            "the UNet takes {} input channels, the latent has {c}",
            unet.in_channels
        )));
    }
    if let Some(other) = latents.iter().find(|l| l.dims() != dims.as_slice()) {
        return Err(Error::invalid(format!(
            "images batched together must have one latent size: {dims:?} and {:?}",
            other.dims()
        )));
    }
    unet.check_input_size(h, w)?;
    let k_total = request.noise.ensemble();
    if k_total == 0 {
        return Err(Error::invalid("the ensemble size must be at least 1"));
    }
    let device = first.device();
    let latents = latents
        .iter()
        .map(|l| l.to_dtype(unet.dtype))
        .collect::<candle_core::Result<Vec<_>>>()?;
    // The pass goes as deep as the taps, and the taps that hold the attention modules.
    let mut reach = request.taps.clone();
    if let Some(a) = attention {
        reach.extend(a.modules.iter().filter_map(|m| containing_tap(unet, m)));
    }
    // Work items (image, draw), image by image, so each image's draws are adjacent in a batch.
    let items: Vec<(usize, usize)> = (0..latents.len())
        .flat_map(|i| (0..k_total).map(move |k| (i, k)))
        .collect();
    let per_batch = draws_per_batch(unet, &reach, (h, w), device).min(items.len());
    let mut sums: Vec<BTreeMap<String, Tensor>> = vec![BTreeMap::new(); latents.len()];
    let mut maps: BTreeMap<String, RecordedAttention> = BTreeMap::new();
    let mut done = 0;
    for chunk in items.chunks(per_batch.max(1)) {
        progress(done, items.len());
        // One noised block per image in the chunk, in order.
        let mut blocks = Vec::new();
        let mut rows: Vec<(usize, usize)> = Vec::new(); // (image, number of rows)
        for (image, group) in chunk.chunk_by(|a, b| a.0 == b.0).map(|g| (g[0].0, g)) {
            let mut noise = group
                .iter()
                .map(|&(_, k)| request.noise.member(k, &dims, device))
                .collect::<Result<Vec<_>>>()?;
            let noise = if noise.len() == 1 {
                noise.remove(0)
            } else {
                Tensor::cat(&noise, 0)?
            };
            blocks.push(match request.noise {
                // CleanDIFT's recipe: the clean latent itself.
                NoiseSource::Clean => latents[image].clone(),
                _ => schedule.add_noise(&latents[image], &noise, request.t)?,
            });
            rows.push((image, group.len()));
        }
        let noisy = if blocks.len() == 1 {
            blocks.remove(0)
        } else {
            Tensor::cat(&blocks, 0)?
        };
        let n = chunk.len();
        let mut recorder = TapRecorder::new(&request.taps, cancel);
        if let Some(a) = attention {
            recorder = recorder.with_attention(a);
        }
        unet.forward_taps(&noisy, request.t as f64, cond, &mut recorder)
            .map_err(|e| {
                crate::device::explain_out_of_memory(
                    e,
                    device,
                    &format!("running {n} noise draws through the UNet at {w}x{h}"),
                    "lower --ensemble, --size or use --dtype f16",
                )
            })?;
        let (taps, recorded) = recorder.into_parts();
        for (name, value) in taps {
            // Features leave the model as float32; the draws are summed there.
            let value = value.to_dtype(DType::F32)?;
            let mut start = 0;
            for &(image, count) in &rows {
                let part = value.narrow(0, start, count)?.sum(0)?;
                start += count;
                let sum = match sums[image].remove(&name) {
                    Some(s) => (s + part)?,
                    None => part,
                };
                sums[image].insert(name.clone(), sum);
            }
        }
        for (name, mut map) in recorded {
            if let Some(sum) = maps.remove(&name) {
                map.probs = (sum.probs + map.probs)?;
                map.draws += sum.draws;
            }
            maps.insert(name, map);
        }
        done += n;
    }
    progress(items.len(), items.len());
    for map in maps.values_mut() {
        map.probs = (&map.probs / map.draws as f64)?;
    }
    let mut attention_maps = Some(maps);
    sums.into_iter()
        .map(|image| {
            let taps = image
                .into_iter()
                .map(|(name, sum)| Ok((name, (sum / k_total as f64)?)))
                .collect::<Result<_>>()?;
            Ok(EnsembleOutputs {
                taps,
                // The attention belongs to the one image there is when it is recorded.
                attention: attention_maps.take().unwrap_or_default(),
            })
        })
        .collect()
}

/// The tap whose module holds attention module `name` (the longest tap name that prefixes it).
fn containing_tap(unet: &UNet, name: &str) -> Option<String> {
    unet.taps()
        .iter()
        .map(|t| &t.name)
        .filter(|t| name == t.as_str() || name.starts_with(&format!("{t}.")))
        .max_by_key(|t| t.len())
        .cloned()
}

/// How many noise draws of a `(height, width)` input go through the UNet at once on `device`:
/// as many as the activations of a pass up to the deepest requested tap fit in the device's
/// budget. On the CPU batching saves little and costs memory, so the budget there is small
/// (a small model still batches its draws).
pub fn draws_per_batch(
    unet: &UNet,
    taps: &[String],
    (height, width): (usize, usize),
    device: &Device,
) -> usize {
    const CPU_BUDGET: u64 = 256 << 20;
    let budget = if device.is_cpu() {
        CPU_BUDGET
    } else {
        crate::device::work_budget(device)
    };
    let bytes = activation_bytes(unet, taps, (height, width));
    (budget / bytes.max(1)).max(1) as usize
}

/// An estimate of the memory one draw's pass holds at its peak: every module output up to the
/// deepest requested tap (the skip connections are among them), plus room for a layer's
/// temporaries (a convolution's patch matrix, the feed-forward's 8x-wide hidden state) at the
/// largest map.
fn activation_bytes(unet: &UNet, taps: &[String], (height, width): (usize, usize)) -> u64 {
    let offered = unet.taps();
    let deepest = taps
        .iter()
        .filter_map(|t| offered.iter().position(|o| &o.name == t))
        .max()
        .unwrap_or(offered.len().saturating_sub(1));
    let size = |t: &crate::model::taps::TapInfo| {
        let s = t.stride.max(1);
        (t.channels * height.div_ceil(s) * width.div_ceil(s)) as u64
    };
    let outputs: u64 = offered[..=deepest.min(offered.len().saturating_sub(1))]
        .iter()
        .map(size)
        .sum();
    let largest = offered.iter().map(size).max().unwrap_or(0);
    (outputs + 12 * largest) * unet.dtype.size_in_bytes() as u64
}
