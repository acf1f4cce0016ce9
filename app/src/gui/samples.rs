//! Finding the bundled sample images and the models in the Hugging Face cache.

use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The images of a samples folder in SPair layout (`JPEGImages/<category>/*`), or directly in
/// it, sorted by path.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let images = dir.join("JPEGImages");
    let mut found = Vec::new();
    let folders: Vec<PathBuf> = if images.is_dir() {
        read_sorted(&images)
            .into_iter()
            .filter(|p| p.is_dir())
            .collect()
    } else {
        vec![dir.to_path_buf()]
    };
    for folder in folders {
        found.extend(read_sorted(&folder).into_iter().filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        }));
    }
    found
}

fn read_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// `models--*` folders of the Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, or
/// `~/.cache/huggingface/hub`) that hold a diffusion UNet.
pub fn hugging_face_models() -> Vec<PathBuf> {
    let hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
        });
    let Some(hub) = hub else {
        return Vec::new();
    };
    read_sorted(&hub)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("models--"))
                && read_sorted(&p.join("snapshots"))
                    .iter()
                    .any(|snap| snap.join("unet/config.json").is_file())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_spair_layout_and_plain_folders() {
        let dir = tempfile::tempdir().unwrap();
        let cat = dir.path().join("JPEGImages/cat");
        std::fs::create_dir_all(&cat).unwrap();
        for name in ["b.jpg", "a.PNG", "notes.txt"] {
            std::fs::write(cat.join(name), b"").unwrap();
        }
        let names: Vec<String> = list(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.PNG", "b.jpg"]);
        assert!(list(&dir.path().join("missing")).is_empty());
    }
}
