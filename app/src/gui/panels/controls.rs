//! The left panel: the model, the image slots, the feature settings (t, block, ensemble, seed,
//! prompt, input size), the view and its settings, and the overlay's look.

use eframe::egui;

use diffscope_engine::model::attention_probs::AttentionKind;
use diffscope_engine::model::clip::TokenRole;
use diffscope_engine::model::pipeline::ModelFamily;
use diffscope_engine::worker::{ViewKey, ViewResult};

use diffscope_engine::device::{DeviceChoice, Precision};

use crate::gui::actions::{Action, Dialog, ModelOptions};
use crate::gui::colormap::{palette, Colormap};
use crate::gui::context::{PanelContext, MAX_IMAGES};
use crate::gui::state::{AttentionMode, InputSize, SegmentMethod, Settings, ViewKind};
use crate::gui::views::result_matches_view;

/// The panel edits `settings` directly; everything else it asks for as actions.
pub fn show(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    egui::Panel::left("controls")
        .resizable(true)
        .default_size(390.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                model_section(ui, cx, settings);
                ui.separator();
                images_section(ui, cx);
                ui.separator();
                features_section(ui, cx, settings);
                ui.separator();
                view_section(ui, cx, settings);
                ui.separator();
                overlay_section(ui, settings);
            });
        });
}

/// The device and precision to reload the model with: every device a build can name (a device
/// this build or machine lacks is refused with a message when the model reloads).
fn compute_picker(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    let compute = &mut settings.compute;
    ui.scope(|ui| {
        egui::ComboBox::from_id_salt("device")
            .width(64.0)
            .selected_text(compute.device.to_string())
            .show_ui(ui, |ui| {
                for device in [
                    DeviceChoice::Auto,
                    DeviceChoice::Cpu,
                    DeviceChoice::Cuda(0),
                    DeviceChoice::Cuda(1),
                    DeviceChoice::Metal(0),
                ] {
                    ui.selectable_value(&mut compute.device, device, device.to_string());
                }
            })
            .response
            .on_hover_text("Where the model computes: auto picks the first GPU this build supports, else the CPU");
        egui::ComboBox::from_id_salt("precision")
            .width(44.0)
            .selected_text(compute.precision.name())
            .show_ui(ui, |ui| {
                for precision in Precision::ALL {
                    ui.selectable_value(&mut compute.precision, precision, precision.name());
                }
            })
            .response
            .on_hover_text(
                "Precision of weights and activations: f16/bf16 are for GPUs (on the CPU they are \
                 computed in f32 and rounded, and are slower); features are always float32",
            );
        let reload = ui
            .add_enabled(
                !cx.model_spec.is_empty() && !cx.jobs.is_running(ViewKey::Model),
                egui::Button::new("Reload"),
            )
            .on_hover_text("Load the model again on this device in this precision");
        if reload.clicked() {
            cx.actions.send(Action::LoadModel {
                spec: cx.model_spec.to_string(),
                options: ModelOptions {
                    compute: Some(*compute),
                },
            });
        }
    });
}

fn model_section(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    ui.heading("Model");
    let loading = cx.jobs.is_running(ViewKey::Model);
    if loading {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("loading {}", short_path(cx.model_spec)));
        });
    }
    match cx.model {
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
                ui.horizontal(|ui| {
                    ui.label(format!("{} {}", s.device, s.precision));
                    compute_picker(ui, cx, settings);
                });
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
                let current =
                    settings.features.tap == suggested.tap && settings.features.t == suggested.t;
                let button = ui
                    .add_enabled(!current, egui::Button::new(label))
                    .on_hover_text(format!(
                        "use the tap and t the model's folder suggests: {}",
                        suggested.why
                    ))
                    .on_disabled_hover_text("the suggested tap and t are the current ones");
                if button.clicked() {
                    settings.features.tap = suggested.tap;
                    settings.features.t = suggested.t;
                }
            }
        }
        None if !loading => {
            ui.label("No model loaded: Model > Bundled default, or type a folder in the path bar.");
        }
        None => {}
    }
}

