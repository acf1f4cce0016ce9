//! The CPU training ops give the same values and gradients as candle's own (slow) backward passes.

use candle_core::{Device, Module, Tensor, Var};
use diffscope_engine::features::recipe::seeded_normal;
use diffscope_engine::model::ops;
use diffscope_tests::max_abs_diff;

fn var(seed: u64, shape: &[usize]) -> Var {
    Var::from_tensor(&seeded_normal(seed, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Value and gradients of `loss = sum(f(inputs) * probe)` for each input.
fn grads_of(inputs: &[&Var], out: &Tensor, probe: &Tensor) -> Vec<Tensor> {
    let loss = (out * probe).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    inputs
        .iter()
        .map(|v| g.get(v.as_tensor()).expect("gradient").clone())
        .collect()
}

fn check_close(what: &str, ours: &Tensor, reference: &Tensor, tol: f32) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let zeros = reference.zeros_like().unwrap();
    let scale = max_abs_diff(reference, &zeros).max(1.0);
    let d = max_abs_diff(ours, reference);
    assert!(
        d <= tol * scale,
        "{what}: max difference {d} (scale {scale})"
    );
}

#[test]
fn convolution_gradients_match_candle() {
    // (in channels, out channels, size, kernel, stride, padding): the UNet's 3x3 convs, its
    // stride-2 downsamplers (symmetric and right/bottom-padded forms), 1x1 shortcuts, odd sizes.
    let cases = [
        (3, 4, 9, 3, 1, 1),
        (4, 6, 8, 3, 2, 1),
        (4, 4, 9, 3, 2, 0),
        (5, 3, 7, 3, 2, 1),
        (6, 4, 6, 1, 1, 0),
    ];
    for (i, &(ci, co, size, k, stride, pad)) in cases.iter().enumerate() {
        // Square: candle's own backward (the reference) mis-sizes non-square strided inputs.
        let x = var(10 + i as u64, &[2, ci, size, size]);
        let w = var(20 + i as u64, &[co, ci, k, k]);
        let reference = x
            .as_tensor()
            .conv2d(w.as_tensor(), pad, stride, 1, 1)
            .unwrap();
        let ours = ops::conv2d(x.as_tensor(), w.as_tensor(), stride, pad).unwrap();
        let what = format!("conv case {i}");
        check_close(&what, &ours, &reference, 1e-6);
        let probe = seeded_normal(30 + i as u64, reference.dims(), &Device::Cpu).unwrap();
        let want = grads_of(&[&x, &w], &reference, &probe);
        let got = grads_of(&[&x, &w], &ours, &probe);
        check_close(&format!("{what} d/dx"), &got[0], &want[0], 1e-5);
        check_close(&format!("{what} d/dw"), &got[1], &want[1], 1e-5);
    }
}

#[test]
fn group_norm_gradients_match_candle() {
    // Each case plain and fused with the SiLU that follows most of the UNet's norms.
    let cases = [(8usize, 4usize), (6, 1), (4, 4)];
    for (i, &((c, groups), silu)) in cases
        .iter()
        .flat_map(|case| [(*case, false), (*case, true)])
        .collect::<Vec<_>>()
        .iter()
        .enumerate()
    {
        let x = var(40 + i as u64, &[3, c, 5, 7]);
        // Shift and scale so the normalisation has work to do.
        let shifted = ((x.as_tensor() * 3.0).unwrap() + 2.0).unwrap();
        let w = var(50 + i as u64, &[c]);
        let b = var(60 + i as u64, &[c]);
        let norm = candle_nn::GroupNorm::new(
            w.as_tensor().clone(),
            b.as_tensor().clone(),
            c,
            groups,
            1e-5,
        )
        .unwrap();
        let mut reference = norm.forward(&shifted).unwrap();
        if silu {
            reference = reference.silu().unwrap();
        }
        let ours =
            ops::group_norm(&shifted, w.as_tensor(), b.as_tensor(), groups, 1e-5, silu).unwrap();
        let what = format!("group norm case {i} (silu {silu})");
        check_close(&what, &ours, &reference, 1e-5);
        let probe = seeded_normal(70 + i as u64, reference.dims(), &Device::Cpu).unwrap();
        let want = grads_of(&[&x, &w, &b], &reference, &probe);
        let got = grads_of(&[&x, &w, &b], &ours, &probe);
        for (j, name) in ["x", "weight", "bias"].iter().enumerate() {
            check_close(&format!("{what} d/d{name}"), &got[j], &want[j], 1e-4);
        }
    }
}

#[test]
fn upsampling_gradients_match_candle() {
    let x = var(80, &[2, 3, 4, 5]);
    let reference = x.as_tensor().upsample_nearest2d(8, 10).unwrap();
    let ours = ops::upsample_nearest(x.as_tensor(), (8, 10)).unwrap();
    check_close("upsample", &ours, &reference, 0.0);
    let probe = seeded_normal(81, reference.dims(), &Device::Cpu).unwrap();
    let want = grads_of(&[&x], &reference, &probe);
    let got = grads_of(&[&x], &ours, &probe);
    check_close("upsample d/dx", &got[0], &want[0], 1e-6);
}

#[test]
fn channel_bias_gradients_match_candle() {
    let x = var(60, &[3, 4, 5, 6]);
    // A bias per channel (convolutions) and per sample and channel (time embeddings).
    for (i, bias_shape, broadcast_shape) in [
        (0u64, vec![4], vec![1, 4, 1, 1]),
        (1, vec![3, 4], vec![3, 4, 1, 1]),
    ] {
        let b = var(61 + i, &bias_shape);
        let reference = x
            .as_tensor()
            .broadcast_add(&b.as_tensor().reshape(broadcast_shape).unwrap())
            .unwrap();
        let ours = ops::add_channel_bias(x.as_tensor(), b.as_tensor()).unwrap();
        check_close("channel bias", &ours, &reference, 1e-7);
        let probe = seeded_normal(70 + i, reference.dims(), &Device::Cpu).unwrap();
        let want = grads_of(&[&x, &b], &reference, &probe);
        let got = grads_of(&[&x, &b], &ours, &probe);
        check_close("channel bias d/dx", &got[0], &want[0], 1e-6);
        check_close("channel bias d/db", &got[1], &want[1], 1e-5);
    }
    assert!(ops::add_channel_bias(
        x.as_tensor(),
        &Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap()
    )
    .is_err());
}
