//! Finding a model on disk: a diffusers pipeline folder, a single component folder, a Hugging Face
//! cache folder (`models--org--name`), a Hugging Face name (`org/name[@revision]`, looked up in the
//! hub cache), or `default` for the bundled model.

use std::path::{Path, PathBuf};

use super::hub;
use super::weights::refuse_pickle;
use crate::error::{Error, Result};

/// Where the parts of a model live. Missing optional parts are None.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFolders {
    /// The folder the user named, after resolving caches and `default`.
    pub root: PathBuf,
    pub unet: PathBuf,
    pub vae: Option<PathBuf>,
    pub text_encoder: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    /// SDXL's second text encoder and its tokenizer.
    pub text_encoder_2: Option<PathBuf>,
    pub tokenizer_2: Option<PathBuf>,
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

/// Resolve what `--model` named into the folders of its components: `default`, a folder, or a
/// Hugging Face model name `org/name[@revision]` found offline in the hub cache (see [`hub`]).
/// The CLI and the workbench both load through here.
pub fn resolve(spec: &str) -> Result<ModelFolders> {
    resolve_in(spec, &hub::cache_folders())
}

/// As [`resolve`], looking for hub names in `cache` only.
pub fn resolve_in(spec: &str, cache: &[hub::CacheFolder]) -> Result<ModelFolders> {
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
        return match hub::RepoId::parse(spec) {
            Some(id) => locate_components(&hub::find(&id, cache)?),
            None => Err(Error::file(&path, "no such file or folder")),
        };
    }
    if path.is_file() {
        refuse_pickle(&path)?;
        return Err(Error::file(
            &path,
            "a single weights file is not a diffusers model: point --model at the folder holding model_index.json (or unet/config.json)",
        ));
    }
    let path = if hub::is_repo_folder(&path) {
        hub::snapshot(&path, None)?
    } else {
        path
    };
    if is_vision_transformer(&path) {
        return Err(Error::file(
            &path,
            "this is a DINOv2 (transformers) folder, not a diffusion model: it has no UNet, timestep or noise. Use it where a feature source is read (extract, correspond, pca, segment, eval pck, or as --fuse-model)",
        ));
    }
    locate_components(&path)
}

/// What `--model` names, after resolving `default`, hub names and Hugging Face caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelLocation {
    /// A diffusers pipeline or UNet folder.
    Diffusion(ModelFolders),
    /// A transformers `Dinov2Model` folder (`config.json`, `model.safetensors`).
    VisionTransformer(PathBuf),
}

/// Resolve `--model` into a diffusion model's folders or a DINOv2 folder.
pub fn locate(spec: &str) -> Result<ModelLocation> {
    if spec != "default" {
        let path = PathBuf::from(spec);
        let folder = if path.is_dir() {
            Some(if hub::is_repo_folder(&path) {
                hub::snapshot(&path, None)?
            } else {
                path
            })
        } else if !path.exists() {
            hub::RepoId::parse(spec).and_then(|id| hub::find(&id, &hub::cache_folders()).ok())
        } else {
            None
        };
        if let Some(folder) = folder.filter(|f| is_vision_transformer(f)) {
            return Ok(ModelLocation::VisionTransformer(folder));
        }
    }
    resolve(spec).map(ModelLocation::Diffusion)
}

/// Whether a folder holds a transformers DINOv2 (`model_type` dinov2 or dinov2_with_registers).
pub fn is_vision_transformer(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| json.get("model_type")?.as_str().map(str::to_string))
        .is_some_and(|t| t == "dinov2" || t == "dinov2_with_registers")
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
        text_encoder_2: dir_if(root.join("text_encoder_2")),
        tokenizer_2: dir_if(root.join("tokenizer_2")),
        scheduler_config: scheduler.is_file().then_some(scheduler),
        root,
        unet,
    })
}