/// The second feature source fused with the model's tap (loaded from the Model menu): which of
/// its taps, and its weight. Nothing shows without one.
fn fusion_section(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    let Some(second) = cx.second_model else {
        return;
    };
    let f = &mut settings.features;
    ui.label(format!("Fused with {}", second.summary.name))
        .on_hover_text(&second.summary.architecture);
    let tap = crate::gui::state::tap_or_fallback(second, &f.fuse_tap);
    egui::ComboBox::from_label("fused tap")
        .selected_text(&tap)
        .show_ui(ui, |ui| {
            for t in second.summary.taps.iter().filter(|t| t.block_level) {
                ui.selectable_value(&mut f.fuse_tap, t.name.clone(), &t.name);
            }
        });
    ui.add(egui::Slider::new(&mut f.fuse_weight, 0.0..=1.0).text("fusion weight"))
        .on_hover_text("the second source's share; the model's tap gets the rest. Each source is resized to the finer grid, L2-normalised, weighted and joined (SD-DINO: 0.5)");
}

/// The last two components of a path, as model names are shown.
fn short_path(path: &str) -> String {
    let parts: Vec<&str> = path.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn images_section(ui: &mut egui::Ui, cx: &PanelContext) {
    ui.heading("Images");
    let count = cx.slots.len();
    for (i, slot) in cx.slots.iter().enumerate() {
        ui.horizontal(|ui| {
            let role = if i == 0 { "source" } else { "target" };
            ui.label(egui::RichText::new(role).strong());
            ui.label(slot.name())
                .on_hover_text(slot.image.path.display().to_string());
            if slot.image.keypoints.is_some() {
                ui.label("(kp)").on_hover_text("has keypoint annotations");
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.small_button("x").on_hover_text("remove").clicked() {
                    cx.send(Action::RemoveImage(i));
                }
                if ui
                    .add_enabled(i + 1 < count, egui::Button::new("down").small())
                    .on_hover_text("move down")
                    .clicked()
                {
                    cx.send(Action::MoveImage { from: i, to: i + 1 });
                }
                if ui
                    .add_enabled(i > 0, egui::Button::new("up").small())
                    .on_hover_text("move up (the first image is the source)")
                    .clicked()
                {
                    cx.send(Action::MoveImage { from: i, to: i - 1 });
                }
            });
        });
    }
    for path in cx.loading_images() {
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
        let room = cx.has_room_for_images();
        if ui
            .add_enabled(room, egui::Button::new("Add files…"))
            .on_hover_text("add PNG or JPEG images with a file dialog (Ctrl+O)")
            .on_disabled_hover_text(format!("at most {MAX_IMAGES} images are open at once"))
            .clicked()
        {
            cx.send(Action::Pick(Dialog::AddImages));
        }
        let library = cx.library;
        ui.add_enabled_ui(room && !library.samples.is_empty(), |ui| {
            let menu = ui.menu_button("Add sample", |ui| {
                egui::ScrollArea::vertical()
                    .max_height(300.0)
                    .show(ui, |ui| {
                        for path in &library.samples {
                            let name = path
                                .strip_prefix(&library.samples_dir)
                                .unwrap_or(path)
                                .display()
                                .to_string();
                            if ui
                                .button(name)
                                .on_hover_text(
                                    "add this bundled sample (it has keypoint annotations)",
                                )
                                .clicked()
                            {
                                cx.send(Action::AddImage(path.clone()));
                                ui.close();
                            }
                        }
                    });
            });
            menu.response
                .on_hover_text("add one of the bundled sample images")
                .on_disabled_hover_text("no room for another image, or no samples found");
        });
    });
    ui.label(egui::RichText::new("or drop image files on the window").small());
}

