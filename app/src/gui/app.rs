//! The workbench app: the state the panels read, the engine handle, and the bookkeeping between
//! them. Each frame it takes in the engine's events, lets the panels draw and push actions, applies
//! those actions, and sends one request per view when the settings changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diffscope_engine::analysis::ImagePoint;
use diffscope_engine::worker::{
    AnalysisRequest, AttentionView, AttentionViewTarget, Command, ElbowRequest, EngineConfig,
    EngineHandle, Event, FeatureSettings, JobId, ModelInfo, PckRequest, SweepRequest, ViewKey,
    ViewRequest,
};
use eframe::egui;

use super::actions::{self, Action, ActionSender, Dialog, ModelOptions};
use super::context::{has_room_for_images, last_t, Message, PanelContext, Slot, MAX_IMAGES};
use super::heatmap::OverlayRenderer;
use super::jobs::{JobKind, JobTable};
use super::panels;
use super::remembered::Remembered;
use super::results::Results;
use super::samples::Library;
use super::session::{Session, SESSION_VERSION};
use super::shortcuts;
use super::state::{tap_or_fallback, AttentionMode, SegmentMethod, Settings, ViewKind};
use super::views::{self, OverlayCache};

/// Time the UI spends draining engine events per frame, at most.
const EVENT_BUDGET: Duration = Duration::from_millis(4);

/// How the workbench starts.
#[derive(Clone, Debug)]
pub struct GuiOptions {
    /// What `--model` takes: `default`, a diffusers folder, a Hugging Face cache folder, or a
    /// Hugging Face name `org/name[@revision]`.
    pub model: String,
    pub images: Vec<PathBuf>,
    /// Where "Add sample" looks (SPair layout: `JPEGImages/<category>/...`).
    pub samples_dir: PathBuf,
    /// Open this session instead of `model` and `images`.
    pub session: Option<PathBuf>,
    /// Keep extracted features on disk here.
    pub cache_dir: Option<PathBuf>,
    /// Measure frame times while the first analysis job runs, write them here as JSON, and close.
    pub measure_frames: Option<PathBuf>,
    /// Where models run and in which precision.
    pub device: diffscope_engine::device::DeviceChoice,
    pub precision: diffscope_engine::device::Precision,
    /// Open what was open when the workbench last closed (eframe's storage), when there is
    /// something remembered, instead of `model` and `images`. A given `session` wins.
    pub restore: bool,
}

impl GuiOptions {
    /// The bundled default model with the first two bundled samples.
    pub fn bundled() -> Self {
        let samples_dir = diffscope_engine::model::repo::assets_dir().join("samples");
        let images = super::samples::list(&samples_dir)
            .into_iter()
            .take(2)
            .collect();
        Self {
            model: "default".into(),
            images,
            samples_dir,
            session: None,
            cache_dir: None,
            measure_frames: None,
            device: Default::default(),
            precision: Default::default(),
            restore: false,
        }
    }
}

pub struct WorkbenchApp {
    engine: EngineHandle,
    pub settings: Settings,
    /// The model asked for last (what a session saves).
    pub model_spec: String,
    pub model: Option<Arc<ModelInfo>>,
    /// The second feature source fused with the model's taps.
    pub second_model: Option<Arc<ModelInfo>>,
    pub slots: Vec<Slot>,
    /// Whether the next loaded model's suggested tap and t replace the current ones (not when a
    /// session brought its own).
    pub use_model_suggestions: bool,
    /// The engine jobs the workbench waits for.
    pub jobs: JobTable,
    pub results: Results,
    last_request: Option<AnalysisRequest>,
    /// How many nearest-computed previews were shown, and the (t, tap) of the last one.
    pub previews_shown: usize,
    pub last_preview: Option<(usize, String)>,
    /// Show frame times in the status bar (off for snapshot tests, whose pictures must not vary).
    pub show_frame_times: bool,
    pub messages: Vec<Message>,
    /// The path bar's text.
    pub path_input: String,
    /// The central view's overlays, built from the last result.
    pub overlays: OverlayCache,
    /// Where each slot's image was drawn last frame, and the whole figure.
    pub image_rects: Vec<egui::Rect>,
    pub figure_rect: Option<egui::Rect>,
    pub library: Library,
    /// The recent models and sessions, kept in eframe's storage with what is open.
    pub remembered: Remembered,
    /// Whether file dialogs can open here; when not, asking for one says how to type a path.
    pub file_dialogs: bool,
    plot_tab: panels::plots::PlotTab,
    /// What the panels and the file dialogs asked for, applied after each frame is drawn.
    actions: (ActionSender, crossbeam_channel::Receiver<Action>),
    pub(crate) screenshots: (
        crossbeam_channel::Sender<Arc<egui::ColorImage>>,
        crossbeam_channel::Receiver<Arc<egui::ColorImage>>,
    ),
    /// A figure waiting for its screenshot: where to write it.
    pub(crate) pending_figure: Option<PathBuf>,
    /// Whether the GPU overlay pipeline is installed (false without wgpu, e.g. in some tests).
    pub has_gpu: bool,
    /// Durations of recent frames (UI work per frame), for the status bar and measurements.
    pub frame_times: super::frame_stats::FrameStats,
    measure: Option<super::frame_stats::Measurement>,
    ctx: egui::Context,
}

