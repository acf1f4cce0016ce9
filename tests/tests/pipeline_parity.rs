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
        time_ids: None,
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
            time_ids: None,
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

/// The draws go through the UNet as one batch (the tiny model's fit the budget); the result must
/// be what one draw at a time gives, averaged: every draw's noise given on its own.
#[test]
fn batched_draws_equal_one_at_a_time() {
    use diffscope_engine::features::recipe::{
        draws_per_batch, extract_from_latents, member_seed, seeded_normal, UNetRequest,
    };
    let model_dir = fixtures().join("models/sd1_tiny");
    let model = DiffusionModel::load(model_dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let png = fixtures().join("images/sd_64x48.png");
    let x = to_model_input(&load_rgb(&png).unwrap(), &Device::Cpu).unwrap();
    let latents = model.encode(&x).unwrap();
    let context = model.condition(&PromptSource::default()).unwrap();
    let taps = vec!["down_blocks.1".to_string(), "up_blocks.1".to_string()];
    let (ensemble, seed) = (4, 11);
    assert!(
        draws_per_batch(&model.unet, &taps, (12, 16), &Device::Cpu) >= ensemble,
        "the test needs the draws batched"
    );
    let run = |noise| {
        let request = UNetRequest {
            t: 261,
            taps: taps.clone(),
            noise,
        };
        extract_from_latents(
            &model.unet,
            &model.schedule,
            &latents,
            context.as_ref(),
            &request,
            None,
            &mut |_, _| {},
        )
        .unwrap()
    };
    let batched = run(NoiseSource::Seeded { seed, ensemble });
    let singles: Vec<_> = (0..ensemble)
        .map(|k| {
            let noise = seeded_normal(member_seed(seed, k), latents.dims(), &Device::Cpu).unwrap();
            run(NoiseSource::Given(noise))
        })
        .collect();
    for tap in &taps {
        let mean = (singles
            .iter()
            .map(|s| s[tap].clone())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap()
            / ensemble as f64)
            .unwrap();
        let err = relative_error(&batched[tap], &mean);
        assert!(err < 1e-5, "{tap}: batched differs by {err:.2e}");
    }
}

/// Several images of one size go through the UNet together (eval batches its images so); each
/// image's features are what it gives alone.
#[test]
fn images_batched_together_equal_each_alone() {
    use diffscope_engine::features::recipe::{
        extract_from_latents, extract_from_many_latents, UNetRequest,
    };
    let model_dir = fixtures().join("models/sd2_tiny");
    let model = DiffusionModel::load(model_dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let latents: Vec<_> = ["sd_square_32", "square_32"]
        .iter()
        .map(|name| {
            let png = fixtures().join("images").join(format!("{name}.png"));
            model
                .encode(&to_model_input(&load_rgb(&png).unwrap(), &Device::Cpu).unwrap())
                .unwrap()
        })
        .collect();
    let context = model.condition(&PromptSource::default()).unwrap();
    let request = UNetRequest {
        t: 261,
        taps: vec!["up_blocks.1".to_string()],
        noise: NoiseSource::Seeded {
            seed: 3,
            ensemble: 3,
        },
    };
    let together = extract_from_many_latents(
        &model.unet,
        &model.schedule,
        &latents,
        context.as_ref(),
        &request,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(together.len(), 2);
    for (latent, maps) in latents.iter().zip(&together) {
        let alone = extract_from_latents(
            &model.unet,
            &model.schedule,
            latent,
            context.as_ref(),
            &request,
            None,
            &mut |_, _| {},
        )
        .unwrap();
        let err = relative_error(&maps["up_blocks.1"], &alone["up_blocks.1"]);
        assert!(err < 1e-5, "batched with another image: {err:.2e}");
    }
    assert!(relative_error(&together[0]["up_blocks.1"], &together[1]["up_blocks.1"]) > 1e-2);
}
