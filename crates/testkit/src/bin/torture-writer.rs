//! `torture-writer`: the torture suite's application, a process that commits a workload's
//! numbered transactions (see `testkit::torture`) until it is killed.
//!
//! It picks up after the last committed transaction, so it can be killed with SIGKILL at any
//! moment and started again. Before each COMMIT it appends `TX UNIX_NANOS` to the journal. It
//! keeps SQLite's page cache small so large transactions spill pages into the WAL before they
//! commit, and with `--rollback` it also writes transactions that spill and then roll back:
//! uncommitted frames a replicator must never ship. With `--maintenance` it does what
//! applications do to their database between transactions: a TRUNCATE checkpoint, VACUUM, or
//! replacing the file with a copy (a restore over it), sometimes with another page size.
//! A full disk is waited out: the transaction is retried until it commits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rusqlite::{Connection, ErrorCode};
use testkit::torture::{parse_huge, Workload, SCHEMA};

#[derive(Parser)]
struct Args {
    /// The application's database.
    #[arg(long)]
    db: PathBuf,
    /// Where to append each commit attempt's number and start time.
    #[arg(long)]
    journal: PathBuf,
    #[arg(long)]
    seed: u64,
    /// Chance that a transaction is large.
    #[arg(long, default_value_t = 0.0)]
    big: f64,
    /// One huge transaction, `TX:MIB`.
    #[arg(long, value_parser = parse_huge)]
    huge: Option<(u64, u64)>,
    /// Chance, per transaction, of a large transaction that rolls back first.
    #[arg(long, default_value_t = 0.0)]
    rollback: f64,
    /// Chance, per transaction, of a maintenance action after it.
    #[arg(long, default_value_t = 0.0)]
    maintenance: f64,
    /// Pause between transactions.
    #[arg(long, default_value_t = 5)]
    pause_ms: u64,
    /// Stop after this transaction.
    #[arg(long)]
    until: Option<u64>,
}

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the database");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    // Switching a rollback-mode file (a fresh copy) to WAL needs an exclusive lock; when the
    // replicator switches it at the same moment, SQLite answers one of the two BUSY at once
    // (no busy handler can break that deadlock): try again, as an application must.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = conn.pragma_update(None, "journal_mode", "wal") {
        assert!(
            e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                && std::time::Instant::now() < deadline,
            "switching to WAL: {e}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Small enough that a transaction of a few hundred rows spills into the WAL uncommitted.
    conn.pragma_update(None, "cache_size", 50).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn
}

/// Whether an error is a full disk (SQLite reports some as I/O errors).
fn disk_full(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DiskFull) | Some(ErrorCode::SystemIoFailure)
    )
}