impl WorkbenchApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: GuiOptions) -> Self {
        let has_gpu = match cc.wgpu_render_state.as_ref() {
            Some(render_state) => {
                OverlayRenderer::install(render_state);
                true
            }
            None => false,
        };
        let ctx = cc.egui_ctx.clone();
        let waker_ctx = ctx.clone();
        // A device that cannot be opened leaves the workbench on the CPU (it says so in the
        // terminal); a precision the device cannot run is refused when the model loads.
        let device = options.device.open().unwrap_or_else(|e| {
            eprintln!("warning: {e}; computing on the CPU");
            candle_core::Device::Cpu
        });
        let config = EngineConfig {
            cache_dir: options.cache_dir.clone(),
            device,
            precision: options.precision,
            ..EngineConfig::default()
        };
        let engine =
            match EngineHandle::spawn(config, Box::new(move || waker_ctx.request_repaint())) {
                Ok(engine) => engine,
                Err(e) => {
                    // Without the engine thread nothing can be computed.
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            };
        let mut app = Self {
            engine,
            settings: Settings {
                compute: diffscope_engine::worker::ComputeChoice {
                    device: options.device,
                    precision: options.precision,
                },
                ..Settings::default()
            },
            model_spec: options.model.clone(),
            model: None,
            second_model: None,
            slots: Vec::new(),
            use_model_suggestions: true,
            jobs: JobTable::default(),
            results: Results::default(),
            last_request: None,
            previews_shown: 0,
            last_preview: None,
            show_frame_times: true,
            messages: Vec::new(),
            path_input: String::new(),
            overlays: OverlayCache::default(),
            image_rects: Vec::new(),
            figure_rect: None,
            library: Library::find(&options.samples_dir),
            remembered: Remembered::load(cc.storage),
            file_dialogs: actions::file_dialogs_available(),
            plot_tab: Default::default(),
            actions: actions::queue(),
            screenshots: crossbeam_channel::unbounded(),
            pending_figure: None,
            has_gpu,
            frame_times: Default::default(),
            measure: options
                .measure_frames
                .clone()
                .map(super::frame_stats::Measurement::new),
            ctx,
        };
        let last = app.remembered.last.clone().filter(|_| options.restore);
        match (&options.session, last) {
            (Some(path), _) => app.open_session(path),
            (None, Some(last)) => app.apply_session(last),
            (None, None) => {
                app.load_model(&options.model, ModelOptions::default());
                for path in &options.images {
                    app.add_image(path.clone());
                }
            }
        }
        app
    }

    /// What the next start can come back to: the session as it stands (with the images still
    /// loading) and the recent models and sessions.
    pub fn remembered_state(&self) -> Remembered {
        let mut last = self.session();
        last.images
            .extend(self.jobs.images().map(Path::to_path_buf));
        Remembered {
            last: Some(last),
            ..self.remembered.clone()
        }
    }

    pub fn message(&mut self, text: impl Into<String>, error: bool) {
        self.messages.push(Message {
            text: text.into(),
            error,
        });
        // Keep the bar short: the newest few.
        if self.messages.len() > 5 {
            self.messages.remove(0);
        }
    }

    /// Send a command to the engine and wait for its answer.
    pub(crate) fn start(&mut self, command: Command, kind: JobKind) -> JobId {
        let job = self.engine.send(command);
        self.jobs.start(job, kind);
        job
    }

