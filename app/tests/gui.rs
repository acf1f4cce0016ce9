//! The real workbench driven by egui_kittest with the wgpu renderer (headless, on whatever adapter
//! wgpu finds: llvmpipe through Mesa's Vulkan driver in CI).
//!
//! These tests use the tiny random-weight fixture model, so they check the plumbing (clicks reach
//! the engine, results come back and are drawn, sessions reopen, errors show) and that the UI's
//! numbers equal the engine's. `gui_accuracy.rs` checks match accuracy with the trained default model.

mod common;

use std::time::Duration;

use diffscope::gui::state::ViewKind;
use diffscope_engine::export::matches::MatchExport;
use diffscope_engine::worker::ViewResult;
use eframe::egui;
use egui_kittest::kittest::Queryable;

use common::*;

#[test]
fn a_click_on_the_source_is_matched_in_the_target() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    // Click at the source's keypoint 1.
    let kp = data.source_keypoint(1);
    click_image(&mut h, 0, kp);
    let result = wait_for_exact(
        &mut h,
        |r| matches!(&r.view, ViewResult::Correspond { matches } if matches.len() == 1),
    );
    let app = h.state();
    let clicked = app.settings.points[0];
    assert!(
        (clicked[0] - kp[0]).abs() <= 0.5 && (clicked[1] - kp[1]).abs() <= 0.5,
        "{clicked:?} vs {kp:?}"
    );
    let ViewResult::Correspond { matches } = &result.view else {
        unreachable!()
    };
    // What is drawn is what the engine computed for exactly this point.
    let expected = direct_match(
        &data,
        clicked,
        result.request.features.t,
        &result.request.features.tap,
    );
    assert_eq!(matches[0][0].point, expected.point);
    assert_eq!(matches[0][0].best_similarity, expected.best_similarity);
    assert!(app.overlays.by_image.contains_key(&app.slots[1].image.key));
    // Shift+click pins a second point.
    h.event_modifiers(
        egui::Event::PointerMoved(screen_of(&h, 0, [20.0, 10.0])),
        egui::Modifiers::SHIFT,
    );
    click_image_with(&mut h, 0, [20.0, 10.0], egui::Modifiers::SHIFT);
    wait_for_exact(
        &mut h,
        |r| matches!(&r.view, ViewResult::Correspond { matches } if matches.len() == 2),
    );
    assert_eq!(h.state().settings.points.len(), 2);
    assert_eq!(h.state().settings.active_point, 1);
    snapshot(&mut h, "correspondence");
}

#[test]
fn scrubbing_t_shows_the_nearest_result_then_the_new_one() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    click_image(&mut h, 0, data.source_keypoint(0));
    let first = wait_for_exact(&mut h, |r| r.request.features.t == 261);
    // Scrub: move the t slider with the keyboard.
    let before = h.state().settings.features.t;
    let previews = h.state().previews_shown;
    // The slider and its value box are both named "t"; the slider comes first.
    h.get_all_by_label("t").next().unwrap().focus();
    h.run_steps(1);
    for _ in 0..40 {
        h.key_press(egui::Key::ArrowRight);
    }
    h.run_steps(2);
    let t = h.state().settings.features.t;
    assert!(t > before, "the slider did not move: {t}");
    let result = wait_for_exact(&mut h, |r| r.request.features.t == t);
    // While t was computed, the nearest computed result (t=261) was shown.
    assert!(h.state().previews_shown > previews);
    assert_eq!(
        h.state().last_preview,
        Some((261, "up_blocks.1".to_string()))
    );
    let (ViewResult::Correspond { matches: a }, ViewResult::Correspond { matches: b }) =
        (&first.view, &result.view)
    else {
        panic!()
    };
    assert_ne!(a[0][0].similarity, b[0][0].similarity);
    // Back to t=261: instant, from the cache.
    h.state_mut().settings.features.t = 261;
    h.step();
    h.step();
    wait_for_exact(&mut h, |r| r.request.features.t == 261);
}

#[test]
fn pca_and_segmentation_views() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    h.get_by_label("PCA").click();
    let pca = wait_for_exact(&mut h, |r| matches!(r.view, ViewResult::Pca { .. }));
    assert_eq!(h.state().settings.view, ViewKind::Pca);
    let ViewResult::Pca { rgb, .. } = &pca.view else {
        unreachable!()
    };
    assert_eq!(rgb.len(), 2);
    click_control(&mut h, "lock basis");
    wait_for_exact(&mut h, |r| {
        matches!(r.view, ViewResult::Pca { locked: true, .. })
    });
    snapshot(&mut h, "pca");
    h.get_by_label("Segmentation").click();
    let seg = wait_for_exact(&mut h, |r| matches!(r.view, ViewResult::Segments { .. }));
    let ViewResult::Segments { labels, .. } = &seg.view else {
        unreachable!()
    };
    assert_eq!(labels.len(), 2);
    snapshot(&mut h, "segmentation");
    h.get_by_label("normalized cut").click();
    wait_for_exact(&mut h, |r| {
        matches!(r.view, ViewResult::Segments { inertia: None, .. })
    });
    // The inertia plot.
    h.get_by_label("Inertia vs K").click();
    h.run_steps(1);
    h.get_by_label("Compute inertia for K = 2…12").click();
    wait_for(&mut h, "inertia", |app| app.results.elbow.is_some());
}

