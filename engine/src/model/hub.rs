//! The Hugging Face hub cache, read offline: where it is, which snapshot a model name and revision
//! mean there, and which diffusion models it holds. Nothing is ever downloaded.
//!
//! The cache folders are those `huggingface_hub` uses, in its order of precedence: `HF_HUB_CACHE`,
//! `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
//! `~/.cache/huggingface/hub`. The library reads only the first that is set; diffscope looks in
//! each in turn, so a model fetched under another setting is still found. A model `org/name` is
//! the folder `models--org--name`; its `refs/<revision>` files hold commit hashes, and its
//! `snapshots/<commit>` folders hold the files.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result, WithPath};

/// A place the hub cache may be, and the setting that named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheFolder {
    pub path: PathBuf,
    /// The environment variable (or `default`) it came from, for messages.
    pub from: &'static str,
}

/// The hub cache folders this process's environment names, in `huggingface_hub`'s order.
pub fn cache_folders() -> Vec<CacheFolder> {
    cache_folders_in(|name| std::env::var_os(name))
}

/// The hub cache folders an environment names (`env` looks a variable up), in
/// `huggingface_hub`'s order; empty variables count as unset, `~` in `HF_HOME` is the home folder.
pub fn cache_folders_in(env: impl Fn(&str) -> Option<OsString>) -> Vec<CacheFolder> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = var("HOME");
    let expand_home = |path: PathBuf| match (path.strip_prefix("~"), &home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path,
    };
    let candidates = [
        (var("HF_HUB_CACHE"), "HF_HUB_CACHE"),
        (var("HUGGINGFACE_HUB_CACHE"), "HUGGINGFACE_HUB_CACHE"),
        (
            var("HF_HOME").map(|h| expand_home(h).join("hub")),
            "HF_HOME",
        ),
        (
            var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")),
            "XDG_CACHE_HOME",
        ),
        (
            home.as_ref().map(|h| h.join(".cache/huggingface/hub")),
            "default",
        ),
    ];
    let mut folders: Vec<CacheFolder> = Vec::new();
    for (path, from) in candidates {
        if let Some(path) = path.filter(|p| !folders.iter().any(|f| &f.path == p)) {
            folders.push(CacheFolder { path, from });
        }
    }
    folders
}

/// A model as the hub names it: `org/name`, optionally `@revision` (a branch, a tag or a commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoId {
    pub name: String,
    pub revision: Option<String>,
}

impl RepoId {
    /// `ORG/NAME[@REVISION]`, or None when `spec` cannot be a hub name.
    pub fn parse(spec: &str) -> Option<Self> {
        let (name, revision) = match spec.split_once('@') {
            Some((name, revision)) => (name, Some(revision)),
            None => (spec, None),
        };
        let (org, repo) = name.split_once('/')?;
        let part_ok = |part: &str| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let revision_ok = |r: &str| {
            !r.is_empty()
                && Path::new(r)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
        };
        if !part_ok(org) || !part_ok(repo) || !revision.is_none_or(revision_ok) {
            return None;
        }
        Some(Self {
            name: name.to_string(),
            revision: revision.map(str::to_string),
        })
    }

    /// The repo's folder in the cache: `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.name.replace('/', "--"))
    }
}

