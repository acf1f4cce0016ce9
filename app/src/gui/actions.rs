//! What the panels ask of the workbench. A panel pushes an [`Action`] and the app applies it after
//! the frame is drawn, so no panel holds the app, sends engine commands or tracks jobs. File
//! dialogs run on their own threads and answer with actions through the same queue.

use std::path::PathBuf;

use diffscope_engine::analysis::ImagePoint;
use diffscope_engine::worker::{ComputeChoice, ViewKey};

/// How a model is loaded, besides where from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// The device and precision; None keeps those of the model loaded before (at first, those of
    /// `--device` and `--dtype`).
    pub compute: Option<ComputeChoice>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    AddImage(PathBuf),
    RemoveImage(usize),
    /// Move the image in slot `from` to slot `to` (slot 0 is the source).
    MoveImage {
        from: usize,
        to: usize,
    },
    /// What `--model` takes: `default`, a diffusers folder, a Hugging Face cache folder, or a
    /// Hugging Face name `org/name[@revision]`.
    LoadModel {
        spec: String,
        options: ModelOptions,
    },
    /// Load a second feature source to fuse with the model's taps (a DINOv2 folder or any model
    /// `--model` takes), or drop it with None.
    LoadFusionModel(Option<String>),
    OpenSession(PathBuf),
    SaveSession(PathBuf),
    /// The figure as PNG, as drawn.
    ExportFigure(PathBuf),
    /// The pinned correspondences: CSV when the path ends in `.csv`, JSON otherwise.
    ExportCorrespondences(PathBuf),
    /// Each image's features at the current settings, as `.safetensors` in a folder.
    ExportFeatures(PathBuf),
    /// Each image's attention maps of the attention view, and the map shown, as `.safetensors`
    /// in a folder.
    ExportAttention(PathBuf),
    /// The similarity of a source point's best match at each of `ts`, at the current settings.
    RunSweep {
        point: ImagePoint,
        ts: Vec<usize>,
    },
    /// k-means inertia for each K, on the images jointly or summed over each alone.
    ComputeInertia {
        joint: bool,
        ks: Vec<usize>,
    },
    /// PCK@alpha of the annotated `images` (the first is the source) per tap and timestep.
    ComputePck {
        images: Vec<u64>,
        taps: Vec<String>,
        ts: Vec<usize>,
        alpha: f64,
    },
    /// Stop the job running for a view.
    Cancel(ViewKey),
    /// Stop every job running for a view.
    CancelJobs,
    /// Move t by this many steps (within the model's schedule).
    StepT(i64),
    /// Choose the block this many places later in the model's list of blocks (earlier when
    /// negative).
    StepBlock(i32),
    /// Remove the last point on the source.
    RemoveLastPoint,
    /// Remove the message at this index from the message bar.
    DismissMessage(usize),
    /// Show a file dialog; what is picked comes back as actions.
    Pick(Dialog),
}

impl Action {
    /// Load a model with the default options.
    pub fn load_model(spec: impl Into<String>) -> Self {
        Action::LoadModel {
            spec: spec.into(),
            options: ModelOptions::default(),
        }
    }
}

/// The queue panels push actions into; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ActionSender(crossbeam_channel::Sender<Action>);

impl ActionSender {
    pub fn send(&self, action: Action) {
        // The app holds the receiving end for as long as anything can send.
        let _ = self.0.send(action);
    }
}

/// A new action queue: the sender for the panels, the receiver the app drains once per frame.
pub fn queue() -> (ActionSender, crossbeam_channel::Receiver<Action>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (ActionSender(tx), rx)
}

/// The file dialogs. Each has a typed-path twin in the path bar, because dialogs need a desktop
/// portal that bare X servers lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialog {
    AddImages,
    ModelFolder,
    OpenSession,
    SaveSession,
    ExportFigure,
    ExportCorrespondences,
    ExportFeatures,
    /// A second feature source to fuse with the model (a DINOv2 folder, or any model).
    FusionModel,
    ExportAttention,
}

impl Dialog {
    /// What picking `path` in this dialog (or typing it in the path bar) asks for.
    pub fn action(self, path: PathBuf) -> Action {
        match self {
            Dialog::AddImages => Action::AddImage(path),
            Dialog::ModelFolder => Action::load_model(path.display().to_string()),
            Dialog::OpenSession => Action::OpenSession(path),
            Dialog::SaveSession => Action::SaveSession(path),
            Dialog::ExportFigure => Action::ExportFigure(path),
            Dialog::ExportCorrespondences => Action::ExportCorrespondences(path),
            Dialog::ExportFeatures => Action::ExportFeatures(path),
            Dialog::FusionModel => Action::LoadFusionModel(Some(path.display().to_string())),
            Dialog::ExportAttention => Action::ExportAttention(path),
        }
    }

    /// Show the dialog and turn what was picked into actions (none when it was dismissed). It
    /// blocks until the user answers: call it off the UI thread.
    pub fn pick(self) -> Vec<Action> {
        use rfd::FileDialog;
        let picked: Vec<PathBuf> = match self {
            Dialog::AddImages => FileDialog::new()
                .add_filter("images", &["png", "jpg", "jpeg"])
                .pick_files()
                .unwrap_or_default(),
            Dialog::ModelFolder
            | Dialog::ExportFeatures
            | Dialog::FusionModel
            | Dialog::ExportAttention => FileDialog::new().pick_folder().into_iter().collect(),
            Dialog::OpenSession => FileDialog::new()
                .add_filter("session", &["json"])
                .pick_file()
                .into_iter()
                .collect(),
            Dialog::SaveSession => save_as("session.json"),
            Dialog::ExportFigure => save_as("figure.png"),
            Dialog::ExportCorrespondences => save_as("correspondences.csv"),
        };
        picked.into_iter().map(|path| self.action(path)).collect()
    }
}

/// Whether a file dialog can open: on Linux, rfd needs a desktop portal (reached over the D-Bus
/// session bus) or `zenity`; without either, picking returns nothing, as if dismissed.
pub fn file_dialogs_available() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    let session_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|dir| std::path::Path::new(&dir).join("bus").exists());
    session_bus || on_path("zenity")
}

fn save_as(name: &str) -> Vec<PathBuf> {
    rfd::FileDialog::new()
        .set_file_name(name)
        .save_file()
        .into_iter()
        .collect()
}
