//! Carrying out a plan: the files are applied one at a time in TXID order into a new database
//! file beside the output while the next ones download, then SQLite checks it and it is
//! renamed into place.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use ltx::Txid;
use rusqlite::{Connection, OpenFlags};

use super::applier::{Applier, ApplyError};
use super::fetch::{self, Fetched};
use super::{describe, output, IntegrityCheck, Plan, Progress, RestoreError, RestoreOptions};
use crate::replica::client::{LtxFileInfo, LtxKey, ReplicaClient};
use crate::{Error, Result};

/// The most problems of a failed integrity check that an error quotes.
const MAX_CHECK_LINES: usize = 10;

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The TXID the database is at.
    pub txid: Txid,
    /// How many LTX files were applied.
    pub files: usize,
    /// How many bytes were downloaded.
    pub bytes: u64,
    /// For a Litestream 0.3 backup (which has no TXIDs; `txid` is then 0), the generation, WAL
    /// index and offset restored.
    pub legacy: Option<String>,
}

/// Restores the database `plan` describes into `opts.output`. Nothing appears at the output
/// unless every file was read whole, checksums matched and the integrity check passed.
///
/// Memory holds the applier's buffers and the downloads running ahead of it (within
/// [`fetch::MEMORY_BUDGET`]), whatever the number of files and the size of the database.
pub(super) async fn restore_ltx(
    client: &ReplicaClient,
    plan: &Plan,
    opts: &RestoreOptions,
) -> Result<Restored> {
    restore_within(client, plan, opts, fetch::MEMORY_BUDGET).await
}

/// [`restore_ltx`] holding at most `budget` bytes of downloads in memory.
async fn restore_within(
    client: &ReplicaClient,
    plan: &Plan,
    opts: &RestoreOptions,
    budget: usize,
) -> Result<Restored> {
    output::check(&opts.output, opts.force)?;
    let work = output::work_dir(&opts.output)?;
    let db = work.path().join("restored.db");
    let out = opts.output.clone();
    let file = File::create(&db).map_err(|e| output_error(&out, &db, &e))?;
    let mut applier = Applier::new(file);
    opts.progress.start(plan.files.len(), plan.size());
    let mut fetched = Box::pin(fetch::fetch_all(
        client,
        &plan.files,
        work.path(),
        opts.parallelism,
        budget,
        opts.progress.clone(),
    ));
    while let Some(next) = fetched.next().await {
        let (info, file) = next?;
        let job = Job {
            info,
            located: located(client, info.key),
            out: out.clone(),
            db: db.clone(),
            progress: opts.progress.clone(),
        };
        applier = blocking(move || job.apply(applier, file)).await?;
    }
    drop(fetched);
    opts.progress.downloaded();
    let last = plan.files.last().map(|f| located(client, f.key));
    let (check, force) = (opts.integrity_check, opts.force);
    blocking(move || {
        let output_failed = |e: &dyn std::fmt::Display| output_error(&out, &db, e);
        let finished = applier.truncate().and_then(|()| applier.verify_checksum());
        match finished {
            Ok(()) => {}
            Err(ApplyError::Output(e)) => return Err(output_failed(&e)),
            Err(ApplyError::Input(e)) => {
                return Err(Error::from(RestoreError::File {
                    file: last.unwrap_or_default(),
                    cause: Box::new(Error::Ltx(e)),
                }))
            }
        }
        applier.file().sync_all().map_err(|e| output_failed(&e))?;
        drop(applier);
        integrity_check(&db, &out, check)?;
        Ok(output::install(&db, &out, force)?)
    })
    .await?;
    drop(work);
    Ok(Restored {
        txid: plan.max_txid(),
        files: plan.files.len(),
        bytes: plan.size(),
        legacy: None,
    })
}

/// Applying one file of a plan, on a blocking thread.
struct Job {
    info: LtxFileInfo,
    located: String,
    out: PathBuf,
    db: PathBuf,
    progress: std::sync::Arc<dyn Progress>,
}

impl Job {
    /// Applies `file` and hands the applier back; a failure names the file (or the output).
    fn apply(self, mut applier: Applier, file: Fetched) -> Result<Applier> {
        let failed = |e: Error| {
            Error::from(RestoreError::File {
                file: self.located.clone(),
                cause: Box::new(e),
            })
        };
        let mut reader = file.reader(&*self.progress).map_err(failed)?;
        match applier.apply(&mut reader, self.info.key, |_, _| {}) {
            Ok(_) => {}
            Err(ApplyError::Input(e)) => return Err(failed(Error::Ltx(e))),
            Err(ApplyError::Output(e)) => return Err(output_error(&self.out, &self.db, &e)),
        }
        if let Some(size) = reader.read_in_place() {
            self.progress.file_done(&describe(self.info.key), size);
        }
        drop(reader);
        file.remove();
        Ok(applier)
    }
}

/// A failure to write the new database at `db`, for the output `out`.
fn output_error(out: &Path, db: &Path, e: &dyn std::fmt::Display) -> Error {
    Error::from(RestoreError::Output {
        path: out.to_path_buf(),
        reason: format!("writing {}: {e}", db.display()),
    })
}

