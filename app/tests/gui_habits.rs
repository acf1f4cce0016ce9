//! The workbench remembers and answers the keyboard: what was open comes back at the next start
//! (through eframe's storage, across two app instances), the shortcuts act, every control says
//! what it does, and the window shows what a drop would do.

mod common;

use diffscope::gui::remembered::{MemoryStorage, Remembered};
use diffscope::gui::shortcuts::{Shortcut, T_STEP};
use diffscope::gui::state::ViewKind;
use diffscope_engine::export::colormap::Colormap;
use eframe::egui::{self, Key, Modifiers};
use egui_kittest::kittest::{By, NodeT, Queryable};

use common::*;

fn wait_for_model_and_images(h: &mut egui_kittest::Harness<'static, diffscope::gui::WorkbenchApp>) {
    wait_for(h, "model and images", |app| {
        app.model.is_some() && app.slots.len() == 2 && !app.is_busy()
    });
}

/// Run the app, change things, close it (eframe saves), start a second app on the same storage.
#[test]
fn what_was_open_comes_back_at_the_next_start() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for_model_and_images(&mut h);
    click_image(&mut h, 0, data.source_keypoint(1));
    {
        let app = h.state_mut();
        app.settings.features.t = 120;
        app.settings.features.tap = "up_blocks.2".into();
        app.settings.overlay.colormap = Colormap::Magma;
        app.settings.view = ViewKind::Pca;
    }
    h.run_steps(2);
    let session = data.dir.path().join("s.json");
    h.state_mut().save_session(&session);
    wait_for(&mut h, "the session file", |_| session.is_file());
    let left = h.state().session();
    let mut storage = MemoryStorage::default();
    eframe::App::save(h.state_mut(), &mut storage);
    drop(h);
    let remembered = Remembered::load(Some(&storage));
    assert_eq!(remembered.recent_models, vec![data.model.clone()]);
    assert_eq!(remembered.recent_sessions, vec![session.clone()]);
    let storage: &'static MemoryStorage = Box::leak(Box::new(storage));

    // `diffscope gui` without arguments: everything comes back.
    let mut again = options(&data);
    again.model = "default".into();
    again.images.clear();
    again.restore = true;
    let mut h = harness_with_storage(again, Some(storage));
    wait_for_model_and_images(&mut h);
    assert_eq!(h.state().session(), left);
    assert_eq!(h.state().remembered.recent_sessions, vec![session.clone()]);
    // The File menu lists the recent session, the Model menu the recent model.
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label("Recent sessions").hover();
    h.run_steps(2);
    h.get_by_label(&session.display().to_string());
    h.key_press(Key::Escape);
    h.run_steps(2);
    drop(h);

    // A fresh start (`--fresh`, or a model or images given) opens what it was given, and keeps
    // the recent lists.
    let mut h = harness_with_storage(options(&data), Some(storage));
    wait_for_model_and_images(&mut h);
    assert_eq!(h.state().settings.features.t, 261);
    assert!(h.state().settings.points.is_empty());
    assert_eq!(h.state().remembered.recent_models, vec![data.model.clone()]);
    drop(h);

    // `--session` wins over what was left open.
    let mut with_session = options(&data);
    with_session.images.clear();
    with_session.session = Some(session);
    with_session.restore = true;
    let mut h = harness_with_storage(with_session, Some(storage));
    wait_for_model_and_images(&mut h);
    assert_eq!(h.state().settings.features.t, 120);
}