/// The snapshot folder of model `id`: from the first cache folder that has the model, the snapshot
/// its revision names. When none has it, the error lists where it looked.
pub fn find(id: &RepoId, folders: &[CacheFolder]) -> Result<PathBuf> {
    let mut first_error = None;
    for folder in folders {
        let repo = folder.path.join(id.folder_name());
        if repo.is_dir() {
            match snapshot(&repo, id.revision.as_deref()) {
                Ok(snapshot) => return Ok(snapshot),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let looked: Vec<String> = folders
        .iter()
        .map(|f| format!("{} ({})", f.path.display(), f.from))
        .collect();
    Err(Error::invalid(format!(
        "`{}`: no such file or folder, and no model `{}` in the Hugging Face cache \
         (looked for {} in: {}); diffscope downloads nothing: fetch it first, e.g. \
         `hf download {}`, or point --model at its folder",
        spec_text(id),
        id.name,
        id.folder_name(),
        if looked.is_empty() {
            "no folder: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME or HOME is set".to_string()
        } else {
            looked.join(", ")
        },
        id.name
    )))
}

fn spec_text(id: &RepoId) -> String {
    match &id.revision {
        Some(r) => format!("{}@{r}", id.name),
        None => id.name.clone(),
    }
}

/// The snapshot of a `models--org--name` folder that `revision` names: a ref (`refs/<revision>`
/// holds its commit) or a commit hash (`snapshots/<hash>`). Without a revision: `refs/main`'s, or
/// the only snapshot there is.
pub fn snapshot(repo: &Path, revision: Option<&str>) -> Result<PathBuf> {
    let snapshots = repo.join("snapshots");
    let commit_of = |name: &str| {
        std::fs::read_to_string(repo.join("refs").join(name))
            .ok()
            .map(|c| snapshots.join(c.trim()))
            .filter(|s| s.is_dir())
    };
    if let Some(revision) = revision {
        if let Some(snap) = commit_of(revision) {
            return Ok(snap);
        }
        let snap = snapshots.join(revision);
        if snap.is_dir() {
            return Ok(snap);
        }
        return Err(Error::file(
            repo,
            format!(
                "no revision `{revision}` in this cached model (refs: {}; snapshots: {})",
                names_in(&repo.join("refs")).join(", "),
                names_in(&snapshots).join(", ")
            ),
        ));
    }
    if let Some(snap) = commit_of("main") {
        return Ok(snap);
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
            repo,
            format!(
                "several snapshots and no refs/main: name one of them, e.g. {}",
                snaps[0].display()
            ),
        )),
    }
}

/// The entries of a folder, sorted (none when it cannot be read).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether `folder` is a model's folder in the hub cache (`models--org--name`).
pub fn is_repo_folder(folder: &Path) -> bool {
    folder
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("models--"))
}

/// `org/name` of a hub repo folder or of a folder inside it (a snapshot): the hub's name for the
/// model, where the folder is in the cache.
pub fn repo_name(folder: &Path) -> Option<String> {
    folder.ancestors().find_map(|dir| {
        let name = dir.file_name()?.to_str()?.strip_prefix("models--")?;
        Some(name.replacen("--", "/", 1))
    })
}

/// A diffusion model in the hub cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModel {
    /// `org/name`: what `--model` takes.
    pub name: String,
    pub folder: PathBuf,
}

