//! Half precision against diffusers run in the same dtype (`fixtures/refs_half`, written by
//! `scripts/make_half_fixtures.py`): the whole recipe in f16 and bf16 on the CPU.
//!
//! The tolerance, documented in the README: a tap may differ from diffusers' tap in the same
//! dtype by at most 2x what half precision moves that tap in diffusers itself (its f16 or bf16
//! run against its f32 run), and never more than 3% (f16) or 15% (bf16) of the tap's largest
//! magnitude. Two independent roundings of the same computation differ by about 1.4x either's
//! own error; more than 2x would mean a different computation, not rounding.

use candle_core::Device;
use diffscope_engine::device::{Compute, Precision};
use diffscope_engine::features::extract::{extract_image, ExtractSettings};
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_tests::{fixtures, relative_error, Reference};

fn half_reference(model: &str, image: &str, dtype: &str) -> Reference {
    Reference::load_file(
        &fixtures()
            .join("refs_half")
            .join(format!("{model}__{image}__{dtype}.safetensors")),
    )
}

/// (our error, diffusers' own half-vs-f32 error) of every compared tensor, checked.
fn check(model_name: &str, image: &str, precision: Precision) {
    let reference = half_reference(model_name, image, precision.name());
    let noise = Reference::load(model_name, image).get("t261.noise").clone();
    let compute = Compute {
        device: Device::Cpu,
        precision,
    };
    let model_dir = fixtures().join("models").join(model_name);
    let model = DiffusionModel::load_on(model_dir.to_str().unwrap(), &compute).unwrap();
    let png = fixtures().join("images").join(format!("{image}.png"));
    let taps = reference.list("taps");
    let settings = ExtractSettings {
        t: 261,
        taps: taps.clone(),
        noise: NoiseSource::Given(noise),
        prompt: PromptSource::default(),
        size: None,
        time_ids: None,
    };
    let ex = extract_image(&model, &png, &settings, None, &mut |_, _| {}).unwrap();
    let cap = match precision {
        Precision::BF16 => 0.15,
        _ => 0.03,
    };
    let compare = |what: &str, ours: &candle_core::Tensor, name: &str| {
        let theirs = reference.get(name);
        let own = relative_error(theirs, reference.get(&format!("f32.{name}")));
        let err = relative_error(ours, theirs);
        eprintln!("{model_name} {precision} {what}: ours {err:.2e}, diffusers' own {own:.2e}");
        assert!(
            err <= (2.0 * own).min(cap).max(1e-3),
            "{model_name} {precision} {what}: {err:.2e} from diffusers in the same dtype, whose own \
             {precision} error is {own:.2e}"
        );
    };
    compare("latents", &ex.latents.unsqueeze(0).unwrap(), "latents");
    for tap in &taps {
        compare(tap, &ex.taps[tap], &format!("t261.{tap}"));
    }
    if let Some(text) = &model.text {
        let embeds = text.embed("a photo of a cat").unwrap();
        compare("prompt embeddings", &embeds.context, "prompt_embeds");
    }
}

#[test]
fn sd1_in_half_precision() {
    check("sd1_tiny", "sd_64x48", Precision::F16);
    check("sd1_tiny", "sd_64x48", Precision::BF16);
}

#[test]
fn sd2_in_half_precision() {
    check("sd2_tiny", "sd_64x48", Precision::F16);
    check("sd2_tiny", "sd_64x48", Precision::BF16);
}

#[test]
fn ddpm_in_half_precision() {
    check("ddpm_tiny", "wide_48x32", Precision::F16);
    check("ddpm_tiny", "wide_48x32", Precision::BF16);
}