fn main() {
    let args = Args::parse();
    let workload = Workload {
        seed: args.seed,
        big: args.big,
        huge: args.huge,
    };
    let mut journal = open_journal(&args.journal);
    let mut conn = open(&args.db);
    let (mut tx_no, mut max_id) = conn
        .query_row("SELECT tx, max_id FROM meta", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
        })
        .unwrap();
    let mut rng = Pcg64Mcg::seed_from_u64(args.seed ^ tx_no ^ 0xABCD);
    let mut full_since: Option<SystemTime> = None;
    loop {
        if args.until.is_some_and(|u| tx_no >= u) {
            return;
        }
        let next = tx_no + 1;
        if rng.random_bool(args.rollback) {
            let _ = spilled_rollback(&mut conn, &workload, max_id);
        }
        let result = (|| -> Result<i64, Failure> {
            let tx = conn.transaction()?;
            let new_max = workload.apply(&tx, next, max_id)?;
            let ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            journal_append(&mut journal, &format!("{next} {ns}\n"))?;
            tx.commit()?;
            Ok(new_max)
        })();
        match result {
            Ok(new_max) => {
                if let Some(since) = full_since.take() {
                    eprintln!(
                        "disk space back after {:?}: committed {next}",
                        since.elapsed().unwrap_or_default()
                    );
                }
                tx_no = next;
                max_id = new_max;
            }
            Err(e) if e.is_disk_full() => {
                if full_since.is_none() {
                    eprintln!("disk full at transaction {next}: {e}; retrying");
                    full_since = Some(SystemTime::now());
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Err(e) => panic!("transaction {next}: {e}"),
        }
        if rng.random_bool(args.maintenance) {
            let started = std::time::Instant::now();
            conn = maintain(conn, &args.db, &mut rng);
            eprintln!("maintenance took {:?}", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(args.pause_ms));
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
enum Failure {
    Sql(rusqlite::Error),
    Journal(std::io::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl Failure {
    /// A full disk (the database's or the journal's) is waited out, not fatal.
    fn is_disk_full(&self) -> bool {
        match self {
            Failure::Sql(e) => disk_full(e),
            Failure::Journal(e) => e.kind() == std::io::ErrorKind::StorageFull,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Sql(e) => write!(f, "{e}"),
            Failure::Journal(e) => write!(f, "writing the journal: {e}"),
        }
    }
}

/// Opens the journal for appending, first cutting a line torn by a kill mid-write, so the
/// next line starts on its own.
fn open_journal(path: &Path) -> std::fs::File {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .expect("open the journal");
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut text).expect("read the journal");
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        file.set_len(whole as u64).expect("cut a torn journal line");
    }
    file
}

/// Appends one line in one write; a write that failed (a full disk) is cut off again, so a
/// retry does not follow a partial line.
fn journal_append(journal: &mut std::fs::File, line: &str) -> Result<(), Failure> {
    let len = journal.metadata().map_err(Failure::Journal)?.len();
    if let Err(e) = journal.write_all(line.as_bytes()) {
        let _ = journal.set_len(len);
        return Err(Failure::Journal(e));
    }
    Ok(())
}

/// A large transaction that spills pages into the WAL, then rolls back.
fn spilled_rollback(conn: &mut Connection, w: &Workload, max_id: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for id in max_id + 1..max_id + 300 {
        tx.execute(
            "INSERT INTO rows(id, tx, pad) VALUES (?1, 0, ?2)",
            rusqlite::params![id, w.pad(id, 0, 3000)],
        )?;
    }
    tx.rollback()
}

/// One maintenance action; returns the connection to go on with.
fn maintain(conn: Connection, db: &Path, rng: &mut Pcg64Mcg) -> Connection {
    match rng.random_range(0..4) {
        0 => {
            eprintln!("maintenance: wal_checkpoint(TRUNCATE)");
            // A TRUNCATE checkpoint waits out the busy timeout for every reader, walship's
            // read lock included (as Litestream's), then answers BUSY having backfilled what it
            // could: an application that knows it runs beside a replicator waits only briefly.
            conn.busy_timeout(Duration::from_secs(1)).unwrap();
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            conn.busy_timeout(Duration::from_secs(30)).unwrap();
            conn
        }
        1 => {
            eprintln!("maintenance: VACUUM");
            conn.execute_batch("VACUUM").unwrap();
            conn
        }
        n => {
            let page_size = if n == 3 {
                let now: u32 = conn
                    .query_row("PRAGMA page_size", [], |r| r.get(0))
                    .unwrap();
                if now == 4096 {
                    8192
                } else {
                    4096
                }
            } else {
                0
            };
            replace(conn, db, page_size)
        }
    }
}

/// Replaces the database with a copy of itself (with another page size if not 0), as a
/// restore to a temporary name and a rename do.
fn replace(conn: Connection, db: &Path, page_size: u32) -> Connection {
    eprintln!("maintenance: replace the file (page size {page_size})");
    let tmp = db.with_extension("replacing");
    let _ = std::fs::remove_file(&tmp);
    if page_size == 0 {
        conn.execute("VACUUM INTO ?1", [tmp.to_str().unwrap()])
            .unwrap();
    } else {
        let copy = Connection::open(&tmp).unwrap();
        copy.pragma_update(None, "page_size", page_size).unwrap();
        copy.execute_batch(SCHEMA).unwrap();
        copy.execute("ATTACH ?1 AS src", [db.to_str().unwrap()])
            .unwrap();
        copy.execute_batch(
            "BEGIN; DELETE FROM meta; INSERT INTO meta SELECT * FROM src.meta;
             INSERT INTO rows SELECT * FROM src.rows; COMMIT; DETACH src;",
        )
        .unwrap();
        drop(copy);
    }
    drop(conn);
    std::fs::rename(&tmp, db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    open(db)
}
