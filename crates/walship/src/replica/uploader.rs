//! The upload loop of one replica: mirrors the database's local store (every level) into it.
//!
//! Each replica has its own loop and its own position (the newest TXID it restores), so a slow or
//! failing replica holds back neither the database nor the other replicas. What the replica
//! holds is listed once when the loop starts, so a restart resumes where the replica is, and
//! then tracked in memory: an idle database makes no requests at all.
//!
//! Each pass runs two lanes: L0 files, for the shortest lag, and beside them the compacted
//! files and snapshots, finest level first, so a snapshot that takes minutes to upload holds
//! back no capture. A replica that fell so far behind that the local store has compacted away
//! the L0 files it lacks gets them through the level file covering them, and its L0 lane
//! resumes as soon as that file is up. Files that local retention removed are deleted from the
//! replica only once a coarser file in the replica covers them, so no restore ever meets a hole.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ltx::Txid;
use tokio::sync::{watch, Notify};

use crate::compaction::SNAPSHOT_LEVEL;
use crate::monitor::DbStatus;
use crate::replica::client::ReplicaClient;
use crate::replica::layout::LtxKey;
use crate::store::{LocalFile, LocalStore};
use crate::{Error, Result};

/// How often a replica uploads and how it backs off after failures.
#[derive(Debug, Clone, Copy)]
pub struct UploaderOptions {
    /// Shortest time between upload passes (Litestream's `sync-interval`).
    pub sync_interval: Duration,
    /// First wait after a failure; doubled after each further failure.
    pub retry_min: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Delete from the replica what local retention removed (Litestream's `retention.enabled`).
    pub remote_retention: bool,
    /// How often the final pass at shutdown is tried again after a transient failure.
    pub shutdown_sync_interval: Duration,
}

impl Default for UploaderOptions {
    fn default() -> Self {
        UploaderOptions {
            sync_interval: Duration::from_secs(1),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            remote_retention: true,
            shutdown_sync_interval: Duration::from_millis(500),
        }
    }
}

/// What a replica has done, for status pages and metrics.
#[derive(Debug, Clone, Default)]
pub struct ReplicaStatus {
    /// The newest TXID the replica holds, once known.
    pub position: Option<Txid>,
    pub last_upload: Option<SystemTime>,
    pub last_error: Option<String>,
    /// When the current run of failures began.
    pub failing_since: Option<SystemTime>,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Listings made (one per level, once, when the loop starts).
    pub lists: u64,
    /// Files deleted after retention.
    pub files_deleted: u64,
}

/// The upload loop of one replica of one database.
pub struct Uploader {
    client: ReplicaClient,
    store: LocalStore,
    db: watch::Receiver<DbStatus>,
    /// Bumped by the compactor whenever it writes or removes files.
    compactions: watch::Receiver<u64>,
    status: watch::Sender<ReplicaStatus>,
    opts: UploaderOptions,
    /// What the replica holds, per level, once listed; shared by a pass's two lanes (L0 and
    /// the levels above), never locked across an await.
    remote: Mutex<Option<Remote>>,
}

/// The TXID ranges a replica holds, per level.
type Remote = Vec<BTreeSet<(Txid, Txid)>>;

impl Uploader {
    /// A loop mirroring `store` into `client`, woken by `db`'s captures and by `compactions`.
    pub fn new(
        client: ReplicaClient,
        store: LocalStore,
        db: watch::Receiver<DbStatus>,
        compactions: watch::Receiver<u64>,
        opts: UploaderOptions,
    ) -> (Uploader, watch::Receiver<ReplicaStatus>) {
        let (status, rx) = watch::channel(ReplicaStatus::default());
        let uploader = Uploader {
            client,
            store,
            db,
            compactions,
            status,
            opts,
            remote: Mutex::new(None),
        };
        (uploader, rx)
    }

