//! SDXL-family models against diffusers and transformers, on the committed tiny random-weight
//! fixtures (`make_sdxl_dino_fixtures.py`): the SDXL-style UNet with its text-time embedding, the
//! SSD-1B-style UNet with per-layer transformer depths, both text encoders with their tokenizers,
//! the SDXL VAE, and the whole recipe from a PNG.

use candle_core::{Device, Tensor};
use diffscope_engine::features::extract::{extract_image, ExtractSettings};
use diffscope_engine::features::recipe::{extract_from_latents, NoiseSource, UNetRequest};
use diffscope_engine::model::conditioning::{Conditioning, TextTimeConditions};
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_engine::model::schedule::NoiseSchedule;
use diffscope_engine::model::unet::UNet;
use diffscope_tests::{fixtures, relative_error, Reference, PARITY_TOLERANCE};

fn time_ids(reference: &Reference, name: &str) -> [f64; 6] {
    let values: Vec<f32> = reference.get(name).to_vec1().unwrap();
    std::array::from_fn(|i| f64::from(values[i]))
}

/// What run `prefix` was conditioned on: its prompt's embeddings and its time ids.
fn conditioning_of(reference: &Reference, prefix: &str) -> (Conditioning, usize) {
    let prompt = if prefix.ends_with("_prompt") {
        "prompt"
    } else {
        "empty_prompt"
    };
    let ids = if prefix.ends_with("_time_ids") {
        "custom_time_ids"
    } else {
        "time_ids"
    };
    let t: usize = prefix[1..]
        .split('_')
        .next()
        .unwrap()
        .parse()
        .expect("a run prefix starts with t<timestep>");
    let cond = Conditioning {
        context: reference.get(&format!("{prompt}_embeds")).clone(),
        added: Some(TextTimeConditions {
            text_embeds: reference.get(&format!("{prompt}_pooled")).clone(),
            time_ids: Some(time_ids(reference, ids)),
        }),
    };
    (cond, t)
}

fn check_unet(model: &str, image: &str) {
    let dir = fixtures().join("models").join(model);
    let unet = UNet::load(&dir.join("unet"), &Device::Cpu).expect("load unet");
    let schedule =
        NoiseSchedule::load(&fixtures().join("models/sdxl_tiny/scheduler/scheduler_config.json"))
            .expect("schedule");
    let reference = Reference::load(model, image);
    let ac = Tensor::new(schedule.alphas_cumprod.as_slice(), &Device::Cpu).unwrap();
    assert!(relative_error(&ac, reference.get("alphas_cumprod")) < 1e-6);
    let taps = reference.list("taps");
    let offered: Vec<&str> = unet.taps().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        offered, taps,
        "tap names and order match diffusers' module paths"
    );
    let mut worst = 0f32;
    let mut failures = vec![];
    for prefix in reference.list("runs") {
        let (cond, t) = conditioning_of(&reference, &prefix);
        let request = UNetRequest {
            t,
            taps: taps.clone(),
            noise: NoiseSource::Given(reference.get(&format!("t{t}.noise")).clone()),
        };
        let out = extract_from_latents(
            &unet,
            &schedule,
            reference.get("latents"),
            Some(&cond),
            &request,
            None,
            &mut |_, _| {},
        )
        .expect("extract");
        for tap in &taps {
            let err = relative_error(&out[tap], reference.get(&format!("{prefix}.{tap}")));
            worst = worst.max(err);
            if err.is_nan() || err > PARITY_TOLERANCE {
                failures.push(format!("{model}/{image} {prefix}.{tap}: {err:.2e}"));
            }
        }
    }
    eprintln!(
        "{model}/{image}: worst relative error over {} taps: {worst:.2e}",
        taps.len()
    );
    assert!(
        failures.is_empty(),
        "taps off diffusers:\n{}",
        failures.join("\n")
    );
}

#[test]
fn sdxl_unet_with_time_ids_and_pooled_embedding_matches_diffusers() {
    check_unet("sdxl_tiny", "sd_64x48");
    check_unet("sdxl_tiny", "sd_square_32");
}

#[test]
fn ssd1b_unet_with_unequal_per_layer_depths_matches_diffusers() {
    check_unet("ssd1b_tiny", "sd_64x48");
    // Depths as diffusers builds them: per layer on the way down, the reverse list on the way up,
    // the first entry of the last level's list in the mid block.
    let unet = UNet::load(&fixtures().join("models/ssd1b_tiny/unet"), &Device::Cpu).unwrap();
    let depth = |name: &str| {
        unet.taps()
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.transformer_depth)
    };
    assert_eq!(depth("down_blocks.1.attentions.0"), Some(2));
    assert_eq!(depth("down_blocks.1.attentions.1"), Some(1));
    assert_eq!(depth("down_blocks.2.attentions.1"), Some(2));
    assert_eq!(depth("mid_block.attentions.0"), Some(1));
    assert_eq!(depth("up_blocks.0.attentions.0"), Some(2));
    assert_eq!(depth("up_blocks.0.attentions.1"), Some(1));
    assert_eq!(depth("up_blocks.0.attentions.2"), Some(2));
    assert_eq!(depth("up_blocks.1.attentions.0"), Some(1));
    assert_eq!(depth("up_blocks.1.attentions.1"), Some(2));
    assert_eq!(depth("up_blocks.1.attentions.2"), Some(1));
    assert_eq!(depth("up_blocks.2.resnets.0"), None);
}

