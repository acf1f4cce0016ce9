//! Finding a model on disk: a diffusers pipeline folder, a single component folder, a Hugging Face
//! cache folder (`models--org--name`), or `default` for the bundled model.

use std::path::{Path, PathBuf};

use super::weights::refuse_pickle;
use crate::error::{Error, Result, WithPath};

/// Where the parts of a model live. Missing optional parts are None.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFolders {
    /// The folder the user named, after resolving caches and `default`.
    pub root: PathBuf,
    pub unet: PathBuf,
    pub vae: Option<PathBuf>,
    pub text_encoder: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub scheduler_config: Option<PathBuf>,
}

/// The bundled assets folder: `$DIFFSCOPE_ASSETS`, else `assets/` beside the executable's
/// workspace (found at build time), else `assets/` in the working directory.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIFFSCOPE_ASSETS") {
        return PathBuf::from(dir);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    if built.is_dir() {
        return built;
    }
    PathBuf::from("assets")
}

/// The bundled default model's folder.
pub fn default_model_dir() -> PathBuf {
    assets_dir().join("default-model")
}

/// Resolve what `--model` named into the folders of its components.
pub fn resolve(spec: &str) -> Result<ModelFolders> {
    let path = if spec == "default" {
        let dir = default_model_dir();
        if !dir.is_dir() {
            return Err(Error::file(&dir, "the bundled default model is not there (set DIFFSCOPE_ASSETS to the assets folder)"));
        }
        dir
    } else {
        PathBuf::from(spec)
    };
    if !path.exists() {
        return Err(Error::file(&path, "no such file or folder"));
    }
    if path.is_file() {
        refuse_pickle(&path)?;
        return Err(Error::file(
            &path,
            "a single weights file is not a diffusers model: point --model at the folder holding model_index.json (or unet/config.json)",
        ));
    }
    let path = resolve_hf_cache(&path)?;
    locate_components(&path)
}

/// `models--org--name` (or its parent `snapshots/`) -> the snapshot that `refs/main` names, or the only one.
fn resolve_hf_cache(path: &Path) -> Result<PathBuf> {
    let is_cache = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("models--"));
    if !is_cache {
        return Ok(path.to_path_buf());
    }
    let snapshots = path.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(path.join("refs/main")) {
        let snap = snapshots.join(rev.trim());
        if snap.is_dir() {
            return Ok(snap);
        }
    }
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .with_path(&snapshots)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    snaps.sort();
    match snaps.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::file(
            &snapshots,
            "this Hugging Face cache folder has no snapshot",
        )),
        _ => Err(Error::file(
            path,
            format!(
                "several snapshots and no refs/main: name one of them, e.g. {}",
                snaps[0].display()
            ),
        )),
    }
}

fn dir_if(path: PathBuf) -> Option<PathBuf> {
    path.is_dir().then_some(path)
}

fn component_class(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("_class_name")?.as_str().map(str::to_string)
}

fn locate_components(path: &Path) -> Result<ModelFolders> {
    let (root, unet) = if path.join("unet").is_dir() {
        (path.to_path_buf(), path.join("unet"))
    } else if component_class(path).is_some_and(|c| c.starts_with("UNet2D")) {
        // A UNet component folder: use its siblings when they are there.
        (
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| path.to_path_buf()),
            path.to_path_buf(),
        )
    } else if let Some(class) = component_class(path) {
        return Err(Error::file(path, format!("this is a `{class}` component; diffscope needs a UNet (a pipeline folder or its unet/ folder)")));
    } else {
        return Err(Error::file(
            path,
            "not a diffusers model folder: expected model_index.json with a unet/ folder, or a unet folder with config.json",
        ));
    };
    let scheduler = root.join("scheduler/scheduler_config.json");
    Ok(ModelFolders {
        vae: dir_if(root.join("vae")),
        text_encoder: dir_if(root.join("text_encoder")),
        tokenizer: dir_if(root.join("tokenizer")),
        scheduler_config: scheduler.is_file().then_some(scheduler),
        root,
        unet,
    })
}
