//! What the workbench remembers between runs, in eframe's storage (beside the window's place and
//! size, which eframe keeps itself): what was open when it closed, as a session, and the models
//! and session files used recently.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::session::Session;

/// The key of the remembered state in eframe's storage.
const STORAGE_KEY: &str = "diffscope";
/// How many recent models and sessions are kept.
pub const RECENT: usize = 8;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Remembered {
    /// The model, images and settings open when the workbench last closed.
    pub last: Option<Session>,
    /// Models loaded recently, newest first (what `--model` takes).
    pub recent_models: Vec<String>,
    /// Session files opened or saved recently, newest first.
    pub recent_sessions: Vec<PathBuf>,
}

impl Remembered {
    /// What `storage` holds; nothing (a first start, or no storage) is the empty state. A stored
    /// state this version cannot read is forgotten rather than stopping the start.
    pub fn load(storage: Option<&dyn eframe::Storage>) -> Self {
        storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default()
    }

    pub fn save(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, self);
    }

    pub fn add_model(&mut self, spec: &str) {
        push_recent(&mut self.recent_models, spec.to_string());
    }

    pub fn add_session(&mut self, path: PathBuf) {
        push_recent(&mut self.recent_sessions, path);
    }
}

/// eframe storage held in memory: what `save` wrote is there for the next `load`, without a file
/// (tests of the remembered state use it).
#[derive(Default)]
pub struct MemoryStorage(HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

/// Put `item` first, once, and keep the newest [`RECENT`].
fn push_recent<T: PartialEq>(list: &mut Vec<T>, item: T) {
    list.retain(|x| *x != item);
    list.insert(0, item);
    list.truncate(RECENT);
}

#[cfg(test)]
mod tests {
    use super::*;
    use eframe::Storage;

    #[test]
    fn recent_lists_keep_the_newest_once() {
        let mut r = Remembered::default();
        for i in 0..10 {
            r.add_model(&format!("m{i}"));
        }
        r.add_model("m5");
        assert_eq!(r.recent_models.len(), RECENT);
        assert_eq!(r.recent_models[..3], ["m5", "m9", "m8"]);
    }

    #[test]
    fn the_state_round_trips_through_storage_and_a_damaged_one_is_forgotten() {
        let mut storage = MemoryStorage::default();
        assert_eq!(Remembered::load(Some(&storage)), Remembered::default());
        let mut r = Remembered {
            last: Some(Session {
                version: super::super::session::SESSION_VERSION,
                model: "org/name@v1".into(),
                images: vec!["a.png".into()],
                settings: Default::default(),
            }),
            ..Default::default()
        };
        r.add_session("s.json".into());
        r.save(&mut storage);
        assert_eq!(Remembered::load(Some(&storage)), r);
        storage.set_string(STORAGE_KEY, "(not what we wrote".into());
        assert_eq!(Remembered::load(Some(&storage)), Remembered::default());
        assert_eq!(Remembered::load(None), Remembered::default());
    }
}