/// Runs SQLite's check on the restored file; any answer but "ok" is an error.
pub(super) fn integrity_check(db: &Path, out: &Path, check: IntegrityCheck) -> Result<()> {
    let Some(pragma) = check.pragma() else {
        return Ok(());
    };
    let failed = |result: String| {
        Error::from(RestoreError::Integrity {
            path: out.to_path_buf(),
            check: pragma,
            result,
        })
    };
    let run = || -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = conn.prepare(&format!("PRAGMA {pragma}({MAX_CHECK_LINES})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    match run() {
        Ok(lines) if lines == ["ok"] => Ok(()),
        Ok(lines) => Err(failed(lines.join("; "))),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// The plan file's name in messages, with where it lives in the replica.
fn located(client: &ReplicaClient, key: LtxKey) -> String {
    format!(
        "{} in replica {:?}, key {}",
        describe(key),
        client.name(),
        client.layout().key(key)
    )
}

/// Runs blocking work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Error::Io {
            path: PathBuf::new(),
            source: io::Error::other(e),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ltx::{Encoder, EncoderOptions, Header};
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::replica::client::{KeyScheme, Layout, SNAPSHOT_LEVEL};
    use crate::restore::{RestorePlan, Target};

    /// A replica in memory of a sample database: a snapshot, then L0 files for TXIDs
    /// 2..=`files`, each rewriting one page with wrong bytes, the last rewriting all of them
    /// right. Returns the client, the plan and the database every restore must give.
    async fn replica(dir: &Path, files: u64) -> (ReplicaClient, Plan, Vec<u8>) {
        let src = dir.join("src.db");
        let conn = Connection::open(&src).unwrap();
        testkit::db::fill_sample(&conn, 3, 100);
        drop(conn);
        let image = std::fs::read(&src).unwrap();
        let page_size = ltx::database::page_size_of(&image).unwrap() as usize;
        let commit = (image.len() / page_size) as u32;
        let page = |pgno: u32| image[(pgno as usize - 1) * page_size..][..page_size].to_vec();
        let layout = Layout::new(KeyScheme::S3, "db").unwrap();
        let client = ReplicaClient::from_store("memory", Arc::new(InMemory::new()), layout);
        for txid in 1..=files {
            let (level, pages): (u32, Vec<(u32, Vec<u8>)>) = if txid == 1 {
                (SNAPSHOT_LEVEL, (1..=commit).map(|p| (p, page(p))).collect())
            } else if txid < files {
                let pgno = 2 + txid as u32 % (commit - 1);
                (0, vec![(pgno, vec![txid as u8; page_size])])
            } else {
                (0, (2..=commit).map(|p| (p, page(p))).collect())
            };
            let header = Header::new(page_size as u32, commit, Txid(txid), Txid(txid), 1);
            let path = dir.join(format!("{txid}.ltx"));
            let file = File::create(&path).unwrap();
            let mut enc = Encoder::new(file, header, EncoderOptions::default()).unwrap();
            for (pgno, data) in pages {
                enc.write_page(pgno, &data).unwrap();
            }
            enc.finish().unwrap();
            client.put_file(level, &path).await.unwrap();
        }
        let RestorePlan::Ltx(plan) = crate::restore::plan(&client, Target::Latest).await.unwrap()
        else {
            panic!("not an LTX plan");
        };
        assert_eq!(plan.files.len() as u64, files);
        (client, plan, image)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("out") || n.starts_with(".out"))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn downloads_in_memory_or_scratch_files_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (client, plan, image) = replica(dir.path(), 40).await;
        // Nothing in memory, a few files' worth, everything; one download or many at a time.
        let small = plan.files[1].size as usize * 3;
        for (i, (budget, parallelism)) in [(0, 1), (0, 8), (small, 3), (1 << 30, 8)]
            .into_iter()
            .enumerate()
        {
            let out = dir.path().join(format!("out{i}.db"));
            let opts = RestoreOptions {
                parallelism,
                ..RestoreOptions::new(&out)
            };
            let restored = restore_within(&client, &plan, &opts, budget).await.unwrap();
            assert_eq!(restored.txid, Txid(40));
            assert!(
                std::fs::read(&out).unwrap() == image,
                "budget {budget}, parallelism {parallelism}"
            );
        }
        assert_eq!(
            entries(dir.path()),
            ["out0.db", "out1.db", "out2.db", "out3.db"]
        );
    }

    #[tokio::test]
    async fn a_damaged_download_is_named_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (client, plan, _) = replica(dir.path(), 30).await;
        let damaged = plan.files[15].key;
        let location = client.layout().key(damaged);
        let bytes = client.store().get(&location).await.unwrap().bytes().await;
        let mut bytes = bytes.unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        client.store().put(&location, bytes.into()).await.unwrap();
        for budget in [0, 1 << 30] {
            let opts = RestoreOptions::new(dir.path().join("out.db"));
            let err = restore_within(&client, &plan, &opts, budget)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(&describe(damaged)), "{err}");
            assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
        }
    }
}
