//! Every tap of the engine's UNets against diffusers, on the committed tiny random-weight models.

use candle_core::{Device, Tensor};
use diffscope_engine::features::recipe::{extract_from_latents, NoiseSource, UNetRequest};
use diffscope_engine::model::conditioning::Conditioning;
use diffscope_engine::model::schedule::NoiseSchedule;
use diffscope_engine::model::unet::UNet;
use diffscope_tests::{fixtures, relative_error, Reference, PARITY_TOLERANCE};

fn check_unet(model: &str, image: &str) {
    let dir = fixtures().join("models").join(model);
    let unet = UNet::load(&dir.join("unet"), &Device::Cpu).expect("load unet");
    let schedule =
        NoiseSchedule::load(&dir.join("scheduler/scheduler_config.json")).expect("schedule");
    let reference = Reference::load(model, image);

    let ac = Tensor::new(schedule.alphas_cumprod.as_slice(), &Device::Cpu).unwrap();
    assert!(
        relative_error(&ac, reference.get("alphas_cumprod")) < 1e-6,
        "alphas_cumprod"
    );

    let taps = reference.list("taps");
    let offered: Vec<&str> = unet.taps().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        offered, taps,
        "tap names and order match diffusers' module paths"
    );

    let latents = reference.get("latents");
    let context = reference
        .tensors
        .get("empty_prompt_embeds")
        .map(|c| Conditioning::text(c.clone()));
    let mut failures = vec![];
    let mut worst = 0f32;
    let mut runs = vec![];
    for t in reference.list("timesteps") {
        runs.push((
            format!("t{t}"),
            t.parse::<usize>().unwrap(),
            context.clone(),
        ));
    }
    if let Some(prompt) = reference.tensors.get("prompt_embeds") {
        runs.push((
            "t261_prompt".to_string(),
            261,
            Some(Conditioning::text(prompt.clone())),
        ));
    }
    for (prefix, t, ctx) in runs {
        let noise_key = if prefix == "t261_prompt" {
            "t261.noise".to_string()
        } else {
            format!("{prefix}.noise")
        };
        let request = UNetRequest {
            t,
            taps: taps.clone(),
            noise: NoiseSource::Given(reference.get(&noise_key).clone()),
        };
        let out = extract_from_latents(
            &unet,
            &schedule,
            latents,
            ctx.as_ref(),
            &request,
            None,
            &mut |_, _| {},
        )
        .expect("extract");
        for tap in &taps {
            let err = relative_error(&out[tap], reference.get(&format!("{prefix}.{tap}")));
            worst = worst.max(err);
            if err.is_nan() || err > PARITY_TOLERANCE {
                failures.push(format!(
                    "{model}/{image} {prefix}.{tap}: relative error {err:.2e}"
                ));
            }
        }
    }
    eprintln!(
        "{model}/{image}: worst relative error over {} taps: {worst:.2e}",
        taps.len()
    );
    assert!(
        failures.is_empty(),
        "taps off the diffusers reference:\n{}",
        failures.join("\n")
    );
}

#[test]
fn sd1_unet_matches_diffusers() {
    check_unet("sd1_tiny", "sd_64x48");
    check_unet("sd1_tiny", "sd_square_32");
}

#[test]
fn sd2_unet_matches_diffusers() {
    check_unet("sd2_tiny", "sd_64x48");
    check_unet("sd2_tiny", "sd_square_32");
}

#[test]
fn ddpm_unet_matches_diffusers() {
    check_unet("ddpm_tiny", "square_32");
    check_unet("ddpm_tiny", "wide_48x32");
}