    /// Whether a model is being loaded.
    pub fn loading_model(&self) -> bool {
        self.jobs.is_running(ViewKey::Model)
    }

    pub fn is_busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    pub fn ctx(&self) -> &egui::Context {
        &self.ctx
    }

    /// Draw the panels and the central view; what they ask for waits in the action queue.
    fn draw(&mut self, ui: &mut egui::Ui) {
        let cx = PanelContext {
            model_spec: &self.model_spec,
            model: self.model.as_ref(),
            second_model: self.second_model.as_ref(),
            slots: &self.slots,
            results: &self.results,
            jobs: &self.jobs,
            messages: &self.messages,
            library: &self.library,
            remembered: &self.remembered,
            has_gpu: self.has_gpu,
            frame_times: self.show_frame_times.then_some(&self.frame_times),
            actions: &self.actions.0,
        };
        panels::top::show(ui, &cx, &mut self.path_input);
        panels::drop::show(ui.ctx());
        panels::status::show(ui, &cx);
        panels::plots::show(ui, &cx, &self.settings, &mut self.plot_tab);
        panels::controls::show(ui, &cx, &mut self.settings);
        let drawn = egui::CentralPanel::default()
            .show(ui, |ui| {
                views::show(ui, &cx, &mut self.settings, &mut self.overlays)
            })
            .inner;
        self.image_rects = drawn.image_rects;
        self.figure_rect = drawn.figure;
    }

    /// Apply what the panels and the dialogs asked for.
    fn apply_actions(&mut self) {
        let pending: Vec<Action> = self.actions.1.try_iter().collect();
        if pending.is_empty() {
            return;
        }
        for action in pending {
            self.apply(action);
        }
        // Show the outcome at once, not at the next input.
        self.ctx.request_repaint();
    }

