//! Correspondences as JSON and CSV: one row per (source point, target).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, WithPath};
use crate::features::dump::write_atomically;

/// One match, in pixel coordinates of its own image (x right, y down, integers at pixel centres).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    pub source_point: [f32; 2],
    pub target: String,
    #[serde(rename = "match")]
    pub matched: [f32; 2],
    pub similarity: f32,
    pub mutual: bool,
}

pub fn write_json(records: &[MatchRecord], path: &Path) -> Result<()> {
    let text =
        serde_json::to_string_pretty(records).map_err(|e| Error::file(path, e.to_string()))?;
    write_atomically(path, |tmp| std::fs::write(tmp, &text).with_path(tmp))
}

pub const CSV_HEADER: &str = "source_x,source_y,target,match_x,match_y,similarity,mutual";

pub fn write_csv(records: &[MatchRecord], path: &Path) -> Result<()> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for r in records {
        text.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            r.source_point[0],
            r.source_point[1],
            csv_field(&r.target),
            r.matched[0],
            r.matched[1],
            r.similarity,
            r.mutual
        ));
    }
    write_atomically(path, |tmp| std::fs::write(tmp, &text).with_path(tmp))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn read_json(path: &Path) -> Result<Vec<MatchRecord>> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not a matches file: {e}")))
}
