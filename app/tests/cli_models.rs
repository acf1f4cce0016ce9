//! The models and protocols of issue 14 from the command line: SDXL's embeddings files and time
//! ids, DINOv2 as a feature source, a UNet from elsewhere (`--unet`), CleanDIFT's recipe, SD-DINO
//! fusion, PCK as papers count it, and the errors each of them gives on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use diffscope_engine::io::npy::{write_npy, NpyArray, NpyData};
use diffscope_engine::model::conditioning::Conditioning;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_engine::model::taps::TapRecorder;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn fixture(path: &str) -> String {
    fixtures().join(path).display().to_string()
}

fn load(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn save_npy(t: &Tensor, path: &Path) {
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    write_npy(
        path,
        &NpyArray::new(t.dims().to_vec(), NpyData::F32(values)).unwrap(),
    )
    .unwrap();
}

fn diffscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffscope"))
        .args(args)
        .output()
        .expect("run diffscope")
}

fn ok(args: &[&str]) -> String {
    let out = diffscope(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn error(args: &[&str]) -> String {
    let out = diffscope(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn metadata(path: &Path, key: &str) -> String {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().as_ref().unwrap()[key].clone()
}

#[test]
fn sdxl_from_embeddings_files_with_time_ids_matches_diffusers() {
    let refs = load(&fixtures().join("refs/sdxl_tiny__sd_64x48.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    let (noise, embeds, pooled) = (
        tmp.path().join("noise.npy"),
        tmp.path().join("embeds.npy"),
        tmp.path().join("pooled.npy"),
    );
    save_npy(&refs["t261.noise"], &noise);
    save_npy(&refs["empty_prompt_embeds"], &embeds);
    save_npy(&refs["empty_prompt_pooled"], &pooled);
    let out = tmp.path().join("f.safetensors");
    let common = [
        "extract",
        "--model",
        &fixture("models/sdxl_tiny"),
        "--image",
        &fixture("images/sd_64x48.png"),
        "--t",
        "261",
        "--blocks",
        "mid_block,up_blocks.0",
        "--noise",
        noise.to_str().unwrap(),
        "--prompt-embeds",
        embeds.to_str().unwrap(),
    ];
    let mut args = common.to_vec();
    args.extend([
        "--pooled-embeds",
        pooled.to_str().unwrap(),
        "--time-ids",
        "1024,768,16,32,1024,1024",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&args);
    let ours = load(&out);
    for tap in ["mid_block", "up_blocks.0"] {
        let err = max_rel_err(&ours[tap], &refs[&format!("t261_time_ids.{tap}")]);
        assert!(err < 1e-4, "{tap}: {err:.2e}");
    }
    assert_eq!(metadata(&out, "time_ids"), "1024,768,16,32,1024,1024");
    // SDXL needs the pooled embedding beside the context.
    let mut args = common.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    let msg = error(&args);
    assert!(
        msg.contains("--pooled-embeds") && msg.contains("[1,12]"),
        "{msg}"
    );
    let mut args = common.to_vec();
    args.extend([
        "--time-ids",
        "1,2,3",
        "--pooled-embeds",
        pooled.to_str().unwrap(),
        "--out",
        "x",
    ]);
    assert!(error(&args).contains("six numbers"));
}

#[test]
fn dinov2_is_a_feature_source_with_its_tokens_and_a_patch_size_check() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d.safetensors");
    ok(&[
        "extract",
        "--model",
        &fixture("models/dinov2_reg_tiny"),
        "--image",
        &fixture("images/dino_70x42.png"),
        "--blocks",
        "layernorm,encoder.layer.0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let ours = load(&out);
    let refs = load(&fixtures().join("refs/dinov2_reg_tiny__dino_70x42.safetensors"));
    for name in [
        "layernorm",
        "layernorm.cls",
        "layernorm.registers",
        "encoder.layer.0",
    ] {
        assert!(max_rel_err(&ours[name], &refs[name]) < 1e-4, "{name}");
    }
    assert_eq!(metadata(&out, "t"), "none");
    // Resized when asked, refused otherwise.
    let msg = error(&[
        "extract",
        "--model",
        &fixture("models/dinov2_tiny"),
        "--image",
        &fixture("images/sd_64x48.png"),
        "--blocks",
        "layernorm",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        msg.contains("64x48") && msg.contains("patch size 14") && msg.contains("--size"),
        "{msg}"
    );
    ok(&[
        "extract",
        "--model",
        &fixture("models/dinov2_tiny"),
        "--image",
        &fixture("images/sd_64x48.png"),
        "--blocks",
        "layernorm",
        "--size",
        "56x42",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(load(&out)["layernorm"].dims(), [16, 3, 4]);
}

#[test]
fn a_dinov2_folder_where_a_diffusion_model_is_needed_is_a_clear_error() {
    let dino = fixture("models/dinov2_tiny");
    let msg = error(&[
        "sample", "--model", &dino, "--count", "1", "--steps", "2", "--out", "x.png",
    ]);
    assert!(
        msg.contains("DINOv2") && msg.contains("not a diffusion model"),
        "{msg}"
    );
    let msg = error(&[
        "extract",
        "--model",
        &dino,
        "--image",
        &fixture("images/dino_56.png"),
        "--blocks",
        "layernorm",
        "--unet",
        &fixture("models/sd1_tiny/unet"),
        "--out",
        "x.safetensors",
    ]);
    assert!(msg.contains("--unet") && msg.contains("DINOv2"), "{msg}");
    // And the reverse: a pipeline folder handed to the DINOv2 loader.
    let err = diffscope_engine::model::dinov2::Dinov2::load(
        &fixtures().join("models/sd1_tiny"),
        &Device::Cpu,
        candle_core::DType::F32,
    )
    .err()
    .expect("a pipeline is not a DINOv2")
    .to_string();
    assert!(
        err.contains("diffusers pipeline folder, not a DINOv2"),
        "{err}"
    );
}

#[test]
fn unet_from_a_single_state_dict_replaces_the_pipelines_and_a_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cleandift_style_unet.safetensors");
    std::fs::copy(
        fixtures().join("models/sd1_tiny/unet/diffusion_pytorch_model.safetensors"),
        &file,
    )
    .unwrap();
    let run = |unet: Option<&Path>, out: &Path| {
        let mut args = vec![
            "extract".to_string(),
            "--model".into(),
            fixture("models/sd1_tiny"),
            "--image".into(),
            fixture("images/sd_64x48.png"),
            "--t".into(),
            "261".into(),
            "--blocks".into(),
            "up_blocks.1".into(),
            "--ensemble".into(),
            "1".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(u) = unet {
            args.extend(["--unet".into(), u.display().to_string()]);
        }
        diffscope(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (own, replaced) = (
        tmp.path().join("own.safetensors"),
        tmp.path().join("replaced.safetensors"),
    );
    assert!(run(None, &own).status.success());
    let out = run(Some(&file), &replaced);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        max_rel_err(&load(&replaced)["up_blocks.1"], &load(&own)["up_blocks.1"]),
        0.0
    );
    // SD 2's UNet weights in SD 1's pipeline: named, with what does not fit.
    let wrong = tmp.path().join("sd2_unet.safetensors");
    std::fs::copy(
        fixtures().join("models/sd2_tiny/unet/diffusion_pytorch_model.safetensors"),
        &wrong,
    )
    .unwrap();
    let out = run(Some(&wrong), &replaced);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        msg.contains("sd2_unet.safetensors") && msg.contains("does not fit the pipeline's UNet"),
        "{msg}"
    );
    let out = run(Some(&tmp.path().join("missing.safetensors")), &replaced);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such UNet file"));
}

#[test]
fn cleandift_recipe_is_one_noise_free_pass_at_t_261() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c.safetensors");
    ok(&[
        "extract",
        "--model",
        &fixture("models/sd2_tiny"),
        "--image",
        &fixture("images/sd_64x48.png"),
        "--recipe",
        "cleandift",
        "--blocks",
        "up_blocks.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(metadata(&out, "t"), "261");
    assert_eq!(metadata(&out, "ensemble"), "1");
    assert!(metadata(&out, "noise").contains("CleanDIFT"));
    // The clean latent itself through the UNet at t = 261, with the empty prompt.
    let model = DiffusionModel::load(&fixture("models/sd2_tiny"), &Device::Cpu).unwrap();
    let ours = load(&out);
    let z = ours["latents"].unsqueeze(0).unwrap();
    let cond: Option<Conditioning> = model.condition(&PromptSource::default()).unwrap();
    let mut rec = TapRecorder::new(&["up_blocks.1".to_string()], None);
    model
        .unet
        .forward_taps(&z, 261.0, cond.as_ref(), &mut rec)
        .unwrap();
    let direct = rec
        .into_captured()
        .remove("up_blocks.1")
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert!(max_rel_err(&ours["up_blocks.1"], &direct) < 1e-6);
}

#[test]
fn fusion_with_a_second_source_and_pck_as_papers_count_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corr");
    ok(&[
        "correspond",
        "--model",
        &fixture("models/sd1_tiny"),
        "--source",
        &fixture("images/sd_64x48.png"),
        "--targets",
        &fixture("images/sd_square_32.png"),
        "--points",
        "10,10",
        "--t",
        "261",
        "--blocks",
        "up_blocks.0,up_blocks.1",
        "--ensemble",
        "1",
        "--pca-dims",
        "4,4",
        "--fuse-model",
        &fixture("models/dinov2_tiny"),
        "--fuse-size",
        "56x56",
        "--fuse-weight",
        "0.3",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let matches = std::fs::read_to_string(dir.join("matches.json")).unwrap();
    assert!(
        matches.contains("fused with") && matches.contains("weight 0.3"),
        "{matches}"
    );
    // PCK on a small synthetic set: DINOv2 alone, DIFT's matching, the image as threshold base.
    let data = tmp.path().join("synth");
    ok(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--count",
        "8",
        "--seed",
        "2",
    ]);
    let out = tmp.path().join("pck");
    let table = ok(&[
        "eval",
        "pck",
        "--model",
        &fixture("models/dinov2_tiny"),
        "--data",
        data.to_str().unwrap(),
        "--blocks",
        "encoder.layer.1",
        "--size",
        "56x56",
        "--match",
        "dift",
        "--threshold",
        "img",
        "--alpha",
        "0.1,0.2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(table.contains("| model | encoder.layer.1 |"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pck.json")).unwrap()).unwrap();
    let protocol = json["protocol"].as_str().unwrap();
    assert!(
        protocol.contains("eval_spair.py") && protocol.contains("alpha_img"),
        "{protocol}"
    );
    let msg = error(&[
        "eval",
        "pck",
        "--model",
        &fixture("models/dinov2_tiny"),
        "--data",
        data.to_str().unwrap(),
        "--blocks",
        "encoder.layer.1",
        "--prompt-template",
        "a photo",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(msg.contains("{category}"), "{msg}");
}

/// A diffusion model's DIFT recipe needs a timestep: without `--t` it is refused before any work
/// (the parser cannot require it, since DINOv2 and CleanDIFT's recipe need none).
#[test]
fn a_diffusion_model_without_a_timestep_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.safetensors");
    let err = error(&[
        "extract",
        "--model",
        &fixture("models/sd1_tiny"),
        "--image",
        &fixture("images/sd_64x48.png"),
        "--blocks",
        "up_blocks.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("--t is required"), "{err}");
    assert!(!out.exists());
}
