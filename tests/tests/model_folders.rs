//! `--model` accepts a pipeline folder, a component folder and a Hugging Face cache folder.

use std::fs;

use candle_core::Device;
use diffscope_engine::model::pipeline::DiffusionModel;
use diffscope_engine::model::repo::resolve;
use diffscope_tests::{copy_dir, fixtures};

#[test]
fn pipeline_and_component_folders() {
    let sd1 = fixtures().join("models/sd1_tiny");
    let whole = resolve(sd1.to_str().unwrap()).unwrap();
    let unet_only = resolve(sd1.join("unet").to_str().unwrap()).unwrap();
    assert_eq!(
        whole, unet_only,
        "a unet/ folder finds its sibling components"
    );
    assert!(whole.vae.is_some() && whole.text_encoder.is_some() && whole.tokenizer.is_some());

    // A lone UNet2DModel folder: no scheduler beside it, DDPM's default schedule.
    let legacy = DiffusionModel::load(
        fixtures()
            .join("models/ddpm_tiny_legacy/unet")
            .to_str()
            .unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    assert!(legacy.folders.scheduler_config.is_none());
    let summary = legacy.summary();
    assert_eq!(summary.architecture, "UNet2DModel (pixel space)");
    assert_eq!(summary.timesteps, 1000);
    assert!((legacy.schedule.alphas_cumprod[0] - (1.0 - 1e-4)).abs() < 1e-7);
}

#[test]
fn hugging_face_cache_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--someone--tiny-sd");
    copy_dir(
        &fixtures().join("models/sd1_tiny"),
        &repo.join("snapshots/0123abcd"),
    );
    let found = resolve(repo.to_str().unwrap()).unwrap();
    assert_eq!(
        found.root,
        repo.join("snapshots/0123abcd"),
        "the only snapshot"
    );

    copy_dir(
        &fixtures().join("models/sd1_tiny"),
        &repo.join("snapshots/fedcba98"),
    );
    let msg = resolve(repo.to_str().unwrap()).unwrap_err().to_string();
    assert!(msg.contains("several snapshots"), "{msg}");
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "fedcba98\n").unwrap();
    assert_eq!(
        resolve(repo.to_str().unwrap()).unwrap().root,
        repo.join("snapshots/fedcba98"),
        "refs/main wins"
    );

    let model = DiffusionModel::load(repo.to_str().unwrap(), &Device::Cpu).unwrap();
    let summary = model.summary();
    assert!(summary.conditional && summary.latent);
    assert_eq!(summary.input_stride, 4);
}
