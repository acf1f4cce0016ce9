//! DINOv2 with and without registers against transformers (`make_sdxl_dino_fixtures.py`), on the
//! tiny model's own square grid (no interpolation), a smaller square (position embeddings shrunk)
//! and a non-square image: every tap's patch map, class and register tokens.

use candle_core::{DType, Device};
use diffscope_engine::io::image::load_rgb;
use diffscope_engine::model::dinov2::{imagenet_input, Dinov2};
use diffscope_tests::{fixtures, relative_error, Reference, PARITY_TOLERANCE};

fn check(model: &str, image: &str) -> f32 {
    let dino = Dinov2::load(
        &fixtures().join("models").join(model),
        &Device::Cpu,
        DType::F32,
    )
    .expect("load DINOv2");
    let reference = Reference::load(model, image);
    let png = fixtures().join("images").join(format!("{image}.png"));
    let x = imagenet_input(&load_rgb(&png).unwrap(), &Device::Cpu).unwrap();
    let err = relative_error(&x, reference.get("x"));
    assert!(err < 1e-6, "ImageNet normalisation off by {err:.2e}");
    let taps = reference.list("taps");
    let offered: Vec<&str> = dino.taps().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        offered, taps,
        "taps by transformers' module paths, in order"
    );
    let out = dino.forward_taps(&x, &taps, None).expect("forward");
    let mut worst = 0f32;
    for tap in &taps {
        let got = &out[tap];
        let mut parts = vec![(&got.map, tap.clone()), (&got.cls, format!("{tap}.cls"))];
        if let Some(registers) = &got.registers {
            parts.push((registers, format!("{tap}.registers")));
        }
        assert_eq!(
            got.registers.is_some(),
            reference.tensors.contains_key(&format!("{tap}.registers"))
        );
        for (ours, name) in parts {
            let err = relative_error(ours, reference.get(&name));
            worst = worst.max(err);
            assert!(err <= PARITY_TOLERANCE, "{model}/{image} {name}: {err:.2e}");
        }
    }
    eprintln!("{model}/{image}: every tap within {worst:.2e}");
    worst
}

#[test]
fn dinov2_matches_transformers_on_square_and_non_square_images() {
    for image in ["dino_56", "dino_42", "dino_70x42"] {
        check("dinov2_tiny", image);
    }
}

#[test]
fn dinov2_with_registers_matches_transformers_on_square_and_non_square_images() {
    for image in ["dino_56", "dino_42", "dino_70x42"] {
        check("dinov2_reg_tiny", image);
    }
}

#[test]
fn a_size_that_is_not_a_multiple_of_the_patch_size_is_refused() {
    let dino = Dinov2::load(
        &fixtures().join("models/dinov2_tiny"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let png = fixtures().join("images/sd_64x48.png");
    let x = imagenet_input(&load_rgb(&png).unwrap(), &Device::Cpu).unwrap();
    let err = dino
        .forward_taps(&x, &["layernorm".into()], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("64x48")
            && err.contains("patch size 14")
            && err.contains("--size, e.g. 56x42"),
        "{err}"
    );
}
