//! Finding the bundled sample images and the models in the Hugging Face cache.

use std::path::{Path, PathBuf};

use diffscope_engine::model::hub::{self, CachedModel};

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// What can be opened from a menu: the sample images and the models in the Hugging Face cache.
#[derive(Clone, Debug, Default)]
pub struct Library {
    /// Where the samples were looked for; they are named relative to it.
    pub samples_dir: PathBuf,
    pub samples: Vec<PathBuf>,
    /// The diffusion models of the Hugging Face cache, found where `--model org/name` looks.
    pub hf_models: Vec<CachedModel>,
}

impl Library {
    pub fn find(samples_dir: &Path) -> Self {
        Self {
            samples_dir: samples_dir.to_path_buf(),
            samples: list(samples_dir),
            hf_models: hub::cached_models(&hub::cache_folders()),
        }
    }
}

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
