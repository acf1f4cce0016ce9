//! The workbench app: UI state, the engine handle, and the bookkeeping between them. It sends one
//! request per view when the settings change and draws whatever the engine answered last.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diffscope_engine::analysis::ImagePoint;
use diffscope_engine::worker::{
    AnalysisRequest, AnalysisResult, Command, ElbowResult, EngineConfig, EngineHandle, Event,
    FeatureSettings, JobId, LoadedImage, ModelInfo, PckTable, SweepResult, ViewKey, ViewRequest,
};
use eframe::egui;

use super::heatmap::OverlayRenderer;
use super::session::{Session, SESSION_VERSION};
use super::state::{InputSize, SegmentMethod, Settings, ViewKind};
use super::views::OverlayCache;

/// At most this many images are open at once.
pub const MAX_IMAGES: usize = 6;
/// Time the UI spends draining engine events per frame, at most.
const EVENT_BUDGET: Duration = Duration::from_millis(4);
/// Progress is shown for jobs that have run this long.
pub const SHOW_PROGRESS_AFTER: Duration = Duration::from_millis(500);

/// How the workbench starts.
#[derive(Clone, Debug)]
pub struct GuiOptions {
    /// `default`, a diffusers folder, or a Hugging Face cache folder.
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
        }
    }
}

/// An image slot: the decoded image and its texture.
pub struct Slot {
    pub image: Arc<LoadedImage>,
    pub texture: egui::TextureHandle,
}

