//! The left panel: the model, the image slots, the feature settings (t, block, ensemble, seed,
//! prompt, input size), the view and its settings, and the overlay's look.

use eframe::egui;

use crate::gui::app::{DialogResult, WorkbenchApp, MAX_IMAGES};
use crate::gui::colormap::{palette, Colormap};
use crate::gui::state::{InputSize, SegmentMethod, ViewKind};

pub fn show(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    egui::Panel::left("controls")
        .resizable(true)
        .default_size(390.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                model_section(app, ui);
                ui.separator();
                images_section(app, ui);
                ui.separator();
                features_section(app, ui);
                ui.separator();
                view_section(app, ui);
                ui.separator();
                overlay_section(app, ui);
            });
        });
}

fn model_section(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.heading("Model");
    if app.model_job.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("loading {}", short_path(&app.model_spec)));
        });
    }
    match &app.model {
        Some(m) => {
            let s = &m.summary;
            egui::Grid::new("model-info").num_columns(2).show(ui, |ui| {
                ui.label("name");
                ui.label(&s.name);
                ui.end_row();
                ui.label("architecture");
                ui.label(&s.architecture);
                ui.end_row();
                ui.label("parameters");
                ui.label(format!("{:.2} M", s.parameters as f64 / 1e6));
                ui.end_row();
                ui.label("device");
                ui.label(&s.device);
                ui.end_row();
                ui.label("supports");
                ui.label(format!(
                    "{} taps, t in 0..{}, {}{}",
                    s.taps.len(),
                    s.timesteps,
                    if s.latent {
                        "latent (VAE)"
                    } else {
                        "pixel space"
                    },
                    if s.conditional {
                        ", prompts"
                    } else {
                        ", no prompt"
                    }
                ));
                ui.end_row();
            });
            if let Some(suggested) = m.suggested.clone() {
                let label = format!("suggested: {}, t={}", suggested.tap, suggested.t);
                let current = app.settings.features.tap == suggested.tap
                    && app.settings.features.t == suggested.t;
                let button = ui
                    .add_enabled(!current, egui::Button::new(label))
                    .on_hover_text(&suggested.why);
                if button.clicked() {
                    app.settings.features.tap = suggested.tap;
                    app.settings.features.t = suggested.t;
                }
            }
        }
        None if app.model_job.is_none() => {
            ui.label("No model loaded: Model > Bundled default, or type a folder in the path bar.");
        }
        None => {}
    }
}

/// The last two components of a path, as model names are shown.
fn short_path(path: &str) -> String {
    let parts: Vec<&str> = path.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn images_section(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.heading("Images");
    let mut action: Option<(usize, isize)> = None;
    let mut remove = None;
    for i in 0..app.slots.len() {
        ui.horizontal(|ui| {
            let role = if i == 0 { "source" } else { "target" };
            ui.label(egui::RichText::new(role).strong());
            ui.label(app.slots[i].name())
                .on_hover_text(app.slots[i].image.path.display().to_string());
            if app.slots[i].image.keypoints.is_some() {
                ui.label("(kp)").on_hover_text("has keypoint annotations");
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.small_button("x").on_hover_text("remove").clicked() {
                    remove = Some(i);
                }
                if ui
                    .add_enabled(i + 1 < app.slots.len(), egui::Button::new("down").small())
                    .on_hover_text("move down")
                    .clicked()
                {
                    action = Some((i, 1));
                }
                if ui
                    .add_enabled(i > 0, egui::Button::new("up").small())
                    .on_hover_text("move up (the first image is the source)")
                    .clicked()
                {
                    action = Some((i, -1));
                }
            });
        });
    }
    if let Some(i) = remove {
        app.remove_image(i);
    }
    if let Some((i, d)) = action {
        app.move_image(i, (i as isize + d) as usize);
    }
    for (_, path) in &app.image_jobs {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        });
    }
    ui.horizontal(|ui| {
        let room = app.slots.len() + app.image_jobs.len() < MAX_IMAGES;
        if ui
            .add_enabled(room, egui::Button::new("Add files…"))
            .clicked()
        {
            app.pick_in_thread(|| {
                rfd::FileDialog::new()
                    .add_filter("images", &["png", "jpg", "jpeg"])
                    .pick_files()
                    .map(DialogResult::AddImages)
            });
        }
        ui.add_enabled_ui(room && !app.samples.is_empty(), |ui| {
            ui.menu_button("Add sample", |ui| {
                let samples = app.samples.clone();
                egui::ScrollArea::vertical()
                    .max_height(300.0)
                    .show(ui, |ui| {
                        for path in samples {
                            let name = path
                                .strip_prefix(&app.samples_dir)
                                .unwrap_or(&path)
                                .display()
                                .to_string();
                            if ui.button(name).clicked() {
                                app.add_image(path.clone());
                                ui.close();
                            }
                        }
                    });
            });
        });
    });
    ui.label(egui::RichText::new("or drop image files on the window").small());
}

