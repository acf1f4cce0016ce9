//! The CLIP tokenizer and text encoder against transformers' outputs on the same files
//! (tests/fixtures/clip/, made by tests/fixtures/scripts/make_clip_fixtures.py, and the SD refs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use diffscope_engine::model::clip::{ClipTextEncoder, ClipTokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn load_safetensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (fixtures missing? see tests/fixtures/README.md)",
            path.display()
        )
    })
}

fn ids_of(tensor: &Tensor) -> Vec<u32> {
    let ids: Vec<i64> = tensor
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("ids tensor");
    ids.into_iter()
        .map(|id| u32::try_from(id).expect("id fits u32"))
        .collect()
}

/// Fails unless `actual` is within 1e-4 * max|expected| of `expected` everywhere.
fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let actual: Vec<f32> = actual
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("f32 tensor");
    let expected: Vec<f32> = expected
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("f32 tensor");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = actual
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    assert!(
        max_err <= 1e-4 * scale,
        "{what}: max abs error {max_err} > 1e-4 * {scale}"
    );
}

#[test]
fn tokenizer_ids_match_transformers_on_every_case() {
    let path = fixtures().join("clip/tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer_cases.json");
    let json: Value = serde_json::from_str(&text).expect("valid JSON");
    let tokenizers = json["tokenizers"].as_object().expect("tokenizers object");
    assert_eq!(tokenizers.len(), 4);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, entry) in tokenizers {
        let dir = fixtures().join(entry["dir"].as_str().expect("dir"));
        let tokenizer = ClipTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tokenizer.max_length(), 77);
        for case in entry["cases"].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
            let actual = tokenizer
                .encode(text)
                .unwrap_or_else(|e| panic!("{name} {text:?}: {e}"));
            if actual != expected {
                failures.push(format!(
                    "{name} {text:?}:\n  expected {expected:?}\n  got      {actual:?}"
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 4 * 40, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn special_ids_come_from_the_files() {
    let sd1 = ClipTokenizer::from_dir(&fixtures().join("models/sd1_tiny/tokenizer"))
        .expect("sd1 tokenizer");
    assert_eq!(
        (sd1.bos_id(), sd1.eos_id(), sd1.pad_id()),
        (2512, 2513, 2513)
    );
    let sd2 = ClipTokenizer::from_dir(&fixtures().join("models/sd2_tiny/tokenizer"))
        .expect("sd2 tokenizer");
    assert_eq!((sd2.bos_id(), sd2.eos_id(), sd2.pad_id()), (2512, 2513, 0));
    let full =
        ClipTokenizer::from_dir(&fixtures().join("clip/full_vocab_subset")).expect("full vocab");
    assert_eq!(
        (full.bos_id(), full.eos_id(), full.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(full.token_id("cat</w>"), Some(2368));
}

#[test]
fn text_encoder_matches_transformers() {
    let cases = load_safetensors(&fixtures().join("clip/text_encoder_cases.safetensors"));
    for model in ["sd1_tiny", "sd2_tiny"] {
        let root = fixtures().join("models").join(model);
        let tokenizer = ClipTokenizer::from_dir(&root.join("tokenizer")).expect("tokenizer");
        let encoder =
            ClipTextEncoder::load(&root.join("text_encoder"), &Device::Cpu).expect("text encoder");
        let mut seen = 0;
        for i in 0.. {
            let (Some(ids), Some(hidden)) = (
                cases.get(&format!("{model}.{i}.ids")),
                cases.get(&format!("{model}.{i}.hidden")),
            ) else {
                break;
            };
            let ids = ids_of(ids);
            let actual = encoder.forward(&ids).expect("forward");
            assert_eq!(actual.dims(), &[1, 77, encoder.hidden_size()]);
            assert_close(&actual, hidden, &format!("{model} prompt {i}"));
            seen += 1;
        }
        assert_eq!(seen, 4, "{model}: cases in text_encoder_cases.safetensors");
        // The prompts' ids are in the tokenizer cases; here only check the encoder saw real prompts.
        assert_ne!(
            tokenizer.encode("a photo of a cat").expect("encode"),
            tokenizer.encode("").expect("encode")
        );
    }
}

/// The SD reference files (make_model_fixtures.py): the pipeline's own prompt embeddings.
#[test]
fn prompt_embeddings_match_the_sd_references() {
    for model in ["sd1_tiny", "sd2_tiny"] {
        let root = fixtures().join("models").join(model);
        let ref_path = fixtures().join(format!("refs/{model}__sd_square_32.safetensors"));
        let refs = load_safetensors(&ref_path);
        let prompt = safetensors_metadata(&ref_path, "prompt");
        let tokenizer = ClipTokenizer::from_dir(&root.join("tokenizer")).expect("tokenizer");
        let encoder =
            ClipTextEncoder::load(&root.join("text_encoder"), &Device::Cpu).expect("text encoder");
        for (text, key) in [("", "empty_prompt"), (prompt.as_str(), "prompt")] {
            let ids = tokenizer.encode(text).expect("encode");
            assert_eq!(
                ids,
                ids_of(&refs[&format!("{key}_ids")]),
                "{model} {key} ids"
            );
            let embeds = encoder.forward(&ids).expect("forward");
            assert_close(
                &embeds,
                &refs[&format!("{key}_embeds")],
                &format!("{model} {key}_embeds"),
            );
        }
    }
}

fn safetensors_metadata(path: &Path, key: &str) -> String {
    let bytes = std::fs::read(path).expect("refs file");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    meta.metadata()
        .as_ref()
        .and_then(|m| m.get(key))
        .cloned()
        .unwrap_or_else(|| panic!("{key} in metadata"))
}

/// A copy of sd1_tiny's text encoder in a temp folder, its tensors renamed/edited by `edit`.
fn edited_text_encoder(
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut Value),
) -> tempfile::TempDir {
    let source = fixtures().join("models/sd1_tiny/text_encoder");
    let mut tensors = load_safetensors(&source.join("model.safetensors"));
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).expect("config"))
            .expect("json");
    edit(&mut tensors, &mut config);
    let dir = tempfile::tempdir().expect("temp dir");
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).expect("save");
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write config");
    dir
}

fn sd1_reference_output() -> (Vec<u32>, Tensor) {
    let cases = load_safetensors(&fixtures().join("clip/text_encoder_cases.safetensors"));
    (
        ids_of(&cases["sd1_tiny.2.ids"]),
        cases["sd1_tiny.2.hidden"].clone(),
    )
}

#[test]
fn transformers_5_names_without_text_model_prefix_and_f16_weights_load() {
    // The fixtures carry the `text_model.` prefix as SD repositories do; transformers 5.x saves without it.
    let dir = edited_text_encoder(|tensors, _| {
        let renamed: HashMap<String, Tensor> = tensors
            .drain()
            .map(|(k, v)| (k.strip_prefix("text_model.").unwrap_or(&k).to_string(), v))
            .collect();
        *tensors = renamed;
    });
    let encoder = ClipTextEncoder::load(dir.path(), &Device::Cpu).expect("unprefixed checkpoint");
    let (ids, expected) = sd1_reference_output();
    assert_close(
        &encoder.forward(&ids).expect("forward"),
        &expected,
        "no text_model. prefix",
    );

    // Half-precision weights are widened to f32: close to the f32 result at f16 precision.
    let dir = edited_text_encoder(|tensors, _| {
        for tensor in tensors.values_mut() {
            *tensor = tensor.to_dtype(DType::F16).expect("f16");
        }
    });
    let encoder = ClipTextEncoder::load(dir.path(), &Device::Cpu).expect("f16 checkpoint");
    let actual = encoder.forward(&ids).expect("forward");
    let diff = (actual - &expected)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    assert!(diff < 0.05, "f16 weights: max error {diff}");
}

#[test]
fn sharded_checkpoint_loads() {
    let dir = edited_text_encoder(|_, _| {});
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("model-00001-of-00001.safetensors"),
    )
    .expect("rename");
    let tensors = load_safetensors(&dir.path().join("model-00001-of-00001.safetensors"));
    let weight_map: serde_json::Map<String, Value> = tensors
        .keys()
        .map(|k| (k.clone(), Value::from("model-00001-of-00001.safetensors")))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("index");
    let encoder = ClipTextEncoder::load(dir.path(), &Device::Cpu).expect("sharded checkpoint");
    let (ids, expected) = sd1_reference_output();
    assert_close(
        &encoder.forward(&ids).expect("forward"),
        &expected,
        "sharded",
    );
}

