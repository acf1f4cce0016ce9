//! The whole recipe from a PNG file through the model folder (tokenizer, text encoder, VAE, UNet)
//! against diffusers: the image input, the latents, the taps for the empty prompt and a text prompt.

use candle_core::Device;
use diffscope_engine::features::extract::{extract_image, ExtractSettings};
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::io::image::{load_rgb, to_model_input};
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_tests::{fixtures, relative_error, Reference, PARITY_TOLERANCE};

fn check(model_name: &str, image: &str, t: usize, prompt: &str, prefix: &str) {
    let model_dir = fixtures().join("models").join(model_name);
    let model =
        DiffusionModel::load(model_dir.to_str().unwrap(), &Device::Cpu).expect("load model");
    let reference = Reference::load(model_name, image);
    let png = fixtures().join("images").join(format!("{image}.png"));

    let x = to_model_input(&load_rgb(&png).unwrap(), &Device::Cpu).unwrap();
    assert_eq!(
        relative_error(&x, reference.get("x")),
        0.0,
        "image input x = u8/127.5 - 1"
    );

    let taps = reference.list("taps");
    let settings = ExtractSettings {
        t,
        taps: taps.clone(),
        noise: NoiseSource::Given(reference.get(&format!("t{t}.noise")).clone()),
        prompt: PromptSource::Text(prompt.to_string()),
        size: None,
    };
    let ex = extract_image(&model, &png, &settings, None, &mut |_, _| {}).expect("extract");
    let latents_err = relative_error(&ex.latents.unsqueeze(0).unwrap(), reference.get("latents"));
    assert!(
        latents_err <= PARITY_TOLERANCE,
        "latents off by {latents_err:.2e}"
    );
    for tap in &taps {
        let err = relative_error(&ex.taps[tap], reference.get(&format!("{prefix}.{tap}")));
        assert!(
            err <= PARITY_TOLERANCE,
            "{model_name}/{image} {prefix}.{tap}: relative error {err:.2e}"
        );
    }
    assert_eq!(ex.metadata["t"], t.to_string());
    assert_eq!(ex.metadata["ensemble"], "2");
}

#[test]
fn sd1_from_png_with_empty_and_text_prompt() {
    check("sd1_tiny", "sd_64x48", 261, "", "t261");
    check(
        "sd1_tiny",
        "sd_64x48",
        261,
        "a photo of a cat",
        "t261_prompt",
    );
}

#[test]
fn sd2_from_png_with_empty_and_text_prompt() {
    check("sd2_tiny", "sd_square_32", 999, "", "t999");
    check(
        "sd2_tiny",
        "sd_square_32",
        261,
        "a photo of a cat",
        "t261_prompt",
    );
}

#[test]
fn ddpm_from_png() {
    check("ddpm_tiny", "wide_48x32", 0, "", "t0");
}

#[test]
fn seeded_ensembles_share_their_first_draws() {
    let model_dir = fixtures().join("models/ddpm_tiny");
    let model = DiffusionModel::load(model_dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let png = fixtures().join("images/square_32.png");
    let run = |seed, ensemble| {
        let settings = ExtractSettings {
            t: 261,
            taps: vec!["up_blocks.1".into()],
            noise: NoiseSource::Seeded { seed, ensemble },
            prompt: PromptSource::default(),
            size: None,
        };
        extract_image(&model, &png, &settings, None, &mut |_, _| {})
            .unwrap()
            .taps
            .remove("up_blocks.1")
            .unwrap()
    };
    let one = run(7, 1);
    assert_eq!(
        relative_error(&run(7, 1), &one),
        0.0,
        "same seed, same result"
    );
    assert!(
        relative_error(&run(8, 1), &one) > 1e-3,
        "another seed differs"
    );
    assert!(
        relative_error(&run(7, 2), &one) > 1e-3,
        "a second draw changes the average"
    );
    let shape = [1, 3, 32, 32];
    let small = NoiseSource::Seeded {
        seed: 7,
        ensemble: 1,
    }
    .member(0, &shape, &Device::Cpu)
    .unwrap();
    let large = NoiseSource::Seeded {
        seed: 7,
        ensemble: 8,
    }
    .member(0, &shape, &Device::Cpu)
    .unwrap();
    assert_eq!(
        relative_error(&large, &small),
        0.0,
        "member 0 does not depend on the ensemble size"
    );
}