fn features_section(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.heading("Features");
    let last_t = app
        .model
        .as_ref()
        .map_or(999, |m| m.alpha_bar.len().saturating_sub(1));
    let f = &mut app.settings.features;
    ui.add(egui::Slider::new(&mut f.t, 0..=last_t).text("t").integer());
    if let Some((alpha_bar, snr)) = app.noise_level() {
        ui.label(format!(
            "noise level: alpha-bar {alpha_bar:.4}, SNR {snr:.3} ({:.1} dB)",
            10.0 * snr.log10()
        ));
    }
    if let Some(result) = &app.analysis {
        if !result.exact {
            ui.label(
                egui::RichText::new(format!(
                    "showing the nearest computed: t={}, {}",
                    result.shown_t, result.shown_tap
                ))
                .italics(),
            );
        }
    }
    ui.label(format!("Block: {}", app.settings.features.tap));
    super::unet::show(app, ui);
    let conditional = app.model.as_ref().is_some_and(|m| m.summary.conditional);
    let native = app.model.as_ref().and_then(|m| m.native_side);
    let multiple = app.model.as_ref().map_or(8, |m| m.size_multiple.max(1));
    let f = &mut app.settings.features;
    egui::Grid::new("feature-settings")
        .num_columns(2)
        .show(ui, |ui| {
            let name = ui.label("ensemble").id;
            ui.add(egui::DragValue::new(&mut f.ensemble).range(1..=64))
                .labelled_by(name)
                .on_hover_text("noise draws averaged (DIFT uses 8)");
            ui.end_row();
            let name = ui.label("seed").id;
            ui.add(egui::DragValue::new(&mut f.seed)).labelled_by(name);
            ui.end_row();
            let name = ui.label("prompt").id;
            ui.add_enabled(
                conditional,
                egui::TextEdit::singleline(&mut f.prompt).desired_width(180.0),
            )
            .labelled_by(name)
            .on_disabled_hover_text("this model takes no prompt");
            ui.end_row();
            let name = ui.label("input size").id;
            let label = |s: InputSize| match s {
                InputSize::Native => format!(
                    "native ({})",
                    native.map_or("?".into(), |n| format!("{n}×{n}"))
                ),
                InputSize::Square(n) => format!("{n}×{n}"),
                InputSize::Original => "each image's own".into(),
            };
            egui::ComboBox::from_id_salt("input-size")
                .selected_text(label(f.size))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut f.size, InputSize::Native, label(InputSize::Native));
                    for side in [64, 128, 256, 512, 768, 1024] {
                        if side % multiple == 0 {
                            ui.selectable_value(
                                &mut f.size,
                                InputSize::Square(side),
                                label(InputSize::Square(side)),
                            );
                        }
                    }
                    ui.selectable_value(
                        &mut f.size,
                        InputSize::Original,
                        label(InputSize::Original),
                    );
                })
                .response
                .labelled_by(name);
            ui.end_row();
        });
}

