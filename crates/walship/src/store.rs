//! The local LTX store beside a database: `.<db file name>-litestream/ltx/<level>/<min>-<max>.ltx`.
//!
//! This is the layout Litestream 0.5 uses for its meta directory, so tools that look there find
//! what they expect. Every file is written to a temporary name, fsynced, renamed and the directory
//! fsynced, so a crash leaves either the whole file or none of it; stale temporary files are
//! removed when the store opens.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ltx::{format_filename, parse_filename, Txid};

use crate::{Error, Result};

const TMP_SUFFIX: &str = ".tmp";

/// One LTX file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub level: u32,
    pub min_txid: Txid,
    pub max_txid: Txid,
    pub path: PathBuf,
    pub size: u64,
}

/// The directory of LTX files kept beside one database.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Maps an I/O error to one that names the path.
fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LocalStore {
    /// The default meta directory for a database: `.<name>-litestream` beside it.
    pub fn default_dir(db_path: &Path) -> PathBuf {
        let name = db_path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        db_path.with_file_name(format!(".{name}-litestream"))
    }

    /// Opens (creating if needed) the store rooted at `meta_dir`, removing stale temporary files.
    pub fn open(meta_dir: &Path) -> Result<LocalStore> {
        let store = LocalStore {
            root: meta_dir.to_path_buf(),
        };
        let ltx_dir = store.root.join("ltx");
        std::fs::create_dir_all(&ltx_dir).map_err(io_at(&ltx_dir))?;
        for level in store.levels()? {
            let dir = store.level_dir(level);
            for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
                let path = entry.map_err(io_at(&dir))?.path();
                if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                    std::fs::remove_file(&path).map_err(io_at(&path))?;
                }
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn level_dir(&self, level: u32) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }

    /// The levels that have a directory.
    fn levels(&self) -> Result<Vec<u32>> {
        let dir = self.root.join("ltx");
        let mut levels = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            if let Some(level) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                levels.push(level);
            }
        }
        levels.sort_unstable();
        Ok(levels)
    }

    /// Starts a new file; nothing is visible under its final name until [`PendingFile::commit`].
    pub fn create(&self, level: u32, min_txid: Txid, max_txid: Txid) -> Result<PendingFile> {
        let dir = self.level_dir(level);
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let path = dir.join(format_filename(min_txid, max_txid));
        let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
        let file = File::create(&tmp).map_err(io_at(&tmp))?;
        Ok(PendingFile {
            level,
            min_txid,
            max_txid,
            path,
            tmp,
            writer: Some(BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    /// The files at `level`, ordered by TXID.
    pub fn list(&self, level: u32) -> Result<Vec<LocalFile>> {
        let dir = self.level_dir(level);
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at(&dir))?;
            let name = entry.file_name();
            let Some((min_txid, max_txid)) = name.to_str().and_then(parse_filename) else {
                continue;
            };
            let path = entry.path();
            let size = entry.metadata().map_err(io_at(&path))?.len();
            files.push(LocalFile {
                level,
                min_txid,
                max_txid,
                path,
                size,
            });
        }
        files.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(files)
    }

    /// The newest file at `level`.
    pub fn last(&self, level: u32) -> Result<Option<LocalFile>> {
        Ok(self.list(level)?.pop())
    }

    /// The LTX header of a file in the store.
    pub fn header(&self, file: &LocalFile) -> Result<ltx::Header> {
        let f = File::open(&file.path).map_err(io_at(&file.path))?;
        Ok(*ltx::Decoder::new(std::io::BufReader::new(f))?.header())
    }

    /// Deletes a file.
    pub fn remove(&self, file: &LocalFile) -> Result<()> {
        std::fs::remove_file(&file.path).map_err(io_at(&file.path))
    }

    /// Deletes every LTX file, so that the next sync starts afresh with a full capture.
    pub fn reset(&self) -> Result<()> {
        let dir = self.root.join("ltx");
        std::fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))
    }
}

/// A file being written to the store under a temporary name; dropped uncommitted, it vanishes.
pub struct PendingFile {
    level: u32,
    min_txid: Txid,
    max_txid: Txid,
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl PendingFile {
    /// The buffered writer to encode into.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("present until commit")
    }

    /// Makes the file durable and visible: fsync, set mtime to `timestamp_ms`, rename, fsync dir.
    pub fn commit(mut self, timestamp_ms: i64) -> Result<LocalFile> {
        let writer = self.writer.take().expect("present until commit");
        let file = writer
            .into_inner()
            .map_err(|e| io_at(&self.tmp)(e.into_error()))?;
        let mtime = UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
        file.set_modified(mtime).map_err(io_at(&self.tmp))?;
        file.sync_all().map_err(io_at(&self.tmp))?;
        let size = file.metadata().map_err(io_at(&self.tmp))?.len();
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io_at(&self.path))?;
        let dir = self.path.parent().expect("files live in a level directory");
        sync_dir(dir).map_err(io_at(dir))?;
        Ok(LocalFile {
            level: self.level,
            min_txid: self.min_txid,
            max_txid: self.max_txid,
            path: std::mem::take(&mut self.path),
            size,
        })
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Milliseconds since the Unix epoch, as LTX headers store time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join(".app.db-litestream")).unwrap();
        assert!(store.list(0).unwrap().is_empty());

        let mut pending = store.create(0, Txid(1), Txid(1)).unwrap();
        pending.writer().write_all(b"first").unwrap();
        assert!(
            store.list(0).unwrap().is_empty(),
            "not visible before commit"
        );
        let first = pending.commit(1_700_000_000_123).unwrap();
        assert_eq!(first.size, 5);
        assert!(first
            .path
            .ends_with("ltx/0/0000000000000001-0000000000000001.ltx"));
        let mtime = std::fs::metadata(&first.path).unwrap().modified().unwrap();
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));

        // Abandoned writes leave nothing behind.
        let mut abandoned = store.create(0, Txid(2), Txid(2)).unwrap();
        abandoned.writer().write_all(b"partial").unwrap();
        drop(abandoned);
        let names: Vec<_> = std::fs::read_dir(store.root().join("ltx/0"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1);

        store
            .create(0, Txid(3), Txid(3))
            .unwrap()
            .commit(0)
            .unwrap();
        store
            .create(0, Txid(2), Txid(2))
            .unwrap()
            .commit(0)
            .unwrap();
        let txids: Vec<u64> = store
            .list(0)
            .unwrap()
            .iter()
            .map(|f| f.max_txid.0)
            .collect();
        assert_eq!(txids, [1, 2, 3]);
        assert_eq!(store.last(0).unwrap().unwrap().max_txid, Txid(3));
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("meta");
        let level = root.join("ltx/0");
        std::fs::create_dir_all(&level).unwrap();
        std::fs::write(
            level.join("0000000000000004-0000000000000004.ltx.tmp"),
            b"x",
        )
        .unwrap();
        std::fs::write(level.join("notes.txt"), b"kept").unwrap();
        let store = LocalStore::open(&root).unwrap();
        assert!(!level
            .join("0000000000000004-0000000000000004.ltx.tmp")
            .exists());
        assert!(
            level.join("notes.txt").exists(),
            "foreign files are left alone"
        );
        assert!(store.list(0).unwrap().is_empty());
    }

    #[test]
    fn default_dir_is_beside_the_database() {
        assert_eq!(
            LocalStore::default_dir(Path::new("/data/app.db")),
            PathBuf::from("/data/.app.db-litestream")
        );
    }
}
