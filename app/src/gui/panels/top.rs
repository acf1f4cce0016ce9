//! The menu bar and the path bar. Every dialog has a typed-path twin in the path bar, because
//! file dialogs need a desktop portal that bare X servers lack.

use std::path::PathBuf;

use eframe::egui;

use crate::gui::app::{DialogResult, WorkbenchApp};

pub fn show(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    egui::Panel::top("menu").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| file_menu(app, ui));
            ui.menu_button("Model", |ui| model_menu(app, ui));
            ui.separator();
            path_bar(app, ui);
        });
    });
}

fn file_menu(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    if ui.button("Add images…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .add_filter("images", &["png", "jpg", "jpeg"])
                .pick_files()
                .map(DialogResult::AddImages)
        });
    }
    ui.separator();
    if ui.button("Open session…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .add_filter("session", &["json"])
                .pick_file()
                .map(DialogResult::OpenSession)
        });
    }
    if ui.button("Save session…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .set_file_name("session.json")
                .save_file()
                .map(DialogResult::SaveSession)
        });
    }
    ui.separator();
    if ui.button("Export figure (PNG)…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .set_file_name("figure.png")
                .save_file()
                .map(DialogResult::ExportFigure)
        });
    }
    if ui.button("Export correspondences (CSV or JSON)…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .set_file_name("correspondences.csv")
                .save_file()
                .map(DialogResult::ExportCorrespondences)
        });
    }
    if ui.button("Export features (safetensors)…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .pick_folder()
                .map(DialogResult::ExportFeatures)
        });
    }
}

fn model_menu(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    if ui.button("Bundled default model").clicked() {
        app.load_model("default");
    }
    if ui.button("Open diffusers folder…").clicked() {
        app.pick_in_thread(|| {
            rfd::FileDialog::new()
                .pick_folder()
                .map(DialogResult::ModelFolder)
        });
    }
    if !app.hf_models.is_empty() {
        ui.separator();
        ui.label("Hugging Face cache:");
        let models = app.hf_models.clone();
        for path in models {
            let name = path
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_start_matches("models--")
                        .replace("--", "/")
                })
                .unwrap_or_default();
            if ui.button(name).clicked() {
                app.load_model(&path.display().to_string());
            }
        }
    }
}

fn path_bar(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.label("Path:");
    ui.add(
        egui::TextEdit::singleline(&mut app.path_input)
            .hint_text("a file or folder (image, model, session, export)")
            .desired_width(280.0),
    );
    let path = PathBuf::from(app.path_input.trim());
    let has_path = !app.path_input.trim().is_empty();
    ui.add_enabled_ui(has_path, |ui| {
        if ui.button("Add image").clicked() {
            app.add_image(path.clone());
        }
        if ui.button("Load model").clicked() {
            app.load_model(&path.display().to_string());
        }
        if ui.button("Open session").clicked() {
            app.open_session(&path);
        }
        if ui.button("Save session").clicked() {
            app.save_session(&path);
        }
        ui.menu_button("Export to path", |ui| {
            if ui.button("Figure (PNG)").clicked() {
                app.export_figure(path.clone());
            }
            if ui.button("Correspondences (.csv or .json)").clicked() {
                app.export_correspondences(&path);
            }
            if ui.button("Features (folder)").clicked() {
                app.export_features(path.clone());
            }
        });
    });
}
