//! One monitored database: its connections, the read lock, captures of the WAL into L0 files, and
//! the checkpoint cycle.
//!
//! walship holds a read transaction on the database at all times (except inside its own
//! checkpoint cycle), so no other connection can backfill and restart the WAL past frames walship
//! has not captured. Each capture turns the committed frames since the last one into one L0 file
//! (TXID + 1). When walship cannot prove that it saw every change since its last capture (the
//! first sync, a WAL restarted by someone else, a WAL truncated behind its back), it captures the
//! whole database instead, so every point in time it records is a state the database really had.
//!
//! The checkpoint cycle holds the application's writers off for a moment (`BEGIN IMMEDIATE` on a
//! second connection): capture the last frames, end the read transaction, run a PASSIVE
//! checkpoint (nothing can interfere, so it backfills everything), begin the read transaction
//! again, release the writers. The application's next write then restarts the WAL, which walship
//! expects and follows from the top. The slow part, making the capture durable, happens after the
//! writers are released: if walship dies in between, the next start captures in full.

use std::cell::OnceCell;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ltx::{Encoder, EncoderOptions, Header, PageEncoding, Txid};
use rusqlite::{Connection, ErrorCode};

use crate::compaction::{merge_into, write_missed_snapshot, SNAPSHOT_LEVEL};
use crate::store::{now_ms, LocalFile, LocalStore, PendingFile};
use crate::wal::{WalPosition, WalReader, WAL_HEADER_SIZE};
use crate::{Error, Result};

/// How one database is monitored.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Where the local LTX store lives; `.<name>-litestream` beside the database by default.
    pub meta_dir: Option<PathBuf>,
    /// How long walship waits for the application's locks.
    pub busy_timeout: Duration,
    /// WAL size, in pages, at which walship captures and checkpoints (the application's own
    /// auto-checkpoint size, 1000 by default, so the WAL stays as small as without walship).
    pub checkpoint_pages: u32,
    /// Most WAL bytes one L0 file takes; a capture is cut at a commit boundary past this.
    pub max_capture_bytes: u64,
    /// Page encoding of the L0 files.
    pub encoding: PageEncoding,
    /// The lowest TXID the next capture may take: one past the newest TXID any replica holds,
    /// so that a database restored from a replica never reuses a TXID the replica has.
    pub min_txid: Txid,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            meta_dir: None,
            busy_timeout: Duration::from_secs(1),
            checkpoint_pages: 1000,
            max_capture_bytes: 64 * 1024 * 1024,
            encoding: PageEncoding::Block,
            min_txid: Txid(1),
        }
    }
}

/// The last captured state: the TXID written and where in the WAL it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub txid: Txid,
    pub page_size: u32,
    pub salts: (u32, u32),
    pub end: WalPosition,
    pub commit: u32,
}

/// Why a capture took the whole database rather than the new frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    /// No earlier capture in this process: changes made while walship was away are unknown.
    FirstSync,
    /// Another process restarted the WAL while walship's read lock had lapsed, so frames
    /// walship had not captured may be gone.
    WalRestarted,
    /// The WAL shrank or vanished while walship's read lock had lapsed.
    WalTruncated,
    /// The database file was replaced (a restore, a copy over it): a different file now.
    DbReplaced,
    /// The last capture ended past the WAL index's last committed frame (a store written by a
    /// walship that read uncommitted frames).
    WalRewound,
}

impl fmt::Display for FullReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FullReason::FirstSync => "first sync since start",
            FullReason::WalRestarted => "WAL restarted by another process",
            FullReason::WalTruncated => "WAL truncated by another process",
            FullReason::DbReplaced => "the database file was replaced",
            FullReason::WalRewound => "the last capture ended past the WAL's committed frames",
        })
    }
}

/// What a capture took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    /// The frames committed since the last capture.
    Incremental,
    /// Every page of the database.
    Full(FullReason),
}

/// A capture made durable in the local store.
#[derive(Debug, Clone)]
pub struct Synced {
    pub file: LocalFile,
    pub kind: CaptureKind,
    pub header: Header,
    pub pages: u32,
}

/// A capture encoded but not yet durable.
struct Pending {
    file: PendingFile,
    kind: CaptureKind,
    /// Why a snapshot must follow this full capture, if one must (see `Db::snapshot_needed`).
    snapshot_after: Option<&'static str>,
    header: Header,
    pages: u32,
    pos: Position,
}

