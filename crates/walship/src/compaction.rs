//! Levels, snapshots and retention of the local store.
//!
//! Captures land at level 0. At wall-clock multiples of each level's interval (L1 30 s, L2 5 min,
//! L3 1 h by default) the files of the level below that the level does not yet cover are merged
//! into one; at multiples of the snapshot interval the whole chain is merged into a snapshot at
//! level 9 (TXIDs from 1). Retention then drops what newer files make redundant: L0 files covered
//! by L1 once they are older than `l0-retention`, snapshots that no point inside the snapshot
//! retention needs, and level files older than the oldest kept snapshot.
//!
//! All of this works on the local store only, from files already durable there: no database
//! access, no lock, no download. Replicas mirror the store (see the uploader), so every replica
//! gets the same levels without compacting anything itself, and a point in time that some kept
//! file chain reaches stays restorable: a file is only removed once a coarser file covers it.

use std::fs::File;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ltx::{compact, CompactOptions, PageEncoding, Txid};
use tokio::sync::watch;

use crate::config::{Config, DbConfig};

use crate::store::{LocalFile, LocalStore};
use crate::Result;

/// The level that holds snapshots, as in Litestream.
pub const SNAPSHOT_LEVEL: u32 = 9;

/// When to compact, snapshot and forget.
#[derive(Debug, Clone)]
pub struct CompactionOptions {
    /// The intervals of levels 1, 2, ... (at most 8 levels).
    pub levels: Vec<Duration>,
    /// Time between snapshots.
    pub snapshot_interval: Duration,
    /// How long snapshots are kept; the newest is always kept.
    pub snapshot_retention: Duration,
    /// How long L0 files are kept after L1 covers them; zero keeps them until a snapshot does.
    pub l0_retention: Duration,
    /// How often L0 retention runs.
    pub l0_retention_check_interval: Duration,
    /// The page encoding of the files written.
    pub encoding: PageEncoding,
}

impl CompactionOptions {
    /// The options `config` sets for the database `db`.
    pub fn from_config(config: &Config, db: &DbConfig) -> Self {
        CompactionOptions {
            levels: config.levels.clone(),
            snapshot_interval: db.snapshot.interval,
            snapshot_retention: db.snapshot.retention,
            l0_retention: config.l0_retention,
            l0_retention_check_interval: config.l0_retention_check_interval,
            encoding: PageEncoding::Block,
        }
    }
}

/// How often the compactor looks at the clock.
const TICK: Duration = Duration::from_millis(250);

/// What one [`Compactor::tick`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Files written, by level.
    pub written: Vec<(u32, Txid, Txid)>,
    /// Files removed by retention.
    pub removed: usize,
}

/// Compacts one database's local store.
pub struct Compactor {
    store: LocalStore,
    opts: CompactionOptions,
    /// For each level 1..=9, the interval boundary of its last run.
    done: [u64; 10],
    next_l0_check: SystemTime,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The start of the interval that holds `t`: Litestream's `t.Truncate(interval)`.
fn boundary(t: SystemTime, interval: Duration) -> u64 {
    let step = interval.as_millis().max(1) as u64;
    millis(t) / step * step
}

fn modified(file: &LocalFile) -> SystemTime {
    std::fs::metadata(&file.path)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH)
}

impl Compactor {
    /// A compactor for `store`. Levels that already hold a file written in the current interval
    /// wait for the next boundary, so a restart does not compact twice.
    pub fn new(store: LocalStore, opts: CompactionOptions) -> Result<Compactor> {
        // An empty level waits for its first boundary, as if it had just run: a new database's
        // first capture is a whole database already, and needs no snapshot straight away.
        let now = SystemTime::now();
        let mut done = [0; 10];
        for level in 1..=SNAPSHOT_LEVEL {
            if let Some(interval) = interval_of(&opts, level) {
                let since = store.last(level)?.map_or(now, |last| modified(&last));
                done[level as usize] = boundary(since, interval);
            }
        }
        Ok(Compactor {
            store,
            opts,
            done,
            next_l0_check: UNIX_EPOCH,
        })
    }

    /// Ticks until `stop` is set, bumping `changed` whenever files were written or removed so
    /// that the replicas mirror them. Errors are logged and retried at the next boundary.
    pub fn run(mut self, stop: &AtomicBool, changed: watch::Sender<u64>) {
        while !stop.load(Ordering::Relaxed) {
            match self.tick(SystemTime::now()) {
                Ok(r) if r.written.is_empty() && r.removed == 0 => {}
                Ok(_) => {
                    changed.send_modify(|n| *n += 1);
                }
                Err(e) => tracing::error!(store = %self.store.root().display(), "compaction: {e}"),
            }
            std::thread::sleep(TICK);
        }
    }

