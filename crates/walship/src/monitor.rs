//! The loop that drives one database: captures on a timer and on WAL growth, checkpoints, and a
//! final capture when asked to stop.
//!
//! It runs on its own thread because SQLite calls block. Between ticks it only reads the WAL
//! index header (48 bytes of `-shm`), so an idle database costs no writes and no captures.

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

/// What the monitor has done, for replicas to follow and for status pages.
#[derive(Debug, Clone, Default)]
pub struct DbStatus {
    /// The newest TXID durable in the local store.
    pub txid: Option<Txid>,
    pub last_sync: Option<SystemTime>,
    pub last_error: Option<String>,
    pub captures: u64,
    pub full_captures: u64,
    pub checkpoints: u64,
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
        let txid = db.store().last(0).ok().flatten().map(|f| f.max_txid);
        let (status, rx) = watch::channel(DbStatus {
            txid,
            ..DbStatus::default()
        });
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

    /// Runs until `stop` is set, then makes a final capture. Errors are logged, reported in the
    /// status, and retried on the next tick: a failing disk must not end replication for good.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.tick() {
                self.report_error(&e);
            }
            std::thread::sleep(self.opts.poll_interval);
        }
        if let Err(e) = self.db.sync().map(|s| self.record(s)) {
            self.report_error(&e);
        }
    }

    fn tick(&mut self) -> Result<()> {
        if self.db.wants_checkpoint()? {
            return self.checkpoint();
        }
        let now = Instant::now();
        if now < self.next_sync {
            return Ok(());
        }
        self.next_sync = now + self.opts.monitor_interval;
        if self.db.needs_sync()? {
            let synced = self.db.sync()?;
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
        let Some(done) = self.db.checkpoint()? else {
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
        self.status.send_modify(|st| {
            st.txid = Some(s.header.max_txid);
            st.last_sync = Some(SystemTime::now());
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
