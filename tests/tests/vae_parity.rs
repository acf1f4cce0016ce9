//! The VAE encoder's scaled posterior mean (`latents`) against diffusers, and the image input `x`.

use candle_core::Device;
use diffscope_engine::model::unet::UNet;
use diffscope_engine::model::vae::VaeEncoder;
use diffscope_tests::{fixtures, relative_error, Reference, PARITY_TOLERANCE};

#[test]
fn vae_latents_match_diffusers() {
    for model in ["sd1_tiny", "sd2_tiny"] {
        let vae = VaeEncoder::load(
            &fixtures().join("models").join(model).join("vae"),
            &Device::Cpu,
        )
        .expect("load vae");
        for image in ["sd_64x48", "sd_square_32"] {
            let reference = Reference::load(model, image);
            let latents = vae.encode(reference.get("x")).expect("encode");
            let err = relative_error(&latents, reference.get("latents"));
            eprintln!("{model}/{image} latents: relative error {err:.2e}");
            assert!(
                err <= PARITY_TOLERANCE,
                "{model}/{image}: latents off by {err:.2e}"
            );
        }
    }
}

#[test]
fn legacy_attention_names_load_and_match() {
    // The same weights as ddpm_tiny, with attention named query/key/value/proj_attn.
    let modern = UNet::load(&fixtures().join("models/ddpm_tiny/unet"), &Device::Cpu).unwrap();
    let legacy = UNet::load(
        &fixtures().join("models/ddpm_tiny_legacy/unet"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(modern.parameters, legacy.parameters);
    let reference = Reference::load("ddpm_tiny", "square_32");
    let x = reference.get("latents");
    let taps = vec!["conv_out".to_string()];
    let run = |unet: &UNet| {
        let mut rec = diffscope_engine::model::taps::TapRecorder::new(&taps, None);
        unet.forward_taps(x, 261.0, None, &mut rec).unwrap();
        rec.into_captured().remove("conv_out").unwrap()
    };
    assert_eq!(relative_error(&run(&legacy), &run(&modern)), 0.0);
}
