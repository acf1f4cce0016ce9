//! `diffscope attention` end to end: the files it writes, and the errors it gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffscope"))
        .arg("attention")
        .args(args)
        .output()
        .expect("run diffscope")
}

fn succeed(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "diffscope attention {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fail(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "diffscope attention {args:?} succeeded"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A file's tensors by name, each as (shape, values).
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Every tensor of a file, and its metadata.
fn read(path: &Path) -> (Tensors, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = meta.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect();
    (tensors, metadata)
}

fn sd1_args<'a>(image: &'a str, model: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--model",
        model,
        "--image",
        image,
        "--t",
        "261",
        "--ensemble",
        "2",
        "--prompt",
        "a photo of a cat",
        "--out",
        out,
    ]
}

#[test]
fn words_and_a_point_of_a_text_conditioned_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo().join("tests/fixtures/models/sd1_tiny");
    let image = repo().join("tests/fixtures/images/sd_64x48.png");
    let out = tmp.path().join("out");
    let mut args = sd1_args(
        image.to_str().unwrap(),
        model.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    args.extend(["--layers", "up_blocks.2,mid_block", "--point", "41,17"]);
    let stdout = succeed(&args);
    assert!(stdout.contains("wrote"), "{stdout}");

    // One tensor per module under its diffusers path: the point's row for self-attention, every
    // query for cross-attention; the rows are probabilities.
    let (attention, meta) = read(&out.join("attention.safetensors"));
    assert_eq!(attention.len(), 8, "{:?}", attention.keys());
    let row = &attention["up_blocks.2.attentions.1.transformer_blocks.0.attn1"];
    assert_eq!(row.0, vec![2, 192]);
    let cross = &attention["mid_block.attentions.0.transformer_blocks.0.attn2"];
    assert_eq!(cross.0, vec![2, 12, 77]);
    for (shape, values) in [row, cross] {
        let keys = *shape.last().unwrap();
        for r in values.chunks_exact(keys) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
    assert_eq!(meta["t"], "261");
    assert_eq!(meta["point"], "41,17");
    assert!(meta["tokens"].starts_with(r#"["<|startoftext|>","a</w>","photo</w>""#));

    // The aggregated maps of the words and the point at image resolution, in [0, 1].
    let (maps, meta) = read(&out.join("maps.safetensors"));
    let mut names: Vec<&String> = maps.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["point", "token.1", "token.2", "token.3", "token.4", "token.5"]
    );
    for (shape, values) in maps.values() {
        assert_eq!(shape, &vec![48, 64]);
        let max = values.iter().copied().fold(0.0, f32::max);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)) && max == 1.0);
    }
    assert!(
        maps["token.2"].1 != maps["token.5"].1,
        "photo and cat differ"
    );
    assert_eq!(meta["token.5.label"], "\"cat\" (token 5)");
    assert!(meta["point.description"].starts_with("DAAM: the self-attention row"));
    for png in ["token_02_photo.png", "token_05_cat.png", "point.png"] {
        assert!(out.join(png).is_file(), "{png}");
    }
}

#[test]
fn the_bundled_model_has_self_attention_in_its_mid_block() {
    let tmp = tempfile::tempdir().unwrap();
    let image = repo().join("assets/samples/JPEGImages/bird/syn1000_000001.jpg");
    let out = tmp.path().join("out");
    succeed(&[
        "--image",
        image.to_str().unwrap(),
        "--layers",
        "all",
        "--point",
        "30,20",
        "--t",
        "300",
        "--ensemble",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (attention, _) = read(&out.join("attention.safetensors"));
    assert_eq!(attention["mid_block.attentions.0"].0, vec![4, 256]);
    let (maps, _) = read(&out.join("maps.safetensors"));
    assert_eq!(maps.keys().collect::<Vec<_>>(), ["point"]);
    assert_eq!(maps["point"].0, vec![64, 64]);
}

#[test]
fn modules_without_attention_and_maps_too_large_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo().join("tests/fixtures/models/sd1_tiny");
    let image = repo().join("tests/fixtures/images/sd_64x48.png");
    let out = tmp.path().join("out");
    let base = sd1_args(
        image.to_str().unwrap(),
        model.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    for layer in ["down_blocks.2", "up_blocks.1.resnets.0"] {
        let mut args = base.clone();
        args.extend(["--layers", layer]);
        let e = fail(&args);
        assert!(
            e.contains(&format!("`{layer}` has no attention module"))
                && e.contains("up_blocks.1.attentions.0.transformer_blocks.0.attn1"),
            "{e}"
        );
    }
    // Every self-attention map whole at 1024x1024 (a 256x256 latent) does not fit anywhere.
    let mut args = base.clone();
    args.extend(["--layers", "down_blocks.0", "--size", "1024x1024"]);
    let e = fail(&args);
    assert!(
        e.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1 [2, 65536, 65536]")
            && e.contains("--point"),
        "{e}"
    );
    let mut args = base.clone();
    args.extend(["--layers", "mid_block", "--point", "64,3"]);
    assert!(fail(&args).contains("outside the 64x48 image"));
    let mut args = base;
    args.extend(["--layers", "mid_block", "--tokens", "80"]);
    assert!(fail(&args).contains("token 80"));
    assert!(!out.join("attention.safetensors").exists());
}
