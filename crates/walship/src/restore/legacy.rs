//! Restoring replicas written by Litestream 0.3 (formats/litestream.md §3): the
//! `generations/<gen>/snapshots/<index>.snapshot.lz4` and `generations/<gen>/wal/<index>_<offset>
//! .wal.lz4` objects, each one LZ4 frame, under the replica's prefix.
//!
//! As in Litestream 0.5's `RestoreV3`: the newest snapshot of any generation (or the newest
//! created at or before the timestamp), then that generation's WAL segments from the snapshot's
//! index on (created at or before the timestamp). The segments of one WAL index, whose offsets
//! must follow on from 0 without a gap, are joined into `<db>-wal`, and SQLite checkpoints them
//! into the database with `PRAGMA wal_checkpoint(TRUNCATE)`; then the next index. 0.3 backups
//! have no TXIDs, so `-txid` does not apply to them.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path as FsPath, PathBuf};
use std::time::SystemTime;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use rusqlite::Connection;
use tokio::io::AsyncWriteExt;

use super::apply::{blocking, integrity_check};
use super::fetch::AbortOnDrop;
use super::{output, Progress, RestoreError, RestoreOptions, Restored, Target};
use crate::replica::client::{LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL};
use crate::replica::timestamp::format_rfc3339_nano;
use crate::{Error, Result};

/// The directory of a 0.3 replica holding its generations.
const GENERATIONS_DIR: &str = "generations";

/// One object of a Litestream 0.3 backup: a snapshot (`offset` is `None`) or a WAL segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyObject {
    /// The generation: 16 lower-case hex digits.
    pub generation: String,
    /// The WAL index.
    pub index: u32,
    /// The byte offset in that WAL of a segment; `None` for a snapshot.
    pub offset: Option<u64>,
    /// The compressed size.
    pub size: u64,
    /// The creation time: LastModified, or the file's mtime.
    pub created_at: SystemTime,
    /// The key below the replica's prefix, `generations/...`, as listed.
    pub name: String,
    /// The full key.
    pub location: Path,
    /// Where the object is, as messages show it: a path for a file replica, else the key.
    pub shown: String,
}

impl LegacyObject {
    /// A snapshot, not a WAL segment.
    pub fn is_snapshot(&self) -> bool {
        self.offset.is_none()
    }

    /// The object in messages: what it is and its key below the replica's prefix.
    pub fn describe(&self) -> String {
        let what = if self.is_snapshot() {
            "snapshot"
        } else {
            "WAL segment"
        };
        format!("Litestream 0.3 {what} {}", self.name)
    }
}

/// Everything a replica holds in the 0.3 layout.
#[derive(Debug, Clone, Default)]
pub struct LegacyBackups {
    /// Snapshots, sorted by creation time (then generation and index).
    pub snapshots: Vec<LegacyObject>,
    /// WAL segments, sorted by generation, index and offset.
    pub segments: Vec<LegacyObject>,
}

/// A restore from a 0.3 backup: a snapshot and the WAL segments to apply to it, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyPlan {
    /// The snapshot to start from.
    pub snapshot: LegacyObject,
    /// The segments of its generation to apply, by index and offset.
    pub segments: Vec<LegacyObject>,
}

impl LegacyPlan {
    /// The bytes to download.
    pub fn size(&self) -> u64 {
        self.snapshot.size + self.segments.iter().map(|s| s.size).sum::<u64>()
    }

    /// The generation restored.
    pub fn generation(&self) -> &str {
        &self.snapshot.generation
    }

    /// The position the restored database is at: the last segment's index and offset (the
    /// start of the last segment applied), or the snapshot's index.
    pub fn position(&self) -> String {
        match self.segments.last() {
            Some(s) => format!(
                "generation {} WAL index {:08x} offset {:08x}",
                s.generation,
                s.index,
                s.offset.unwrap_or(0)
            ),
            None => format!(
                "generation {} snapshot index {:08x}",
                self.snapshot.generation, self.snapshot.index
            ),
        }
    }
}