fn features_section(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    ui.heading("Features");
    let f = &mut settings.features;
    let vit = cx
        .model
        .is_some_and(|m| m.summary.family == ModelFamily::VisionTransformer);
    if vit {
        ui.label("DINOv2: no timestep or noise; one pass per image.");
    } else {
        ui.add(
            egui::Slider::new(&mut f.t, 0..=cx.last_t())
                .text("t")
                .integer(),
        )
        .on_hover_text(
            "noise timestep t, in steps of the model's schedule: 0 is the clean image, the last \
             step almost pure noise (DIFT uses 261 for SD). Arrow keys: ±10, with Shift ±1",
        );
    }
    if let Some((alpha_bar, snr)) = cx.noise_level(f.t) {
        ui.label(format!(
            "noise level: alpha-bar {alpha_bar:.4}, SNR {snr:.3} ({:.1} dB)",
            10.0 * snr.log10()
        ));
    }
    if let Some(result) = &cx.results.analysis {
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
    if settings.view == ViewKind::Attention {
        ui.label(match &settings.attention.layer {
            Some(layer) => format!("Attention layer: {layer}"),
            None => format!("Attention layers: {}", settings.attention.block),
        });
        super::unet::show_attention(ui, cx, &settings.features, &mut settings.attention);
    } else {
        fusion_section(ui, cx, settings);
        ui.label(format!("Block: {}", settings.features.tap));
        super::unet::show(ui, cx, &mut settings.features);
    }
    let conditional = cx.model.is_some_and(|m| m.summary.conditional);
    let native = cx.model.and_then(|m| m.native_side);
    let multiple = cx.model.map_or(8, |m| m.size_multiple.max(1));
    let f = &mut settings.features;
    egui::Grid::new("feature-settings")
        .num_columns(2)
        .show(ui, |ui| {
            let name = ui.label("ensemble").id;
            ui.horizontal(|ui| {
                ui.add_enabled(!vit && !f.clean, egui::DragValue::new(&mut f.ensemble).range(1..=64))
                    .labelled_by(name)
                    .on_hover_text("number of noise draws whose features are averaged (DIFT uses 8)");
                ui.add_enabled(!vit, egui::Checkbox::new(&mut f.clean, "CleanDIFT"))
                    .on_hover_text("CleanDIFT's recipe: the clean latent through the UNet once, t only in the time embedding, no noise (for its noise-free UNets). Off: DIFT's, noised to t and averaged over the draws");
            });
            ui.end_row();
            let name = ui.label("seed").id;
            ui.add(egui::DragValue::new(&mut f.seed))
                .labelled_by(name)
                .on_hover_text(
                    "seed of the noise draws (an integer): the same seed, the same features",
                );
            ui.end_row();
            let name = ui.label("prompt").id;
            ui.add_enabled(
                conditional,
                egui::TextEdit::singleline(&mut f.prompt).desired_width(180.0),
            )
            .labelled_by(name)
            .on_hover_text(
                "text prompt the UNet is conditioned on (empty: the empty prompt, as DIFT uses)",
            )
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
                    let mut choice = |ui: &mut egui::Ui, size: InputSize, what: &str| {
                        ui.selectable_value(&mut f.size, size, label(size))
                            .on_hover_text(what);
                    };
                    choice(ui, InputSize::Native, "the side the model was trained at");
                    for side in [64, 128, 256, 512, 768, 1024] {
                        if side % multiple == 0 {
                            choice(
                                ui,
                                InputSize::Square(side),
                                "squash every image to this square",
                            );
                        }
                    }
                    choice(ui, InputSize::Original, "each image at its own size");
                })
                .response
                .labelled_by(name)
                .on_hover_text(
                    "the size (in pixels) images are resized to, squashed, before extraction; \
                     native is the side the model was trained at",
                );
            ui.end_row();
        });
}

