//! The Attention view of the real workbench (egui_kittest, wgpu): with the bundled default model,
//! a click on a point shows where it looks, drawn over its image, and moves with the point; with a
//! tiny text-conditioned model, another word chip shows another map, and scrubbing t shows the
//! nearest computed maps first.

mod common;

use diffscope::gui::state::{AttentionMode, ViewKind};
use diffscope::gui::GuiOptions;
use diffscope_engine::analysis::aggregate::AggregateGrid;
use diffscope_engine::analysis::recipes::attention::{
    aggregate_attention, AttentionAggregation, AttentionTarget,
};
use diffscope_engine::analysis::{ImagePoint, ImageSize};
use diffscope_engine::features::attention::extract_attention;
use diffscope_engine::features::extract::ExtractSettings;
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_engine::worker::{AnalysisResult, AttentionViewTarget, ViewRequest, ViewResult};
use egui_kittest::kittest::Queryable;

use common::*;

/// The map shown on image `slot`, with the request's target.
fn shown(result: &AnalysisResult, slot: usize) -> Option<Vec<f32>> {
    match &result.view {
        ViewResult::Attention { maps, .. } => maps.get(slot)?.as_ref().map(|m| m.values.clone()),
        _ => None,
    }
}

fn target(result: &AnalysisResult) -> Option<AttentionViewTarget> {
    match &result.request.view {
        ViewRequest::Attention(view) => Some(view.target),
        _ => None,
    }
}

#[test]
fn a_clicked_point_shows_where_it_looks_over_its_image() {
    let options = GuiOptions::bundled();
    let images = options.images.clone();
    let mut h = harness(options);
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    h.get_by_label("Attention").click();
    h.run_steps(2);
    let app = h.state();
    assert_eq!(app.settings.view, ViewKind::Attention);
    // The default model has only self-attention (one, in its mid block).
    let model = app.model.clone().unwrap();
    assert_eq!(
        app.settings.attention.mode_for(&model),
        AttentionMode::SelfAttention
    );

    click_image(&mut h, 1, [20.0, 24.0]);
    let first = wait_for_exact(&mut h, |r| {
        matches!(target(r), Some(AttentionViewTarget::Point { image: 1, .. }))
    });
    let a = shown(&first, 1).expect("a map on the clicked image");
    assert!(
        shown(&first, 0).is_none(),
        "the point's map is on its own image only"
    );
    let app = h.state();
    assert!(app.overlays.by_image.contains_key(&app.slots[1].image.key));
    assert!(!app.overlays.by_image.contains_key(&app.slots[0].image.key));

    // The same numbers as the engine's own functions give, without the app or the worker.
    let Some(AttentionViewTarget::Point { point, .. }) = target(&first) else {
        unreachable!()
    };
    let features = &first.request.features;
    let model = DiffusionModel::load("default", &candle_core::Device::Cpu).unwrap();
    let settings = ExtractSettings {
        t: features.t,
        taps: vec![],
        noise: NoiseSource::Seeded {
            seed: features.seed,
            ensemble: features.ensemble,
        },
        prompt: PromptSource::default(),
        size: features.size,
        time_ids: None,
    };
    let modules = vec!["mid_block.attentions.0".to_string()];
    let direct = extract_attention(
        &model,
        &images[1],
        &settings,
        &modules,
        Some([point.x, point.y]),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let layers: Vec<_> = direct.maps.iter().map(|m| (m, 1.0)).collect();
    let (w, hgt) = h.state().slots[1].image.rgb.dimensions();
    let expected = aggregate_attention(
        &layers,
        AttentionTarget::Point(ImagePoint::new(point.x, point.y)),
        ImageSize::new(w as usize, hgt as usize),
        &AttentionAggregation {
            head: None,
            grid: AggregateGrid::Finest,
        },
    )
    .unwrap();
    let diff = a
        .iter()
        .zip(&expected.values)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff < 1e-5, "the view's map is {diff} off the engine's");

    // Another point looks elsewhere.
    click_image(&mut h, 1, [48.0, 10.0]);
    let second = wait_for_exact(
        &mut h,
        |r| matches!(target(r), Some(AttentionViewTarget::Point { point, .. }) if point.x > 40.0),
    );
    let b = shown(&second, 1).expect("a map on the clicked image");
    let moved = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        moved > 0.1,
        "the map hardly changed with the point: {moved}"
    );
    snapshot(&mut h, "attention");
}

#[test]
fn another_word_shows_another_map_and_t_scrubs_from_the_nearest() {
    let data = Dataset::new();
    let sd = fixtures().join("models/sd1_tiny").display().to_string();
    let images = vec![
        fixtures().join("images/sd_64x48.png"),
        fixtures().join("images/sd_square_32.png"),
    ];
    let mut h = harness(GuiOptions {
        model: sd,
        images,
        ..options(&data)
    });
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    h.state_mut().settings.features.prompt = "a photo of a cat".into();
    h.get_by_label("Attention").click();
    // The first word, "a", in both images.
    let first = wait_for_exact(&mut h, |r| {
        matches!(&r.view, ViewResult::Attention { token: Some(1), .. })
    });
    let a = (shown(&first, 0).unwrap(), shown(&first, 1).unwrap());
    // The chips name the prompt's words; "cat" is token 5.
    h.get_by_label("cat").click();
    let cat = wait_for_exact(&mut h, |r| {
        matches!(&r.view, ViewResult::Attention { token: Some(5), .. })
    });
    let b = (shown(&cat, 0).unwrap(), shown(&cat, 1).unwrap());
    assert!(
        a.0 != b.0 && a.1 != b.1,
        "the maps of `a` and `cat` are the same"
    );
    assert!(h.state().overlays.by_image.len() == 2);

    // Exported through the path bar: each image's maps and the map shown, as safetensors.
    let folder = data.dir.path().join("attention");
    h.state_mut().path_input = folder.display().to_string();
    h.run_steps(1);
    h.get_by_label("Export to path").click();
    h.run_steps(3);
    h.get_by_label("Attention maps (folder)").click();
    let shown_map = folder.join("2_sd_square_32_maps.safetensors");
    wait_for(&mut h, "the export", |_| shown_map.exists());
    wait_for(&mut h, "the engine", |app| !app.is_busy());
    let bytes = std::fs::read(&shown_map).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let map = file.tensor("token.5").unwrap();
    let values: Vec<f32> = (map.data().chunks_exact(4))
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(values, b.1, "the exported map is the one shown");
    let bytes = std::fs::read(folder.join("1_sd_64x48_attention.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let cross = file
        .tensor("up_blocks.2.attentions.2.transformer_blocks.0.attn2")
        .unwrap();
    assert_eq!(cross.shape(), [2, 64, 77]);

    // Scrub t: the maps computed at the old t are shown first, then the new ones.
    let old_t = cat.request.features.t;
    let previews = h.state().previews_shown;
    h.state_mut().settings.features.t = old_t + 100;
    let later = wait_for_exact(&mut h, |r| r.request.features.t == old_t + 100);
    assert_eq!(h.state().previews_shown, previews + 1);
    assert_eq!(h.state().last_preview.as_ref().map(|p| p.0), Some(old_t));
    assert!(shown(&later, 0).unwrap() != b.0);
}
