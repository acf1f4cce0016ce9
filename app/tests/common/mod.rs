//! Helpers of the workbench tests: a small annotated dataset in SPair layout, the harness, waiting
//! for the engine, clicking on images.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diffscope::gui::views::to_screen;
use diffscope::gui::{GuiOptions, WorkbenchApp};
use diffscope_engine::analysis::correspond::{
    correspond_point, CorrespondOptions, NormalizedMap, PointMatch, Target,
};
use diffscope_engine::analysis::{ImagePoint, ImageSize};
use diffscope_engine::features::extract::{extract_image, ExtractSettings};
use diffscope_engine::features::recipe::NoiseSource;
use diffscope_engine::model::pipeline::{DiffusionModel, PromptSource};
use diffscope_engine::worker::AnalysisResult;
use diffscope_engine::FeatureMap;
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// Two fixture images in SPair layout with made-up keypoint annotations, and the tiny model.
pub struct Dataset {
    pub dir: tempfile::TempDir,
    pub source: PathBuf,
    pub target: PathBuf,
    pub model: String,
}

pub const SOURCE_KEYPOINTS: [[f32; 2]; 3] = [[5.0, 6.0], [16.0, 16.0], [27.0, 9.0]];
pub const TARGET_KEYPOINTS: [[f32; 2]; 3] = [[8.0, 5.0], [24.0, 15.0], [40.0, 25.0]];

impl Dataset {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("JPEGImages/blob");
        let annotations = dir.path().join("ImageAnnotation/blob");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&annotations).unwrap();
        let mut paths = Vec::new();
        for (name, fixture, kps) in [
            ("a", "square_32.png", SOURCE_KEYPOINTS),
            ("b", "wide_48x32.png", TARGET_KEYPOINTS),
        ] {
            let path = images.join(format!("{name}.png"));
            std::fs::copy(fixtures().join("images").join(fixture), &path).unwrap();
            let kps: serde_json::Map<String, serde_json::Value> = kps
                .iter()
                .enumerate()
                .map(|(i, p)| (i.to_string(), serde_json::json!([p[0], p[1]])))
                .collect();
            let annotation = serde_json::json!({
                "filename": format!("{name}.png"), "category": "blob", "bndbox": [0, 0, 31, 31], "kps": kps
            });
            std::fs::write(
                annotations.join(format!("{name}.json")),
                annotation.to_string(),
            )
            .unwrap();
            paths.push(path);
        }
        Self {
            source: paths[0].clone(),
            target: paths[1].clone(),
            model: fixtures().join("models/ddpm_tiny").display().to_string(),
            dir,
        }
    }

    /// The same data with the tiny model in a folder of its own that suggests `tap` and `t`
    /// (a `diffscope.json`); the weights are linked, not copied.
    #[cfg(unix)]
    pub fn with_suggested(mut self, tap: &str, t: usize) -> Self {
        let fixture = fixtures().join("models/ddpm_tiny");
        let model = self.dir.path().join("suggesting-model");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::copy(
            fixture.join("model_index.json"),
            model.join("model_index.json"),
        )
        .unwrap();
        for part in ["unet", "scheduler"] {
            std::os::unix::fs::symlink(fixture.join(part), model.join(part)).unwrap();
        }
        let hints = serde_json::json!({"suggested": {"tap": tap, "t": t, "why": "test"}});
        std::fs::write(model.join("diffscope.json"), hints.to_string()).unwrap();
        self.model = model.display().to_string();
        self
    }

    pub fn source_keypoint(&self, i: usize) -> [f32; 2] {
        SOURCE_KEYPOINTS[i]
    }
}

pub fn options(data: &Dataset) -> GuiOptions {
    GuiOptions {
        model: data.model.clone(),
        images: vec![data.source.clone(), data.target.clone()],
        samples_dir: data.dir.path().to_path_buf(),
        session: None,
        cache_dir: None,
        measure_frames: None,
        device: Default::default(),
        precision: Default::default(),
        restore: false,
    }
}

pub fn harness(options: GuiOptions) -> Harness<'static, WorkbenchApp> {
    harness_with_storage(options, None)
}

/// The app started with `storage` as eframe's storage (what a previous run saved).
pub fn harness_with_storage(
    options: GuiOptions,
    storage: Option<&'static dyn eframe::Storage>,
) -> Harness<'static, WorkbenchApp> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| {
            cc.storage = storage;
            WorkbenchApp::new(cc, options)
        });
    h.state_mut().show_frame_times = false;
    // Tests never open a real file dialog (whether one could open depends on the machine).
    h.state_mut().file_dialogs = false;
    assert!(
        h.state().has_gpu,
        "the wgpu test renderer gave the app no render state"
    );
    h
}