    /// Uploads until `stop` turns true, then makes a last pass, tried again every
    /// `shutdown_sync_interval` after transient failures, all bounded by `final_timeout`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, final_timeout: Duration) {
        let mut backoff = self.opts.retry_min;
        loop {
            let wait = match self.pass().await {
                Ok(()) => {
                    backoff = self.opts.retry_min;
                    self.opts.sync_interval
                }
                Err(e) => {
                    self.report_error(&e);
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.opts.retry_max);
                    wait
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(wait) => {}
            }
            // Sleep on until the database captures something new (or it is time to stop).
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = self.caught_up_then_changed() => {}
            }
        }
        // One S3 hiccup at shutdown must not leave the last transactions behind, nor a
        // refused credential hold the stop for the whole timeout.
        let final_passes = async {
            loop {
                match self.pass().await {
                    Ok(()) => return,
                    Err(e) => {
                        self.report_error(&e);
                        if !e.is_transient() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(self.opts.shutdown_sync_interval).await;
            }
        };
        if tokio::time::timeout(final_timeout, final_passes)
            .await
            .is_err()
        {
            tracing::warn!(
                replica = self.client.name(),
                "final upload did not finish within {final_timeout:?}"
            );
        }
    }

    /// Returns at once if there is something to upload, else when the database captures more
    /// or the compactor changes the store.
    async fn caught_up_then_changed(&mut self) {
        let position = self.status.borrow().position;
        let behind = |db: &DbStatus| db.txid.is_some() && db.txid > position;
        let compacted = self.compactions.has_changed().unwrap_or(false);
        let is_behind = behind(&self.db.borrow_and_update());
        let failing = self.status.borrow().last_error.is_some();
        if compacted || is_behind || failing {
            self.compactions.mark_unchanged();
            return;
        }
        let (db, compactions) = (&mut self.db, &mut self.compactions);
        let closed = tokio::select! {
            r = db.wait_for(behind) => r.is_err(),
            r = compactions.changed() => r.is_err(),
        };
        if closed {
            // The monitor or compactor is gone; only the stop signal can end the loop now.
            std::future::pending::<()>().await;
        }
    }

    fn remote(&self) -> MutexGuard<'_, Option<Remote>> {
        self.remote
            .lock()
            .expect("no panic while holding the replica's contents")
    }

    /// The newest TXID the replica can restore: the end of the unbroken run of TXIDs from 1
    /// through its files at any level. A level file uploaded beyond a hole (before the snapshot
    /// that fills it) claims nothing, so no status or exit code reports TXIDs a restore would
    /// not reach.
    fn position(&self) -> Txid {
        let remote = self.remote();
        let mut ranges: Vec<(Txid, Txid)> = remote
            .as_ref()
            .expect("listed before use")
            .iter()
            .flatten()
            .copied()
            .collect();
        ranges.sort_unstable();
        let mut reach = Txid(0);
        for (min, max) in ranges {
            if min.0 > reach.0 + 1 {
                break;
            }
            reach = reach.max(max);
        }
        reach
    }

    /// The newest TXID the replica holds in any file, holes or not.
    fn newest_held(&self) -> Txid {
        let remote = self.remote();
        remote
            .as_ref()
            .expect("listed before use")
            .iter()
            .filter_map(|level| level.last().map(|(_, max)| *max))
            .max()
            .unwrap_or(Txid(0))
    }

    /// Lists the replica once: afterwards its contents are known from what this loop did.
    async fn list_remote(&mut self) -> Result<()> {
        if self.remote().is_some() {
            return Ok(());
        }
        let mut levels = Vec::with_capacity(SNAPSHOT_LEVEL as usize + 1);
        for level in 0..=SNAPSHOT_LEVEL {
            let files = self.client.list(level).await?;
            self.status.send_modify(|s| s.lists += 1);
            levels.push(
                files
                    .into_iter()
                    .map(|f| (f.key.min_txid, f.key.max_txid))
                    .collect(),
            );
        }
        *self.remote() = Some(levels);
        let position = self.position();
        self.status.send_modify(|s| s.position = Some(position));
        Ok(())
    }

    /// Uploads what the replica lacks, level by level, then deletes what retention removed.
    async fn pass(&mut self) -> Result<()> {
        self.list_remote().await?;
        let local = (0..=SNAPSHOT_LEVEL)
            .map(|level| self.store.list(level))
            .collect::<Result<Vec<_>>>()?;
        let held = self.newest_held();
        let newest_local = local.iter().flatten().map(|f| f.max_txid).max();
        let straddles = local[0]
            .iter()
            .any(|f| f.min_txid <= held && f.max_txid > held);
        if let Some(newest) = newest_local.filter(|n| *n < held || straddles) {
            if !straddles && self.db.borrow().captures == 0 {
                // This run's first capture continues after the TXIDs of the replicas that
                // answered at start; until it lands, the store's files are older than those.
                tracing::debug!(replica = self.client.name(), %held, "waiting for the first capture");
                return Ok(());
            }
            // Uploading would skip local files as "already there" and mix two histories in one
            // replica. Listing again each pass lets a fixed replica resume. It holds none of
            // this database's history, so it reports no position.
            *self.remote() = None;
            self.status.send_modify(|s| s.position = None);
            return Err(Error::ReplicaAhead {
                replica: self.client.name().to_string(),
                remote: held,
                local: newest,
            });
        }
        self.upload_levels_beside_l0(&local).await?;
        if self.opts.remote_retention {
            self.delete_removed(&local).await?;
        }
        Ok(())
    }

