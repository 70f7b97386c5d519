//! Follow mode (`restore -f`): keep a restored database current, as a read replica on another
//! machine, by applying each new LTX file as it appears in the replica.
//!
//! The follower is a rollback-journal database (page 1 says so), so readers need no `-shm` and
//! take shared locks. Each batch of new files is downloaded and fully verified (checksums) first;
//! only then are its pages written in place, under SQLite's exclusive lock so no reader sees half
//! a batch, and the file change counter is changed so readers drop their caches. The TXID
//! reached is kept in `<db>-txid` (hex and a newline, as Litestream writes it), so a restarted
//! follower goes on from there.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ltx::Txid;
use rusqlite::Connection;
use tokio::sync::watch;

use super::applier::{Applier, ApplyError, DbState};
use super::{fetch, RestoreError};
use crate::compaction::SNAPSHOT_LEVEL;
use crate::replica::client::{LtxFileInfo, ReplicaClient};
use crate::{Error, Result};

/// Offset of the file change counter in the database header.
const CHANGE_COUNTER: u64 = 24;
/// Offset of the file format write and read versions (1 = rollback journal, 2 = WAL).
const FORMAT_VERSIONS: u64 = 18;

/// The sidecar holding the TXID a follower has reached.
pub fn txid_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-txid", db.display()))
}

