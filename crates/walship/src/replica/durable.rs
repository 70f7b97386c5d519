//! Durable local writes: a temporary name, fsync, rename, fsync of the directory.
//!
//! These are blocking calls; async callers run them on tokio's blocking pool.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::sync_dir;

/// Copies `src` to `dest` so that `dest` appears complete or not at all, with `mtime` as its
/// modification time; returns the number of bytes copied.
///
/// The mtime is set before the fsync and rename (Litestream sets it after), so a crash can never
/// leave a visible file whose mtime is the upload time instead of its creation time.
pub(crate) fn install_copy(src: &Path, dest: &Path, mtime: SystemTime) -> io::Result<u64> {
    let dir = parent(dest)?;
    create_dir_durable(dir)?;
    let tmp = tmp_path(dest);
    let installed = (|| {
        let size = fs::copy(src, &tmp)?;
        let file = File::options().write(true).open(&tmp)?;
        file.set_modified(mtime)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dest)?;
        sync_dir(dir)?;
        Ok(size)
    })();
    if installed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    installed
}

/// Renames a fully written and synced `tmp` over `dest` and makes the rename durable.
pub(crate) fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    fs::rename(tmp, dest)?;
    sync_dir(parent(dest)?)
}

/// `<path>.tmp`: the name a file is written under before it is renamed into place; it never
/// parses as an LTX file name, so listings skip it.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entries changed.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let up = parent(dir)?;
    create_dir_durable(up)?;
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    sync_dir(up)
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn copies_into_new_directories_with_the_given_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"hello").unwrap();
        let dest = dir.path().join("a/b/c.ltx");
        let mtime = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(install_copy(&src, &dest, mtime).unwrap(), 5);
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(fs::metadata(&dest).unwrap().modified().unwrap(), mtime);
        assert!(!tmp_path(&dest).exists());
    }

    #[test]
    fn a_failed_copy_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x/c.ltx");
        let err = install_copy(&dir.path().join("missing"), &dest, UNIX_EPOCH).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!dest.exists() && !tmp_path(&dest).exists());
    }
}