impl LegacyBackups {
    /// Whether the replica holds nothing in the 0.3 layout.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.segments.is_empty()
    }

    /// The creation time of the newest snapshot or segment (Litestream's `TimeBoundsV3`).
    pub fn updated_at(&self) -> Option<SystemTime> {
        self.snapshots
            .iter()
            .chain(&self.segments)
            .map(|o| o.created_at)
            .max()
    }

    /// The newest snapshot, or the newest created at or before `at`.
    pub fn best_snapshot(&self, at: Option<SystemTime>) -> Option<&LegacyObject> {
        self.snapshots
            .iter()
            .rev()
            .find(|s| at.is_none_or(|at| s.created_at <= at))
    }

    /// Plans a restore to `target` (the latest state or a timestamp; TXIDs do not apply).
    pub fn choose(&self, replica: &str, target: Target) -> Result<LegacyPlan, RestoreError> {
        let not_available = |reason: String| RestoreError::NotAvailable {
            replica: replica.into(),
            target: target.to_string(),
            reason,
        };
        let at = match target {
            Target::Latest => None,
            Target::Timestamp(at) => Some(at),
            Target::Txid(_) => return Err(not_available(TXID_NOT_LEGACY.into())),
        };
        let Some(oldest) = self.snapshots.iter().min_by_key(|s| s.created_at) else {
            return Err(not_available(
                "its Litestream 0.3 backup (generations/) holds no snapshot to start from".into(),
            ));
        };
        let Some(snapshot) = self.best_snapshot(at) else {
            return Err(not_available(format!(
                "the oldest Litestream 0.3 snapshot, {}, was created at {}",
                oldest.name,
                format_rfc3339_nano(oldest.created_at)
            )));
        };
        let segments: Vec<LegacyObject> = self
            .segments
            .iter()
            .filter(|s| s.generation == snapshot.generation && s.index >= snapshot.index)
            .filter(|s| at.is_none_or(|at| s.created_at <= at))
            .cloned()
            .collect();
        check_indexes(replica, snapshot, &segments)?;
        Ok(LegacyPlan {
            snapshot: snapshot.clone(),
            segments,
        })
    }
}

/// Why `-txid` cannot restore a 0.3 backup.
pub const TXID_NOT_LEGACY: &str = "the replica holds a Litestream 0.3 backup (generations/), \
     which has no TXIDs: restore its latest state, or use -timestamp";

/// Checks that the segments' WAL indexes follow on from the snapshot's, each starting at
/// offset 0 (whether the offsets within an index follow on is known once they are read).
fn check_indexes(
    replica: &str,
    snapshot: &LegacyObject,
    segments: &[LegacyObject],
) -> Result<(), RestoreError> {
    let mut expected = snapshot.index;
    let mut previous: Option<&LegacyObject> = None;
    for seg in segments {
        let offset = seg.offset.unwrap_or(0);
        let continues = previous.is_some_and(|p| p.index == seg.index);
        if continues {
            continue;
        }
        if seg.index != expected || offset != 0 {
            let index = if seg.index == expected {
                seg.index
            } else {
                expected
            };
            return Err(RestoreError::LegacyGap {
                replica: replica.into(),
                missing: segment_name(&seg.generation, index, 0),
                after: previous.map_or_else(|| snapshot.name.clone(), |p| p.name.clone()),
                next: seg.name.clone(),
            });
        }
        expected = seg.index + 1;
        previous = Some(seg);
    }
    Ok(())
}

/// The name of a WAL segment below the replica's prefix, as Litestream 0.3 writes it.
fn segment_name(generation: &str, index: u32, offset: u64) -> String {
    format!("{GENERATIONS_DIR}/{generation}/wal/{index:08x}_{offset:08x}.wal.lz4")
}

/// Lists a replica's 0.3 objects; other objects under `generations/` are ignored, as
/// Litestream ignores them.
pub async fn list(client: &ReplicaClient) -> Result<LegacyBackups> {
    let dir = client.layout().prefix().clone().join(GENERATIONS_DIR);
    let listed: Vec<ObjectMeta> = match client.store().list(Some(&dir)).try_collect().await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => {
            return Err(Error::from(RestoreError::Legacy {
                object: format!("the Litestream 0.3 backup {GENERATIONS_DIR}/"),
                replica: client.name().into(),
                location: shown(client, &dir),
                reason: format!("cannot list it: {e}"),
            }))
        }
    };
    let mut backups = LegacyBackups::default();
    for meta in listed {
        let Some(parts) = meta.location.prefix_match(&dir) else {
            continue;
        };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        let [generation, kind, file] = parts.as_slice() else {
            continue;
        };
        if !is_generation(generation) {
            continue;
        }
        let (index, offset) = match kind.as_str() {
            "snapshots" => match parse_snapshot_name(file) {
                Some(index) => (index, None),
                None => continue,
            },
            "wal" => match parse_segment_name(file) {
                Some((index, offset)) => (index, Some(offset)),
                None => continue,
            },
            _ => continue,
        };
        let object = LegacyObject {
            generation: generation.clone(),
            index,
            offset,
            size: meta.size,
            created_at: meta.last_modified.into(),
            name: format!("{GENERATIONS_DIR}/{generation}/{kind}/{file}"),
            shown: shown(client, &meta.location),
            location: meta.location,
        };
        match offset {
            None => backups.snapshots.push(object),
            Some(_) => backups.segments.push(object),
        }
    }
    backups.snapshots.sort_by(|a, b| {
        (a.created_at, &a.generation, a.index).cmp(&(b.created_at, &b.generation, b.index))
    });
    backups.segments.sort_by(|a, b| {
        (&a.generation, a.index, a.offset).cmp(&(&b.generation, b.index, b.offset))
    });
    Ok(backups)
}