#[cfg(unix)]
#[test]
fn the_models_suggested_tap_and_t_are_where_the_workbench_starts() {
    let data = Dataset::new().with_suggested("down_blocks.1", 50);
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    let f = &h.state().settings.features;
    assert_eq!((f.tap.as_str(), f.t), ("down_blocks.1", 50));
    // Moved away, the suggestion is one click back.
    h.state_mut().settings.features.t = 300;
    h.run_steps(2);
    h.get_by_label("suggested: down_blocks.1, t=50").click();
    h.run_steps(2);
    assert_eq!(h.state().settings.features.t, 50);
}

/// The session's own tap and t win over the model's suggestions.
#[cfg(unix)]
#[test]
fn a_session_reopens_exactly() {
    let data = Dataset::new().with_suggested("down_blocks.1", 50);
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    click_image(&mut h, 0, data.source_keypoint(2));
    wait_for_exact(&mut h, |_| true);
    {
        let app = h.state_mut();
        app.settings.features.t = 120;
        app.settings.features.tap = "up_blocks.2".into();
        app.settings.features.ensemble = 2;
        app.settings.overlay.opacity = 0.35;
        app.settings.overlay.range = Some([0.2, 0.9]);
        app.settings.segment.k = 4;
    }
    h.run_steps(2);
    let path = data.dir.path().join("session.json");
    // Through the path bar, as a user without a file dialog would.
    h.get_by_label("Path:").click();
    h.state_mut().path_input = path.display().to_string();
    h.run_steps(1);
    h.get_by_label("Save session").click();
    wait_for(&mut h, "the session file", |_| path.is_file());
    let saved = h.state().session();
    drop(h);

    let mut reopened = options(&data);
    reopened.images.clear();
    reopened.session = Some(path.clone());
    let mut h = harness(reopened);
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    assert_eq!(h.state().session(), saved);
    let result = wait_for_exact(&mut h, |_| true);
    assert_eq!(result.request.features.t, 120);
    assert_eq!(result.request.features.tap, "up_blocks.2");
}

#[test]
fn a_corrupt_image_shows_a_message_and_the_app_keeps_working() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    let corrupt = data.dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n not really").unwrap();
    h.state_mut().path_input = corrupt.display().to_string();
    h.run_steps(1);
    h.get_by_label("Add image").click();
    wait_for(&mut h, "the error message", |app| {
        app.messages.iter().any(|m| m.error)
    });
    h.run_steps(1);
    h.get_by_label_contains("corrupt.png");
    assert_eq!(h.state().slots.len(), 2);
    // A model folder that is not one: a message, and the loaded model stays.
    h.state_mut().path_input = data.dir.path().display().to_string();
    h.run_steps(1);
    h.get_by_label("Load model").click();
    wait_for(&mut h, "the model error", |app| {
        app.messages
            .iter()
            .any(|m| m.text.contains("not a diffusers model folder"))
    });
    wait_for(&mut h, "the model to stay", |app| !app.loading_model());
    assert!(h.state().model.is_some());
    // Still working: a click is matched.
    click_image(&mut h, 0, data.source_keypoint(0));
    wait_for_exact(
        &mut h,
        |r| matches!(&r.view, ViewResult::Correspond { matches } if matches.len() == 1),
    );
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn exports_figure_correspondences_and_features() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for(&mut h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2
    });
    click_image(&mut h, 0, data.source_keypoint(1));
    let result = wait_for_exact(
        &mut h,
        |r| matches!(&r.view, ViewResult::Correspond { matches } if matches.len() == 1),
    );
    let ViewResult::Correspond { matches } = &result.view else {
        unreachable!()
    };
    let m = matches[0][0].clone();
    let out = data.dir.path();
    let (png, csv, json, features) = (
        out.join("figure.png"),
        out.join("points.csv"),
        out.join("points.json"),
        out.join("features"),
    );
    for (path, item) in [
        (&png, "Figure (PNG)"),
        (&csv, "Correspondences (.csv or .json)"),
        (&json, "Correspondences (.csv or .json)"),
        (&features, "Features (folder)"),
    ] {
        h.state_mut().path_input = path.display().to_string();
        h.run_steps(1);
        h.get_by_label("Export to path").click();
        h.run_steps(3);
        h.get_by_label(item).click();
        let written = path.clone();
        wait_for(&mut h, "the export", move |_| written.exists());
        wait_for(&mut h, "the engine", |app| !app.is_busy());
    }
    // The figure: the images, overlays, markers, colorbar and caption, as drawn.
    let figure = image::open(&png).unwrap().to_rgba8();
    let rect = h.state().figure_rect.unwrap();
    assert!(
        (figure.width() as f32 - rect.width()).abs() <= 1.0,
        "{} vs {}",
        figure.width(),
        rect.width()
    );
    assert!(figure.height() > 100);
    // CSV and JSON carry the engine's numbers.
    let text = std::fs::read_to_string(&csv).unwrap();
    let row = text.lines().nth(2).unwrap();
    let fields: Vec<&str> = row.split(',').collect();
    assert_eq!(fields[0], "1");
    assert_eq!(fields[5].parse::<f32>().unwrap(), m.point.x);
    assert_eq!(fields[6].parse::<f32>().unwrap(), m.point.y);
    assert_eq!(fields[7].parse::<f32>().unwrap(), m.best_similarity);
    let parsed = MatchExport::read_json(&json).unwrap();
    assert_eq!(parsed.settings["t"], 261);
    assert_eq!(parsed.matches[0].matched, [m.point.x, m.point.y]);
    assert_eq!(parsed.matches[0].similarity, m.best_similarity);
    // Features: one file per image with the tap and the latent.
    let files: Vec<_> = std::fs::read_dir(&features).unwrap().collect();
    assert_eq!(files.len(), 2);
    let bytes = std::fs::read(features.join("1_a.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("up_blocks.1").unwrap().shape(), &[8, 32, 32]);
}