/// What a checkpoint cycle did.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// The capture made inside the cycle, if there were new frames.
    pub synced: Option<Synced>,
    /// Whether the checkpoint copied every frame into the database, so the WAL will restart.
    pub complete: bool,
}

/// One monitored database.
pub struct Db {
    path: PathBuf,
    wal_path: PathBuf,
    shm_path: PathBuf,
    reader: Connection,
    barrier: Connection,
    /// The database file and its WAL index, opened once and never closed while the connections
    /// live: closing any descriptor of a file drops every POSIX lock this process holds on it,
    /// SQLite's included, which would let other processes checkpoint past walship's read lock.
    db_file: File,
    shm_file: OnceCell<File>,
    store: LocalStore,
    opts: DbOptions,
    pos: Option<Position>,
    next_txid: Txid,
    /// Set when the read lock could not be taken back after a checkpoint: until a capture in
    /// full, a WAL restart by another process may have lost frames. While the lock holds, no
    /// restart can: SQLite restarts the WAL only once every frame is backfilled, and a reader
    /// stops backfill at its snapshot (at any frame of the WAL if it reads the database file
    /// only), which is never past what walship has captured. `tests/db.rs` proves both facts.
    read_lapsed: bool,
    /// The WAL index header (`mxFrame`, salts) right after the last complete checkpoint: until
    /// it changes there is nothing more to checkpoint, however large the WAL still is.
    checkpointed_at: Option<(u32, (u32, u32))>,
    /// Why the first capture is in full: a start, or a replaced database file.
    first_reason: FullReason,
}