const TIMEOUT: Duration = Duration::from_secs(120);

/// Step frames until `done` holds of the app.
pub fn wait_for(
    h: &mut Harness<'static, WorkbenchApp>,
    what: &str,
    mut done: impl FnMut(&WorkbenchApp) -> bool,
) {
    let start = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            return;
        }
        let messages: Vec<&str> = h.state().messages.iter().map(|m| m.text.as_str()).collect();
        let shown = h
            .state()
            .results
            .analysis
            .as_ref()
            .map(|r| (r.exact, format!("{:?}", r.request.view)));
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out waiting for {what}; messages: {messages:?}; shown: {shown:?}; busy: {}",
            h.state().is_busy()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Step until an exact analysis result that satisfies `accept` is shown, and a frame drew it.
pub fn wait_for_exact(
    h: &mut Harness<'static, WorkbenchApp>,
    mut accept: impl FnMut(&AnalysisResult) -> bool,
) -> Arc<AnalysisResult> {
    wait_for(h, "an analysis result", |app| {
        app.results
            .analysis
            .as_ref()
            .is_some_and(|r| r.exact && accept(r))
            && !app.is_busy()
    });
    h.run_steps(2);
    h.state().results.analysis.clone().unwrap()
}

pub fn screen_of(h: &Harness<'static, WorkbenchApp>, slot: usize, p: [f32; 2]) -> egui::Pos2 {
    let app = h.state();
    let rect = app.image_rects[slot];
    let (w, hgt) = app.slots[slot].image.rgb.dimensions();
    to_screen(rect, [w, hgt], p)
}

pub fn click_image_with(
    h: &mut Harness<'static, WorkbenchApp>,
    slot: usize,
    p: [f32; 2],
    modifiers: egui::Modifiers,
) {
    // Click on a settled layout: the image rectangles are those of the last frame.
    wait_for(h, "the engine to be idle", |app| !app.is_busy());
    h.run_steps(2);
    let pos = screen_of(h, slot, p);
    h.event_modifiers(egui::Event::PointerMoved(pos), modifiers);
    h.event_modifiers(
        egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed: true,
            modifiers,
        },
        modifiers,
    );
    h.step();
    h.event_modifiers(
        egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed: false,
            modifiers,
        },
        modifiers,
    );
    h.step();
}

pub fn click_image(h: &mut Harness<'static, WorkbenchApp>, slot: usize, p: [f32; 2]) {
    click_image_with(h, slot, p, egui::Modifiers::NONE);
}

/// The match of a source point computed without the app or the worker: features from the files,
/// as the CLI extracts them, then the analysis function.
pub fn direct_match(data: &Dataset, point: [f32; 2], t: usize, tap: &str) -> PointMatch {
    let model = DiffusionModel::load(&data.model, &candle_core::Device::Cpu).unwrap();
    let extract = |path: &Path| {
        let settings = ExtractSettings {
            t,
            taps: vec![tap.to_string()],
            noise: NoiseSource::Seeded {
                seed: 0,
                ensemble: 1,
            },
            prompt: PromptSource::default(),
            size: Some((32, 32)),
            time_ids: None,
        };
        let ex = extract_image(&model, path, &settings, None, &mut |_, _| {}).unwrap();
        NormalizedMap::new(&FeatureMap::from_tensor(&ex.taps[tap]).unwrap(), "map").unwrap()
    };
    let (source, target) = (extract(&data.source), extract(&data.target));
    correspond_point(
        &source,
        ImageSize::new(32, 32),
        ImagePoint::new(point[0], point[1]),
        &[Target {
            map: &target,
            image: ImageSize::new(48, 32),
        }],
        &CorrespondOptions::default(),
    )
    .unwrap()
    .remove(0)
}

/// A snapshot of the whole window, compared with `tests/snapshots/<name>.png` (write the
/// baselines with `UPDATE_SNAPSHOTS=1`).
pub fn snapshot(h: &mut Harness<'static, WorkbenchApp>, name: &str) {
    h.run_steps(2);
    h.snapshot(name);
}

/// Click a control of the left panel by its label, scrolled into view first: the panel scrolls,
/// and a click at a control below its fold would land on nothing.
pub fn click_control(h: &mut Harness<'static, WorkbenchApp>, label: &str) {
    h.get_by_label(label).scroll_to_me();
    // The scroll lands two frames later (the request, then the scroll area's next layout); the
    // accessibility tree that `get_by_label` reads one frame after that.
    h.run_steps(5);
    h.get_by_label(label).click();
}