#[test]
fn both_sdxl_text_encoders_and_tokenizers_match_transformers() {
    let model = DiffusionModel::load(
        fixtures().join("models/sdxl_tiny").to_str().unwrap(),
        &Device::Cpu,
    )
    .expect("load sdxl_tiny");
    let reference = Reference::load("sdxl_tiny", "sd_64x48");
    let text = model.text.as_ref().expect("two text encoders");
    for (prompt, prefix) in [("", "empty_prompt"), ("a photo of a cat", "prompt")] {
        let ids = text.token_ids(prompt).unwrap();
        for (i, ids) in ids.iter().enumerate() {
            let expected: Vec<i64> = reference
                .get(&format!("{prefix}_ids_{}", i + 1))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let expected: Vec<u32> = expected.into_iter().map(|v| v as u32).collect();
            assert_eq!(ids, &expected, "tokenizer {} on {prompt:?}", i + 1);
        }
        let cond = model
            .condition(&PromptSource::Text(prompt.into()))
            .unwrap()
            .expect("conditioned");
        let states = relative_error(&cond.context, reference.get(&format!("{prefix}_embeds")));
        assert!(
            states <= PARITY_TOLERANCE,
            "{prompt:?} penultimate states: {states:.2e}"
        );
        let pooled = &cond.added.expect("pooled").text_embeds;
        let pooled = relative_error(pooled, reference.get(&format!("{prefix}_pooled")));
        assert!(
            pooled <= PARITY_TOLERANCE,
            "{prompt:?} pooled projection: {pooled:.2e}"
        );
        eprintln!(
            "sdxl text {prompt:?}: ids equal; joined states {states:.2e}, pooled {pooled:.2e}"
        );
    }
    // The first tokenizer pads with its end token, the second with `!` (id 0), as SDXL's do.
    let ids = text.token_ids("").unwrap();
    assert_eq!((ids[0][2], ids[1][2]), (ids[0][1], 0));
}

fn extract(
    model: &DiffusionModel,
    image: &str,
    t: usize,
    prompt: &str,
    ids: Option<[f64; 6]>,
    noise: &Tensor,
) -> diffscope_engine::features::extract::Extraction {
    let reference = Reference::load("sdxl_tiny", "sd_64x48");
    let settings = ExtractSettings {
        t,
        taps: reference.list("taps"),
        noise: NoiseSource::Given(noise.clone()),
        prompt: PromptSource::Text(prompt.into()),
        size: None,
        time_ids: ids,
    };
    let png = fixtures().join("images").join(format!("{image}.png"));
    extract_image(model, &png, &settings, None, &mut |_, _| {}).expect("extract")
}

#[test]
fn sdxl_vae_and_the_whole_recipe_from_a_png_match_diffusers() {
    let model = DiffusionModel::load(
        fixtures().join("models/sdxl_tiny").to_str().unwrap(),
        &Device::Cpu,
    )
    .expect("load sdxl_tiny");
    assert_eq!(model.vae.as_ref().unwrap().config.scaling_factor, 0.13025);
    let reference = Reference::load("sdxl_tiny", "sd_64x48");
    let custom = time_ids(&reference, "custom_time_ids");
    let runs = [
        (261, "", None, "t261"),
        (261, "a photo of a cat", None, "t261_prompt"),
        (261, "", Some(custom), "t261_time_ids"),
    ];
    for (t, prompt, ids, prefix) in runs {
        let ex = extract(
            &model,
            "sd_64x48",
            t,
            prompt,
            ids,
            reference.get(&format!("t{t}.noise")),
        );
        let err = relative_error(&ex.latents.unsqueeze(0).unwrap(), reference.get("latents"));
        assert!(err <= PARITY_TOLERANCE, "SDXL VAE latents off by {err:.2e}");
        let mut worst = 0f32;
        for tap in reference.list("taps") {
            let err = relative_error(&ex.taps[&tap], reference.get(&format!("{prefix}.{tap}")));
            worst = worst.max(err);
            assert!(err <= PARITY_TOLERANCE, "{prefix}.{tap}: {err:.2e}");
        }
        eprintln!("sdxl_tiny from PNG, {prefix}: latents and every tap within {worst:.2e}");
        let expected_ids = if ids.is_some() {
            "1024,768,16,32,1024,1024"
        } else {
            "48,64,0,0,48,64"
        };
        assert_eq!(ex.metadata["time_ids"], expected_ids);
    }
}
