//! The extraction recipe (DIFT's, made deterministic): noise the clean latent to timestep t with
//! each of K noise draws, run the UNet up to the deepest requested tap, average the taps over K.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
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
}

impl NoiseSource {
    pub fn ensemble(&self) -> usize {
        match self {
            NoiseSource::Seeded { ensemble, .. } => *ensemble,
            NoiseSource::Given(t) => t.dim(0).unwrap_or(0),
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

/// Progress of a long job: `done` of `total` UNet passes.
pub type ProgressFn<'a> = dyn FnMut(usize, usize) + 'a;

/// Run the ensemble: returns each tap averaged over the members, as `[C,h,w]`.
/// `context` is the text conditioning `[1,77,D]` for conditional UNets.
pub fn extract_from_latents(
    unet: &UNet,
    schedule: &NoiseSchedule,
    latents: &Tensor,
    context: Option<&Tensor>,
    request: &UNetRequest,
    cancel: Option<&AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<BTreeMap<String, Tensor>> {
    schedule.check_timestep(request.t)?;
    validate_taps(&request.taps, unet.taps())?;
    let (_, c, h, w) = latents.dims4()?;
    if c != unet.in_channels {
        return Err(Error::invalid(format!(
            "the UNet takes {} input channels, the latent has {c}",
            unet.in_channels
        )));
    }
    unet.check_input_size(h, w)?;
    let k_total = request.noise.ensemble();
    if k_total == 0 {
        return Err(Error::invalid("the ensemble size must be at least 1"));
    }
    let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
    for k in 0..k_total {
        progress(k, k_total);
        let noise = request.noise.member(k, latents.dims(), latents.device())?;
        let noisy = schedule.add_noise(latents, &noise, request.t)?;
        let mut recorder = TapRecorder::new(&request.taps, cancel);
        unet.forward_taps(&noisy, request.t as f64, context, &mut recorder)?;
        for (name, value) in recorder.into_captured() {
            let value = value.squeeze(0)?;
            let sum = match sums.remove(&name) {
                Some(s) => (s + value)?,
                None => value,
            };
            sums.insert(name, sum);
        }
    }
    progress(k_total, k_total);
    let mut out = BTreeMap::new();
    for (name, sum) in sums {
        out.insert(name, (sum / k_total as f64)?);
    }
    Ok(out)
}
