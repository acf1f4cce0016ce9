//! Panels on their own, without the app or the engine: each draws from a `PanelContext` built
//! here, edits the settings it owns, and pushes actions, which the tests read off the queue.

use std::path::PathBuf;
use std::sync::Arc;

use diffscope::gui::actions::{self, Action, ActionSender, ModelOptions};
use diffscope::gui::context::{PanelContext, Slot};
use diffscope::gui::jobs::JobTable;
use diffscope::gui::panels::{controls, top};
use diffscope::gui::remembered::Remembered;
use diffscope::gui::results::Results;
use diffscope::gui::samples::Library;
use diffscope::gui::state::{Settings, ViewKind};
use diffscope_engine::device::{DeviceChoice, Precision};
use diffscope_engine::model::pipeline::{ModelFamily, ModelSummary};
use diffscope_engine::worker::{ComputeChoice, LoadedImage, ModelInfo};
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

/// What the app would hold: what the panels edit, and what they only read.
struct Fake {
    settings: Settings,
    path_input: String,
    state: State,
}

/// What the panels see through a `PanelContext`.
struct State {
    model: Option<Arc<ModelInfo>>,
    slots: Vec<Slot>,
    results: Results,
    jobs: JobTable,
    library: Library,
    remembered: Remembered,
    actions: ActionSender,
}

impl State {
    fn context(&self) -> PanelContext<'_> {
        PanelContext {
            model_spec: "default",
            model: self.model.as_ref(),
            second_model: None,
            slots: &self.slots,
            results: &self.results,
            jobs: &self.jobs,
            messages: &[],
            library: &self.library,
            remembered: &self.remembered,
            has_gpu: false,
            frame_times: None,
            actions: &self.actions,
        }
    }
}

fn fake() -> (Fake, crossbeam_channel::Receiver<Action>) {
    let (actions, queue) = actions::queue();
    let fake = Fake {
        settings: Settings::default(),
        path_input: String::new(),
        state: State {
            model: None,
            slots: Vec::new(),
            results: Results::default(),
            jobs: JobTable::default(),
            library: Library {
                samples_dir: PathBuf::from("/samples"),
                samples: vec![PathBuf::from("/samples/JPEGImages/owl/owl_1.png")],
                hf_models: Vec::new(),
            },
            remembered: Remembered::default(),
            actions,
        },
    };
    (fake, queue)
}

/// An open image named `name` (4x4 grey) in the fake's slots.
fn add_slot(h: &mut Harness<'_, Fake>, key: u64, name: &str) {
    let rgb = image::RgbImage::from_pixel(4, 4, image::Rgb([128, 128, 128]));
    let texture = h.ctx.load_texture(
        name,
        egui::ColorImage::from_rgb([4, 4], rgb.as_raw()),
        egui::TextureOptions::LINEAR,
    );
    let image = Arc::new(LoadedImage {
        key,
        path: PathBuf::from("/images").join(name),
        rgb,
        keypoints: None,
    });
    h.state_mut().state.slots.push(Slot { image, texture });
}

fn controls_harness(fake: Fake) -> Harness<'static, Fake> {
    Harness::builder()
        .with_size(egui::vec2(420.0, 1000.0))
        .build_ui_state(
            |ui, fake: &mut Fake| {
                controls::show(ui, &fake.state.context(), &mut fake.settings);
            },
            fake,
        )
}

