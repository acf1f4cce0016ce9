//! Bad input gets an error naming the file and the problem, never a panic.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use diffscope_engine::features::extract::{extract_image, ExtractSettings};
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_tests::{copy_dir, fixtures};

/// A private copy of a fixture model to break.
fn model_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    copy_dir(&fixtures().join("models").join(name), &dir);
    (tmp, dir)
}

fn load_error(dir: &Path) -> String {
    match DiffusionModel::load(dir.to_str().unwrap(), &Device::Cpu) {
        Ok(_) => panic!("{} loaded, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn settings(t: usize, taps: &[&str]) -> ExtractSettings {
    ExtractSettings {
        t,
        taps: taps.iter().map(|s| s.to_string()).collect(),
        noise: NoiseSource::Seeded {
            seed: 0,
            ensemble: 1,
        },
        prompt: PromptSource::default(),
        size: None,
        time_ids: None,
    }
}

fn extract_error(model: &str, image: &Path, s: &ExtractSettings) -> String {
    let model = DiffusionModel::load(
        fixtures().join("models").join(model).to_str().unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    match extract_image(&model, image, s, None, &mut |_, _| {}) {
        Ok(_) => panic!("extraction succeeded, expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_folder_that_is_not_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    let msg = load_error(tmp.path());
    assert!(
        msg.contains(&tmp.path().display().to_string()) && msg.contains("not a diffusers model"),
        "{msg}"
    );
    let msg = load_error(&tmp.path().join("missing"));
    assert!(msg.contains("no such file"), "{msg}");
}

#[test]
fn missing_and_truncated_weights() {
    let (_tmp, dir) = model_copy("ddpm_tiny");
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("diffusion_pytorch_model.safetensors") && msg.contains("truncated or corrupt"),
        "{msg}"
    );
    fs::remove_file(&weights).unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("unet") && msg.contains("no weights found"),
        "{msg}"
    );
}

#[test]
fn pickled_checkpoints_are_refused() {
    let (_tmp, dir) = model_copy("ddpm_tiny");
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    fs::rename(&weights, dir.join("unet/diffusion_pytorch_model.bin")).unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("diffusion_pytorch_model.bin") && msg.contains("convert it to .safetensors"),
        "{msg}"
    );
    let ckpt = dir.join("model.ckpt");
    fs::write(&ckpt, b"not really").unwrap();
    let msg = load_error(&ckpt);
    assert!(
        msg.contains("model.ckpt") && msg.contains("safetensors"),
        "{msg}"
    );
}

#[test]
fn a_weight_with_the_wrong_shape() {
    let (_tmp, dir) = model_copy("ddpm_tiny");
    edit_json(&dir.join("unet/config.json"), |c| {
        c["block_out_channels"] = serde_json::json!([4, 8, 32])
    });
    let msg = load_error(&dir);
    assert!(
        msg.contains("diffusion_pytorch_model.safetensors")
            && msg.contains("has shape")
            && msg.contains("config implies"),
        "{msg}"
    );
}

#[test]
fn unknown_config_values_and_missing_keys() {
    let (_tmp, dir) = model_copy("sd1_tiny");
    edit_json(&dir.join("unet/config.json"), |c| {
        c["down_block_types"][2] = "SimpleCrossAttnDownBlock2D".into()
    });
    let msg = load_error(&dir);
    assert!(
        msg.contains("config.json")
            && msg.contains("SimpleCrossAttnDownBlock2D")
            && msg.contains("not supported"),
        "{msg}"
    );

    let (_tmp, dir) = model_copy("sd1_tiny");
    edit_json(&dir.join("unet/config.json"), |c| {
        c.as_object_mut().unwrap().remove("block_out_channels");
    });
    let msg = load_error(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("block_out_channels"),
        "{msg}"
    );

    let (_tmp, dir) = model_copy("sd1_tiny");
    edit_json(&dir.join("scheduler/scheduler_config.json"), |c| {
        c["beta_schedule"] = "sigmoid".into()
    });
    let msg = load_error(&dir);
    assert!(
        msg.contains("scheduler_config.json") && msg.contains("sigmoid"),
        "{msg}"
    );
}

#[test]
fn unreadable_and_non_image_files() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("image.png");
    fs::write(&text, "this is not a png").unwrap();
    let msg = extract_error("ddpm_tiny", &text, &settings(10, &["mid_block"]));
    assert!(
        msg.contains("image.png") && msg.contains("not a readable image"),
        "{msg}"
    );
    let missing = tmp.path().join("gone.png");
    let msg = extract_error("ddpm_tiny", &missing, &settings(10, &["mid_block"]));
    assert!(
        msg.contains("gone.png") && msg.contains("cannot open"),
        "{msg}"
    );
}

#[test]
fn unknown_taps_list_the_valid_ones() {
    let png = fixtures().join("images/square_32.png");
    let msg = extract_error("ddpm_tiny", &png, &settings(10, &["up_blocks.7"]));
    assert!(
        msg.contains("up_blocks.7")
            && msg.contains("mid_block")
            && msg.contains("up_blocks.1.resnets.2"),
        "{msg}"
    );
}

#[test]
fn t_outside_the_schedule() {
    let png = fixtures().join("images/square_32.png");
    let msg = extract_error("ddpm_tiny", &png, &settings(1000, &["mid_block"]));
    assert!(msg.contains("1000") && msg.contains("0..=999"), "{msg}");
}

#[test]
fn noise_of_the_wrong_shape() {
    let png = fixtures().join("images/square_32.png");
    let mut s = settings(10, &["mid_block"]);
    s.noise = NoiseSource::Given(
        Tensor::zeros((2, 3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let msg = extract_error("ddpm_tiny", &png, &s);
    assert!(
        msg.contains("[2, 3, 16, 16]") && msg.contains("[K,3,32,32]"),
        "{msg}"
    );
}

#[test]
fn sizes_the_model_cannot_take() {
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join("odd.png");
    image::RgbImage::new(30, 30).save(&odd).unwrap();
    let msg = extract_error("ddpm_tiny", &odd, &settings(10, &["mid_block"]));
    assert!(
        msg.contains("odd.png") && msg.contains("multiples of 4"),
        "{msg}"
    );
    let msg = extract_error("sd1_tiny", &odd, &settings(10, &["mid_block"]));
    assert!(msg.contains("odd.png") && msg.contains("--size"), "{msg}");
}

#[test]
fn prompt_embeddings_of_the_wrong_width() {
    let png = fixtures().join("images/sd_square_32.png");
    let mut s = settings(10, &["mid_block"]);
    s.prompt = PromptSource::Embeddings {
        context: Tensor::zeros((1, 77, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
        pooled: None,
    };
    let msg = extract_error("sd1_tiny", &png, &s);
    assert!(msg.contains("[1, 77, 5]") && msg.contains("32"), "{msg}");
}