/// Whether to restore the 0.3 backup rather than the LTX files, as Litestream 0.5's
/// `shouldUseV3Restore` decides: never for a TXID; when there are no LTX files; for the latest
/// state, when the newest 0.3 object is newer than the newest LTX file; for a timestamp, when
/// the best 0.3 snapshot is newer than the newest snapshot-level LTX file created before it.
pub fn prefer_legacy(ltx: &[LtxFileInfo], legacy: &LegacyBackups, target: Target) -> bool {
    let Some(legacy_updated) = legacy.updated_at() else {
        return false;
    };
    if matches!(target, Target::Txid(_)) {
        return false;
    }
    let Some(ltx_updated) = ltx.iter().map(|f| f.created_at).max() else {
        return true;
    };
    match target {
        Target::Timestamp(at) => {
            let Some(snapshot) = legacy.best_snapshot(Some(at)) else {
                return false;
            };
            let ltx_snapshot = ltx
                .iter()
                .filter(|f| f.key.level == SNAPSHOT_LEVEL && f.created_at < at)
                .max_by_key(|f| f.key);
            ltx_snapshot.is_none_or(|l| snapshot.created_at > l.created_at)
        }
        _ => legacy_updated > ltx_updated,
    }
}

/// A key as messages show it: the file's path for a local directory replica, else the key.
fn shown(client: &ReplicaClient, location: &Path) -> String {
    if client.store().to_string().starts_with("LocalFileSystem") {
        format!("/{location}")
    } else {
        location.to_string()
    }
}