fn view_section(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    ui.heading("View");
    ui.horizontal(|ui| {
        for kind in ViewKind::ALL {
            let what = match kind {
                ViewKind::Correspondence => {
                    "click points on the source and see where they match in the targets (cosine similarity)"
                }
                ViewKind::Pca => "the features' first three principal components as RGB",
                ViewKind::Segmentation => "the images segmented by clustering their features",
                ViewKind::Attention => {
                    "where a prompt's word or a clicked point attends, from the UNet's attention (DAAM-style)"
                }
            };
            ui.selectable_value(&mut settings.view, kind, kind.label())
                .on_hover_text(what);
        }
    });
    match settings.view {
        ViewKind::Correspondence => correspondence_settings(ui, settings),
        ViewKind::Pca => {
            let p = &mut settings.pca;
            ui.horizontal(|ui| {
                ui.radio_value(&mut p.joint, true, "joint fit")
                    .on_hover_text(
                        "one PCA fitted on all images together: colours mean the same in each",
                    );
                ui.radio_value(&mut p.joint, false, "per image")
                    .on_hover_text("a PCA fitted on each image alone");
            });
            ui.checkbox(&mut p.lock, "lock basis")
                .on_hover_text("keep the fitted basis and colour range while t or the block changes, so colours stay comparable");
        }
        ViewKind::Segmentation => {
            let s = &mut settings.segment;
            ui.horizontal(|ui| {
                ui.radio_value(&mut s.method, SegmentMethod::KMeans, "k-means")
                    .on_hover_text("k-means++ on the L2-normalised features");
                ui.radio_value(&mut s.method, SegmentMethod::NCut, "normalized cut")
                    .on_hover_text("recursive normalized cut, as DiffCut does");
            });
            match s.method {
                SegmentMethod::KMeans => {
                    ui.add(egui::Slider::new(&mut s.k, 2..=20).text("K"))
                        .on_hover_text("number of clusters (segments)");
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut s.joint, true, "joint")
                            .on_hover_text("cluster all images' features together");
                        ui.radio_value(&mut s.joint, false, "per image (matched)")
                            .on_hover_text(
                                "cluster each image alone, then match the clusters across images",
                            );
                    });
                }
                SegmentMethod::NCut => {
                    ui.add(egui::Slider::new(&mut s.tau, 0.05..=1.0).text("tau"))
                        .on_hover_text(
                            "a segment is split while its normalized cut is below tau (0 to 1; DiffCut: 0.5)",
                        );
                    ui.add(egui::Slider::new(&mut s.alpha, 1.0..=20.0).text("alpha"))
                        .on_hover_text(
                            "affinity exponent: min-max normalised cosine similarity to the power alpha (DiffCut: 10)",
                        );
                }
            }
        }
        ViewKind::Attention => attention_settings(ui, cx, settings),
    }
    if let Some(result) = &cx.results.analysis {
        if let ViewResult::Pca { description, .. }
        | ViewResult::Segments { description, .. }
        | ViewResult::Attention { description, .. } = &result.view
        {
            if result_matches_view(result, settings.view) {
                ui.label(egui::RichText::new(description).small());
            }
        }
    }
}

/// Cross-attention: the prompt's words as chips; self-attention: the clicked point. The head.
fn attention_settings(ui: &mut egui::Ui, cx: &PanelContext, settings: &mut Settings) {
    let Some(model) = cx.model else {
        return;
    };
    let a = &mut settings.attention;
    let has_cross = model
        .summary
        .attention
        .iter()
        .any(|m| m.kind == AttentionKind::CrossAttention);
    // The mode shown is the one the model can show; a choice made here is kept.
    let mut mode = a.mode_for(model);
    ui.horizontal(|ui| {
        ui.add_enabled_ui(has_cross, |ui| {
            ui.radio_value(&mut mode, AttentionMode::Cross, "where a word lands")
                .on_disabled_hover_text("this model has no cross-attention");
        });
        ui.radio_value(
            &mut mode,
            AttentionMode::SelfAttention,
            "where a point looks",
        );
    });
    if mode != a.mode_for(model) {
        a.kind = mode;
    }
    match a.mode_for(model) {
        AttentionMode::Cross => {
            let shown = cx.results.analysis.as_ref().and_then(|r| match &r.view {
                ViewResult::Attention { tokens, token, .. } => Some((tokens.as_ref()?, *token)),
                _ => None,
            });
            match shown {
                Some((tokens, token)) => {
                    ui.label(egui::RichText::new("The prompt's tokens: click one.").small());
                    ui.horizontal_wrapped(|ui| {
                        for (i, t) in tokens.iter().enumerate() {
                            if t.role == TokenRole::Padding {
                                continue;
                            }
                            if ui
                                .selectable_label(token == Some(i), &t.text)
                                .on_hover_text(format!("token {i}: `{}` (id {})", t.token, t.id))
                                .clicked()
                            {
                                a.token = Some(i);
                            }
                        }
                    });
                }
                None => {
                    ui.label(
                        egui::RichText::new("(the prompt's tokens come with the first map)")
                            .small(),
                    );
                }
            }
        }
        AttentionMode::SelfAttention => {
            ui.label(
                egui::RichText::new("Click or drag on an image to see where that point looks.")
                    .small(),
            );
            if let Some((slot, p)) = a.point {
                ui.horizontal(|ui| {
                    let name = cx.slots.get(slot).map(|s| s.name()).unwrap_or_default();
                    ui.label(format!("point ({:.1}, {:.1}) on {name}", p[0], p[1]));
                    if ui.small_button("x").clicked() {
                        a.point = None;
                    }
                });
            }
        }
    }
    let heads = a.modules(model).iter().map(|m| m.heads).max().unwrap_or(1);
    let label = |h: Option<usize>| match h {
        Some(h) => format!("head {h}"),
        None => "all heads, summed".to_string(),
    };
    egui::ComboBox::from_label("heads")
        .selected_text(label(a.head))
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut a.head, None, label(None));
            for h in 0..heads {
                ui.selectable_value(&mut a.head, Some(h), label(Some(h)));
            }
        });
}

