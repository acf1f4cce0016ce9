//! Correspondences as JSON and CSV: one row per (source point, target), with the settings that
//! produced them. The CLI (`correspond`) and the workbench's export write this one format.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result, WithPath};
use crate::io::atomic::write_bytes_atomically;

/// One match, in pixel coordinates of its own image (x right, y down, integers at pixel centres).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// Number of the source point, from 1 in the order given or pinned (the workbench's P1, P2, ...).
    pub point: usize,
    pub source: String,
    pub source_point: [f32; 2],
    pub target: String,
    #[serde(rename = "match")]
    pub matched: [f32; 2],
    pub similarity: f32,
    pub mutual: bool,
}

/// The matches of one query and the settings that produced them (model, t, tap, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchExport {
    pub settings: Map<String, Value>,
    pub coordinates: String,
    pub matches: Vec<MatchRecord>,
}

pub const CSV_HEADER: &str =
    "point,source,source_x,source_y,target,match_x,match_y,similarity,mutual";

const COORDINATES: &str =
    "pixels of each original image, x right, y down, integers at pixel centres";

impl MatchExport {
    pub fn new(settings: Map<String, Value>, matches: Vec<MatchRecord>) -> Self {
        Self {
            settings,
            coordinates: COORDINATES.to_string(),
            matches,
        }
    }

    pub fn json_text(&self) -> String {
        // Plain strings, numbers and booleans only: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// CSV with the settings on a first `#` line (numpy's `loadtxt`/`genfromtxt` and pandas'
    /// `comment="#"` skip it).
    pub fn csv_text(&self) -> String {
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s:?}"),
                v => format!("{k}={v}"),
            })
            .collect();
        let mut text = format!("# {}\n{CSV_HEADER}\n", settings.join(" "));
        for r in &self.matches {
            text.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                r.point,
                csv_field(&r.source),
                r.source_point[0],
                r.source_point[1],
                csv_field(&r.target),
                r.matched[0],
                r.matched[1],
                r.similarity,
                r.mutual
            ));
        }
        text
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = self.json_text();
        write_bytes_atomically(path, text.as_bytes())
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let text = self.csv_text();
        write_bytes_atomically(path, text.as_bytes())
    }

    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a matches file: {e}")))
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_csv_quotes_names() {
        let mut settings = Map::new();
        settings.insert("t".into(), Value::from(261));
        settings.insert("tap".into(), Value::from("up_blocks.1"));
        let export = MatchExport::new(
            settings,
            vec![MatchRecord {
                point: 1,
                source: "a.png".into(),
                source_point: [1.5, 2.0],
                target: "b,c.png".into(),
                matched: [3.25, 4.0],
                similarity: 0.5,
                mutual: true,
            }],
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        export.write_json(&path).unwrap();
        assert_eq!(MatchExport::read_json(&path).unwrap(), export);
        let csv = export.csv_text();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "# t=261 tap=\"up_blocks.1\"");
        assert_eq!(lines[1], CSV_HEADER);
        assert_eq!(lines[2], "1,a.png,1.5,2,\"b,c.png\",3.25,4,0.5,true");
    }
}
