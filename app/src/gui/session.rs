//! Session files: JSON (serde), versioned, that reopen the workbench exactly: the model, the
//! images in order, and every setting.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::state::Settings;

/// A session file: everything needed to reopen the workbench as it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Format version; reading refuses newer versions.
    pub version: u32,
    /// What was given to load the model (`default`, or a folder).
    pub model: String,
    /// The images in slot order; the first is the source.
    pub images: Vec<PathBuf>,
    pub settings: Settings,
}

pub const SESSION_VERSION: u32 = 1;

impl Session {
    pub fn to_json(&self) -> String {
        // Serialising plain data to a string cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str, path: &std::path::Path) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("{}: not a session file: {e}", path.display()))?;
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version > u64::from(SESSION_VERSION) || version == 0 {
            return Err(format!(
                "{}: session version {version} is not one this diffscope reads (it reads {SESSION_VERSION})",
                path.display()
            ));
        }
        serde_json::from_value(value)
            .map_err(|e| format!("{}: not a session file: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::state::InputSize;

    #[test]
    fn sessions_round_trip_and_refuse_other_versions() {
        let mut settings = Settings {
            points: vec![[3.5, 7.0], [10.0, 2.25]],
            ..Settings::default()
        };
        settings.overlay.range = Some([0.1, 0.9]);
        settings.features.size = InputSize::Square(128);
        let session = Session {
            version: SESSION_VERSION,
            model: "default".into(),
            images: vec!["a.png".into(), "b.jpg".into()],
            settings,
        };
        let path = std::path::Path::new("s.json");
        assert_eq!(
            Session::from_json(&session.to_json(), path).unwrap(),
            session
        );
        let newer = session
            .to_json()
            .replace("\"version\": 1", "\"version\": 99");
        assert!(Session::from_json(&newer, path)
            .unwrap_err()
            .contains("version 99"));
        assert!(Session::from_json("{", path)
            .unwrap_err()
            .contains("s.json"));
    }
}
