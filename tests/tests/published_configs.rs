//! The published configurations (SDXL base 1.0, SSD-1B, the SD 1.5 / 2.1 UNets CleanDIFT
//! fine-tunes, DINOv2 small/base/large/giant and with registers) parse and build with exactly the
//! weights, names and shapes diffusers and transformers build (`tests/fixtures/published/`, written
//! by `make_sdxl_dino_fixtures.py`; no weights: the models are built from shapes alone).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use diffscope_engine::model::clip::ClipTextEncoder;
use diffscope_engine::model::dinov2::Dinov2;
use diffscope_engine::model::unet::UNet;
use diffscope_engine::model::vae::VaeEncoder;
use diffscope_engine::model::weights::Weights;
use diffscope_tests::fixtures;

fn published(path: &str) -> std::path::PathBuf {
    fixtures().join("published").join(path)
}

fn manifest(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("shapes.json")
}

fn assert_same(
    what: &str,
    ours: &BTreeMap<String, Vec<usize>>,
    theirs: &BTreeMap<String, Vec<usize>>,
) {
    let missing: Vec<&String> = theirs
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<&String> = ours
        .keys()
        .filter(|k| !theirs.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: not read {missing:?}, not in the reference {extra:?}"
    );
    for (name, shape) in theirs {
        // SD 1.x stores proj_in/proj_out as 1x1 convolutions, which the engine reads as linear maps.
        let shape = match shape.as_slice() {
            [o, i, 1, 1] if ours[name].len() == 2 => vec![*o, *i],
            _ => shape.clone(),
        };
        assert_eq!(ours[name], shape, "{what}: shape of {name}");
    }
}

fn parameters(shapes: &BTreeMap<String, Vec<usize>>) -> usize {
    // (1x1 convolutions read as linear maps hold as many values)
    shapes.values().map(|s| s.iter().product::<usize>()).sum()
}

fn build_unet(model: &str) -> (UNet, BTreeMap<String, Vec<usize>>) {
    let weights = Weights::shapes_only(&Device::Cpu);
    let unet = UNet::with_weights(&published(&format!("{model}/unet/config.json")), &weights)
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    let read = weights.requested_shapes();
    assert_same(
        model,
        &read,
        &manifest(&published(&format!("{model}/unet/shapes.json"))),
    );
    assert_eq!(unet.parameters, parameters(&read));
    (unet, read)
}

fn depth(unet: &UNet, tap: &str) -> Option<usize> {
    unet.taps()
        .iter()
        .find(|t| t.name == tap)
        .and_then(|t| t.transformer_depth)
}

#[test]
fn sdxl_base_unet_builds_as_diffusers_does() {
    let (unet, _) = build_unet("stable-diffusion-xl-base-1.0");
    assert_eq!(unet.parameters, 2_567_463_684);
    assert_eq!(unet.context_dim, Some(2048));
    assert_eq!(unet.pooled_text_dim(), Some(1280));
    assert_eq!(depth(&unet, "down_blocks.1.attentions.0"), Some(2));
    assert_eq!(depth(&unet, "down_blocks.2.attentions.1"), Some(10));
    assert_eq!(depth(&unet, "mid_block.attentions.0"), Some(10));
    assert_eq!(depth(&unet, "up_blocks.0.attentions.2"), Some(10));
    assert_eq!(depth(&unet, "up_blocks.1.attentions.0"), Some(2));
    let blocks: Vec<(&str, usize, usize)> = unet
        .taps()
        .iter()
        .filter(|t| t.block_level)
        .map(|t| (t.name.as_str(), t.channels, t.stride))
        .collect();
    assert_eq!(
        blocks,
        [
            ("down_blocks.0", 320, 2),
            ("down_blocks.1", 640, 4),
            ("down_blocks.2", 1280, 4),
            ("mid_block", 1280, 4),
            ("up_blocks.0", 1280, 2),
            ("up_blocks.1", 640, 1),
            ("up_blocks.2", 320, 1),
        ]
    );
}

#[test]
fn ssd1b_unet_builds_as_diffusers_does() {
    let (unet, _) = build_unet("SSD-1B");
    assert_eq!(unet.parameters, 1_316_253_444);
    assert_eq!(depth(&unet, "down_blocks.2.attentions.0"), Some(4));
    assert_eq!(depth(&unet, "mid_block.attentions.0"), Some(4));
    assert_eq!(depth(&unet, "up_blocks.0.attentions.2"), Some(4));
}

#[test]
fn the_unets_cleandift_fine_tunes_build_as_diffusers_does() {
    let (sd15, _) = build_unet("stable-diffusion-v1-5");
    assert_eq!(sd15.parameters, 859_520_964);
    let (sd21, _) = build_unet("stable-diffusion-2-1");
    assert_eq!(sd21.parameters, 865_910_724);
    assert_eq!(sd21.context_dim, Some(1024));
}

#[test]
fn sdxl_vae_encoder_and_text_encoders_build_as_published() {
    let weights = Weights::shapes_only(&Device::Cpu);
    let vae = VaeEncoder::with_weights(
        &published("stable-diffusion-xl-base-1.0/vae/config.json"),
        &weights,
    )
    .unwrap();
    assert_same(
        "sdxl vae",
        &weights.requested_shapes(),
        &manifest(&published("stable-diffusion-xl-base-1.0/vae/shapes.json")),
    );
    assert_eq!(vae.config.scaling_factor, 0.13025);
    let mut widths = vec![];
    for folder in ["text_encoder", "text_encoder_2"] {
        let weights = Weights::shapes_only(&Device::Cpu);
        let dir = published("stable-diffusion-xl-base-1.0").join(folder);
        let encoder = ClipTextEncoder::with_weights(&dir.join("config.json"), &weights).unwrap();
        let theirs: BTreeMap<String, Vec<usize>> = manifest(&dir.join("shapes.json"))
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("text_model.").unwrap_or(&k).to_string(), v))
            .collect();
        assert_same(folder, &weights.requested_shapes(), &theirs);
        widths.push((encoder.hidden_size(), encoder.config().projection_dim));
    }
    // The penultimate states join to SDXL's 2048-wide context; the second projects to 1280.
    assert_eq!(widths, [(768, None), (1280, Some(1280))]);
}

#[test]
fn dinov2_published_models_build_as_transformers_does() {
    for (name, layers, width, parameters) in [
        ("dinov2-small", 12, 384, 22_056_576),
        ("dinov2-base", 12, 768, 86_580_480),
        ("dinov2-large", 24, 1024, 304_368_640),
        ("dinov2-giant", 40, 1536, 1_136_480_768),
        ("dinov2-with-registers-base", 12, 768, 86_583_552),
    ] {
        let weights = Weights::shapes_only(&Device::Cpu);
        let dino = Dinov2::with_weights(&published(name).join("config.json"), &weights)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same(
            name,
            &weights.requested_shapes(),
            &manifest(&published(name).join("shapes.json")),
        );
        assert_eq!(dino.parameters, parameters, "{name}");
        assert_eq!(
            dino.taps().len(),
            layers + 2,
            "{name}: embeddings, each layer, layernorm"
        );
        assert!(dino
            .taps()
            .iter()
            .all(|t| t.channels == width && t.stride == 14));
        assert_eq!(dino.native_side(), 518);
    }
}