/// The TXID recorded beside a follower, if any.
pub fn read_txid(db: &Path) -> Result<Option<Txid>> {
    let path = txid_path(db);
    match std::fs::read_to_string(&path) {
        Ok(text) => Txid::parse(text.trim()).map(Some).ok_or_else(|| Error::Db {
            path: path.clone(),
            reason: format!("holds {text:?}, not a TXID; remove it and the database to start over"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// A restored database kept current from a replica.
pub struct Follower {
    db: PathBuf,
    /// Writes the database through a descriptor open for the follower's lifetime: closing a
    /// descriptor of the file would drop the SQLite locks this process holds on it.
    applier: Applier,
    conn: Connection,
    work: tempfile::TempDir,
}

impl Follower {
    /// Follows the database at `db`, which holds the state at `txid`; marks it a rollback-journal
    /// database so that readers need no WAL index.
    pub fn open(db: &Path, txid: Txid) -> Result<Follower> {
        let io = |source| Error::Io {
            path: db.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(db)
            .map_err(io)?;
        file.write_all_at(&[1, 1], FORMAT_VERSIONS).map_err(io)?;
        file.sync_all().map_err(io)?;
        let state = db_state(&file, txid).map_err(io)?;
        let conn = Connection::open(db).map_err(|e| Error::Db {
            path: db.to_path_buf(),
            reason: format!("opening the follower: {e}"),
        })?;
        let dir = db.parent().unwrap_or(Path::new("."));
        let work = tempfile::Builder::new()
            .prefix(".walship-follow-")
            .tempdir_in(dir)
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let follower = Follower {
            db: db.to_path_buf(),
            applier: Applier::resume(file, state),
            conn,
            work,
        };
        follower.record_txid()?;
        Ok(follower)
    }

    /// The TXID the database is at.
    pub fn txid(&self) -> Txid {
        self.applier.state().map_or(Txid(0), |s| s.txid)
    }

    /// Polls `client` every `interval` and applies what is new, until `stop` turns true.
    /// Failures to reach the replica are logged and retried; a file that fails verification
    /// stops the follower, leaving the database at the last whole batch.
    pub async fn run(
        &mut self,
        client: &ReplicaClient,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            match self.next_files(client).await {
                Ok(files) if !files.is_empty() => self.apply(client, &files).await?,
                Ok(_) => {}
                Err(e) => tracing::warn!(replica = client.name(), "follow: {e}"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// The files that continue the follower's TXID: L0 when it continues, else the level files
    /// that cover what L0 no longer holds (compacted away), then L0 again.
    async fn next_files(&self, client: &ReplicaClient) -> Result<Vec<LtxFileInfo>> {
        let l0 = client.list(0).await?;
        let continues =
            |f: &LtxFileInfo, at: Txid| f.key.min_txid.0 <= at.0 + 1 && f.key.max_txid > at;
        let mut at = self.txid();
        let mut chain = Vec::new();
        if !l0.iter().any(|f| continues(f, at)) && l0.iter().any(|f| f.key.max_txid > at) {
            let mut higher = Vec::new();
            for level in (1..SNAPSHOT_LEVEL).rev() {
                higher.extend(client.list(level).await?);
            }
            while let Some(f) = higher
                .iter()
                .filter(|f| continues(f, at))
                .max_by_key(|f| f.key.max_txid)
            {
                at = f.key.max_txid;
                chain.push(*f);
            }
        }
        for f in &l0 {
            if continues(f, at) {
                at = f.key.max_txid;
                chain.push(*f);
            }
        }
        Ok(chain)
    }

    /// Downloads and verifies `files`, then writes their pages in order under the exclusive lock.
    async fn apply(&mut self, client: &ReplicaClient, files: &[LtxFileInfo]) -> Result<()> {
        let mut paths = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let path = self.work.path().join(format!("{i}.ltx"));
            fetch::to_scratch(client, f.key, &path).await?;
            let reader = BufReader::new(File::open(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?);
            ltx::verify(reader).map_err(|e| RestoreError::File {
                file: super::describe(f.key),
                cause: Box::new(e.into()),
            })?;
            paths.push((*f, path));
        }
        let written = tokio::task::block_in_place(|| self.write_pages(&paths));
        for (_, p) in &paths {
            let _ = std::fs::remove_file(p);
        }
        written?;
        self.record_txid()?;
        tracing::info!(db = %self.db.display(), txid = %self.txid(), files = files.len(), "follow: applied");
        Ok(())
    }

    fn write_pages(&mut self, files: &[(LtxFileInfo, PathBuf)]) -> Result<()> {
        let db = self.db.clone();
        let db_err = |what: &str, e: rusqlite::Error| Error::Db {
            path: db.clone(),
            reason: format!("{what}: {e}"),
        };
        // Readers hold shared locks; wait for them to finish, then keep them out.
        self.conn
            .busy_timeout(Duration::from_secs(30))
            .map_err(|e| db_err("setting the busy timeout", e))?;
        self.conn
            .execute_batch("BEGIN EXCLUSIVE")
            .map_err(|e| db_err("taking the exclusive lock", e))?;
        let written = self.write_locked(files);
        let released = self.conn.execute_batch("ROLLBACK");
        written?;
        released.map_err(|e| db_err("releasing the exclusive lock", e))
    }

    fn write_locked(&mut self, files: &[(LtxFileInfo, PathBuf)]) -> Result<()> {
        let db = self.db.clone();
        let io = |source| Error::Io {
            path: db.clone(),
            source,
        };
        let applied = |e: ApplyError, f: &LtxFileInfo| match e {
            ApplyError::Input(e) => Error::from(RestoreError::File {
                file: super::describe(f.key),
                cause: Box::new(e.into()),
            }),
            ApplyError::Output(e) => io(e),
        };
        for (f, path) in files {
            let file = File::open(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            // Page 1 keeps saying "rollback journal", whatever the source database used.
            let patch = |pgno: u32, page: &mut [u8]| {
                if pgno == 1 {
                    page[FORMAT_VERSIONS as usize..FORMAT_VERSIONS as usize + 2]
                        .copy_from_slice(&[1, 1]);
                }
            };
            self.applier
                .apply(file, f.key, patch)
                .map_err(|e| applied(e, f))?;
        }
        let last = files.last().expect("applied a non-empty batch");
        self.applier.truncate().map_err(|e| applied(e, &last.0))?;
        // A new change counter tells readers' caches that the file changed under them.
        let file = self.applier.file();
        let mut counter = [0u8; 4];
        file.read_exact_at(&mut counter, CHANGE_COUNTER)
            .map_err(io)?;
        let next = u32::from_be_bytes(counter).wrapping_add(1);
        file.write_all_at(&next.to_be_bytes(), CHANGE_COUNTER)
            .map_err(io)?;
        file.sync_all().map_err(io)
    }

    fn record_txid(&self) -> Result<()> {
        let path = txid_path(&self.db);
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io { path: p, source }
        };
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        writeln!(f, "{}", self.txid()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}

/// Where the database in `file` stands: its page size (from its header), its size, and `txid`.
fn db_state(file: &File, txid: Txid) -> std::io::Result<DbState> {
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0)?;
    let page_size = ltx::database::page_size_of(&header).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a SQLite database: its header holds no valid page size",
        )
    })?;
    let commit = file.metadata()?.len() / u64::from(page_size);
    Ok(DbState {
        page_size,
        commit: u32::try_from(commit).map_err(std::io::Error::other)?,
        txid,
    })
}