#[test]
fn the_shortcuts_act_and_the_help_menu_lists_them() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for_model_and_images(&mut h);
    click_image(&mut h, 0, data.source_keypoint(0));
    click_image_with(&mut h, 0, [20.0, 10.0], Modifiers::SHIFT);
    assert_eq!(h.state().settings.points.len(), 2);
    let t = h.state().settings.features.t;

    h.key_press(Key::ArrowRight);
    h.run_steps(1);
    assert_eq!(h.state().settings.features.t, t + T_STEP as usize);
    h.key_press_modifiers(Modifiers::SHIFT, Key::ArrowLeft);
    h.run_steps(1);
    assert_eq!(h.state().settings.features.t, t + T_STEP as usize - 1);

    // Blocks in the model's order: up_blocks.1 -> up_blocks.2 and back.
    assert_eq!(h.state().settings.features.tap, "up_blocks.1");
    h.key_press(Key::ArrowDown);
    h.run_steps(1);
    assert_eq!(h.state().settings.features.tap, "up_blocks.2");
    h.key_press(Key::ArrowUp);
    h.run_steps(1);
    assert_eq!(h.state().settings.features.tap, "up_blocks.1");

    h.key_press(Key::Backspace);
    h.run_steps(1);
    assert_eq!(h.state().settings.points.len(), 1);

    // A typed-in field keeps its keys: the arrows move the cursor, not t.
    let t = h.state().settings.features.t;
    h.get_by_label("Path:").click();
    h.run_steps(1);
    h.key_press(Key::ArrowRight);
    h.run_steps(1);
    assert_eq!(h.state().settings.features.t, t);
    h.key_press(Key::Escape);
    h.run_steps(1);

    // Ctrl+O asks for a file dialog; where none can open, the message says what to do instead.
    h.key_press_modifiers(Modifiers::COMMAND, Key::O);
    h.run_steps(2);
    h.get_by_label_contains("no file dialog can open here");

    // Escape cancels the running job: a PCK table over every block and t stops unfinished.
    wait_for(&mut h, "the engine to be idle", |app| !app.is_busy());
    h.get_by_label("PCK by t").click();
    h.run_steps(1);
    h.get_by_label("Compute PCK@0.1 by t and block").click();
    h.run_steps(1);
    assert!(h.state().is_busy());
    h.key_press(Key::Escape);
    wait_for(&mut h, "the cancelled job", |app| !app.is_busy());
    let unfinished = h
        .state()
        .results
        .pck
        .as_ref()
        .is_none_or(|table| table.pck.iter().flatten().any(|cell| cell.is_none()));
    assert!(
        unfinished,
        "the PCK table was finished: Escape did not cancel it"
    );

    // The Help menu lists every shortcut.
    h.get_by_label("Help").click();
    h.run_steps(2);
    for shortcut in Shortcut::ALL {
        h.get_by_label(shortcut.description());
    }
}

/// Every button, checkbox, slider, field and menu says what it does (its tooltip is also its
/// accessible description), in each view.
/// The series names of the plots the test shows, whose legend entries are egui_plot's.
const PLOT_SERIES: [&str; 1] = ["joint fit"];

#[test]
fn every_control_has_a_tooltip() {
    use egui::accesskit::Role;
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for_model_and_images(&mut h);
    click_image(&mut h, 0, data.source_keypoint(0));
    let mut missing = std::collections::BTreeSet::new();
    let mut check = |h: &egui_kittest::Harness<'static, diffscope::gui::WorkbenchApp>| {
        let label = |node: &egui_kittest::Node<'_>| {
            let node = node.accesskit_node();
            node.label().or_else(|| node.value()).unwrap_or_default()
        };
        // A slider's value box is its own node; hovering it shows the slider's tooltip.
        let described_sliders: Vec<String> = h
            .query_all(
                By::new().predicate(|n| n.role() == Role::Slider && n.description().is_some()),
            )
            .map(|n| label(&n))
            .collect();
        let controls = By::new().predicate(|node| {
            matches!(
                node.role(),
                Role::Button
                    | Role::CheckBox
                    | Role::RadioButton
                    | Role::Slider
                    | Role::SpinButton
                    | Role::ComboBox
                    | Role::TextInput
                    | Role::Tab
                    | Role::MenuItem
            ) && node.description().is_none()
        });
        for node in h.query_all(controls) {
            let (role, name) = (node.accesskit_node().role(), label(&node));
            let slider_value = role == Role::SpinButton && described_sliders.contains(&name);
            // egui_plot's legend entries (show or hide a series) take no tooltip.
            let plot_legend = role == Role::CheckBox && PLOT_SERIES.contains(&name.as_str());
            if !slider_value && !plot_legend {
                missing.insert(format!("{role:?} {name:?}"));
            }
        }
    };
    check(&h);
    for view in ["PCA", "Segmentation"] {
        h.get_by_label(view).click();
        h.run_steps(2);
        check(&h);
    }
    h.get_by_label("normalized cut").click();
    h.run_steps(2);
    check(&h);
    for tab in ["PCA explained variance", "Inertia vs K", "PCK by t"] {
        h.get_by_label(tab).click();
        h.run_steps(2);
        check(&h);
    }
    for menu in ["File", "Model"] {
        h.get_by_role_and_label(Role::Button, menu).click();
        h.run_steps(2);
        check(&h);
        h.key_press(Key::Escape);
        h.run_steps(2);
    }
    assert!(
        missing.is_empty(),
        "controls without a tooltip: {missing:#?}"
    );
}

#[test]
fn files_dragged_over_the_window_show_what_a_drop_does() {
    let data = Dataset::new();
    let mut h = harness(options(&data));
    wait_for_model_and_images(&mut h);
    let cue = "Drop the file to open them";
    assert!(h.query_by_label(cue).is_none());
    h.input_mut().hovered_files.push(egui::HoveredFile {
        path: Some(data.target.clone()),
        ..Default::default()
    });
    h.run_steps(2);
    h.get_by_label(cue);
    h.input_mut().hovered_files.clear();
    h.run_steps(2);
    assert!(h.query_by_label(cue).is_none());
}