#[test]
fn the_controls_panel_edits_its_settings_and_pushes_image_actions() {
    let (fake, queue) = fake();
    let mut h = controls_harness(fake);
    add_slot(&mut h, 1, "source.png");
    add_slot(&mut h, 2, "target.png");
    h.run_steps(2);

    // Settings are the panel's own: edited in place, no action.
    h.get_by_label("PCA").click();
    h.run_steps(2);
    assert_eq!(h.state().settings.view, ViewKind::Pca);
    h.get_by_label("lock basis").click();
    h.run_steps(2);
    assert!(h.state().settings.pca.lock);
    h.get_by_label("Correspondence").click();
    h.state_mut().settings.points = vec![[1.0, 2.0], [3.0, 0.5]];
    h.run_steps(2);
    h.get_by_label("Clear points").click();
    h.run_steps(2);
    assert!(h.state().settings.points.is_empty());
    assert_eq!(queue.try_iter().collect::<Vec<_>>(), []);

    // The images are the app's: the panel asks.
    h.get_all_by_label("x").nth(1).unwrap().click();
    h.run_steps(1);
    h.get_all_by_label("down").next().unwrap().click();
    h.run_steps(1);
    h.get_all_by_label("up").nth(1).unwrap().click();
    h.run_steps(1);
    h.get_by_label("Add sample").click();
    h.run_steps(2);
    h.get_by_label("JPEGImages/owl/owl_1.png").click();
    h.run_steps(1);
    assert_eq!(
        queue.try_iter().collect::<Vec<_>>(),
        [
            Action::RemoveImage(1),
            Action::MoveImage { from: 0, to: 1 },
            Action::MoveImage { from: 1, to: 0 },
            Action::AddImage(PathBuf::from("/samples/JPEGImages/owl/owl_1.png")),
        ]
    );
    // Nothing was applied: the panel only asked.
    assert_eq!(h.state().state.slots.len(), 2);
}

#[test]
fn the_path_bar_loads_a_typed_model_folder() {
    let (fake, queue) = fake();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1200.0, 60.0))
        .build_ui_state(
            |ui, fake: &mut Fake| {
                top::show(ui, &fake.state.context(), &mut fake.path_input);
            },
            fake,
        );
    h.run_steps(1);
    h.get_by_label("Load model").click();
    h.run_steps(1);
    // Disabled without a path.
    assert_eq!(queue.try_iter().count(), 0);
    h.state_mut().path_input = "/models/sd-2-1".into();
    h.run_steps(1);
    h.get_by_label("Load model").click();
    h.run_steps(1);
    assert_eq!(
        queue.try_iter().collect::<Vec<_>>(),
        [Action::LoadModel {
            spec: "/models/sd-2-1".into(),
            options: ModelOptions::default(),
        }]
    );
}

/// The model panel reloads the model on the device and in the precision picked.
#[test]
fn the_model_reloads_on_the_device_and_precision_picked() {
    let (mut fake, queue) = fake();
    fake.state.model = Some(Arc::new(ModelInfo {
        spec: "default".into(),
        summary: ModelSummary {
            name: "default".into(),
            architecture: "UNet2DModel (pixel space)".into(),
            parameters: 1000,
            device: "CPU".into(),
            precision: Precision::F32,
            family: ModelFamily::UNet,
            latent: false,
            conditional: false,
            timesteps: 1000,
            taps: Vec::new(),
            attention: Vec::new(),
            input_stride: 1,
        },
        alpha_bar: vec![0.5; 1000],
        snr: vec![1.0; 1000],
        native_side: Some(64),
        size_multiple: 4,
        suggested: None,
    }));
    let mut h = Harness::builder()
        .with_size(egui::vec2(400.0, 900.0))
        .build_ui_state(
            |ui, fake: &mut Fake| controls::show(ui, &fake.state.context(), &mut fake.settings),
            fake,
        );
    h.run_steps(1);
    assert!(
        h.query_by_label("CPU f32").is_some(),
        "the device and precision in use"
    );
    let picked = ComputeChoice {
        device: DeviceChoice::Cpu,
        precision: Precision::BF16,
    };
    h.state_mut().settings.compute = picked;
    h.run_steps(1);
    h.get_by_label("Reload").click();
    h.run_steps(1);
    assert_eq!(
        queue.try_iter().collect::<Vec<_>>(),
        [Action::LoadModel {
            spec: "default".into(),
            options: ModelOptions {
                compute: Some(picked),
            },
        }]
    );
}
