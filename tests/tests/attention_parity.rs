//! Attention maps against diffusers (`fixtures/refs_attention`, written by
//! `scripts/make_attention_fixtures.py` with a custom attention processor): the probabilities of
//! self- and cross-attention modules of the SD1- and SD2-style tiny models and of the
//! `UNet2DModel`'s mid-block attention, whole and as one point's row, within 1e-5 absolute; the
//! prompt's tokens as transformers cuts them; DAAM-style aggregation against numpy.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use diffscope_engine::analysis::aggregate::AggregateGrid;
use diffscope_engine::analysis::recipes::attention::{
    aggregate_attention, AttentionAggregation, AttentionTarget,
};
use diffscope_engine::analysis::{GridSize, ImagePoint, ImageSize};
use diffscope_engine::features::attention::{extract_attention, AttentionMap};
use diffscope_engine::features::extract::ExtractSettings;
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::model::attention_probs::AttentionKind;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_tests::{fixtures, max_abs_diff, Reference};
use serde_json::Value;

/// The bound on the probabilities.
const PROBABILITY_TOLERANCE: f32 = 1e-5;

fn json(reference: &Reference, key: &str) -> Value {
    serde_json::from_str(&reference.metadata[key]).unwrap()
}

fn tensor_of(map: &AttentionMap) -> Tensor {
    Tensor::from_slice(map.probs.as_slice(), map.file_shape(), &Device::Cpu).unwrap()
}

/// A reference map as an [`AttentionMap`], to aggregate it.
fn reference_map(reference: &Reference, name: &str, modules: &Value, row: bool) -> AttentionMap {
    let info = &modules[name];
    let grid = info["grid"].as_array().unwrap();
    let grid = (
        grid[0].as_u64().unwrap() as usize,
        grid[1].as_u64().unwrap() as usize,
    );
    let kind = match info["kind"].as_str().unwrap() {
        "self" => AttentionKind::SelfAttention,
        _ => AttentionKind::CrossAttention,
    };
    let tensor = reference.get(&format!("{}.{name}", if row { "row" } else { "probs" }));
    let dims = tensor.dims();
    AttentionMap {
        module: name.to_string(),
        kind,
        heads: dims[0],
        grid,
        keys: *dims.last().unwrap(),
        row: row.then(|| json(reference, "rows")[name].as_u64().unwrap() as usize),
        probs: Arc::new(tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()),
    }
}

