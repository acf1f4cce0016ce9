//! Writing a file so that it is either whole or absent, even after a crash or a full disk: the
//! content goes to a hidden temporary file in the same folder, which is flushed to disk, renamed
//! over the target, and the folder flushed so that the rename itself is durable.
//!
//! The temporary file is created like any other file (the permissions the user's umask gives),
//! not with a temp-file library's owner-only mode, so the renamed file is an ordinary file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, WithPath};

/// Write `path` atomically: `write` is given the temporary file's path to create and fill; on its
/// success the file is synced and renamed over `path`; on failure it is removed and `path` is left
/// as it was. The parent folder is created when missing.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let folder = parent_folder(path);
    std::fs::create_dir_all(&folder).with_path(&folder)?;
    let tmp = temporary_path(path)?;
    let written = write(&tmp).and_then(|()| sync_file(&tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, e.to_string()));
    }
    sync_folder(&folder)
}

/// Write `bytes` to `path` atomically (see [`write_atomically`]).
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| std::fs::write(tmp, bytes).with_path(tmp))
}

/// Flush a folder's entries to disk, so that a file renamed into it (or a folder renamed inside
/// it) is still there after a crash. Only Unix can open a folder to sync it; elsewhere a no-op.
pub fn sync_folder(folder: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(folder)
        .and_then(|f| f.sync_all())
        .with_path(folder)?;
    #[cfg(not(unix))]
    let _ = folder;
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    // Opened for writing (without truncating): Windows syncs only writable handles.
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .with_path(path)
}

/// The folder `path` is in (`.` for a bare file name).
fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.partial` beside `path`: hidden, and never mistaken for a finished file.
fn temporary_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path (it has no file name)"))?;
    Ok(path.with_file_name(format!(".{}.partial", name.to_string_lossy())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_bytes_atomically(&path, b"first").unwrap();
        write_bytes_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(names_in(&dir.path().join("sub")), ["out.txt"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_bytes_atomically(&path, b"good").unwrap();
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::file(tmp, "disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        assert_eq!(names_in(dir.path()), ["out.txt"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error_naming_it() {
        let err = write_bytes_atomically(Path::new("/"), b"x").unwrap_err();
        assert!(err.to_string().contains("no file name"), "{err}");
    }

    /// The written file has the mode any newly created file gets under the process's umask (a
    /// temp-file library would give 0600).
    #[cfg(unix)]
    #[test]
    fn the_file_gets_the_permissions_the_umask_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let atomic = dir.path().join("atomic");
        write_bytes_atomically(&atomic, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
    }
}
