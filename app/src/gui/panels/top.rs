//! The menu bar and the path bar. Every dialog has a typed-path twin in the path bar, because
//! file dialogs need a desktop portal that bare X servers lack.

use std::path::PathBuf;

use eframe::egui;

use crate::gui::actions::{Action, Dialog};
use crate::gui::context::PanelContext;
use crate::gui::shortcuts::Shortcut;

/// `path_input` is the path bar's text, which this panel owns.
pub fn show(ui: &mut egui::Ui, cx: &PanelContext, path_input: &mut String) {
    egui::Panel::top("menu").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| file_menu(ui, cx))
                .response
                .on_hover_text("add images, open and save sessions, export");
            ui.menu_button("Model", |ui| model_menu(ui, cx, path_input))
                .response
                .on_hover_text(
                    "load the bundled model, a folder, or one from the Hugging Face cache",
                );
            ui.menu_button("Help", help_menu)
                .response
                .on_hover_text("keyboard shortcuts");
            ui.separator();
            path_bar(ui, cx, path_input);
        });
    });
}

/// A menu entry that shows a file dialog, with its shortcut when it has one.
fn dialog_item(ui: &mut egui::Ui, cx: &PanelContext, label: &str, dialog: Dialog, what: &str) {
    let shortcut = Shortcut::ALL
        .into_iter()
        .find(|s| s.action() == Action::Pick(dialog))
        .map(|s| ui.ctx().format_shortcut(&s.keys()));
    let mut button = egui::Button::new(label);
    if let Some(keys) = shortcut {
        button = button.shortcut_text(keys);
    }
    if ui.add(button).on_hover_text(what).clicked() {
        cx.send(Action::Pick(dialog));
    }
}

fn file_menu(ui: &mut egui::Ui, cx: &PanelContext) {
    dialog_item(
        ui,
        cx,
        "Add images…",
        Dialog::AddImages,
        "add PNG or JPEG images (the first open image is the source)",
    );
    ui.separator();
    dialog_item(
        ui,
        cx,
        "Open session…",
        Dialog::OpenSession,
        "reopen a saved session: model, images, points and settings",
    );
    dialog_item(
        ui,
        cx,
        "Save session…",
        Dialog::SaveSession,
        "save the model, images, points and settings as a JSON session",
    );
    let recent = &cx.remembered.recent_sessions;
    ui.add_enabled_ui(!recent.is_empty(), |ui| {
        ui.menu_button("Recent sessions", |ui| {
            for path in recent {
                if ui
                    .button(path.display().to_string())
                    .on_hover_text("open this session")
                    .clicked()
                {
                    cx.send(Action::OpenSession(path.clone()));
                }
            }
        })
        .response
        .on_hover_text("sessions opened or saved recently")
        .on_disabled_hover_text("no session opened or saved yet");
    });
    ui.separator();
    dialog_item(
        ui,
        cx,
        "Export figure (PNG)…",
        Dialog::ExportFigure,
        "the images with their overlays, markers, colorbar and caption, as drawn",
    );
    dialog_item(
        ui,
        cx,
        "Export correspondences (CSV or JSON)…",
        Dialog::ExportCorrespondences,
        "the pinned points and their matches (pixel coordinates, similarity), with the settings",
    );
    dialog_item(
        ui,
        cx,
        "Export features (safetensors)…",
        Dialog::ExportFeatures,
        "each image's features at the current t and block, one .safetensors file per image in a folder",
    );
    dialog_item(
        ui,
        cx,
        "Export attention maps (safetensors)…",
        Dialog::ExportAttention,
        "each image's attention maps of the chosen layers and their aggregated heatmap, in a folder",
    );
}

