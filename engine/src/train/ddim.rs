//! DDIM sampling as diffusers' `DDIMScheduler` does it with its defaults: "leading" timestep
//! spacing, `steps_offset` 0, `set_alpha_to_one`, the predicted clean image clipped to [-1, 1].
//! eta 0 is deterministic DDIM; eta 1 adds DDPM's posterior noise at every step, which gives an
//! undertrained model's samples their colours and shapes back where deterministic DDIM averages
//! them into grey.

use candle_core::Tensor;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::model::schedule::NoiseSchedule;
use crate::model::unet::UNet;

/// The timesteps of `steps` DDIM steps over a schedule of `train_steps`, noisiest first.
pub fn ddim_timesteps(train_steps: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > train_steps {
        return Err(Error::invalid(format!(
            "--steps {steps} must be between 1 and the model's {train_steps} training timesteps"
        )));
    }
    let ratio = train_steps / steps;
    Ok((0..steps).rev().map(|i| i * ratio).collect())
}

/// Denoise `noise` (`[B,C,H,W]`, standard normal) into samples in [-1, 1]. With `eta` > 0,
/// `variance_noise(i)` gives the standard normal noise (shaped like `noise`) added at step i.
/// `on_step(i, n)` is called after each of the n steps.
pub fn ddim_sample(
    unet: &UNet,
    schedule: &NoiseSchedule,
    noise: &Tensor,
    steps: usize,
    eta: f64,
    variance_noise: &mut dyn FnMut(usize) -> Result<Tensor>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&eta) {
        return Err(Error::invalid(format!(
            "--eta {eta} must be between 0 and 1"
        )));
    }
    if schedule.config.prediction_type != "epsilon" {
        return Err(Error::unsupported(format!(
            "sampling a model with prediction_type `{}` (only epsilon)",
            schedule.config.prediction_type
        )));
    }
    let train_steps = schedule.steps();
    let timesteps = ddim_timesteps(train_steps, steps)?;
    let ratio = train_steps / steps;
    let batch = noise.dim(0)?;
    let mut x = noise.clone();
    for (i, &t) in timesteps.iter().enumerate() {
        // The UNet runs in its own dtype; the sampler's arithmetic stays in float32.
        let eps = unet
            .forward(&x.to_dtype(unet.dtype)?, &vec![t as f64; batch], None)?
            .to_dtype(candle_core::DType::F32)?;
        let alpha = schedule.alpha_bar(t)? as f64;
        let alpha_prev = match t.checked_sub(ratio) {
            Some(prev) => schedule.alpha_bar(prev)? as f64,
            None => 1.0,
        };
        let x0 = ((&x - (&eps * (1.0 - alpha).sqrt())?)? / alpha.sqrt())?.clamp(-1f32, 1f32)?;
        // sigma_t of the DDIM paper (eq. 16): eta times the DDPM posterior standard deviation.
        let std = eta * ((1.0 - alpha_prev) / (1.0 - alpha) * (1.0 - alpha / alpha_prev)).sqrt();
        let direction = (1.0 - alpha_prev - std * std).max(0.0).sqrt();
        x = ((x0 * alpha_prev.sqrt())? + (eps * direction)?)?;
        if std > 0.0 {
            x = (x + (variance_noise(i)? * std)?)?;
        }
        on_step(i + 1, steps);
    }
    Ok(x)
}

/// Images `[B,3,H,W]` in [-1, 1] tiled into a grid of `columns` columns with a `gap`-pixel white
/// border, converted as diffusers does (`round(255 * clamp(x / 2 + 0.5, 0, 1))`).
pub fn image_grid(images: &Tensor, columns: usize, gap: usize) -> Result<RgbImage> {
    let (n, c, h, w) = images.dims4()?;
    if c != 3 || n == 0 || columns == 0 {
        return Err(Error::invalid(format!(
            "cannot tile {n} images of {c} channels in {columns} columns"
        )));
    }
    let values = images
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let rows = n.div_ceil(columns);
    let width = columns * w + (columns + 1) * gap;
    let height = rows * h + (rows + 1) * gap;
    let mut grid = RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for k in 0..n {
        let (ox, oy) = (
            gap + (k % columns) * (w + gap),
            gap + (k / columns) * (h + gap),
        );
        for y in 0..h {
            for x in 0..w {
                let mut px = [0u8; 3];
                for (ch, v) in px.iter_mut().enumerate() {
                    let value = values[((k * 3 + ch) * h + y) * w + x];
                    *v = ((value / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
                }
                grid.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    Ok(grid)
}
