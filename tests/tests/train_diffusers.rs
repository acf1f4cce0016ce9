//! A model folder written by `diffscope train` (`fixtures/models/trained_tiny`, made and checked
//! with diffusers by `scripts/make_train_fixtures.py`) computes what diffusers computes: the UNet
//! through the engine's loader, and DDIM sampling as diffusers' `DDIMScheduler` does it.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use diffscope_engine::model::pipeline::DiffusionModel;
use diffscope_engine::model::taps::TapRecorder;
use diffscope_engine::train::ddim::{ddim_sample, ddim_timesteps, image_grid};
use diffscope_tests::{fixtures, relative_error};

fn refs() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("refs/trained_tiny.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn model() -> DiffusionModel {
    let dir = fixtures().join("models/trained_tiny");
    DiffusionModel::load(dir.to_str().unwrap(), &Device::Cpu).unwrap()
}

fn int_list(t: &Tensor) -> Vec<usize> {
    t.to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

#[test]
fn the_trained_unet_matches_diffusers() {
    let r = refs();
    let model = model();
    let ts: Vec<f64> = int_list(&r["unet.timesteps"])
        .into_iter()
        .map(|t| t as f64)
        .collect();
    let wanted = ["conv_out".to_string()];
    let mut rec = TapRecorder::new(&wanted, None);
    model
        .unet
        .forward_batch(&r["unet.input"], &ts, None, &mut rec)
        .unwrap();
    let out = rec.into_captured().remove("conv_out").unwrap();
    let err = relative_error(&out, &r["unet.output"]);
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn ddim_sampling_matches_diffusers() {
    let r = refs();
    let model = model();
    assert_eq!(
        ddim_timesteps(model.schedule.steps(), 5).unwrap(),
        int_list(&r["ddim.timesteps"])
    );
    let mut calls = 0;
    let sample = ddim_sample(
        &model.unet,
        &model.schedule,
        &r["ddim.noise"],
        5,
        0.0,
        &mut |_| panic!("eta 0 draws no noise"),
        &mut |_, _| calls += 1,
    )
    .unwrap();
    assert_eq!(calls, 5);
    let err = relative_error(&sample, &r["ddim.sample"]);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn ddim_sampling_with_eta_one_matches_diffusers() {
    let r = refs();
    let model = model();
    let variance_noise = &r["ddim_eta.variance_noise"];
    let mut drawn = Vec::new();
    let sample = ddim_sample(
        &model.unet,
        &model.schedule,
        &r["ddim.noise"],
        5,
        1.0,
        &mut |i| {
            drawn.push(i);
            Ok(variance_noise.get(i)?)
        },
        &mut |_, _| {},
    )
    .unwrap();
    // The last step lands on t = 0, where the posterior has no variance.
    assert_eq!(drawn, vec![0, 1, 2, 3]);
    let err = relative_error(&sample, &r["ddim_eta.sample"]);
    assert!(err < 1e-4, "relative error {err}");
    let deterministic = relative_error(&sample, &r["ddim.sample"]);
    assert!(
        deterministic > 1e-2,
        "eta 1 changed nothing ({deterministic})"
    );
}

#[test]
fn ddim_timesteps_are_leading_spaced() {
    // diffusers DDIMScheduler, timestep_spacing "leading", steps_offset 0.
    assert_eq!(ddim_timesteps(1000, 4).unwrap(), vec![750, 500, 250, 0]);
    assert_eq!(ddim_timesteps(1000, 3).unwrap(), vec![666, 333, 0]);
    assert_eq!(ddim_timesteps(1000, 50).unwrap()[..3], [980, 960, 940]);
    assert!(ddim_timesteps(1000, 0).is_err());
    assert!(ddim_timesteps(1000, 1001).is_err());
}

#[test]
fn image_grids_convert_as_diffusers_does() {
    // round(255 * clamp(x / 2 + 0.5, 0, 1)), tiled with a white gap.
    let values = [-1.0f32, -0.5, 0.0, 0.3, 1.0, 2.0];
    let mut data = vec![];
    for v in values {
        data.extend([v, v, v]);
    }
    // Six 1x1 grey images in a grid of 4 columns.
    let images = Tensor::from_vec(data.clone(), (6, 3, 1, 1), &Device::Cpu).unwrap();
    let grid = image_grid(&images, 4, 1).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 + 5, 2 + 3));
    let expect = [0u8, 64, 128, 166, 255, 255];
    for (k, want) in expect.iter().enumerate() {
        let (x, y) = (1 + (k % 4) * 2, 1 + (k / 4) * 2);
        assert_eq!(
            grid.get_pixel(x as u32, y as u32).0,
            [*want; 3],
            "image {k}"
        );
    }
    assert_eq!(grid.get_pixel(0, 0).0, [255; 3]);
}