fn model_menu(ui: &mut egui::Ui, cx: &PanelContext, path_input: &str) {
    if ui
        .button("Bundled default model")
        .on_hover_text("the small pixel-space model that ships with diffscope")
        .clicked()
    {
        cx.send(Action::load_model("default"));
    }
    if ui
        .button("Open diffusers folder…")
        .on_hover_text("a diffusers pipeline folder (model_index.json) or its unet/ folder")
        .clicked()
    {
        cx.send(Action::Pick(Dialog::ModelFolder));
    }
    if !cx.remembered.recent_models.is_empty() {
        ui.separator();
        ui.label("Recent:");
        for spec in &cx.remembered.recent_models {
            if ui
                .button(spec)
                .on_hover_text("load this model again")
                .clicked()
            {
                cx.send(Action::load_model(spec.clone()));
            }
        }
    }
    ui.separator();
    // A second source fused with the model's taps (SD-DINO); the path bar's twin is here too,
    // since the bar has no room for another button.
    if ui
        .button("Second source (fusion) folder…")
        .on_hover_text(
            "pick a DINOv2 (or any model) folder whose features are fused with the model's",
        )
        .clicked()
    {
        cx.send(Action::Pick(Dialog::FusionModel));
    }
    let typed = path_input.trim();
    if ui
        .add_enabled(
            !typed.is_empty(),
            egui::Button::new("Second source from the path bar"),
        )
        .on_hover_text("load the folder typed in the path bar as the second source")
        .clicked()
    {
        cx.send(Dialog::FusionModel.action(PathBuf::from(typed)));
    }
    if cx.second_model.is_some()
        && ui
            .button("Remove the second source")
            .on_hover_text("features come from the model alone again")
            .clicked()
    {
        cx.send(Action::LoadFusionModel(None));
    }
    if !cx.library.hf_models.is_empty() {
        ui.separator();
        ui.label("Hugging Face cache:");
        for model in &cx.library.hf_models {
            if ui
                .button(&model.name)
                .on_hover_text(model.folder.display().to_string())
                .clicked()
            {
                cx.send(Action::load_model(model.name.clone()));
            }
        }
    }
}

fn help_menu(ui: &mut egui::Ui) {
    ui.label(egui::RichText::new("Keyboard shortcuts").strong());
    egui::Grid::new("shortcuts").num_columns(2).show(ui, |ui| {
        for shortcut in Shortcut::ALL {
            ui.label(egui::RichText::new(ui.ctx().format_shortcut(&shortcut.keys())).monospace());
            ui.label(shortcut.description());
            ui.end_row();
        }
    });
    ui.label(
        egui::RichText::new(
            "Keys without Ctrl act when no text field or slider has the keyboard (click an empty \
             spot, or press Escape, to free it).",
        )
        .small(),
    );
}

fn path_bar(ui: &mut egui::Ui, cx: &PanelContext, path_input: &mut String) {
    let label = ui.label("Path:");
    ui.add(
        egui::TextEdit::singleline(path_input)
            .hint_text("a file or folder (image, model, session, export)")
            .desired_width(280.0),
    )
    .labelled_by(label.id)
    .on_hover_text(
        "type a path, then press what to do with it: the same as the file dialogs, without one",
    );
    let path = PathBuf::from(path_input.trim());
    let has_path = !path_input.trim().is_empty();
    ui.add_enabled_ui(has_path, |ui| {
        // Each button does what its dialog does with the path picked there.
        let button = |ui: &mut egui::Ui, label: &str, dialog: Dialog, what: &str| {
            if ui
                .button(label)
                .on_hover_text(what)
                .on_disabled_hover_text("type a path first")
                .clicked()
            {
                cx.send(dialog.action(path.clone()));
            }
        };
        button(ui, "Add image", Dialog::AddImages, "add the image at the path");
        button(
            ui,
            "Load model",
            Dialog::ModelFolder,
            "load the model at the path: a diffusers folder, or a Hugging Face name org/name[@revision] from the local cache",
        );
        button(ui, "Open session", Dialog::OpenSession, "open the session file at the path");
        button(ui, "Save session", Dialog::SaveSession, "save the session to the path (JSON)");
        ui.menu_button("Export to path", |ui| {
            button(ui, "Figure (PNG)", Dialog::ExportFigure, "the figure as drawn, as PNG");
            button(
                ui,
                "Correspondences (.csv or .json)",
                Dialog::ExportCorrespondences,
                "the pinned points and their matches: CSV when the path ends in .csv, JSON otherwise",
            );
            button(
                ui,
                "Features (folder)",
                Dialog::ExportFeatures,
                "each image's features at the current settings, as .safetensors in the folder",
            );
            button(
                ui,
                "Attention maps (folder)",
                Dialog::ExportAttention,
                "each image's attention maps of the chosen layers, as .safetensors in the folder",
            );
        })
        .response
        .on_hover_text("write the figure, the correspondences, the features or the attention maps to the path")
        .on_disabled_hover_text("type a path first");
    });
}
