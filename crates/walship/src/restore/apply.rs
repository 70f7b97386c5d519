//! Carrying out a plan: parallel downloads, a streaming merge into a database file, SQLite's
//! check, and the rename into place.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use futures::stream::{self, StreamExt, TryStreamExt};
use ltx::{CompactOptions, Header, Txid, HEADER_SIZE};
use rusqlite::{Connection, OpenFlags};
use tokio::io::AsyncWriteExt;

use super::{describe, output, IntegrityCheck, Plan, Progress, RestoreError, RestoreOptions};
use crate::replica::client::{LtxKey, ReplicaClient};
use crate::{Error, Result};

/// Bytes per chunk passed from the merge to the database writer.
const PIPE_CHUNK: usize = 64 * 1024;

/// Chunks in flight between the merge and the writer: bounds memory to about 1 MiB.
const PIPE_DEPTH: usize = 16;

/// The most problems of a failed integrity check that an error quotes.
const MAX_CHECK_LINES: usize = 10;

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The TXID the database is at.
    pub txid: Txid,
    /// How many LTX files were merged.
    pub files: usize,
    /// How many bytes were downloaded.
    pub bytes: u64,
    /// For a Litestream 0.3 backup (which has no TXIDs; `txid` is then 0), the generation, WAL
    /// index and offset restored.
    pub legacy: Option<String>,
}

/// Restores the database `plan` describes into `opts.output`. Nothing appears at the output
/// unless every file was read whole, checksums matched and the integrity check passed.
pub(super) async fn restore_ltx(
    client: &ReplicaClient,
    plan: &Plan,
    opts: &RestoreOptions,
) -> Result<Restored> {
    output::check(&opts.output, opts.force)?;
    let work = output::work_dir(&opts.output)?;
    let paths = download(client, plan, work.path(), opts.parallelism, &*opts.progress).await?;
    let db = work.path().join("restored.db");
    let located: Vec<String> = plan.files.iter().map(|f| located(client, f.key)).collect();
    let keys: Vec<LtxKey> = plan.files.iter().map(|f| f.key).collect();
    let (out, check, force) = (opts.output.clone(), opts.integrity_check, opts.force);
    blocking(move || {
        merge(&paths, &keys, &located, &db, &out)?;
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

/// Downloads the plan's files into `dir`, `parallelism` at a time, telling `progress` as bytes
/// arrive; returns their paths in plan order.
async fn download(
    client: &ReplicaClient,
    plan: &Plan,
    dir: &Path,
    parallelism: usize,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    progress.start(plan.files.len(), plan.size());
    let paths = stream::iter(plan.files.iter().enumerate())
        .map(|(i, f)| {
            let dest = dir.join(format!("{i:08}.ltx"));
            // Created before its download starts: a download dropped on another's failure
            // then cannot add a file to the work directory while it is being removed.
            let file = std::fs::File::create(&dest);
            async move {
                let name = describe(f.key);
                let fetched = match file {
                    Ok(file) => fetch(client, f.key, file, &dest, progress).await,
                    Err(e) => Err(local_error(&dest)(e)),
                };
                match fetched {
                    Ok(size) => {
                        progress.file_done(&name, size);
                        Ok(dest)
                    }
                    Err(e) => Err(Error::from(RestoreError::File {
                        file: name,
                        cause: Box::new(e),
                    })),
                }
            }
        })
        .buffered(parallelism.max(1))
        .try_collect()
        .await?;
    progress.downloaded();
    Ok(paths)
}

/// Downloads one file into `file` (at `dest`); returns its size. Not fsynced: it is scratch
/// input to the merge, read back by this process and removed with the work directory; only
/// the merged database must be durable.
async fn fetch(
    client: &ReplicaClient,
    key: LtxKey,
    file: File,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut chunks = client.get(key).await?;
    let mut file = tokio::fs::File::from_std(file);
    let mut size = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        file.write_all(&chunk).await.map_err(local_error(dest))?;
        size += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    file.flush().await.map_err(local_error(dest))?;
    Ok(size)
}

/// Maps a failure of a local file to an error naming it.
fn local_error(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Merges the downloaded files (oldest first) into the database file `db`, fsynced.
///
/// The merge and the page writer run on two threads joined by a bounded pipe, so memory holds
/// one page per input plus the pipe, whatever the database size.
fn merge(
    paths: &[PathBuf],
    keys: &[LtxKey],
    located: &[String],
    db: &Path,
    out: &Path,
) -> Result<()> {
    let file_error = |i: usize, e: Error| {
        Error::from(RestoreError::File {
            file: located[i].clone(),
            cause: Box::new(e),
        })
    };
    let mut inputs = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        inputs.push(open_checked(path, keys[i]).map_err(|e| file_error(i, e))?);
    }
    let output_error = |e: &dyn std::fmt::Display| {
        Error::from(RestoreError::Output {
            path: out.to_path_buf(),
            reason: format!("writing {}: {e}", db.display()),
        })
    };
    let file = File::create(db).map_err(|e| output_error(&e))?;
    let (tx, rx) = sync_channel(PIPE_DEPTH);
    std::thread::scope(|s| {
        let merger = s.spawn(move || {
            let (mut w, ..) = ltx::compact(inputs, PipeWriter::new(tx), CompactOptions::default())?;
            w.flush()?;
            Ok::<_, ltx::Error>(())
        });
        let written = ltx::database::decode_snapshot(PipeReader::new(rx), BufWriter::new(file));
        match merger.join().expect("the merge thread does not panic") {
            Err(ltx::Error::MergeInput { input, source }) => {
                return Err(file_error(input, Error::Ltx(*source)))
            }
            Err(e) if written.is_ok() => return Err(output_error(&e)),
            _ => {}
        }
        let (w, _) = written.map_err(|e| output_error(&e))?;
        let file = w.into_inner().map_err(|e| output_error(e.error()))?;
        file.sync_all().map_err(|e| output_error(&e))
    })
}

/// Opens a downloaded file after checking that its header matches the name it was listed by.
fn open_checked(path: &Path, key: LtxKey) -> Result<File> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut bytes = [0u8; HEADER_SIZE];
    file.read_exact(&mut bytes).map_err(io_error)?;
    let header = Header::from_bytes(&bytes)?;
    if (header.min_txid, header.max_txid) != (key.min_txid, key.max_txid) {
        return Err(Error::Ltx(ltx::Error::InvalidInput(format!(
            "its header says TXIDs {}-{}, not the range in its name",
            header.min_txid, header.max_txid
        ))));
    }
    file.rewind().map_err(io_error)?;
    Ok(file)
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

/// The sending end of the merge pipe: gathers writes into chunks.
struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn new(tx: SyncSender<Vec<u8>>) -> Self {
        PipeWriter {
            tx,
            buf: Vec::with_capacity(PIPE_CHUNK),
        }
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIPE_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the database writer stopped"))
    }
}

/// The receiving end of the merge pipe; the end of input once the merge is done (or failed).
struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        PipeReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => (self.chunk, self.pos) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