fn view_section(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.heading("View");
    ui.horizontal(|ui| {
        for kind in ViewKind::ALL {
            ui.selectable_value(&mut app.settings.view, kind, kind.label());
        }
    });
    match app.settings.view {
        ViewKind::Correspondence => correspondence_settings(app, ui),
        ViewKind::Pca => {
            let p = &mut app.settings.pca;
            ui.horizontal(|ui| {
                ui.radio_value(&mut p.joint, true, "joint fit");
                ui.radio_value(&mut p.joint, false, "per image");
            });
            ui.checkbox(&mut p.lock, "lock basis")
                .on_hover_text("keep the fitted basis and colour range while t or the block changes, so colours stay comparable");
        }
        ViewKind::Segmentation => {
            let s = &mut app.settings.segment;
            ui.horizontal(|ui| {
                ui.radio_value(&mut s.method, SegmentMethod::KMeans, "k-means");
                ui.radio_value(&mut s.method, SegmentMethod::NCut, "normalized cut");
            });
            match s.method {
                SegmentMethod::KMeans => {
                    ui.add(egui::Slider::new(&mut s.k, 2..=20).text("K"));
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut s.joint, true, "joint");
                        ui.radio_value(&mut s.joint, false, "per image (matched)");
                    });
                }
                SegmentMethod::NCut => {
                    ui.add(egui::Slider::new(&mut s.tau, 0.05..=1.0).text("tau"));
                    ui.add(egui::Slider::new(&mut s.alpha, 1.0..=20.0).text("alpha"));
                }
            }
        }
    }
    if let Some(result) = &app.analysis {
        if let diffscope_engine::worker::ViewResult::Pca { description, .. }
        | diffscope_engine::worker::ViewResult::Segments { description, .. } = &result.view
        {
            if crate::gui::views::result_matches_view(result, app.settings.view) {
                ui.label(egui::RichText::new(description).small());
            }
        }
    }
}

fn correspondence_settings(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.label(
        egui::RichText::new(
            "Click or drag on the source to move the active point; shift+click pins a new one.",
        )
        .small(),
    );
    let s = &mut app.settings;
    let mut remove = None;
    for (i, p) in s.points.iter().enumerate() {
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(egui::Vec2::splat(12.0), egui::Sense::hover());
            ui.painter().circle_filled(rect.center(), 6.0, palette(i));
            if ui
                .selectable_label(
                    s.active_point == i,
                    format!("P{}: ({:.1}, {:.1})", i + 1, p[0], p[1]),
                )
                .clicked()
            {
                s.active_point = i;
            }
            if ui.small_button("x").clicked() {
                remove = Some(i);
            }
        });
    }
    if let Some(i) = remove {
        s.points.remove(i);
        s.active_point = s.active_point.min(s.points.len().saturating_sub(1));
    }
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!s.points.is_empty(), egui::Button::new("Clear points"))
            .clicked()
        {
            s.points.clear();
            s.active_point = 0;
        }
        ui.checkbox(&mut s.show_keypoints, "show annotated keypoints");
    });
}

fn overlay_section(app: &mut WorkbenchApp, ui: &mut egui::Ui) {
    ui.heading("Overlay");
    let o = &mut app.settings.overlay;
    egui::Grid::new("overlay").num_columns(2).show(ui, |ui| {
        let name = ui.label("colormap").id;
        egui::ComboBox::from_id_salt("colormap")
            .selected_text(o.colormap.name())
            .show_ui(ui, |ui| {
                for map in Colormap::ALL {
                    ui.selectable_value(&mut o.colormap, map, map.name());
                }
            })
            .response
            .labelled_by(name);
        ui.end_row();
        let name = ui.label("opacity").id;
        ui.add(egui::Slider::new(&mut o.opacity, 0.0..=1.0))
            .labelled_by(name);
        ui.end_row();
        ui.label("upsampling");
        ui.horizontal(|ui| {
            ui.radio_value(&mut o.bilinear, false, "nearest");
            ui.radio_value(&mut o.bilinear, true, "bilinear");
        });
        ui.end_row();
        let name = ui.label("range").id;
        ui.horizontal(|ui| {
            let mut fixed = o.range.is_some();
            if ui.checkbox(&mut fixed, "fixed").changed() {
                o.range = fixed.then_some([0.0, 1.0]);
            }
            if let Some(r) = &mut o.range {
                let (lo, hi) = (r[0], r[1]);
                ui.add(egui::DragValue::new(&mut r[0]).speed(0.01).range(-1.0..=hi))
                    .labelled_by(name);
                ui.add(egui::DragValue::new(&mut r[1]).speed(0.01).range(lo..=1.0))
                    .labelled_by(name);
            } else {
                ui.label("of the maps shown");
            }
        });
        ui.end_row();
    });
}
