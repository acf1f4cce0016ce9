//! The engine's UNet is differentiable when built on trainable variables: gradients reach every
//! parameter and a step against them lowers the denoising loss.

use candle_core::{Device, Tensor};
use diffscope_engine::features::recipe::seeded_normal;
use diffscope_engine::model::taps::TapRecorder;
use diffscope_engine::model::unet::UNet;
use diffscope_engine::model::weights::{TrainableParams, Weights};
use diffscope_tests::fixtures;

fn predict(unet: &UNet, x: &Tensor, ts: &[f64]) -> Tensor {
    let taps = vec!["conv_out".to_string()];
    let mut rec = TapRecorder::new(&taps, None);
    unet.forward_batch(x, ts, None, &mut rec).unwrap();
    rec.into_captured().remove("conv_out").unwrap()
}

#[test]
fn gradients_reach_every_parameter_and_a_step_lowers_the_loss() {
    let dev = Device::Cpu;
    let params = TrainableParams::random(0);
    let config = fixtures().join("models/ddpm_tiny/unet/config.json");
    let unet = UNet::with_weights(&config, &Weights::trainable(params.clone(), &dev)).unwrap();
    assert_eq!(params.count(), unet.parameters);

    let x = seeded_normal(1, &[2, 3, 16, 16], &dev).unwrap();
    let target = seeded_normal(2, &[2, 3, 16, 16], &dev).unwrap();
    let ts = [10.0, 700.0];
    let loss = |unet: &UNet| {
        (predict(unet, &x, &ts) - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let before = loss(&unet);
    let grads = before.backward().unwrap();
    let mut missing = vec![];
    for (name, var) in params.named() {
        match grads.get(var.as_tensor()) {
            Some(g) => {
                let step = (var.as_tensor() - (g * 0.05).unwrap()).unwrap();
                var.set(&step).unwrap();
            }
            None => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    let after = loss(&unet).to_scalar::<f32>().unwrap();
    let before = before.to_scalar::<f32>().unwrap();
    assert!(after < before, "loss {before} -> {after}");
}
