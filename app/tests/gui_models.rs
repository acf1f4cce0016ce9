//! The workbench with the models of issue 14, in a real app under egui_kittest: a tiny SDXL drawn
//! in the block picker with its transformer depths, a tiny DINOv2 whose layers are a list, and two
//! sources fused with a weight.

mod common;

use diffscope::gui::actions::{Action, ModelOptions};
use diffscope::gui::app::GuiOptions;
use diffscope::gui::state::ViewKind;
use diffscope_engine::model::pipeline::ModelFamily;
use diffscope_engine::worker::FusionChoice;
use egui_kittest::kittest::Queryable;

use common::*;

fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

#[test]
fn sdxl_and_dinov2_in_the_workbench_and_two_sources_fused_with_a_weight() {
    let images = fixtures().join("images");
    let mut h = harness(GuiOptions {
        model: model("sdxl_tiny"),
        images: vec![images.join("sd_64x48.png"), images.join("sd_square_32.png")],
        samples_dir: images.clone(),
        session: None,
        cache_dir: None,
        measure_frames: None,
        device: Default::default(),
        precision: Default::default(),
        restore: false,
    });
    h.state_mut().settings.view = ViewKind::Pca;
    wait_for(&mut h, "the SDXL model and its images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    h.run_steps(2);
    // The mid block and the deepest up block stack two transformer blocks each, the shallow
    // up block one: the picker says so.
    assert_eq!(
        h.query_all_by_label_contains("tf ×2").count(),
        3,
        "down 2, mid, up 0"
    );
    assert_eq!(
        h.query_all_by_label_contains("tf ×1").count(),
        2,
        "down 1, up 1"
    );
    let sdxl = wait_for_exact(&mut h, |r| r.request.features.tap == "up_blocks.1");
    // At its native size: sample_size 16 x the VAE's 4 = 64x64 pixels, a 16x16 latent.
    assert_eq!(
        sdxl.grids[0],
        diffscope_engine::analysis::GridSize::new(16, 16)
    );

    // DINOv2 as the model: its layers as a list, at its native 56x56 input.
    h.state_mut()
        .load_model(&model("dinov2_tiny"), ModelOptions::default());
    wait_for(&mut h, "DINOv2", |app| {
        app.model
            .as_ref()
            .is_some_and(|m| m.summary.family == ModelFamily::VisionTransformer)
    });
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("encoder.layer.1 · 16 ch · 4×4")
        .is_some());
    assert!(h
        .query_by_label_contains("DINOv2: no timestep or noise")
        .is_some());
    let dino = wait_for_exact(&mut h, |r| r.request.features.tap == "encoder.layer.1");
    assert_eq!(
        dino.grids[0],
        diffscope_engine::analysis::GridSize::new(4, 4)
    );

    // SDXL fused with DINOv2's last layer, the second source weighted 0.3.
    h.state_mut()
        .load_model(&model("sdxl_tiny"), ModelOptions::default());
    h.state_mut()
        .apply(Action::LoadFusionModel(Some(model("dinov2_tiny"))));
    wait_for(&mut h, "SDXL and the second source", |app| {
        app.second_model.is_some()
            && app
                .model
                .as_ref()
                .is_some_and(|m| m.summary.family == ModelFamily::UNet)
    });
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("fusion weight").count() > 0);
    h.state_mut().settings.features.fuse_weight = 0.3;
    let fused = wait_for_exact(&mut h, |r| {
        r.request.features.fusion
            == Some(FusionChoice {
                tap: "encoder.layer.1".into(),
                weight_percent: 30,
            })
    });
    // Fused on the finer grid (SDXL's up_blocks.1: 16x16 beside DINOv2's 4x4).
    assert_eq!(fused.grids[0], sdxl.grids[0]);
    let caption = fused.view.description();
    assert!(!caption.is_empty());
}
