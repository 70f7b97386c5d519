//! The loop that drives one database: captures on a timer and on WAL growth, checkpoints, and a
//! final capture when asked to stop.
//!
//! It runs on its own thread because SQLite calls block. Between ticks it only reads the WAL
//! index header (48 bytes of `-shm`), so an idle database costs no writes and no captures.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ltx::Txid;
use tokio::sync::watch;

use crate::db::{CaptureKind, Db, Synced};
use crate::Result;

/// How often the monitor looks, captures and checkpoints.
#[derive(Debug, Clone, Copy)]
pub struct MonitorOptions {
    /// Time between captures of whatever was committed (Litestream's `monitor-interval`).
    pub monitor_interval: Duration,
    /// Longest time between checkpoints while there are captures to checkpoint.
    pub checkpoint_interval: Duration,
    /// How often the WAL index is read to notice growth between captures.
    pub poll_interval: Duration,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            monitor_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(60),
            poll_interval: Duration::from_millis(10),
        }
    }
}

/// How many recent captures a [`DbStatus`] remembers, to tell how long a replica has lagged.
const RECENT_CAPTURES: usize = 4096;

/// What the monitor has done, for replicas to follow and for status pages.
#[derive(Debug, Clone, Default)]
pub struct DbStatus {
    /// The newest TXID durable in the local store.
    pub txid: Option<Txid>,
    pub last_sync: Option<SystemTime>,
    pub last_error: Option<String>,
    pub captures: u64,
    pub full_captures: u64,
    pub sync_errors: u64,
    pub sync_time: Duration,
    pub checkpoints: u64,
    pub checkpoint_errors: u64,
    pub checkpoint_time: Duration,
    /// The database's size as of the newest capture (commit size times page size).
    pub db_size: u64,
    /// Where the newest capture ended in the WAL.
    pub wal_size: u64,
    /// WAL bytes captured since walship started.
    pub total_wal_bytes: u64,
    /// The newest captures' TXIDs and times, oldest first.
    recent: VecDeque<(Txid, SystemTime)>,
}

impl DbStatus {
    /// Notes that `txid` became durable at `at`.
    pub fn record_capture(&mut self, txid: Txid, at: SystemTime) {
        if self.recent.len() == RECENT_CAPTURES {
            self.recent.pop_front();
        }
        self.recent.push_back((txid, at));
        self.txid = Some(txid);
    }

    /// How long the oldest capture newer than `position` has waited, as of `now`: zero when
    /// nothing is newer, a lower bound when that capture is older than the ones remembered, and
    /// `None` when no capture newer than `position` was seen by this process.
    pub fn waiting_since(&self, position: Txid, now: SystemTime) -> Option<Duration> {
        if self.txid.is_none_or(|t| t <= position) {
            return Some(Duration::ZERO);
        }
        let (_, at) = self.recent.iter().find(|(t, _)| *t > position)?;
        Some(now.duration_since(*at).unwrap_or_default())
    }
}

/// Drives one [`Db`].
pub struct Monitor {
    db: Db,
    opts: MonitorOptions,
    status: watch::Sender<DbStatus>,
    next_sync: Instant,
    last_checkpoint: Instant,
    captured_since_checkpoint: bool,
}

impl Monitor {
    /// A monitor for `db` and the receiving end of its status.
    pub fn new(db: Db, opts: MonitorOptions) -> (Monitor, watch::Receiver<DbStatus>) {
        let mut initial = DbStatus::default();
        // Files left by an earlier run count from when they were written (their mtime is their
        // LTX timestamp), so a replica that was behind before a restart shows its true lag.
        if let Some(last) = db.store().last(0).ok().flatten() {
            let written = std::fs::metadata(&last.path).and_then(|m| m.modified());
            initial.record_capture(last.max_txid, written.unwrap_or_else(|_| SystemTime::now()));
        }
        let (status, rx) = watch::channel(initial);
        let now = Instant::now();
        let monitor = Monitor {
            db,
            opts,
            status,
            next_sync: now,
            last_checkpoint: now,
            captured_since_checkpoint: false,
        };
        (monitor, rx)
    }

    /// Runs until `stop` is set, then makes a final capture, whose failure it returns (the last
    /// transactions are then not replicated). Errors before are logged, reported in the status,
    /// and retried on the next tick: a failing disk must not end replication for good.
    pub fn run(mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.tick() {
                self.report_error(&e);
            }
            std::thread::sleep(self.opts.poll_interval);
        }
        let last = self.db.sync().map(|s| self.record(s));
        if let Err(e) = &last {
            self.report_error(e);
        }
        last
    }

    fn tick(&mut self) -> Result<()> {
        let now = Instant::now();
        let due = now >= self.next_sync;
        if !due && !self.db.wants_checkpoint()? {
            return Ok(());
        }
        // Before any checkpoint or capture: working on the old file after a new one took its
        // path would leave the new one's commits unreplicated.
        if self.db.replaced()? {
            tracing::warn!(db = %self.db.path().display(), "the database file was replaced (restored or copied over?): following the new file");
            self.db = self.db.reopen()?;
        }
        if self.db.wants_checkpoint()? {
            return self.checkpoint();
        }
        if !due {
            return Ok(());
        }
        self.next_sync = now + self.opts.monitor_interval;
        if self.db.needs_sync()? {
            let started = Instant::now();
            let synced = self.db.sync().inspect_err(|_| {
                self.status.send_modify(|s| s.sync_errors += 1);
            })?;
            self.status
                .send_modify(|s| s.sync_time += started.elapsed());
            self.record(synced);
        }
        if self.captured_since_checkpoint
            && now.duration_since(self.last_checkpoint) >= self.opts.checkpoint_interval
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        let started = Instant::now();
        let result = self.db.checkpoint();
        self.status.send_modify(|s| {
            s.checkpoint_time += started.elapsed();
            s.checkpoint_errors += u64::from(result.is_err());
        });
        let Some(done) = result? else {
            tracing::debug!(db = %self.db.path().display(), "checkpoint skipped: the application holds the write lock");
            return Ok(());
        };
        self.last_checkpoint = Instant::now();
        self.captured_since_checkpoint = false;
        tracing::debug!(db = %self.db.path().display(), complete = done.complete, "checkpointed");
        self.record(done.synced);
        self.status.send_modify(|s| s.checkpoints += 1);
        Ok(())
    }

    fn record(&mut self, synced: Option<Synced>) {
        let Some(s) = synced else { return };
        self.captured_since_checkpoint = true;
        let full = matches!(s.kind, CaptureKind::Full(_));
        if let CaptureKind::Full(reason) = s.kind {
            tracing::info!(db = %self.db.path().display(), txid = %s.header.max_txid, pages = s.pages, "captured the whole database: {reason}");
        } else {
            tracing::debug!(db = %self.db.path().display(), txid = %s.header.max_txid, pages = s.pages, "captured");
        }
        let now = SystemTime::now();
        self.status.send_modify(|st| {
            st.record_capture(s.header.max_txid, now);
            st.last_sync = Some(now);
            st.db_size = u64::from(s.header.commit) * u64::from(s.header.page_size);
            st.wal_size = (s.header.wal_offset + s.header.wal_size).max(0) as u64;
            st.total_wal_bytes += s.header.wal_size.max(0) as u64;
            st.last_error = None;
            st.captures += 1;
            st.full_captures += u64::from(full);
        });
    }

    fn report_error(&mut self, e: &crate::Error) {
        tracing::error!(db = %self.db.path().display(), "{e}");
        let msg = e.to_string();
        self.status.send_modify(|s| s.last_error = Some(msg));
    }
}
