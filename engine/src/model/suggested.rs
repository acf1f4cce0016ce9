//! Settings a model folder suggests for looking at its features: an optional `diffscope.json`
//! beside `model_index.json`, written by whoever measured them (for the bundled model: the best
//! block and timestep of `diffscope eval pck`, see README). The workbench starts from them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, WithPath};

pub const SUGGESTED_FILE: &str = "diffscope.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuggestedSettings {
    /// The tap (diffusers module path) to read features from.
    pub tap: String,
    /// The timestep.
    pub t: usize,
    /// Where the suggestion comes from, for people reading the file.
    #[serde(default)]
    pub why: String,
}

#[derive(Deserialize)]
struct SuggestedFile {
    suggested: SuggestedSettings,
}

/// The suggestions of the model folder `root`, None when it has no `diffscope.json`.
pub fn read_suggested(root: &Path) -> Result<Option<SuggestedSettings>> {
    let path = root.join(SUGGESTED_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_path(&path)?;
    let file: SuggestedFile = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            &path,
            format!("expected {{\"suggested\": {{\"tap\": NAME, \"t\": T}}}}: {e}"),
        )
    })?;
    Ok(Some(file.suggested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_and_names_it_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_suggested(dir.path()).unwrap(), None);
        let path = dir.path().join(SUGGESTED_FILE);
        std::fs::write(
            &path,
            r#"{"suggested": {"tap": "down_blocks.2", "t": 25, "why": "best PCK"}}"#,
        )
        .unwrap();
        let s = read_suggested(dir.path()).unwrap().unwrap();
        assert_eq!((s.tap.as_str(), s.t), ("down_blocks.2", 25));
        std::fs::write(&path, r#"{"suggested": {"t": "soon"}}"#).unwrap();
        let err = read_suggested(dir.path()).unwrap_err().to_string();
        assert!(err.contains(SUGGESTED_FILE), "{err}");
    }
}