fn is_generation(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<index %08x>.snapshot.lz4`.
fn parse_snapshot_name(name: &str) -> Option<u32> {
    let index = name.strip_suffix(".snapshot.lz4")?;
    (index.len() == 8 && is_hex(index)).then(|| u32::from_str_radix(index, 16).ok())?
}

/// `<index %08x>_<offset, 8 to 16 hex digits>.wal.lz4`.
fn parse_segment_name(name: &str) -> Option<(u32, u64)> {
    let (index, offset) = name.strip_suffix(".wal.lz4")?.split_once('_')?;
    if index.len() != 8 || !is_hex(index) || !(8..=16).contains(&offset.len()) || !is_hex(offset) {
        return None;
    }
    Some((
        u32::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(offset, 16).ok()?,
    ))
}

/// Restores a 0.3 backup into `opts.output`: the snapshot, then each WAL index checkpointed
/// into it in turn, then SQLite's check and the rename into place. Downloads run ahead of the
/// application, `opts.parallelism` at a time; each compressed object is removed once applied.
pub async fn restore(
    client: &ReplicaClient,
    plan: &LegacyPlan,
    opts: &RestoreOptions,
) -> Result<Restored> {
    output::check(&opts.output, opts.force)?;
    let work = output::work_dir(&opts.output)?;
    let db = work.path().join("restored.db");
    let wal = work.path().join("restored.db-wal");

    let progress = &opts.progress;
    progress.start(1 + plan.segments.len(), plan.size());
    let snapshot = work.path().join("snapshot.lz4");
    let file = File::create(&snapshot).map_err(io_error(&snapshot))?;
    download(client, &plan.snapshot, file, &snapshot, &**progress).await?;
    {
        let (object, db) = (plan.snapshot.clone(), db.clone());
        let replica = client.name().to_string();
        blocking(move || {
            let mut file = File::create(&db).map_err(io_error(&db))?;
            decompress(&snapshot, &mut file).map_err(|e| object_error(&replica, &object, e))?;
            file.sync_all().map_err(io_error(&db))?;
            std::fs::remove_file(&snapshot).map_err(io_error(&snapshot))
        })
        .await?;
    }

    // Each download runs as its own task, so that downloads go on while segments are applied;
    // those still running when the restore stops early are aborted.
    let dir = work.path().to_path_buf();
    let mut downloads = stream::iter(plan.segments.iter().enumerate())
        .map(|(i, seg)| {
            let dest = dir.join(format!("{i:08}.wal.lz4"));
            // Created before the task starts: an aborted task keeps running until its next
            // await, and must then not add a file to the work directory being removed.
            let file = File::create(&dest).map_err(io_error(&dest));
            let (client, object, progress) = (client.clone(), seg.clone(), progress.clone());
            let task = AbortOnDrop(tokio::spawn(async move {
                download(&client, &object, file?, &dest, &*progress)
                    .await
                    .map(|()| dest)
            }));
            async move {
                let dest = task.await.unwrap_or_else(|e| {
                    Err(Error::Io {
                        path: PathBuf::new(),
                        source: io::Error::other(e),
                    })
                })?;
                Ok::<_, Error>((seg, dest))
            }
        })
        .buffered(opts.parallelism.max(1));
    let mut open: Option<OpenWal> = None;
    while let Some(next) = downloads.next().await {
        let (seg, path) = next?;
        let offset = seg.offset.unwrap_or(0);
        if offset == 0 {
            if let Some(done) = open.take() {
                let (db, replica) = (db.clone(), client.name().to_string());
                blocking(move || done.checkpoint(&db, &replica)).await?;
            }
            let file = File::create(&wal).map_err(io_error(&wal))?;
            open = Some(OpenWal {
                file,
                path: wal.clone(),
                len: 0,
                first: seg.clone(),
                last: seg.clone(),
            });
        }
        let mut current = open.take().expect("the plan starts each index at offset 0");
        if offset < current.len {
            return Err(object_error(
                client.name(),
                seg,
                format!(
                    "it starts at WAL offset {offset:08x}, inside {}, which ends at {:08x}: \
                     the segments overlap",
                    current.last.name, current.len
                ),
            ));
        }
        if offset > current.len {
            return Err(Error::from(RestoreError::LegacyGap {
                replica: client.name().into(),
                missing: segment_name(&seg.generation, seg.index, current.len),
                after: current.last.name.clone(),
                next: seg.name.clone(),
            }));
        }
        let (object, replica) = (seg.clone(), client.name().to_string());
        current = blocking(move || {
            let n = decompress(&path, &mut current.file)
                .map_err(|e| object_error(&replica, &object, e))?;
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            current.len += n;
            current.last = object;
            Ok(current)
        })
        .await?;
        open = Some(current);
    }
    drop(downloads);
    progress.downloaded();
    let (out, check, force) = (opts.output.clone(), opts.integrity_check, opts.force);
    let replica = client.name().to_string();
    let db_path = db.clone();
    blocking(move || {
        if let Some(done) = open {
            done.checkpoint(&db_path, &replica)?;
        }
        File::open(&db_path)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&db_path))?;
        integrity_check(&db_path, &out, check)?;
        Ok(output::install(&db_path, &out, force)?)
    })
    .await?;
    drop(work);
    Ok(Restored {
        txid: ltx::Txid(0),
        files: 1 + plan.segments.len(),
        bytes: plan.size(),
        legacy: Some(plan.position()),
    })
}

/// The `-wal` file being assembled from the segments of one WAL index.
struct OpenWal {
    file: File,
    path: PathBuf,
    /// Bytes written so far: the offset the next segment must have.
    len: u64,
    first: LegacyObject,
    last: LegacyObject,
}

impl OpenWal {
    /// Closes the WAL and has SQLite checkpoint all of it into `db`, then checks that SQLite
    /// took every frame: one that it rejects (a bad checksum, other salts) would otherwise
    /// silently end the restore early.
    fn checkpoint(mut self, db: &FsPath, replica: &str) -> Result<()> {
        self.file.flush().map_err(io_error(&self.path))?;
        self.file.sync_all().map_err(io_error(&self.path))?;
        drop(self.file);
        let index = self.first.index;
        let failed = |reason: String| {
            Error::from(RestoreError::Legacy {
                object: format!(
                    "Litestream 0.3 WAL index {index:08x} ({} to {})",
                    self.first.name, self.last.name
                ),
                replica: replica.into(),
                location: self.first.shown.clone(),
                reason,
            })
        };
        let run = || -> rusqlite::Result<(i64, i64, i64, i64)> {
            let conn = Connection::open(db)?;
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            // TRUNCATE reports 0 frames once it has emptied the WAL, so a FULL checkpoint
            // first says how many frames SQLite took; TRUNCATE then empties the WAL.
            let (busy, log, done) = conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.close().map_err(|(_, e)| e)?;
            Ok((page_size, busy, log, done))
        };
        let (page_size, busy, log, done) =
            run().map_err(|e| failed(format!("SQLite could not apply it: {e}")))?;
        let frames = self.len.saturating_sub(32) / (24 + page_size as u64);
        if busy != 0 || log < 0 || log as u64 != frames || done != log {
            return Err(failed(format!(
                "SQLite applied {} of its {frames} WAL frames ({} bytes): the segments are corrupt \
                 or do not belong together",
                done.max(0),
                self.len
            )));
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if m.len() > 0 => Err(failed("SQLite left the WAL unapplied".into())),
            _ => Ok(()),
        }
    }
}

/// Downloads one object into `file` (at `dest`), fsynced, telling `progress` as bytes arrive.
async fn download(
    client: &ReplicaClient,
    object: &LegacyObject,
    file: File,
    dest: &FsPath,
    progress: &dyn Progress,
) -> Result<()> {
    let failed = |reason: String| object_error(client.name(), object, reason);
    let got = client
        .store()
        .get(&object.location)
        .await
        .map_err(|e| failed(format!("cannot download it: {e}")))?;
    let mut chunks = got.into_stream();
    let mut file = tokio::fs::File::from_std(file);
    let mut size = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| failed(format!("cannot download it: {e}")))?;
        file.write_all(&chunk).await.map_err(io_error(dest))?;
        size += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    file.sync_all().await.map_err(io_error(dest))?;
    progress.file_done(&object.describe(), size);
    Ok(())
}

/// Decompresses the LZ4 frame in the file at `src` onto `out`; returns the bytes written.
fn decompress(src: &FsPath, out: &mut File) -> std::result::Result<u64, String> {
    let file = File::open(src).map_err(|e| format!("cannot read the download: {e}"))?;
    let mut decoder = lz4_flex::frame::FrameDecoder::new(BufReader::new(file));
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    let n = io::copy(&mut decoder, &mut out)
        .map_err(|e| format!("not a valid LZ4 frame (corrupt or truncated): {e}"))?;
    out.flush()
        .map_err(|e| format!("cannot write what it holds: {e}"))?;
    Ok(n)
}

fn object_error(replica: &str, object: &LegacyObject, reason: impl Into<String>) -> Error {
    Error::from(RestoreError::Legacy {
        object: object.describe(),
        replica: replica.into(),
        location: object.shown.clone(),
        reason: reason.into(),
    })
}

fn io_error(path: &FsPath) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes an object for tests.
#[cfg(test)]
fn object(generation: &str, index: u32, offset: Option<u64>, secs: u64) -> LegacyObject {
    let name = match offset {
        None => format!("{GENERATIONS_DIR}/{generation}/snapshots/{index:08x}.snapshot.lz4"),
        Some(o) => segment_name(generation, index, o),
    };
    LegacyObject {
        generation: generation.into(),
        index,
        offset,
        size: 10,
        created_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        location: Path::from(name.as_str()),
        shown: name.clone(),
        name,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::replica::client::LtxKey;

    const G1: &str = "0000000000000001";
    const G2: &str = "00000000000000a2";

    /// Generation 1: snapshot 0 at 10 s, WAL 0 at 11-12 s, WAL 1 at 13 s. Generation 2: snapshot
    /// 5 at 20 s, WAL 5 at 21 s and 22 s, WAL 6 at 23 s.
    fn backups() -> LegacyBackups {
        LegacyBackups {
            snapshots: vec![object(G1, 0, None, 10), object(G2, 5, None, 20)],
            segments: vec![
                object(G1, 0, Some(0), 11),
                object(G1, 0, Some(0x1000), 12),
                object(G1, 1, Some(0), 13),
                object(G2, 5, Some(0), 21),
                object(G2, 5, Some(0x2000), 22),
                object(G2, 6, Some(0), 23),
            ],
        }
    }

    fn at(secs: u64) -> Target {
        Target::Timestamp(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn names(plan: &LegacyPlan) -> Vec<(String, u32, Option<u64>)> {
        std::iter::once(&plan.snapshot)
            .chain(&plan.segments)
            .map(|o| (o.generation.clone(), o.index, o.offset))
            .collect()
    }

    #[test]
    fn names_parse_as_litestream_writes_them() {
        assert_eq!(parse_snapshot_name("0000000a.snapshot.lz4"), Some(10));
        assert_eq!(parse_snapshot_name("0000000A.snapshot.lz4"), None);
        assert_eq!(parse_snapshot_name("a.snapshot.lz4"), None);
        assert_eq!(
            parse_segment_name("00000001_0000b128.wal.lz4"),
            Some((1, 0xb128))
        );
        assert_eq!(
            parse_segment_name("00000001_000000010000b128.wal.lz4"),
            Some((1, 0x1_0000_b128))
        );
        assert_eq!(parse_segment_name("00000001_b128.wal.lz4"), None);
        assert_eq!(parse_segment_name("00000001.wal"), None);
        assert!(is_generation(G2) && !is_generation("xyz"));
    }

    #[test]
    fn latest_takes_the_newest_snapshot_and_its_generations_segments() {
        let plan = backups().choose("r", Target::Latest).unwrap();
        assert_eq!(
            names(&plan),
            [
                (G2.into(), 5, None),
                (G2.into(), 5, Some(0)),
                (G2.into(), 5, Some(0x2000)),
                (G2.into(), 6, Some(0)),
            ]
        );
    }

    #[test]
    fn timestamps_take_objects_created_at_or_before() {
        let plan = backups().choose("r", at(12)).unwrap();
        assert_eq!(
            names(&plan),
            [
                (G1.into(), 0, None),
                (G1.into(), 0, Some(0)),
                (G1.into(), 0, Some(0x1000)),
            ]
        );
        let plan = backups().choose("r", at(21)).unwrap();
        assert_eq!(
            names(&plan),
            [(G2.into(), 5, None), (G2.into(), 5, Some(0))]
        );
        let err = backups().choose("r", at(9)).unwrap_err().to_string();
        assert!(err.contains("oldest Litestream 0.3 snapshot"), "{err}");
        let err = backups()
            .choose("r", Target::Txid(ltx::Txid(3)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no TXIDs"), "{err}");
    }

    #[test]
    fn missing_indexes_are_named() {
        let mut b = backups();
        b.segments
            .retain(|s| !(s.index == 5 && s.offset == Some(0)));
        let err = b.choose("r", Target::Latest).unwrap_err().to_string();
        assert!(
            err.contains(&format!("generations/{G2}/wal/00000005_00000000.wal.lz4")),
            "{err}"
        );
        let mut b = backups();
        b.segments.push(object(G2, 8, Some(0), 24));
        let err = b.choose("r", Target::Latest).unwrap_err().to_string();
        assert!(
            err.contains(&format!("generations/{G2}/wal/00000007_00000000.wal.lz4")),
            "{err}"
        );
    }

    #[test]
    fn the_newer_backup_wins() {
        let ltx = |level: u32, secs: u64| LtxFileInfo {
            key: LtxKey::new(level, ltx::Txid(1), ltx::Txid(1)),
            size: 1,
            created_at: UNIX_EPOCH + Duration::from_secs(secs),
        };
        let b = backups();
        assert!(prefer_legacy(&[], &b, Target::Latest));
        assert!(!prefer_legacy(&[], &b, Target::Txid(ltx::Txid(1))));
        assert!(!prefer_legacy(
            &[ltx(0, 1)],
            &LegacyBackups::default(),
            Target::Latest
        ));
        assert!(prefer_legacy(&[ltx(0, 22)], &b, Target::Latest));
        assert!(!prefer_legacy(&[ltx(0, 23)], &b, Target::Latest));
        // At a timestamp, snapshots decide: 0.3's best is at 20 s.
        assert!(prefer_legacy(&[ltx(9, 19), ltx(0, 30)], &b, at(25)));
        assert!(!prefer_legacy(&[ltx(9, 20)], &b, at(25)));
        assert!(prefer_legacy(&[ltx(9, 26)], &b, at(25)));
        assert!(!prefer_legacy(&[ltx(9, 1)], &b, at(5)));
    }
}