/// The models of the cache folders that hold a diffusion UNet (`unet/config.json` in a
/// snapshot), sorted by name; a name in several folders is the first folder's, as [`find`] does.
pub fn cached_models(folders: &[CacheFolder]) -> Vec<CachedModel> {
    let mut models: Vec<CachedModel> = Vec::new();
    for folder in folders {
        for name in names_in(&folder.path) {
            let repo = folder.path.join(&name);
            let has_unet = names_in(&repo.join("snapshots")).iter().any(|snap| {
                repo.join("snapshots")
                    .join(snap)
                    .join("unet/config.json")
                    .is_file()
            });
            let Some(name) = repo_name(&repo).filter(|_| is_repo_folder(&repo) && has_unet) else {
                continue;
            };
            if !models.iter().any(|m| m.name == name) {
                models.push(CachedModel { name, folder: repo });
            }
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of the given variables only.
    fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// A cached model `org/tiny` under `hub` with commit `commit` as `refs/main`.
    fn cache_model(hub: &Path, commit: &str) -> PathBuf {
        let repo = hub.join("models--org--tiny");
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(snap.join("unet")).unwrap();
        std::fs::write(snap.join("unet/config.json"), "{}").unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
        snap
    }

    #[test]
    fn each_environment_variable_names_a_cache_in_the_hub_librarys_order() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let all = env(&[
            ("HF_HUB_CACHE", &t.join("a")),
            ("HUGGINGFACE_HUB_CACHE", &t.join("b")),
            ("HF_HOME", &t.join("c")),
            ("XDG_CACHE_HOME", &t.join("d")),
            ("HOME", &t.join("e")),
        ]);
        let found: Vec<(PathBuf, &str)> = cache_folders_in(all)
            .into_iter()
            .map(|f| (f.path, f.from))
            .collect();
        assert_eq!(
            found,
            [
                (t.join("a"), "HF_HUB_CACHE"),
                (t.join("b"), "HUGGINGFACE_HUB_CACHE"),
                (t.join("c/hub"), "HF_HOME"),
                (t.join("d/huggingface/hub"), "XDG_CACHE_HOME"),
                (t.join("e/.cache/huggingface/hub"), "default"),
            ]
        );
        // Each variable alone finds a model cached where it points.
        for (var, hub) in [
            ("HF_HUB_CACHE", t.join("1")),
            ("HUGGINGFACE_HUB_CACHE", t.join("2")),
            ("HF_HOME", t.join("3")),
            ("XDG_CACHE_HOME", t.join("4")),
            ("HOME", t.join("5")),
        ] {
            let folders = cache_folders_in(env(&[(var, &hub)]));
            let snap = cache_model(&folders[0].path, "abc123");
            assert!(snap.starts_with(&hub), "{var}");
            let id = RepoId::parse("org/tiny").unwrap();
            assert_eq!(find(&id, &folders).unwrap(), snap, "{var}");
            assert_eq!(
                cached_models(&folders),
                [CachedModel {
                    name: "org/tiny".into(),
                    folder: snap.parent().unwrap().parent().unwrap().to_path_buf()
                }]
            );
        }
        // `~` in HF_HOME is the home folder; empty variables are unset.
        let home = t.join("home");
        let folders = cache_folders_in(env(&[
            ("HF_HOME", Path::new("~/hf")),
            ("HF_HUB_CACHE", Path::new("")),
            ("HOME", &home),
        ]));
        assert_eq!(folders[0].path, home.join("hf/hub"));
    }

    #[test]
    fn a_revision_is_a_ref_or_a_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let hub = tmp.path().to_path_buf();
        let folders = [CacheFolder {
            path: hub.clone(),
            from: "HF_HUB_CACHE",
        }];
        let main = cache_model(&hub, "1111");
        let old = cache_model(&hub, "2222");
        // refs/main now says 2222; a tag names 1111.
        let repo = hub.join("models--org--tiny");
        std::fs::write(repo.join("refs/v1.0"), "1111").unwrap();
        let find_spec = |spec: &str| find(&RepoId::parse(spec).unwrap(), &folders);
        assert_eq!(find_spec("org/tiny").unwrap(), old);
        assert_eq!(find_spec("org/tiny@main").unwrap(), old);
        assert_eq!(find_spec("org/tiny@v1.0").unwrap(), main);
        assert_eq!(find_spec("org/tiny@1111").unwrap(), main);
        let err = find_spec("org/tiny@v2").unwrap_err().to_string();
        assert!(
            err.contains("no revision `v2`")
                && err.contains("main, v1.0")
                && err.contains("1111, 2222"),
            "{err}"
        );
    }

    #[test]
    fn a_name_not_in_the_cache_lists_where_it_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let folders = cache_folders_in(env(&[
            ("HF_HOME", &tmp.path().join("hf")),
            ("HOME", &tmp.path().join("home")),
        ]));
        let err = find(&RepoId::parse("stabilityai/sd-2-1").unwrap(), &folders)
            .unwrap_err()
            .to_string();
        for part in [
            "models--stabilityai--sd-2-1",
            &format!("{} (HF_HOME)", tmp.path().join("hf/hub").display()),
            &format!(
                "{} (default)",
                tmp.path().join("home/.cache/huggingface/hub").display()
            ),
            "downloads nothing",
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
    }

    #[test]
    fn hub_names_are_told_from_paths() {
        let id = RepoId::parse("stabilityai/stable-diffusion-2-1@fp16").unwrap();
        assert_eq!(id.name, "stabilityai/stable-diffusion-2-1");
        assert_eq!(id.revision.as_deref(), Some("fp16"));
        assert_eq!(
            id.folder_name(),
            "models--stabilityai--stable-diffusion-2-1"
        );
        for not_a_name in [
            "default",
            "/abs/path",
            "a/b/c",
            "./x",
            "../x/y",
            "a/",
            "org/n@../x",
        ] {
            assert_eq!(RepoId::parse(not_a_name), None, "{not_a_name}");
        }
        assert_eq!(
            repo_name(Path::new("/c/models--org--my--model/snapshots/abc")).as_deref(),
            Some("org/my--model")
        );
        assert_eq!(repo_name(Path::new("/c/plain")), None);
    }
}