fn check(model_name: &str) {
    let path = fixtures()
        .join("refs_attention")
        .join(format!("{model_name}.safetensors"));
    let reference = Reference::load_file(&path);
    let modules = json(&reference, "modules");
    let model_dir = fixtures().join("models").join(model_name);
    let model = DiffusionModel::load(model_dir.to_str().unwrap(), &Device::Cpu).unwrap();

    // The modules, their kinds and head counts are diffusers'.
    let offered = model.unet.attention_modules();
    let names: Vec<String> = offered.iter().map(|a| a.name.clone()).collect();
    let mut theirs: Vec<&String> = modules.as_object().unwrap().keys().collect();
    theirs.sort();
    let mut ours: Vec<&String> = names.iter().collect();
    ours.sort();
    assert_eq!(ours, theirs, "{model_name}: attention modules");
    for a in &offered {
        assert_eq!(modules[&a.name]["heads"], a.heads, "{}", a.name);
        assert_eq!(modules[&a.name]["kind"], a.kind.name(), "{}", a.name);
    }

    let image = &reference.metadata["image"];
    let png = fixtures().join("images").join(format!("{image}.png"));
    let settings = ExtractSettings {
        t: reference.metadata["t"].parse().unwrap(),
        taps: vec![],
        noise: NoiseSource::Given(reference.get("noise").clone()),
        prompt: PromptSource::Text(reference.metadata["prompt"].clone()),
        size: None,
        time_ids: None,
    };
    let whole = extract_attention(&model, &png, &settings, &names, None, None, &mut |_, _| {})
        .expect("attention maps");
    let by_name: HashMap<&str, &AttentionMap> =
        whole.maps.iter().map(|m| (m.module.as_str(), m)).collect();
    for name in reference.metadata["stored"].split(',') {
        let ours = by_name[name];
        let grid = modules[name]["grid"].clone();
        assert_eq!(
            serde_json::json!([ours.grid.0, ours.grid.1]),
            grid,
            "{name}"
        );
        let diff = max_abs_diff(&tensor_of(ours), reference.get(&format!("probs.{name}")));
        eprintln!("{model_name} {name}: whole map, max |diff| {diff:.2e}");
        assert!(
            diff <= PROBABILITY_TOLERANCE,
            "{model_name} {name}: {diff:.2e}"
        );
    }

    // One point's rows: the row of the cell under it, as diffusers' whole map has it there.
    let point: Vec<f32> = serde_json::from_value(json(&reference, "point")).unwrap();
    let point = [point[0], point[1]];
    let rows = extract_attention(
        &model,
        &png,
        &settings,
        &names,
        Some(point),
        None,
        &mut |_, _| {},
    )
    .expect("attention rows");
    let expected_rows = json(&reference, "rows");
    for map in rows
        .maps
        .iter()
        .filter(|m| m.kind == AttentionKind::SelfAttention)
    {
        assert_eq!(
            map.row,
            expected_rows[&map.module].as_u64().map(|r| r as usize),
            "{}",
            map.module
        );
        let diff = max_abs_diff(
            &tensor_of(map),
            reference.get(&format!("row.{}", map.module)),
        );
        eprintln!(
            "{model_name} {}: point row, max |diff| {diff:.2e}",
            map.module
        );
        assert!(diff <= PROBABILITY_TOLERANCE, "{}: {diff:.2e}", map.module);
    }

    // The prompt's tokens as transformers' tokenizer names them.
    let tokens: Vec<String> = serde_json::from_value(json(&reference, "tokens")).unwrap();
    let ours: Vec<String> = whole
        .tokens
        .iter()
        .flatten()
        .map(|t| t.token.clone())
        .collect();
    assert_eq!(ours, tokens, "{model_name}: tokens");

    // DAAM against numpy: on diffusers' maps (the aggregation alone), and on ours (end to end).
    let (width, height) = whole.size;
    let image_size = ImageSize::new(width as usize, height as usize);
    let point = ImagePoint::new(point[0], point[1]);
    for case in json(&reference, "daam").as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let layers: Vec<String> = serde_json::from_value(case["modules"].clone()).unwrap();
        let weights: Vec<f32> = serde_json::from_value(case["weights"].clone()).unwrap();
        let grid: Vec<usize> = serde_json::from_value(case["grid"].clone()).unwrap();
        let target = match case["token"].as_u64() {
            Some(t) => AttentionTarget::Token(t as usize),
            None => AttentionTarget::Point(point),
        };
        let options = AttentionAggregation {
            head: case["head"].as_u64().map(|h| h as usize),
            grid: AggregateGrid::Size(GridSize::new(grid[0], grid[1])),
        };
        let is_row = matches!(target, AttentionTarget::Point(_));
        let theirs: Vec<AttentionMap> = layers
            .iter()
            .map(|n| reference_map(&reference, n, &modules, is_row))
            .collect();
        let ours_maps = if is_row { &rows.maps } else { &whole.maps };
        let ours: Vec<&AttentionMap> = layers
            .iter()
            .map(|n| ours_maps.iter().find(|m| &m.module == n).unwrap())
            .collect();
        let expected = reference.get(&format!("daam.{name}"));
        let expected_range: Vec<f32> = serde_json::from_value(case["range"].clone()).unwrap();
        for (which, maps) in [
            ("diffusers' maps", theirs.iter().collect::<Vec<_>>()),
            ("ours", ours),
        ] {
            let weighted: Vec<(&AttentionMap, f32)> =
                maps.into_iter().zip(weights.iter().copied()).collect();
            let out = aggregate_attention(&weighted, target, image_size, &options).unwrap();
            assert_eq!(out.layers, layers);
            let values = Tensor::from_slice(&out.values, (grid[0], grid[1]), &Device::Cpu).unwrap();
            let diff = max_abs_diff(&values, expected);
            let range_diff = (out.range.0 - expected_range[0])
                .abs()
                .max((out.range.1 - expected_range[1]).abs());
            eprintln!("{model_name} DAAM {name} on {which}: max |diff| {diff:.2e}, range {range_diff:.2e}");
            assert!(
                diff <= 1e-5 && range_diff <= 1e-6,
                "{model_name} DAAM {name} on {which}: {diff:.2e}, range {range_diff:.2e}"
            );
        }
    }
}

#[test]
fn sd1_self_and_cross_attention() {
    check("sd1_tiny");
}

#[test]
fn sd2_self_and_cross_attention() {
    check("sd2_tiny");
}

#[test]
fn unet2d_mid_block_attention() {
    check("ddpm_tiny");
}
