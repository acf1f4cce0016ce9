//! `diffscope extract` end to end: flags, files in, files out, read back and checked against diffusers.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use diffscope_engine::io::npy::{read_npy, write_npy, NpyArray, NpyData};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn reference(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("refs").join(name), &Device::Cpu).unwrap()
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

#[test]
fn extract_with_noise_and_prompt_embedding_files_matches_diffusers() {
    let refs = reference("sd1_tiny__sd_64x48.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let noise = tmp.path().join("noise.npy");
    let embeds = tmp.path().join("embeds.npy");
    save_npy(&refs["t261.noise"], &noise);
    save_npy(&refs["prompt_embeds"], &embeds);
    let out = tmp.path().join("features.safetensors");
    let model = fixtures().join("models/sd1_tiny");
    let image = fixtures().join("images/sd_64x48.png");
    let run = diffscope(&[
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--t",
        "261",
        "--blocks",
        "up_blocks.1,mid_block",
        "--noise",
        noise.to_str().unwrap(),
        "--prompt-embeds",
        embeds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let bytes = std::fs::read(&out).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["t"], "261");
    assert_eq!(meta["ensemble"], "2");
    assert_eq!(meta["taps"], "mid_block,up_blocks.1");
    let got = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let mut names: Vec<_> = got.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["latents", "mid_block", "up_blocks.1"]);
    for tap in ["up_blocks.1", "mid_block"] {
        let err = max_rel_err(&got[tap], &refs[&format!("t261_prompt.{tap}")]);
        assert!(err <= 1e-4, "{tap}: {err:.2e}");
    }
    assert!(max_rel_err(&got["latents"], &refs["latents"].squeeze(0).unwrap()) <= 1e-4);
}

#[test]
fn npy_format_writes_the_same_tensors_with_meta_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("models/ddpm_tiny");
    let image = fixtures().join("images/wide_48x32.png");
    let st = tmp.path().join("f.safetensors");
    let dir = tmp.path().join("npy");
    let common = [
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--t",
        "50",
        "--blocks",
        "all",
        "--ensemble",
        "2",
        "--seed",
        "3",
    ];
    let a = diffscope(&[&common[..], &["--out", st.to_str().unwrap()]].concat());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = diffscope(
        &[
            &common[..],
            &["--out", dir.to_str().unwrap(), "--format", "npy"],
        ]
        .concat(),
    );
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));

    let st = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    assert_eq!(st.len(), 7 + 1, "3 down blocks, mid, 3 up blocks, latents");
    for (name, tensor) in &st {
        let array = read_npy(dir.join(format!("{name}.npy"))).unwrap();
        assert_eq!(array.shape, tensor.dims());
        assert_eq!(
            array.to_f32().unwrap(),
            tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}"
        );
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["settings"]["seed"], "3");
    assert_eq!(
        meta["tensors"]["up_blocks.1"]["shape"],
        serde_json::json!([8, 32, 48])
    );
}

#[test]
fn errors_exit_nonzero_with_a_message() {
    let image = fixtures().join("images/square_32.png");
    let run = diffscope(&[
        "extract",
        "--model",
        "/nonexistent/model",
        "--image",
        image.to_str().unwrap(),
        "--t",
        "10",
        "--blocks",
        "mid_block",
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("/nonexistent/model"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let tmp = tempfile::tempdir().unwrap();
    let noise = tmp.path().join("noise.npy");
    save_npy(
        &Tensor::zeros((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
        &noise,
    );
    let model = fixtures().join("models/ddpm_tiny");
    let run = diffscope(&[
        "extract",
        "--model",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--t",
        "10",
        "--blocks",
        "mid_block",
        "--noise",
        noise.to_str().unwrap(),
        "--out",
        "/tmp/x.safetensors",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("noise has shape [2, 3, 8, 8]"),
        "{stderr}"
    );
}