fn correspondence_settings(ui: &mut egui::Ui, s: &mut Settings) {
    ui.label(
        egui::RichText::new(
            "Click or drag on the source to move the active point; shift+click pins a new one.",
        )
        .small(),
    );
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
                .on_hover_text("make this point (x, y in source pixels) the active one: its similarity map is shown")
                .clicked()
            {
                s.active_point = i;
            }
            if ui
                .small_button("x")
                .on_hover_text("remove this point (Backspace removes the last)")
                .clicked()
            {
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
            .on_hover_text("remove every point on the source")
            .on_disabled_hover_text("no points: click on the source to add one")
            .clicked()
        {
            s.points.clear();
            s.active_point = 0;
        }
        ui.checkbox(&mut s.show_keypoints, "show annotated keypoints")
            .on_hover_text(
                "draw the images' keypoint annotations (numbered squares), where they have them",
            );
    });
}

fn overlay_section(ui: &mut egui::Ui, settings: &mut Settings) {
    ui.heading("Overlay");
    let o = &mut settings.overlay;
    egui::Grid::new("overlay").num_columns(2).show(ui, |ui| {
        let name = ui.label("colormap").id;
        egui::ComboBox::from_id_salt("colormap")
            .selected_text(o.colormap.name())
            .show_ui(ui, |ui| {
                for map in Colormap::ALL {
                    ui.selectable_value(&mut o.colormap, map, map.name())
                        .on_hover_text("colour the heatmaps with this map");
                }
            })
            .response
            .labelled_by(name)
            .on_hover_text("matplotlib's colormap of the similarity heatmaps");
        ui.end_row();
        let name = ui.label("opacity").id;
        ui.add(egui::Slider::new(&mut o.opacity, 0.0..=1.0))
            .labelled_by(name)
            .on_hover_text("opacity of the overlay over the image: 0 transparent, 1 opaque");
        ui.end_row();
        ui.label("upsampling");
        ui.horizontal(|ui| {
            ui.radio_value(&mut o.bilinear, false, "nearest")
                .on_hover_text("each feature cell drawn as a block");
            ui.radio_value(&mut o.bilinear, true, "bilinear")
                .on_hover_text("values interpolated between feature cells, then coloured");
        });
        ui.end_row();
        let name = ui.label("range").id;
        ui.horizontal(|ui| {
            let mut fixed = o.range.is_some();
            if ui
                .checkbox(&mut fixed, "fixed")
                .on_hover_text("colour a fixed range of cosine similarity instead of the range of the maps shown")
                .changed()
            {
                o.range = fixed.then_some([0.0, 1.0]);
            }
            if let Some(r) = &mut o.range {
                let (lo, hi) = (r[0], r[1]);
                ui.add(egui::DragValue::new(&mut r[0]).speed(0.01).range(-1.0..=hi))
                    .labelled_by(name)
                    .on_hover_text("cosine similarity at the colormap's low end");
                ui.add(egui::DragValue::new(&mut r[1]).speed(0.01).range(lo..=1.0))
                    .labelled_by(name)
                    .on_hover_text("cosine similarity at the colormap's high end");
            } else {
                ui.label("of the maps shown");
            }
        });
        ui.end_row();
    });
}
