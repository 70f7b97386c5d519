//! The output side of a restore: what may be overwritten, the work directory beside the
//! output, and the durable rename into place. Blocking calls; async callers use spawn_blocking.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::RestoreError;

/// The files SQLite keeps beside a database; a stale one would be applied to the restored file.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Checks that `path` may be written: it is not a directory, and neither it (unless empty,
/// as Litestream allows) nor a sidecar exists unless `force`.
pub(super) fn check(path: &Path, force: bool) -> Result<(), RestoreError> {
    let refuse = |reason: String| RestoreError::Output {
        path: path.to_path_buf(),
        reason,
    };
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(refuse("it is a directory".into())),
        Ok(m) if m.len() > 0 && !force => {
            return Err(refuse(
                "the file exists: pass -force to replace it, or -o to restore elsewhere".into(),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    if force {
        return Ok(());
    }
    match sidecars(path).into_iter().find(|s| s.exists()) {
        Some(s) => Err(refuse(format!(
            "{} exists and SQLite would apply it to the restored database: remove it, or pass \
             -force to remove it",
            s.display()
        ))),
        None => Ok(()),
    }
}

/// Creates the output's directory if it is missing, and a private work directory in it (so the
/// final rename stays on one file system); it is removed, with whatever it holds, when dropped.
pub(super) fn work_dir(path: &Path) -> Result<tempfile::TempDir, RestoreError> {
    let dir = parent(path);
    let failed = |what: &str, e: io::Error| RestoreError::Output {
        path: path.to_path_buf(),
        reason: format!("cannot {what} {}: {e}", dir.display()),
    };
    fs::create_dir_all(dir).map_err(|e| failed("create the directory", e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".{name}-restore-"))
        .tempdir_in(dir)
        .map_err(|e| failed("write in the directory", e))
}

/// Moves the checked database `db` to `path` durably, first removing stale sidecars (with
/// `force`; without it, one that appeared since [`check`] is an error).
pub(super) fn install(db: &Path, path: &Path, force: bool) -> Result<(), RestoreError> {
    check(path, force)?;
    let failed = |e: io::Error| RestoreError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    for sidecar in sidecars(path) {
        match fs::remove_file(&sidecar) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
    }
    fs::rename(db, path).map_err(failed)?;
    crate::store::sync_dir(parent(path)).map_err(failed)
}

fn sidecars(path: &Path) -> Vec<PathBuf> {
    SIDECARS
        .iter()
        .map(|suffix| {
            let mut name = OsString::from(path.as_os_str());
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect()
}

/// The directory holding `path`; `.` for a bare file name.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
