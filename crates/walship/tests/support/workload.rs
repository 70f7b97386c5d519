//! The application side of end-to-end tests: the walship binary, an application database, a
//! writer committing numbered rows, and the check that a restore is a state the database had.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use testkit::db::integrity_check;

/// A commit of the writer: when it began committing and the highest row id it left.
pub type Commit = (SystemTime, i64);

/// The `walship` binary built for these tests.
pub fn walship() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship"))
}

/// An application connection in WAL mode, with SQLite's default auto-checkpoint.
pub fn app(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, tx INTEGER, pad TEXT)",
    )
    .unwrap();
    conn
}

/// A thread committing transactions of 1 to 7 numbered rows, recording each commit.
pub struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<Mutex<Vec<Commit>>>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts writing to the database at `path`, continuing after its highest row id.
    pub fn start(path: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let commits: Arc<Mutex<Vec<Commit>>> = Arc::default();
        let thread = {
            let (path, stop, commits) = (path.to_path_buf(), stop.clone(), commits.clone());
            std::thread::spawn(move || {
                let mut conn = app(&path);
                let mut next: i64 = conn
                    .query_row("SELECT coalesce(max(id), 0) + 1 FROM rows", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let mut tx_no = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    tx_no += 1;
                    let tx = conn.transaction().unwrap();
                    for _ in 0..1 + (tx_no * 7919) % 7 {
                        tx.execute(
                            "INSERT INTO rows(id, tx, pad) VALUES (?1, ?2, ?3)",
                            rusqlite::params![next, tx_no, "p".repeat((next % 500) as usize)],
                        )
                        .unwrap();
                        next += 1;
                    }
                    // The time before COMMIT: a replicator may see the commit as soon as
                    // SQLite writes it, before this thread could read the clock afterwards.
                    let at = SystemTime::now();
                    tx.commit().unwrap();
                    commits.lock().unwrap().push((at, next - 1));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Writer {
            stop,
            commits,
            thread,
        }
    }

    /// Stops the writer and returns its commits, oldest first.
    pub fn stop(self) -> Vec<Commit> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let commits = self.commits.lock().unwrap().clone();
        commits
    }
}

/// Commits for `secs` and returns the commits.
pub fn write_for(path: &Path, secs: f64) -> Vec<Commit> {
    let writer = Writer::start(path);
    std::thread::sleep(Duration::from_secs_f64(secs));
    writer.stop()
}

/// The number of rows and the highest row id of a database.
pub fn rows(path: &Path) -> (i64, i64) {
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT count(*), coalesce(max(id), 0) FROM rows", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

/// Asserts that a restored database is exactly the state after one of `commits`; returns its
/// highest row id.
pub fn assert_commit_boundary(path: &Path, commits: &[Commit], what: &str) -> i64 {
    assert_eq!(integrity_check(path), "ok", "{what}");
    let (count, max) = rows(path);
    assert_eq!(
        count,
        max,
        "{what}: rows 1..{max} with {} missing: a torn state",
        max - count
    );
    assert!(
        max == 0 || commits.iter().any(|(_, id)| *id == max),
        "{what}: {max} rows is not the state after any committed transaction"
    );
    max
}

/// Writes a config in `dir` (named after the database) replicating `db` to `urls`: the
/// top-level `globals` lines, then `db_options` lines under the database; returns its path.
pub fn write_config(
    dir: &Path,
    globals: &str,
    db: &Path,
    db_options: &str,
    urls: &[&str],
) -> std::path::PathBuf {
    let path = dir.join(format!("{}.yml", db.file_name().unwrap().to_string_lossy()));
    let options: String = db_options.lines().map(|l| format!("    {l}\n")).collect();
    let replicas: String = urls.iter().map(|u| format!("      - url: {u}\n")).collect();
    std::fs::write(
        &path,
        format!(
            "{globals}dbs:\n  - path: {}\n{options}    replicas:\n{replicas}",
            db.display()
        ),
    )
    .unwrap();
    path
}