    /// Do what a panel or a dialog asked for.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::AddImage(path) => self.add_image(path),
            Action::RemoveImage(index) => self.remove_image(index),
            Action::MoveImage { from, to } => self.move_image(from, to),
            Action::LoadModel { spec, options } => self.load_model(&spec, options),
            Action::LoadFusionModel(spec) => {
                self.start(
                    Command::LoadFusionModel { spec },
                    JobKind::View(ViewKey::FusionModel),
                );
            }
            Action::OpenSession(path) => self.open_session(&path),
            Action::SaveSession(path) => self.save_session(&path),
            Action::ExportFigure(path) => self.export_figure(path),
            Action::ExportCorrespondences(path) => self.export_correspondences(&path),
            Action::ExportFeatures(folder) => self.export_features(folder),
            Action::ExportAttention(folder) => self.export_attention(folder),
            Action::RunSweep { point, ts } => {
                let images = self.image_keys();
                self.start_on_features(ViewKey::Sweep, |features| {
                    Command::Sweep(SweepRequest {
                        features,
                        images,
                        point,
                        ts,
                    })
                });
            }
            Action::ComputeInertia { joint, ks } => {
                let images = self.image_keys();
                self.start_on_features(ViewKey::Elbow, |features| {
                    Command::Elbow(ElbowRequest {
                        features,
                        images,
                        joint,
                        ks,
                    })
                });
            }
            Action::ComputePck {
                images,
                taps,
                ts,
                alpha,
            } => self.start_on_features(ViewKey::Pck, |features| {
                Command::Pck(PckRequest {
                    features,
                    images,
                    ts,
                    taps,
                    alpha,
                })
            }),
            Action::Cancel(view) => {
                if let Some((job, _)) = self.jobs.for_view(view) {
                    self.engine.cancel(job);
                }
            }
            Action::CancelJobs => {
                let running: Vec<ViewKey> = self.jobs.views().map(|(view, _)| view).collect();
                for view in running {
                    self.apply(Action::Cancel(view));
                }
            }
            Action::StepT(steps) => {
                let last = last_t(self.model.as_deref());
                let t = &mut self.settings.features.t;
                *t = (*t as i64 + steps).clamp(0, last as i64) as usize;
            }
            Action::StepBlock(steps) => self.step_block(steps),
            Action::RemoveLastPoint => {
                let s = &mut self.settings;
                s.points.pop();
                s.active_point = s.active_point.min(s.points.len().saturating_sub(1));
            }
            Action::DismissMessage(index) => {
                if index < self.messages.len() {
                    self.messages.remove(index);
                }
            }
            Action::Pick(dialog) => self.pick_in_thread(dialog),
        }
    }

    /// Choose the block `steps` places away in the model's list of blocks (from the block of the
    /// current tap), stopping at the ends.
    fn step_block(&mut self, steps: i32) {
        let Some(model) = &self.model else {
            return;
        };
        let blocks: Vec<&str> = model
            .summary
            .taps
            .iter()
            .filter(|t| t.block_level)
            .map(|t| t.name.as_str())
            .collect();
        let current = diffscope_engine::model::taps::block_of(&self.settings.features.tap);
        let Some(at) = blocks.iter().position(|b| *b == current) else {
            return;
        };
        let to = (at as i64 + i64::from(steps)).clamp(0, blocks.len() as i64 - 1) as usize;
        self.settings.features.tap = blocks[to].to_string();
    }

    pub fn load_model(&mut self, spec: &str, options: ModelOptions) {
        // Every option must reach the engine: a new field fails to compile here until it does.
        let ModelOptions { compute } = options;
        self.model_spec = spec.to_string();
        self.use_model_suggestions = true;
        self.start(
            Command::LoadModel {
                spec: spec.to_string(),
                compute,
            },
            JobKind::View(ViewKey::Model),
        );
    }

    pub fn add_image(&mut self, path: PathBuf) {
        if !has_room_for_images(&self.slots, &self.jobs) {
            self.message(
                format!(
                    "{}: not added, at most {MAX_IMAGES} images are open at once (remove one first)",
                    path.display()
                ),
                true,
            );
            return;
        }
        self.start(
            Command::LoadImage { path: path.clone() },
            JobKind::Image(path),
        );
    }

    pub fn remove_image(&mut self, index: usize) {
        if index < self.slots.len() {
            self.slots.remove(index);
            // The clicked attention point belongs to an image slot.
            self.settings.attention.point = None;
            if index == 0 {
                // Points belong to the source image.
                self.settings.points.clear();
                self.settings.active_point = 0;
            }
        }
    }

    /// Move slot `from` to `to` (slot 0 is the source).
    pub fn move_image(&mut self, from: usize, to: usize) {
        if from < self.slots.len() && to < self.slots.len() && from != to {
            let slot = self.slots.remove(from);
            self.slots.insert(to, slot);
            self.settings.attention.point = None;
            if from == 0 || to == 0 {
                self.settings.points.clear();
                self.settings.active_point = 0;
            }
        }
    }

    /// Start a job for `view` on the features the settings choose; nothing before a model is
    /// loaded.
    fn start_on_features(
        &mut self,
        view: ViewKey,
        command: impl FnOnce(FeatureSettings) -> Command,
    ) {
        if let Some(features) = self.feature_settings() {
            self.start(command(features), JobKind::View(view));
        }
    }

    /// The feature settings for the current choices, once a model is loaded.
    pub fn feature_settings(&self) -> Option<FeatureSettings> {
        Some(
            self.settings
                .features
                .for_model(self.model.as_ref()?, self.second_model.as_deref()),
        )
    }

    pub fn image_keys(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.image.key).collect()
    }

    /// The analysis the current settings ask for, if it can be asked.
    pub fn desired_request(&self) -> Option<AnalysisRequest> {
        if self.loading_model() || self.slots.is_empty() {
            return None;
        }
        let features = self.feature_settings()?;
        let s = &self.settings;
        let view = match s.view {
            ViewKind::Correspondence => {
                if self.slots.len() < 2 {
                    return None;
                }
                ViewRequest::Correspond {
                    points: s
                        .points
                        .iter()
                        .map(|p| ImagePoint::new(p[0], p[1]))
                        .collect(),
                }
            }
            ViewKind::Pca => ViewRequest::Pca {
                joint: s.pca.joint,
                lock: s.pca.lock,
            },
            ViewKind::Segmentation => match s.segment.method {
                SegmentMethod::KMeans => ViewRequest::KMeans {
                    k: s.segment.k,
                    joint: s.segment.joint,
                },
                SegmentMethod::NCut => ViewRequest::NCut {
                    tau: s.segment.tau,
                    alpha: s.segment.alpha,
                },
            },
            ViewKind::Attention => ViewRequest::Attention(self.attention_view()?),
        };
        Some(AnalysisRequest {
            features,
            images: self.image_keys(),
            view,
        })
    }

    /// What the attention view asks for: the chosen layers of the kind the mode shows, and the
    /// token or the clicked point. None before a model is loaded or when no layer is chosen.
    pub fn attention_view(&self) -> Option<AttentionView> {
        let model = self.model.as_ref()?;
        let a = &self.settings.attention;
        let modules: Vec<String> = a.modules(model).iter().map(|m| m.name.clone()).collect();
        if modules.is_empty() {
            return None;
        }
        let target = match a.mode_for(model) {
            AttentionMode::Cross => AttentionViewTarget::Token(a.token),
            AttentionMode::SelfAttention => match a.point {
                Some((image, [x, y])) if image < self.slots.len() => AttentionViewTarget::Point {
                    image,
                    point: ImagePoint::new(x, y),
                },
                _ => AttentionViewTarget::Nothing,
            },
        };
        Some(AttentionView {
            modules,
            target,
            head: a.head,
        })
    }

    /// Send the analysis request when the settings changed since the last one.
    fn update_request(&mut self) {
        let desired = self.desired_request();
        if desired != self.last_request {
            if let Some(request) = desired.clone() {
                self.start(Command::Analyze(request), JobKind::View(ViewKey::Analysis));
            }
            self.last_request = desired;
        }
    }

    /// Forget every result, and ask for the current view again.
    fn reset_results(&mut self) {
        self.results.reset();
        self.last_request = None;
    }

    fn handle_events(&mut self) {
        let start = Instant::now();
        while let Some(event) = self.engine.try_recv() {
            self.handle_event(event);
            if start.elapsed() >= EVENT_BUDGET {
                // Out of time: the rest next frame, which comes at once.
                self.ctx.request_repaint();
                break;
            }
        }
    }

    /// Take in one engine event. Answers of jobs no longer waited for (superseded by a newer job
    /// for the same view) are dropped.
    pub(crate) fn handle_event(&mut self, event: Event) {
        match event {
            Event::Progress {
                job,
                fraction,
                message,
                ..
            } => self.jobs.set_progress(job, fraction, message),
            Event::ModelLoaded { job, info } => {
                self.jobs.finish(job);
                let taps = &info.summary.taps;
                let suggested = info
                    .suggested
                    .as_ref()
                    .filter(|s| self.use_model_suggestions && taps.iter().any(|t| t.name == s.tap));
                if let Some(s) = suggested {
                    self.settings.features.tap = s.tap.clone();
                    self.settings.features.t = s.t;
                } else if !taps.iter().any(|t| t.name == self.settings.features.tap) {
                    // DIFT's tap when the model has it.
                    self.settings.features.tap = tap_or_fallback(&info, "up_blocks.1");
                }
                self.settings.features.t = self.settings.features.t.min(last_t(Some(&info)));
                self.remembered.add_model(&self.model_spec);
                self.model = Some(info);
                self.reset_results();
            }
            Event::FusionModelLoaded { job, info } => {
                self.jobs.finish(job);
                self.second_model = info;
                self.reset_results();
            }
            Event::ImageLoaded { job, image } => {
                self.jobs.finish(job);
                if self.slots.len() >= MAX_IMAGES {
                    return;
                }
                let (w, h) = image.rgb.dimensions();
                let color =
                    egui::ColorImage::from_rgb([w as usize, h as usize], image.rgb.as_raw());
                let texture = self.ctx.load_texture(
                    format!("image-{:016x}", image.key),
                    color,
                    egui::TextureOptions::LINEAR,
                );
                self.slots.push(Slot { image, texture });
            }
            Event::Analysis { job, result } => {
                if self.jobs.contains(job) {
                    if result.exact {
                        self.jobs.finish(job);
                    } else {
                        self.previews_shown += 1;
                        self.last_preview = Some((result.shown_t, result.shown_tap.clone()));
                    }
                    self.results.analysis = Some(result);
                }
            }
            Event::Sweep {
                job,
                result,
                finished,
            } => {
                if self.jobs.contains(job) {
                    if finished {
                        self.jobs.finish(job);
                    }
                    self.results.sweep = Some(result);
                }
            }
            Event::Elbow { job, result } => {
                if self.jobs.finish(job).is_some() {
                    self.results.elbow = Some(result);
                }
            }
            Event::Pck {
                job,
                table,
                finished,
            } => {
                if self.jobs.contains(job) {
                    if finished {
                        self.jobs.finish(job);
                    }
                    self.results.pck = Some(table);
                }
            }
            Event::Written { job, paths } => {
                self.jobs.finish(job);
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                self.message(format!("wrote {}", names.join(", ")), false);
            }
            Event::Cancelled { job, .. } => {
                self.jobs.finish(job);
            }
            Event::Error { job, view, message } => {
                let waited = self.jobs.finish(job);
                if waited
                    .as_ref()
                    .is_some_and(|j| j.kind == JobKind::View(ViewKey::Model))
                {
                    self.last_request = None;
                }
                // Errors of superseded jobs are old news.
                if waited.is_some() || view.is_none() {
                    self.message(message, true);
                }
            }
        }
    }

    /// Files dropped on the window: sessions are opened, folders loaded as models, the rest added
    /// as images.
    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in dropped {
            let action = if path.extension().is_some_and(|e| e == "json") {
                Action::OpenSession(path)
            } else if path.is_dir() {
                Action::load_model(path.display().to_string())
            } else {
                Action::AddImage(path)
            };
            self.actions.0.send(action);
        }
    }

    /// Show a file dialog on its own thread, so the UI never waits for it; where none can open,
    /// say how to do the same without one.
    fn pick_in_thread(&mut self, dialog: Dialog) {
        if !self.file_dialogs {
            self.message(
                "no file dialog can open here (it needs a desktop portal or zenity): type the path \
                 in the Path bar at the top and press the button for what to do with it, or drop \
                 files on the window",
                true,
            );
            return;
        }
        let actions = self.actions.0.clone();
        let ctx = self.ctx.clone();
        std::thread::spawn(move || {
            let picked = dialog.pick();
            if !picked.is_empty() {
                picked.into_iter().for_each(|a| actions.send(a));
                ctx.request_repaint();
            }
        });
    }

    /// The session as it stands.
    pub fn session(&self) -> Session {
        Session {
            version: SESSION_VERSION,
            model: self.model_spec.clone(),
            images: self.slots.iter().map(|s| s.image.path.clone()).collect(),
            settings: self.settings.clone(),
        }
    }

    pub fn save_session(&mut self, path: &Path) {
        self.remembered.add_session(path.to_path_buf());
        let text = self.session().to_json();
        self.start(
            Command::WriteText {
                path: path.to_path_buf(),
                text,
            },
            JobKind::Write("the session"),
        );
    }

    /// Reopen a session: the model, the images in order, and every setting. A file that cannot be
    /// read is a message; what is open stays.
    pub fn open_session(&mut self, path: &Path) {
        let session = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| Session::from_json(&text, path));
        match session {
            Ok(session) => {
                self.remembered.add_session(path.to_path_buf());
                self.apply_session(session);
            }
            Err(e) => self.message(e, true),
        }
    }

    pub fn apply_session(&mut self, session: Session) {
        self.slots.clear();
        self.jobs.forget_images();
        self.reset_results();
        self.settings = session.settings;
        if session.model != self.model_spec || self.model.is_none() {
            self.load_model(&session.model, ModelOptions::default());
            // The session's own tap and t win over the model's suggestions.
            self.use_model_suggestions = false;
        }
        for image in session.images {
            self.add_image(image);
        }
    }
}

impl eframe::App for WorkbenchApp {
    /// Remember what is open for the next start (eframe calls this on closing and every 30 s).
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.remembered_state().save(storage);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let frame_start = Instant::now();
        let ctx = ui.ctx().clone();
        self.handle_events();
        self.handle_dropped_files(&ctx);
        self.handle_screenshots();
        for action in shortcuts::pressed(&ctx) {
            self.actions.0.send(action);
        }
        self.draw(ui);
        self.apply_actions();
        self.update_request();
        if self.is_busy() {
            // Keep progress bars moving while jobs run.
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        let busy = self.jobs.is_running(ViewKey::Analysis);
        self.frame_times.record(frame_start.elapsed());
        if let Some(m) = &mut self.measure {
            ctx.request_repaint();
            if let Some(report) = m.frame(frame_start, busy, self.frame_times.last()) {
                match report {
                    Ok(path) => eprintln!("frame times written to {}", path.display()),
                    Err(e) => eprintln!("error: {e}"),
                }
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
    }
}