    /// Runs whatever is due at `now`: compactions from the lowest level up, then the snapshot
    /// and snapshot retention, then L0 retention.
    pub fn tick(&mut self, now: SystemTime) -> Result<TickReport> {
        let mut report = TickReport::default();
        for level in 1..=self.opts.levels.len() as u32 {
            let due = boundary(now, self.opts.levels[level as usize - 1]);
            if due > self.done[level as usize] {
                if let Some(f) = self.compact_level(level)? {
                    report.written.push((level, f.min_txid, f.max_txid));
                }
                self.done[level as usize] = due;
            }
        }
        let due = boundary(now, self.opts.snapshot_interval);
        if due > self.done[SNAPSHOT_LEVEL as usize] {
            if let Some(f) = self.snapshot()? {
                report
                    .written
                    .push((SNAPSHOT_LEVEL, f.min_txid, f.max_txid));
            }
            self.done[SNAPSHOT_LEVEL as usize] = due;
            report.removed += self.enforce_snapshot_retention(now)?;
        }
        let l1_ran = report.written.iter().any(|w| w.0 == 1);
        if l1_ran || now >= self.next_l0_check {
            self.next_l0_check = now + self.opts.l0_retention_check_interval;
            report.removed += self.enforce_l0_retention(now)?;
        }
        Ok(report)
    }

    /// Merges the files of `level - 1` beyond what `level` covers into one file at `level`.
    pub fn compact_level(&mut self, level: u32) -> Result<Option<LocalFile>> {
        let covered = self.store.last(level)?.map_or(Txid(0), |f| f.max_txid);
        let sources: Vec<LocalFile> = self
            .store
            .list(level - 1)?
            .into_iter()
            .filter(|f| f.min_txid > covered)
            .collect();
        let sources = contiguous_run(sources);
        if sources.is_empty() {
            return Ok(None);
        }
        if covered.0 != 0 && sources[0].min_txid.0 != covered.0 + 1 {
            tracing::warn!(
                store = %self.store.root().display(),
                level,
                "level {level} ends at {covered} but level {} continues at {}: \
                 writing a level file that does not continue it",
                level - 1,
                sources[0].min_txid
            );
        }
        self.merge(level, &sources, false).map(Some)
    }

    /// Writes a snapshot of the newest state the store reaches, if it is newer than the newest
    /// snapshot.
    pub fn snapshot(&mut self) -> Result<Option<LocalFile>> {
        let chain = self.chain()?;
        match chain.first() {
            None => return Ok(None),
            Some(first) if first.level == SNAPSHOT_LEVEL && chain.len() == 1 => return Ok(None),
            Some(_) => {}
        }
        self.merge(SNAPSHOT_LEVEL, &chain, true).map(Some)
    }