impl Db {
    /// Opens the database, switches it to WAL mode, opens its local store and takes the read lock.
    pub fn open(path: &Path, opts: DbOptions) -> Result<Db> {
        let reader = connect(path, opts.busy_timeout)?;
        let mode: String = reader
            .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
            .map_err(|e| sqlite_error(path, "switching to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Db {
                path: path.to_path_buf(),
                reason: format!(
                    "journal mode is {mode:?} and could not be switched to WAL; \
                     walship needs WAL mode (is the database in use with exclusive locking?)"
                ),
            });
        }
        let mut barrier = connect(path, opts.busy_timeout)?;
        // SQLite's default busy handler sleeps longer and longer between tries, so a writer that
        // commits in a tight loop wins the lock again and again and the barrier starves; short,
        // even retries take the lock at the writer's next gap between transactions.
        barrier
            .busy_handler(Some(barrier_busy))
            .map_err(|e| sqlite_error(path, "setting the barrier's busy handler", e))?;
        let meta = opts
            .meta_dir
            .clone()
            .unwrap_or_else(|| LocalStore::default_dir(path));
        let store = LocalStore::open(&meta)?;
        let next_txid = store
            .last(0)?
            .map_or(Txid(1), |f| Txid(f.max_txid.0 + 1))
            .max(opts.min_txid);
        let side = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
        let db_file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut db = Db {
            path: path.to_path_buf(),
            wal_path: side("-wal"),
            shm_path: side("-shm"),
            reader,
            barrier,
            db_file,
            shm_file: OnceCell::new(),
            store,
            opts,
            pos: None,
            next_txid,
            read_lapsed: false,
            checkpointed_at: None,
            first_reason: FullReason::FirstSync,
        };
        db.begin_read()?;
        if let Some(snapshot) = write_missed_snapshot(&db.store, db.opts.encoding)? {
            tracing::info!(db = %path.display(), txid = %snapshot.max_txid, "wrote the snapshot after the last capture, which the last run did not");
        }
        db.pos = db.resume_position()?;
        if let Some(pos) = db.pos {
            tracing::info!(db = %path.display(), txid = %pos.txid, wal_offset = pos.end.offset, "resuming where the last run's capture ended");
        }
        Ok(db)
    }

    /// Where the last capture of an earlier run ended, if the WAL still holds exactly that
    /// state: same salts (so no restart since, hence no frame overwritten), a valid frame chain up
    /// to the recorded end, and a commit there of the recorded size. Then nothing changed behind
    /// walship's back except new frames after that end, and the next capture continues there
    /// instead of copying the whole database again. Anything else, or replicas ahead of the
    /// local store, and the first capture is in full.
    fn resume_position(&self) -> Result<Option<Position>> {
        let Some(last) = self.store.last(0)? else {
            return Ok(None);
        };
        if Txid(last.max_txid.0 + 1) != self.next_txid {
            return Ok(None);
        }
        let header = self.store.header(&last)?;
        if header.wal_size <= 0 {
            return Ok(None);
        }
        let end = (header.wal_offset + header.wal_size) as u64;
        let wal = self.open_wal()?;
        let Some(mut wal) = wal else { return Ok(None) };
        let salts = (wal.header().salt1, wal.header().salt2);
        if salts != (header.wal_salt1, header.wal_salt2)
            || wal.header().page_size != header.page_size
            || self
                .index_max_frame(&wal)?
                .is_none_or(|max_frame| end > frame_end(&wal, max_frame))
        {
            return Ok(None);
        }
        let mut pos = wal.start();
        while let Some((frame, next)) = wal.read_frame(pos)? {
            if next.offset == end {
                if frame.commit != header.commit {
                    return Ok(None);
                }
                return Ok(Some(Position {
                    txid: header.max_txid,
                    page_size: header.page_size,
                    salts,
                    end: next,
                    commit: frame.commit,
                }));
            }
            if next.offset > end {
                break;
            }
            pos = next;
        }
        Ok(None)
    }

    /// Whether the path now names another file than the one open (a restore or copy replaced
    /// it): then [`Db::reopen`] must follow it.
    pub fn replaced(&self) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let open = self.db_file.metadata().map_err(|e| self.db_io(e))?;
        match std::fs::metadata(&self.path) {
            Ok(now) => Ok((now.dev(), now.ino()) != (open.dev(), open.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Db {
                path: self.path.clone(),
                reason: "the database file was deleted; walship keeps the open file and \
                         resumes when a database appears at this path again"
                    .into(),
            }),
            Err(e) => Err(self.db_io(e)),
        }
    }

    /// Opens the file now at the path, with TXIDs continuing; its first capture is in full.
    pub fn reopen(&self) -> Result<Db> {
        let opts = DbOptions {
            min_txid: self.next_txid,
            ..self.opts.clone()
        };
        let mut db = Db::open(&self.path, opts)?;
        db.first_reason = FullReason::DbReplaced;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The local LTX store.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The last captured position, if any capture happened since open.
    pub fn position(&self) -> Option<Position> {
        self.pos
    }

    /// Captures what was committed since the last capture into a durable L0 file.
    pub fn sync(&mut self) -> Result<Option<Synced>> {
        match self.capture(self.opts.max_capture_bytes)? {
            Some(p) => self.commit(p).map(Some),
            None => Ok(None),
        }
    }

    /// Frames in the WAL that the last capture did not take, from the WAL index in `-shm`; a
    /// cheap check (one small read) to drive captures by WAL growth.
    pub fn uncaptured_frames(&self) -> Result<u32> {
        let Some((max_frame, salts)) = self.read_shm_header()? else {
            return Ok(0);
        };
        let captured = match self.pos {
            Some(pos) if pos.salts == salts => {
                let frame_size = 24 + u64::from(pos.page_size);
                ((pos.end.offset.saturating_sub(WAL_HEADER_SIZE)) / frame_size) as u32
            }
            _ => 0,
        };
        Ok(max_frame.saturating_sub(captured))
    }

    /// Whether a capture could find anything: always before the first one, then only when the
    /// WAL index shows frames the last capture did not take.
    pub fn needs_sync(&self) -> Result<bool> {
        Ok(self.pos.is_none() || self.uncaptured_frames()? > 0)
    }

    /// Whether the WAL has grown to the checkpoint size, so that capturing and checkpointing now
    /// keeps it as small as the application's own auto-checkpoint would.
    pub fn wants_checkpoint(&self) -> Result<bool> {
        let Some(header) = self.read_shm_header()? else {
            return Ok(false);
        };
        // A WAL that no writer restarted since (a reader pins it) stays as large after a
        // complete checkpoint: checkpointing it again and again would starve the captures.
        Ok(header.0 >= self.opts.checkpoint_pages && self.checkpointed_at != Some(header))
    }

    /// Runs the checkpoint cycle (see the module docs). Returns `None` if the application held
    /// the write lock for longer than the busy timeout; the next cycle tries again.
    pub fn checkpoint(&mut self) -> Result<Option<Checkpointed>> {
        match self.barrier.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(e) if is_busy(&e) => return Ok(None),
            Err(e) => return Err(sqlite_error(&self.path, "taking the write barrier", e)),
        }
        let inside = self.checkpoint_inside_barrier();
        let released = self.barrier.execute_batch("ROLLBACK");
        let (pending, complete) = inside?;
        released.map_err(|e| sqlite_error(&self.path, "releasing the write barrier", e))?;
        let synced = match pending {
            Some(p) => Some(self.commit(p)?),
            None => None,
        };
        if complete {
            self.checkpointed_at = self.read_shm_header()?;
        }
        Ok(Some(Checkpointed { synced, complete }))
    }

    fn checkpoint_inside_barrier(&mut self) -> Result<(Option<Pending>, bool)> {
        let pending = self.capture(u64::MAX)?;
        self.end_read()?;
        let counts = self
            .reader
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
        // The read lock comes back whatever the checkpoint did.
        if let Err(e) = self.begin_read() {
            self.read_lapsed = true;
            return Err(e);
        }
        let (log, backfilled) = match counts {
            Ok(c) => c,
            Err(e) if is_busy(&e) => (-1, -2),
            Err(e) => return Err(sqlite_error(&self.path, "checkpointing", e)),
        };
        Ok((pending, log >= 0 && log == backfilled))
    }

    fn begin_read(&mut self) -> Result<()> {
        self.reader
            .execute_batch("BEGIN")
            .and_then(|()| {
                self.reader
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                        r.get::<_, i64>(0)
                    })
            })
            .map(drop)
            .map_err(|e| sqlite_error(&self.path, "taking the read lock", e))
    }

    fn end_read(&mut self) -> Result<()> {
        self.reader
            .execute_batch("ROLLBACK")
            .map_err(|e| sqlite_error(&self.path, "releasing the read lock", e))
    }

    /// The WAL as it is now, or `None` when there is none (or it is empty).
    fn open_wal(&self) -> Result<Option<WalReader<File>>> {
        match File::open(&self.wal_path) {
            Ok(f) => WalReader::open(f, &self.wal_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: self.wal_path.clone(),
                source,
            }),
        }
    }

    /// Decides what to capture and encodes it into a pending L0 file.
    fn capture(&mut self, max_bytes: u64) -> Result<Option<Pending>> {
        let wal = self.open_wal()?;
        let Some(pos) = self.pos else {
            let reason = self.first_reason;
            return self.capture_full(wal, reason);
        };
        if self.reader.is_autocommit() {
            self.begin_read()?;
        }
        let Some(mut wal) = wal else {
            return if self.read_lapsed && pos.end.offset > WAL_HEADER_SIZE {
                self.capture_full(None, FullReason::WalTruncated)
            } else {
                Ok(None)
            };
        };
        let salts = (wal.header().salt1, wal.header().salt2);
        let Some(max_frame) = self.index_max_frame(&wal)? else {
            return Ok(None); // the WAL index is being rebuilt: the next tick captures
        };
        let start = if salts == pos.salts {
            if pos.end.offset > frame_end(&wal, max_frame) {
                // Never after this fix; a store written by an older walship may hold frames the
                // WAL index never took in, since overwritten.
                return self.capture_full(Some(wal), FullReason::WalRewound);
            }
            pos.end
        } else if self.read_lapsed {
            return self.capture_full(Some(wal), FullReason::WalRestarted);
        } else {
            wal.start()
        };
        let Some(committed) = wal.committed_until(start, max_bytes, max_frame)? else {
            return Ok(None);
        };
        let page_size = wal.header().page_size;
        let header = self.l0_header(&wal, start, committed.end, committed.commit);
        let mut file = self.store.create(0, header.min_txid, header.max_txid)?;
        let mut enc = Encoder::new(file.writer(), header, self.encoder_options())?;
        let mut page = vec![0u8; page_size as usize];
        let lock = header.lock_pgno();
        // Pages the database grew by without a WAL frame come from the database file.
        let grown = (pos.commit + 1..=committed.commit)
            .filter(|p| *p != lock && !committed.pages.contains_key(p));
        let mut wanted: Vec<u32> = committed.pages.keys().copied().chain(grown).collect();
        wanted.sort_unstable();
        for pgno in &wanted {
            match committed.pages.get(pgno) {
                Some(frame) => enc.write_page(*pgno, wal.read_frame_page(*frame)?)?,
                None => {
                    self.read_db_page(*pgno, &mut page)?;
                    enc.write_page(*pgno, &page)?;
                }
            }
        }
        enc.finish()?;
        Ok(Some(Pending {
            file,
            kind: CaptureKind::Incremental,
            snapshot_after: None,
            header,
            pages: wanted.len() as u32,
            pos: Position {
                txid: header.max_txid,
                page_size: header.page_size,
                salts,
                end: committed.end,
                commit: committed.commit,
            },
        }))
    }

    /// Captures every page: the database file overlaid with every committed WAL frame.
    fn capture_full(
        &mut self,
        wal: Option<WalReader<File>>,
        reason: FullReason,
    ) -> Result<Option<Pending>> {
        let (db_page_size, db_pages) = self.db_file_geometry()?;
        let mut wal = wal;
        let committed = match wal.as_mut() {
            Some(w) => match self.index_max_frame(w)? {
                Some(max_frame) => w.committed_until(w.start(), u64::MAX, max_frame)?,
                None => return Ok(None), // the WAL index is being rebuilt: try again next tick
            },
            None => None,
        };
        let page_size = match (&wal, &committed) {
            (Some(w), Some(_)) => w.header().page_size,
            _ => db_page_size,
        };
        let commit = committed.as_ref().map_or(db_pages, |c| c.commit);
        if commit == 0 {
            return Ok(None); // a database with no pages yet has nothing to capture
        }
        let (start, end, salts) = match (&wal, &committed) {
            (Some(w), Some(c)) => (w.start(), c.end, (w.header().salt1, w.header().salt2)),
            // A WAL with no committed frame yet (a writer mid-transaction): the next capture
            // starts at its top, so the frame checksums chain from its header's.
            (Some(w), None) => (w.start(), w.start(), (w.header().salt1, w.header().salt2)),
            (None, _) => {
                let zero = WalPosition {
                    offset: WAL_HEADER_SIZE,
                    checksum: (0, 0),
                };
                (zero, zero, (0, 0))
            }
        };
        let mut header = Header::new(page_size, commit, self.next_txid, self.next_txid, now_ms());
        if end.offset > start.offset {
            header.wal_offset = start.offset as i64;
            header.wal_size = (end.offset - start.offset) as i64;
            (header.wal_salt1, header.wal_salt2) = salts;
        }
        let mut file = self.store.create(0, header.min_txid, header.max_txid)?;
        let mut enc = Encoder::new(file.writer(), header, self.encoder_options())?;
        let mut page = vec![0u8; page_size as usize];
        let lock = header.lock_pgno();
        let mut pages = 0;
        for pgno in (1..=commit).filter(|p| *p != lock) {
            let from_wal = committed.as_ref().and_then(|c| c.pages.get(&pgno));
            match (from_wal, wal.as_mut()) {
                (Some(frame), Some(w)) => enc.write_page(pgno, w.read_frame_page(*frame)?)?,
                _ => {
                    self.read_db_page(pgno, &mut page)?;
                    enc.write_page(pgno, &page)?;
                }
            }
            pages += 1;
        }
        enc.finish()?;
        let snapshot_after = self.snapshot_needed(&header)?;
        Ok(Some(Pending {
            file,
            kind: CaptureKind::Full(reason),
            snapshot_after,
            header,
            pages,
            pos: Position {
                txid: header.max_txid,
                page_size: header.page_size,
                salts,
                end,
                commit,
            },
        }))
    }

    fn l0_header(
        &self,
        wal: &WalReader<File>,
        start: WalPosition,
        end: WalPosition,
        commit: u32,
    ) -> Header {
        let mut h = Header::new(
            wal.header().page_size,
            commit,
            self.next_txid,
            self.next_txid,
            now_ms(),
        );
        h.wal_offset = start.offset as i64;
        h.wal_size = (end.offset - start.offset) as i64;
        h.wal_salt1 = wal.header().salt1;
        h.wal_salt2 = wal.header().salt2;
        h
    }

    fn encoder_options(&self) -> EncoderOptions {
        EncoderOptions {
            encoding: self.opts.encoding,
        }
    }

    fn db_io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Page size and page count of the database file (the page count from its length).
    fn db_file_geometry(&self) -> Result<(u32, u32)> {
        let len = self.db_file.metadata().map_err(|e| self.db_io(e))?.len();
        if len == 0 {
            return Ok((4096, 0));
        }
        let mut head = [0u8; 100];
        self.db_file
            .read_exact_at(&mut head, 0)
            .map_err(|e| self.db_io(e))?;
        let page_size = ltx::database::page_size_of(&head).ok_or_else(|| Error::Db {
            path: self.path.clone(),
            reason: "not a SQLite database: its header holds no valid page size".into(),
        })?;
        Ok((page_size, (len / u64::from(page_size)) as u32))
    }

    fn read_db_page(&self, pgno: u32, page: &mut [u8]) -> Result<()> {
        let at = u64::from(pgno - 1) * page.len() as u64;
        self.db_file
            .read_exact_at(page, at)
            .map_err(|e| self.db_io(e))
    }

    /// Why a full capture with `header` must be followed by a snapshot there, if it must.
    /// Litestream's restore starts every plan at a file from TXID 1 and refuses plans mixing
    /// page sizes: a capture at a new page size, or the first one of an empty store continuing
    /// after a replica's TXIDs (a database restored on a new machine), would leave every plan
    /// after it failing, for any replica that lacks the older files, until the next snapshot.
    fn snapshot_needed(&self, header: &ltx::Header) -> Result<Option<&'static str>> {
        let Some(last) = self.store.last(0)? else {
            let continues = header.min_txid.0 > 1 && self.store.last(SNAPSHOT_LEVEL)?.is_none();
            return Ok(continues.then_some("the first capture continues a replica's TXIDs"));
        };
        let changed = self.store.header(&last)?.page_size != header.page_size;
        Ok(changed.then_some("the page size changed"))
    }

    /// Makes a pending capture durable and advances the position.
    fn commit(&mut self, p: Pending) -> Result<Synced> {
        let file = p.file.commit(p.header.timestamp)?;
        if let Some(why) = p.snapshot_after {
            let snapshot = merge_into(
                &self.store,
                SNAPSHOT_LEVEL,
                std::slice::from_ref(&file),
                true,
                self.opts.encoding,
            )?;
            tracing::info!(db = %self.path.display(), txid = %snapshot.max_txid, page_size = p.header.page_size, "{why}: wrote a snapshot there");
        }
        if matches!(p.kind, CaptureKind::Full(_)) {
            self.read_lapsed = false;
        }
        self.pos = Some(p.pos);
        self.next_txid = Txid(p.pos.txid.0 + 1);
        Ok(Synced {
            file,
            kind: p.kind,
            header: p.header,
            pages: p.pages,
        })
    }

    /// `mxFrame` and the salts from the WAL index header at the start of `-shm`.
    fn read_shm_header(&self) -> Result<Option<(u32, (u32, u32))>> {
        let shm = match self.shm_file.get() {
            Some(f) => f,
            None => match File::open(&self.shm_path) {
                Ok(f) => self.shm_file.get_or_init(|| f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(Error::Io {
                        path: self.shm_path.clone(),
                        source,
                    })
                }
            },
        };
        // SQLite writes the header twice and readers trust it only when both copies agree and
        // it is initialised (byte 12); a writer may be between the two copies: read again.
        let mut buf = [0u8; 96];
        for _ in 0..SHM_HEADER_TRIES {
            match shm.read_exact_at(&mut buf, 0) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(source) => {
                    return Err(Error::Io {
                        path: self.shm_path.clone(),
                        source,
                    })
                }
            }
            if buf[..48] == buf[48..] && buf[12] == 1 {
                // The WAL index is in the machine's native byte order; the salts are copied as
                // bytes from the WAL header, which is big-endian.
                let native = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
                let big = |o: usize| u32::from_be_bytes(buf[o..o + 4].try_into().unwrap());
                return Ok(Some((native(16), (big(32), big(36)))));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(None)
    }

    /// The last frame of `wal` that SQLite counts as committed: the WAL index's `mxFrame` when
    /// the index describes this WAL, 0 when it describes another (a restart not yet written
    /// out), `None` while the index is unreadable or being rebuilt.
    fn index_max_frame(&self, wal: &WalReader<File>) -> Result<Option<u32>> {
        Ok(self.read_shm_header()?.map(|(max_frame, salts)| {
            if salts == (wal.header().salt1, wal.header().salt2) {
                max_frame
            } else {
                0
            }
        }))
    }
}

/// How many times a torn WAL index header is read again (1 ms apart) before giving up for now.
const SHM_HEADER_TRIES: u32 = 100;

/// The WAL offset just past frame `frame` (from 1).
fn frame_end(wal: &WalReader<File>, frame: u32) -> u64 {
    WAL_HEADER_SIZE + u64::from(frame) * wal.frame_size()
}

fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| sqlite_error(path, "opening", e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| sqlite_error(path, "setting the busy timeout", e))?;
    Ok(conn)
}

/// Retries every 100 µs for about a second before the barrier gives up for this cycle.
fn barrier_busy(tries: i32) -> bool {
    if tries >= 10_000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(100));
    true
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn sqlite_error(path: &Path, doing: &str, e: rusqlite::Error) -> Error {
    Error::Db {
        path: path.to_path_buf(),
        reason: format!("{doing}: {e}"),
    }
}