    /// Uploads the level files of `local`, finest first, while an L0 lane uploads each new
    /// capture as it lands. When the store compacted away L0 files the replica lacks, the L0
    /// lane waits for the level file that bridges the gap (usually L1, uploaded first) or, if
    /// that file is newer than the pass, uploads it itself; it never waits for the whole levels
    /// lane with its big snapshot. After an error in one lane the other
    /// finishes the upload it is in and stops: no upload is cancelled (a dropped multipart
    /// upload would linger in S3), and the pass fails soon, so the error shows.
    async fn upload_levels_beside_l0(&self, local: &[Vec<LocalFile>]) -> Result<()> {
        let levels_done = AtomicBool::new(false);
        let l0_failed = AtomicBool::new(false);
        let wake = Notify::new();
        let levels = async {
            let mut result = Ok(());
            'levels: for level in 1..=SNAPSHOT_LEVEL {
                for file in &local[level as usize] {
                    if l0_failed.load(Ordering::Acquire) {
                        break 'levels;
                    }
                    result = self.upload_level(level, std::slice::from_ref(file)).await;
                    if result.is_err() {
                        break 'levels;
                    }
                }
            }
            levels_done.store(true, Ordering::Release);
            wake.notify_one();
            result
        };
        let l0 = async {
            let result = self.follow_l0(local, &levels_done, &wake).await;
            if result.is_err() {
                l0_failed.store(true, Ordering::Release);
            }
            result
        };
        let (levels, l0): (Result<()>, Result<()>) = tokio::join!(levels, l0);
        l0.and(levels)
    }

    /// The L0 lane: uploads new L0 files as captures land, until the levels lane is done.
    /// `local` is what the levels lane uploads in this pass.
    async fn follow_l0(
        &self,
        local: &[Vec<LocalFile>],
        levels_done: &AtomicBool,
        wake: &Notify,
    ) -> Result<()> {
        let mut db = self.db.clone();
        let mut uploads = self.status.subscribe();
        let mut compactions = self.compactions.clone();
        loop {
            let files = self.store.list(0)?;
            self.upload_level(0, &files).await?;
            if levels_done.load(Ordering::Acquire) {
                return Ok(());
            }
            if let Some((level, file)) = self.bridge(&files, local)? {
                // A gap the levels lane will not fill in this pass: L0 retention removed the
                // L0 files after the position once a level file written since the pass began
                // covered them (the replica fell behind by more than l0-retention).
                let before = self.position();
                self.upload_file(level, &file).await?;
                if self.position() > before {
                    continue;
                }
            }
            let listed = files.last().map(|f| f.max_txid);
            let position = uploads.borrow_and_update().position;
            let next_capture = async {
                // A closed channel (the monitor is gone) leaves only the levels to wait for.
                if db.wait_for(|d| d.txid > listed).await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(self.opts.sync_interval).await;
            };
            tokio::select! {
                _ = next_capture => {}
                // A level file moved the position: it may bridge a gap before the L0 files.
                _ = uploads.wait_for(|s| s.position != position) => {}
                // A new level file may bridge one (a closed channel: the compactor is gone).
                _ = async {
                    if compactions.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// The level file (finest first) that continues the position when the next L0 file
    /// does not, if it is not among the files the levels lane uploads in this pass.
    fn bridge(
        &self,
        l0: &[LocalFile],
        local: &[Vec<LocalFile>],
    ) -> Result<Option<(u32, LocalFile)>> {
        let position = self.position();
        let next = l0.iter().find(|f| f.max_txid > position);
        if next.is_none_or(|f| f.min_txid.0 <= position.0 + 1) {
            return Ok(None);
        }
        for level in 1..SNAPSHOT_LEVEL {
            let bridge = self.store.list(level)?.into_iter().find(|f| {
                f.min_txid.0 <= position.0 + 1
                    && f.max_txid > position
                    && !local[level as usize]
                        .iter()
                        .any(|l| (l.min_txid, l.max_txid) == (f.min_txid, f.max_txid))
            });
            if let Some(file) = bridge {
                return Ok(Some((level, file)));
            }
        }
        Ok(None)
    }

    async fn upload_level(&self, level: u32, files: &[LocalFile]) -> Result<()> {
        let uploaded = self.remote().as_ref().expect("listed")[level as usize]
            .last()
            .map_or(Txid(0), |(_, max)| *max);
        for file in files.iter().filter(|f| f.max_txid > uploaded) {
            if level == 0 {
                let position = self.position();
                if file.max_txid <= position {
                    continue;
                }
                if file.min_txid.0 > position.0 + 1 {
                    // Retention removed the L0 files between only once a compacted file covered
                    // them: the levels lane uploads it, or the L0 lane if it is newer than the
                    // pass (see `bridge`).
                    tracing::debug!(
                        replica = self.client.name(),
                        %position,
                        next = %file.min_txid,
                        "waiting for a compacted file to cover the TXIDs before the next L0 file"
                    );
                    return Ok(());
                }
            }
            self.upload_file(level, file).await?;
        }
        Ok(())
    }

    /// Uploads one file and records it; a file retention removed meanwhile is skipped, as a
    /// coarser file covers it.
    async fn upload_file(&self, level: u32, file: &LocalFile) -> Result<()> {
        self.verify(file).await?;
        let info = match self.client.put_file(level, &file.path).await {
            Ok(info) => info,
            Err(_) if !file.path.exists() => return Ok(()),
            Err(e) => return Err(e),
        };
        self.remote().as_mut().expect("listed")[level as usize]
            .insert((file.min_txid, file.max_txid));
        let position = self.position();
        self.status.send_modify(|s| {
            s.position = Some(position);
            s.last_upload = Some(SystemTime::now());
            s.last_error = None;
            s.failing_since = None;
            s.files_uploaded += 1;
            s.bytes_uploaded += info.size;
        });
        tracing::debug!(replica = self.client.name(), level, txid = %file.max_txid, "uploaded");
        Ok(())
    }

    /// Checks a local file's checksums before it leaves: a file the disk corrupted must never
    /// reach a replica, where it would break every restore past it.
    async fn verify(&self, file: &LocalFile) -> Result<()> {
        let path = file.path.clone();
        let store = self.store.root().to_path_buf();
        let checked = tokio::task::spawn_blocking(move || {
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Retention removed it meanwhile; the upload skips it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(source) => return Err(Error::Io { path, source }),
            };
            match ltx::verify(std::io::BufReader::with_capacity(64 * 1024, f)) {
                Ok(_) => Ok(()),
                Err(source) => Err(Error::CorruptLocalFile {
                    path,
                    store,
                    source,
                }),
            }
        })
        .await;
        checked.expect("verifying does not panic")
    }

    /// Deletes replica files that the local store no longer holds, older than its newest file
    /// at their level, once a coarser file in the replica covers them.
    async fn delete_removed(&mut self, local: &[Vec<LocalFile>]) -> Result<()> {
        let remote = self
            .remote
            .get_mut()
            .expect("no panic while holding the replica's contents");
        let remote = remote.as_ref().expect("listed");
        let mut doomed = Vec::new();
        for (level, files) in local.iter().enumerate() {
            let Some(newest) = files.last() else { continue };
            let held: BTreeSet<(Txid, Txid)> =
                files.iter().map(|f| (f.min_txid, f.max_txid)).collect();
            for &(min, max) in &remote[level] {
                if max < newest.max_txid
                    && !held.contains(&(min, max))
                    && covered(remote, level, min, max)
                {
                    doomed.push(LtxKey::new(level as u32, min, max));
                }
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        self.client.delete(&doomed).await?;
        self.status
            .send_modify(|s| s.files_deleted += doomed.len() as u64);
        let remote = self
            .remote
            .get_mut()
            .expect("no panic while holding the replica's contents");
        let remote = remote.as_mut().expect("listed");
        for key in &doomed {
            remote[key.level as usize].remove(&(key.min_txid, key.max_txid));
        }
        tracing::debug!(
            replica = self.client.name(),
            files = doomed.len(),
            "deleted after retention"
        );
        Ok(())
    }

    fn report_error(&mut self, e: &Error) {
        tracing::warn!(replica = self.client.name(), "{e}");
        let msg = e.to_string();
        self.status.send_modify(|s| {
            s.last_error = Some(msg);
            s.failing_since.get_or_insert_with(SystemTime::now);
        });
    }
}

/// Whether a file at a level above `level` spans `min..=max`, so the file is not needed.
fn covered(remote: &[BTreeSet<(Txid, Txid)>], level: usize, min: Txid, max: Txid) -> bool {
    remote[level + 1..]
        .iter()
        .flatten()
        .any(|&(m, x)| m <= min && x >= max)
        || (level == SNAPSHOT_LEVEL as usize && remote[level].iter().any(|&(_, x)| x > max))
}