    /// The files whose merge is the newest state: the newest snapshot (or, without one, the
    /// oldest file of any level) and then, greedily, the file reaching furthest that continues
    /// the chain, from any level.
    fn chain(&self) -> Result<Vec<LocalFile>> {
        let mut files = Vec::new();
        for level in 0..SNAPSHOT_LEVEL {
            files.extend(self.store.list(level)?);
        }
        let mut chain = Vec::new();
        let mut current = match self.store.last(SNAPSHOT_LEVEL)? {
            Some(snap) => {
                let max = snap.max_txid;
                chain.push(snap);
                max
            }
            None => match files.iter().map(|f| f.min_txid).min() {
                Some(min) => Txid(min.0 - 1),
                None => return Ok(chain),
            },
        };
        loop {
            let next = files
                .iter()
                .filter(|f| f.min_txid.0 <= current.0 + 1 && f.max_txid > current)
                .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.min_txid), f.level));
            let Some(next) = next else { break };
            current = next.max_txid;
            chain.push(next.clone());
        }
        Ok(chain)
    }

    fn merge(&self, level: u32, inputs: &[LocalFile], snapshot: bool) -> Result<LocalFile> {
        merge_into(&self.store, level, inputs, snapshot, self.opts.encoding)
    }

    /// Removes the snapshots that no point inside the retention window needs, then level files
    /// that end before the oldest kept snapshot once it is older than the window (keeping the
    /// newest file of each level).
    ///
    /// A snapshot goes only once the snapshot after it is itself older than the window's start:
    /// Litestream drops every snapshot older than the retention, which with its defaults (24 h
    /// both) leaves moments after each snapshot where nothing before it restores.
    fn enforce_snapshot_retention(&self, now: SystemTime) -> Result<usize> {
        let snapshots = self.store.list(SNAPSHOT_LEVEL)?;
        let cutoff = now
            .checked_sub(self.opts.snapshot_retention)
            .unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        let mut oldest_kept = None;
        for pair in snapshots.windows(2) {
            if modified(&pair[1]) <= cutoff {
                self.store.remove(&pair[0])?;
                removed += 1;
            } else {
                oldest_kept.get_or_insert(&pair[0]);
            }
        }
        // Level files below the oldest kept snapshot serve only times before it: they may go
        // once that snapshot is itself older than the window's start. Until then (the first
        // snapshot of a store, or one taken late after crashes), the window's start needs them.
        let Some(floor) = oldest_kept
            .or(snapshots.last())
            .filter(|s| modified(s) <= cutoff)
            .map(|s| s.max_txid)
        else {
            return Ok(removed);
        };
        for level in 0..SNAPSHOT_LEVEL {
            let mut files = self.store.list(level)?;
            files.pop();
            for f in files.iter().filter(|f| f.max_txid < floor) {
                self.store.remove(f)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes L0 files that L1 covers and that are older than `l0-retention`, oldest first,
    /// stopping at the first that is not; the newest L0 file stays.
    fn enforce_l0_retention(&self, now: SystemTime) -> Result<usize> {
        if self.opts.l0_retention.is_zero() || self.opts.levels.is_empty() {
            return Ok(0);
        }
        let Some(l1) = self.store.last(1)? else {
            return Ok(0);
        };
        let cutoff = now
            .checked_sub(self.opts.l0_retention)
            .unwrap_or(UNIX_EPOCH);
        let mut files = self.store.list(0)?;
        files.pop();
        let mut removed = 0;
        for f in files {
            if f.max_txid > l1.max_txid || modified(&f) >= cutoff {
                break;
            }
            self.store.remove(&f)?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn interval_of(opts: &CompactionOptions, level: u32) -> Option<Duration> {
    if level == SNAPSHOT_LEVEL {
        Some(opts.snapshot_interval)
    } else {
        opts.levels.get(level as usize - 1).copied()
    }
}

/// The leading files of `files` (ordered by TXID) whose TXIDs follow on without a gap.
fn contiguous_run(files: Vec<LocalFile>) -> Vec<LocalFile> {
    let mut run: Vec<LocalFile> = Vec::with_capacity(files.len());
    for f in files {
        if let Some(prev) = run.last() {
            if f.min_txid.0 != prev.max_txid.0 + 1 {
                break;
            }
        }
        run.push(f);
    }
    run
}

/// Writes the snapshot that should follow the newest L0 file if the last run was killed
/// before writing it. walship writes one right after a full capture at a new page size, and
/// after the first capture of an empty store continuing a replica's TXIDs (see
/// `Db::snapshot_needed`); the kill can only have hit after the newest file, so only it is
/// looked at.
pub(crate) fn write_missed_snapshot(
    store: &LocalStore,
    encoding: PageEncoding,
) -> Result<Option<LocalFile>> {
    let l0 = store.list(0)?;
    let snapshots = store.list(SNAPSHOT_LEVEL)?;
    let missed = match &l0[..] {
        // The first capture of an empty store (a full one) and nothing else.
        [only] => {
            only.min_txid.0 > 1
                && snapshots.is_empty()
                && (1..SNAPSHOT_LEVEL).all(|level| store.list(level).is_ok_and(|f| f.is_empty()))
        }
        [.., before, newest] => {
            store.header(newest)?.page_size != store.header(before)?.page_size
                && !snapshots.iter().any(|s| s.max_txid == newest.max_txid)
        }
        [] => false,
    };
    let Some(newest) = l0.last().filter(|_| missed) else {
        return Ok(None);
    };
    merge_into(
        store,
        SNAPSHOT_LEVEL,
        std::slice::from_ref(newest),
        true,
        encoding,
    )
    .map(Some)
}

/// Merges `inputs` (contiguous, oldest first) into one file at `level` of `store`, starting at
/// TXID 1 if it is a `snapshot`.
pub(crate) fn merge_into(
    store: &LocalStore,
    level: u32,
    inputs: &[LocalFile],
    snapshot: bool,
    encoding: PageEncoding,
) -> Result<LocalFile> {
    let min = if snapshot {
        Txid(1)
    } else {
        inputs[0].min_txid
    };
    let max = inputs[inputs.len() - 1].max_txid;
    let readers = inputs
        .iter()
        .map(|f| {
            File::open(&f.path)
                .map(|file| BufReader::with_capacity(64 * 1024, file))
                .map_err(|e| crate::Error::Io {
                    path: f.path.clone(),
                    source: e,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut pending = store.create(level, min, max)?;
    let opts = CompactOptions {
        encoding,
        snapshot,
        ..CompactOptions::default()
    };
    let (_, header, _) = compact(readers, pending.writer(), opts).map_err(|e| match e {
        ltx::Error::MergeInput { input, source } => crate::Error::CorruptLocalFile {
            path: inputs[input].path.clone(),
            store: store.root().to_path_buf(),
            source: *source,
        },
        e => e.into(),
    })?;
    let file = pending.commit(header.timestamp)?;
    tracing::info!(
        store = %store.root().display(),
        level,
        "wrote {}-{} from {} files ({} bytes)",
        file.min_txid,
        file.max_txid,
        inputs.len(),
        file.size
    );
    Ok(file)
}