fn load_error(dir: &Path) -> String {
    match ClipTextEncoder::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn text_encoder_errors_name_the_file_and_the_key() {
    let dir = edited_text_encoder(|_, config| {
        config
            .as_object_mut()
            .expect("object")
            .remove("layer_norm_eps");
    });
    let message = load_error(dir.path());
    assert!(
        message.contains("config.json") && message.contains("layer_norm_eps"),
        "{message}"
    );

    let dir = edited_text_encoder(|_, config| config["hidden_act"] = Value::from("relu6"));
    let message = load_error(dir.path());
    assert!(
        message.contains("config.json")
            && message.contains("hidden_act")
            && message.contains("relu6"),
        "{message}"
    );

    let dir = edited_text_encoder(|tensors, _| {
        tensors.remove("text_model.encoder.layers.1.mlp.fc2.bias");
    });
    let message = load_error(dir.path());
    assert!(
        message.contains("model.safetensors") && message.contains("encoder.layers.1.mlp.fc2.bias"),
        "{message}"
    );

    let dir = edited_text_encoder(|_, config| config["intermediate_size"] = Value::from(65));
    let message = load_error(dir.path());
    assert!(
        message.contains("encoder.layers.0.mlp.fc1.weight") && message.contains("[65, "),
        "{message}"
    );

    let dir = edited_text_encoder(|_, _| {});
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("remove");
    std::fs::write(dir.path().join("pytorch_model.bin"), b"pickle").expect("write");
    let message = load_error(dir.path());
    assert!(
        message.contains("pytorch_model.bin")
            && message.contains("pickle")
            && message.contains("save_pretrained(dir, safe_serialization=True)"),
        "{message}"
    );

    let encoder = ClipTextEncoder::load(
        &fixtures().join("models/sd1_tiny/text_encoder"),
        &Device::Cpu,
    )
    .expect("load");
    let too_long = vec![0u32; 78];
    assert!(encoder.forward(&too_long).is_err());
    let message = encoder
        .forward(&[2512, 999_999])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("999999"), "{message}");
}

#[test]
fn tokenizer_errors_name_the_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let message = ClipTokenizer::from_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("vocab.json") && message.contains(&dir.path().display().to_string()),
        "{message}"
    );

    let source = fixtures().join("models/sd1_tiny/tokenizer");
    for file in [
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(source.join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\nc a t\n").expect("write");
    let message = ClipTokenizer::from_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("merges.txt") && message.contains("line 2"),
        "{message}"
    );

    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\nq zzz\n").expect("write");
    let message = ClipTokenizer::from_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("zzz"), "{message}");
}