impl Slot {
    pub fn name(&self) -> String {
        self.image
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A job the UI waits for.
pub struct Running {
    pub job: JobId,
    pub sent: Instant,
    pub progress: Option<(f32, String)>,
}

/// A message in the message bar.
pub struct Message {
    pub text: String,
    pub error: bool,
}

/// Results of file dialogs, which run on their own threads so the UI never waits for them.
pub enum DialogResult {
    AddImages(Vec<PathBuf>),
    ModelFolder(PathBuf),
    OpenSession(PathBuf),
    SaveSession(PathBuf),
    ExportFigure(PathBuf),
    ExportCorrespondences(PathBuf),
    ExportFeatures(PathBuf),
}

pub struct WorkbenchApp {
    pub(crate) engine: EngineHandle,
    pub settings: Settings,
    /// The model asked for last (what a session saves).
    pub model_spec: String,
    pub model: Option<Arc<ModelInfo>>,
    pub slots: Vec<Slot>,
    pub model_job: Option<JobId>,
    /// Whether the next loaded model's suggested tap and t replace the current ones (not when a
    /// session brought its own).
    pub use_model_suggestions: bool,
    pub(crate) image_jobs: Vec<(JobId, PathBuf)>,
    pub(crate) running: HashMap<ViewKey, Running>,
    pub(crate) other_jobs: HashMap<JobId, (Instant, String)>,
    last_request: Option<AnalysisRequest>,
    pub analysis: Option<Arc<AnalysisResult>>,
    /// How many nearest-computed previews were shown, and the (t, tap) of the last one.
    pub previews_shown: usize,
    pub last_preview: Option<(usize, String)>,
    /// Show frame times in the status bar (off for snapshot tests, whose pictures must not vary).
    pub show_frame_times: bool,
    pub sweep: Option<Arc<SweepResult>>,
    pub elbow: Option<Arc<ElbowResult>>,
    pub pck: Option<Arc<PckTable>>,
    pub messages: Vec<Message>,
    pub path_input: String,
    pub overlays: OverlayCache,
    pub(crate) dialogs: (
        crossbeam_channel::Sender<DialogResult>,
        crossbeam_channel::Receiver<DialogResult>,
    ),
    pub(crate) screenshots: (
        crossbeam_channel::Sender<Arc<egui::ColorImage>>,
        crossbeam_channel::Receiver<Arc<egui::ColorImage>>,
    ),
    /// A figure waiting for its screenshot: where to write it.
    pub(crate) pending_figure: Option<PathBuf>,
    /// Where each slot's image was drawn last frame, and the whole figure.
    pub image_rects: Vec<egui::Rect>,
    pub figure_rect: Option<egui::Rect>,
    pub samples_dir: PathBuf,
    pub samples: Vec<PathBuf>,
    pub hf_models: Vec<PathBuf>,
    pub(crate) plot_tab: super::panels::plots::PlotTab,
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
        let config = EngineConfig {
            cache_dir: options.cache_dir.clone(),
            device: diffscope_engine::device::default_device().unwrap_or(candle_core::Device::Cpu),
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
            settings: Settings::default(),
            model_spec: options.model.clone(),
            model: None,
            slots: Vec::new(),
            model_job: None,
            use_model_suggestions: true,
            image_jobs: Vec::new(),
            running: HashMap::new(),
            other_jobs: HashMap::new(),
            last_request: None,
            analysis: None,
            previews_shown: 0,
            last_preview: None,
            show_frame_times: true,
            sweep: None,
            elbow: None,
            pck: None,
            messages: Vec::new(),
            path_input: String::new(),
            overlays: OverlayCache::default(),
            dialogs: crossbeam_channel::unbounded(),
            screenshots: crossbeam_channel::unbounded(),
            pending_figure: None,
            image_rects: Vec::new(),
            figure_rect: None,
            samples: super::samples::list(&options.samples_dir),
            samples_dir: options.samples_dir.clone(),
            hf_models: super::samples::hugging_face_models(),
            plot_tab: Default::default(),
            has_gpu,
            frame_times: Default::default(),
            measure: options
                .measure_frames
                .clone()
                .map(super::frame_stats::Measurement::new),
            ctx,
        };
        match &options.session {
            Some(path) => app.open_session(path),
            None => {
                app.load_model(&options.model);
                for path in &options.images {
                    app.add_image(path.clone());
                }
            }
        }
        app
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

    pub fn load_model(&mut self, spec: &str) {
        self.model_spec = spec.to_string();
        self.use_model_suggestions = true;
        let job = self.engine.send(Command::LoadModel {
            spec: spec.to_string(),
        });
        self.model_job = Some(job);
        self.track(ViewKey::Model, job);
    }

    pub fn add_image(&mut self, path: PathBuf) {
        if self.slots.len() + self.image_jobs.len() >= MAX_IMAGES {
            self.message(
                format!(
                    "{}: not added, at most {MAX_IMAGES} images are open at once (remove one first)",
                    path.display()
                ),
                true,
            );
            return;
        }
        let job = self.engine.send(Command::LoadImage { path: path.clone() });
        self.image_jobs.push((job, path));
    }

    pub fn remove_image(&mut self, index: usize) {
        if index < self.slots.len() {
            self.slots.remove(index);
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
            if from == 0 || to == 0 {
                self.settings.points.clear();
                self.settings.active_point = 0;
            }
        }
    }

    pub(crate) fn track(&mut self, view: ViewKey, job: JobId) {
        self.running.insert(
            view,
            Running {
                job,
                sent: Instant::now(),
                progress: None,
            },
        );
    }

    pub(crate) fn send_other(&mut self, command: Command, what: impl Into<String>) {
        let job = self.engine.send(command);
        self.other_jobs.insert(job, (Instant::now(), what.into()));
    }

    /// The feature settings for the current choices, once a model is loaded.
    pub fn feature_settings(&self) -> Option<FeatureSettings> {
        let model = self.model.as_ref()?;
        let f = &self.settings.features;
        let size = match f.size {
            InputSize::Native => model.native_side.map(|s| (s, s)),
            InputSize::Square(s) => Some((s, s)),
            InputSize::Original => None,
        };
        Some(FeatureSettings {
            t: f.t.min(model.alpha_bar.len().saturating_sub(1)),
            tap: f.tap.clone(),
            ensemble: f.ensemble.max(1),
            seed: f.seed,
            prompt: if model.summary.conditional {
                f.prompt.clone()
            } else {
                String::new()
            },
            size,
        })
    }

    pub fn image_keys(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.image.key).collect()
    }

    /// The analysis the current settings ask for, if it can be asked.
    pub fn desired_request(&self) -> Option<AnalysisRequest> {
        if self.model_job.is_some() || self.slots.is_empty() {
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
        };
        Some(AnalysisRequest {
            features,
            images: self.image_keys(),
            view,
        })
    }

    /// Send the analysis request when the settings changed since the last one.
    fn update_request(&mut self) {
        let desired = self.desired_request();
        if desired != self.last_request {
            if let Some(request) = desired.clone() {
                let job = self.engine.send(Command::Analyze(request));
                self.track(ViewKey::Analysis, job);
            }
            self.last_request = desired;
        }
    }

    /// Ask for the same analysis again (after an error, or to refresh).
    pub fn retry(&mut self) {
        self.last_request = None;
    }

    pub fn cancel(&mut self, view: ViewKey) {
        if let Some(r) = self.running.get(&view) {
            self.engine.cancel(r.job);
        }
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

    fn is_latest(&self, view: Option<ViewKey>, job: JobId) -> bool {
        view.and_then(|v| self.running.get(&v))
            .is_some_and(|r| r.job == job)
    }

    fn finish(&mut self, view: Option<ViewKey>, job: JobId) {
        if let Some(v) = view {
            if self.running.get(&v).is_some_and(|r| r.job == job) {
                self.running.remove(&v);
            }
        }
    }

    pub(crate) fn handle_event(&mut self, event: Event) {
        match event {
            Event::Progress {
                job,
                view,
                fraction,
                message,
            } => {
                if let Some(r) = view.and_then(|v| self.running.get_mut(&v)) {
                    if r.job == job {
                        r.progress = Some((fraction, message));
                    }
                }
            }
            Event::ModelLoaded { job, info } => {
                if self.model_job == Some(job) {
                    self.model_job = None;
                }
                self.finish(Some(ViewKey::Model), job);
                let taps = &info.summary.taps;
                let suggested = info
                    .suggested
                    .as_ref()
                    .filter(|s| self.use_model_suggestions && taps.iter().any(|t| t.name == s.tap));
                if let Some(s) = suggested {
                    self.settings.features.tap = s.tap.clone();
                    self.settings.features.t = s.t;
                } else if !taps.iter().any(|t| t.name == self.settings.features.tap) {
                    self.settings.features.tap = default_tap(&info);
                }
                let last_t = info.alpha_bar.len().saturating_sub(1);
                self.settings.features.t = self.settings.features.t.min(last_t);
                self.model = Some(info);
                self.analysis = None;
                self.sweep = None;
                self.elbow = None;
                self.pck = None;
                self.last_request = None;
            }
            Event::ImageLoaded { job, image } => {
                self.image_jobs.retain(|(j, _)| *j != job);
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
                if self.is_latest(Some(ViewKey::Analysis), job) {
                    if result.exact {
                        self.finish(Some(ViewKey::Analysis), job);
                    } else {
                        self.previews_shown += 1;
                        self.last_preview = Some((result.shown_t, result.shown_tap.clone()));
                    }
                    self.analysis = Some(result);
                }
            }
            Event::Sweep {
                job,
                result,
                finished,
            } => {
                if self.is_latest(Some(ViewKey::Sweep), job) {
                    if finished {
                        self.finish(Some(ViewKey::Sweep), job);
                    }
                    self.sweep = Some(result);
                }
            }
            Event::Elbow { job, result } => {
                if self.is_latest(Some(ViewKey::Elbow), job) {
                    self.finish(Some(ViewKey::Elbow), job);
                    self.elbow = Some(result);
                }
            }
            Event::Pck {
                job,
                table,
                finished,
            } => {
                if self.is_latest(Some(ViewKey::Pck), job) {
                    if finished {
                        self.finish(Some(ViewKey::Pck), job);
                    }
                    self.pck = Some(table);
                }
            }
            Event::Written { job, paths } => {
                self.other_jobs.remove(&job);
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                self.message(format!("wrote {}", names.join(", ")), false);
            }
            Event::Cancelled { job, view } => {
                self.finish(view, job);
                self.other_jobs.remove(&job);
                self.image_jobs.retain(|(j, _)| *j != job);
            }
            Event::Error { job, view, message } => {
                let ends = self.model_job == Some(job)
                    || self.image_jobs.iter().any(|(j, _)| *j == job)
                    || self.is_latest(view, job)
                    || self.other_jobs.contains_key(&job);
                if self.model_job == Some(job) {
                    self.model_job = None;
                    self.last_request = None;
                }
                self.image_jobs.retain(|(j, _)| *j != job);
                self.other_jobs.remove(&job);
                // Errors of superseded jobs are old news.
                if ends || view.is_none() {
                    self.finish(view, job);
                    self.message(message, true);
                }
            }
        }
    }

    fn handle_dialogs(&mut self) {
        while let Ok(result) = self.dialogs.1.try_recv() {
            match result {
                DialogResult::AddImages(paths) => paths.into_iter().for_each(|p| self.add_image(p)),
                DialogResult::ModelFolder(path) => self.load_model(&path.display().to_string()),
                DialogResult::OpenSession(path) => self.open_session(&path),
                DialogResult::SaveSession(path) => self.save_session(&path),
                DialogResult::ExportFigure(path) => self.export_figure(path),
                DialogResult::ExportCorrespondences(path) => self.export_correspondences(&path),
                DialogResult::ExportFeatures(path) => self.export_features(path),
            }
        }
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in dropped {
            if path.extension().is_some_and(|e| e == "json") {
                self.open_session(&path);
            } else if path.is_dir() {
                self.load_model(&path.display().to_string());
            } else {
                self.add_image(path);
            }
        }
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
        let text = self.session().to_json();
        self.send_other(
            Command::WriteText {
                path: path.to_path_buf(),
                text,
            },
            "saving the session",
        );
    }

    /// Reopen a session: the model, the images in order, and every setting. A file that cannot be
    /// read is a message; what is open stays.
    pub fn open_session(&mut self, path: &Path) {
        let session = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| Session::from_json(&text, path));
        match session {
            Ok(session) => self.apply_session(session),
            Err(e) => self.message(e, true),
        }
    }

    pub fn apply_session(&mut self, session: Session) {
        self.slots.clear();
        self.image_jobs.clear();
        self.analysis = None;
        self.sweep = None;
        self.elbow = None;
        self.pck = None;
        self.settings = session.settings;
        if session.model != self.model_spec || self.model.is_none() {
            self.load_model(&session.model);
            // The session's own tap and t win over the model's suggestions.
            self.use_model_suggestions = false;
        }
        for image in session.images {
            self.add_image(image);
        }
        self.last_request = None;
    }

    pub(crate) fn pick_in_thread(
        &self,
        pick: impl FnOnce() -> Option<DialogResult> + Send + 'static,
    ) {
        let tx = self.dialogs.0.clone();
        let ctx = self.ctx.clone();
        std::thread::spawn(move || {
            if let Some(result) = pick() {
                let _ = tx.send(result);
                ctx.request_repaint();
            }
        });
    }

    /// Alpha-bar and SNR at the current t, from the engine's schedule.
    pub fn noise_level(&self) -> Option<(f32, f32)> {
        let model = self.model.as_ref()?;
        let t = self.settings.features.t;
        Some((*model.alpha_bar.get(t)?, *model.snr.get(t)?))
    }

    pub fn ctx(&self) -> &egui::Context {
        &self.ctx
    }

    pub fn is_busy(&self) -> bool {
        !self.running.is_empty() || !self.image_jobs.is_empty() || !self.other_jobs.is_empty()
    }
}

/// DIFT's `up_blocks.1` when the model has it, else the last block-level tap.
fn default_tap(info: &ModelInfo) -> String {
    let taps = &info.summary.taps;
    taps.iter()
        .find(|t| t.name == "up_blocks.1")
        .or_else(|| taps.iter().rev().find(|t| t.block_level))
        .map(|t| t.name.clone())
        .unwrap_or_default()
}

impl eframe::App for WorkbenchApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let frame_start = Instant::now();
        let ctx = ui.ctx().clone();
        self.handle_events();
        self.handle_dialogs();
        self.handle_dropped_files(&ctx);
        self.handle_screenshots();
        super::panels::top::show(self, ui);
        super::panels::status::show(self, ui);
        super::panels::plots::show(self, ui);
        super::panels::controls::show(self, ui);
        egui::CentralPanel::default().show(ui, |ui| super::views::show(self, ui));
        self.update_request();
        if self.is_busy() {
            // Keep progress bars moving while jobs run.
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        let busy = self.running.contains_key(&ViewKey::Analysis);
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
