//! Training checkpoints: `checkpoints/step-NNNNNNNN/` folders holding `state.json` (the step and
//! the run's settings) and `tensors.safetensors` (weights, AdamW moments, EMA weights). A folder is
//! written under a hidden `.partial` name and renamed only once complete, so an interrupted write
//! never replaces or damages the last good checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::error::{Error, Result, WithPath};
use crate::io::atomic::{sync_folder, write_bytes_atomically};
use crate::io::safetensors::{read_tensors, write_tensors};

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const STATE_FILE: &str = "state.json";
pub const TENSORS_FILE: &str = "tensors.safetensors";
/// The `format` of a checkpoint's `state.json`.
pub const FORMAT: &str = "diffscope-train-checkpoint";
/// Complete checkpoints kept in a run folder; older ones are removed after a new one is written.
pub const KEEP_CHECKPOINTS: usize = 2;

/// Everything needed to continue a run exactly where it stopped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: String,
    pub step: usize,
    pub config: TrainConfig,
    /// AdamW's update count (bias correction).
    pub optimizer_steps: usize,
    pub images: usize,
    pub image_size: [usize; 2],
}

/// The tensors of a checkpoint, grouped.
pub struct CheckpointTensors {
    pub params: BTreeMap<String, Tensor>,
    pub adam_m: BTreeMap<String, Tensor>,
    pub adam_v: BTreeMap<String, Tensor>,
    pub ema: BTreeMap<String, Tensor>,
}

const GROUPS: [&str; 4] = ["param", "adam_m", "adam_v", "ema"];

pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: CheckpointState,
    pub tensors: CheckpointTensors,
}

fn step_dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

/// Write a checkpoint for `state.step` into `run_dir/checkpoints/`, then drop all but the newest
/// [`KEEP_CHECKPOINTS`]. Returns the checkpoint's folder.
pub fn save(
    run_dir: &Path,
    state: &CheckpointState,
    tensors: &CheckpointTensors,
) -> Result<PathBuf> {
    let partial = write_partial(run_dir, state, tensors)?;
    commit(run_dir, &partial, state.step)
}

/// The first half of [`save`]: the whole checkpoint written under its hidden `.partial` name,
/// which nothing reads as a checkpoint (what a save interrupted before its rename leaves behind).
pub fn write_partial(
    run_dir: &Path,
    state: &CheckpointState,
    tensors: &CheckpointTensors,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).with_path(&root)?;
    let partial = root.join(format!(".{}.partial", step_dir_name(state.step)));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_path(&partial)?;
    }
    std::fs::create_dir(&partial).with_path(&partial)?;

    let mut all = BTreeMap::new();
    for (group, map) in GROUPS.iter().zip([
        &tensors.params,
        &tensors.adam_m,
        &tensors.adam_v,
        &tensors.ema,
    ]) {
        for (n, t) in map {
            all.insert(format!("{group}/{n}"), t.clone());
        }
    }
    let meta = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    write_tensors(&partial.join(TENSORS_FILE), &all, meta)?;
    let state_path = partial.join(STATE_FILE);
    let text =
        serde_json::to_string_pretty(state).map_err(|e| Error::file(&state_path, e.to_string()))?;
    write_bytes_atomically(&state_path, text.as_bytes())?;
    Ok(partial)
}

/// The second half of [`save`]: give the finished folder its real name, then prune old ones.
fn commit(run_dir: &Path, partial: &Path, step: usize) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let name = step_dir_name(step);
    let final_dir = root.join(&name);
    if final_dir.exists() {
        // A checkpoint of the same step (a rerun): move it aside only now that the new one is whole.
        let old = root.join(format!(".{name}.old"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&final_dir, &old).with_path(&final_dir)?;
        std::fs::rename(partial, &final_dir).with_path(&final_dir)?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(partial, &final_dir).with_path(&final_dir)?;
    }
    sync_folder(&root)?;
    for stale in complete_checkpoints(&root)?
        .into_iter()
        .rev()
        .skip(KEEP_CHECKPOINTS)
    {
        let _ = std::fs::remove_dir_all(stale.1);
    }
    Ok(final_dir)
}

/// Complete checkpoint folders under `root`, oldest first (hidden partial folders are skipped).
fn complete_checkpoints(root: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = vec![];
    for entry in std::fs::read_dir(root).with_path(root)? {
        let entry = entry.with_path(root)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            if entry.path().join(STATE_FILE).is_file() {
                found.push((step, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The checkpoint folder that `path` names: a checkpoint itself, or a training run folder (its
/// newest complete checkpoint).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(Error::file(path, "no such checkpoint folder"));
    }
    let root = path.join(CHECKPOINTS_DIR);
    if root.is_dir() {
        if let Some((_, newest)) = complete_checkpoints(&root)?.pop() {
            return Ok(newest);
        }
    }
    Err(Error::file(
        path,
        format!("not a checkpoint: it has neither {STATE_FILE} nor a {CHECKPOINTS_DIR}/ folder with a complete checkpoint"),
    ))
}

/// Read a checkpoint (see [`resolve`] for what `path` may be).
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let dir = resolve(path)?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).with_path(&state_path)?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        Error::file(
            &state_path,
            format!("not a diffscope training checkpoint: {e}"),
        )
    })?;
    if state.format != FORMAT {
        return Err(Error::file(
            &state_path,
            format!("format `{}` is not `{FORMAT}`", state.format),
        ));
    }
    let tensors_path = dir.join(TENSORS_FILE);
    let all = read_tensors(&tensors_path, device)?;
    let mut groups: [BTreeMap<String, Tensor>; 4] = Default::default();
    for (full, t) in all {
        let (group, name) = full
            .split_once('/')
            .ok_or_else(|| Error::file(&tensors_path, format!("unexpected tensor `{full}`")))?;
        let i = GROUPS.iter().position(|g| *g == group).ok_or_else(|| {
            Error::file(&tensors_path, format!("unexpected tensor group `{group}`"))
        })?;
        groups[i].insert(name.to_string(), t);
    }
    let [params, adam_m, adam_v, ema] = groups;
    if params.is_empty() {
        return Err(Error::file(
            &tensors_path,
            "the checkpoint holds no weights",
        ));
    }
    for (group, map) in [("adam_m", &adam_m), ("adam_v", &adam_v)] {
        if let Some(missing) = params.keys().find(|k| !map.contains_key(*k)) {
            return Err(Error::file(
                &tensors_path,
                format!("optimizer state `{group}/{missing}` is missing"),
            ));
        }
    }
    Ok(Checkpoint {
        dir,
        state,
        tensors: CheckpointTensors {
            params,
            adam_m,
            adam_v,
            ema,
        },
    })
}
