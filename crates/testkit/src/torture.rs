//! The torture suite's application: a deterministic stream of numbered transactions, and the
//! check that a database is exactly the state after one of them.
//!
//! Transaction `t` of a workload is a pure function of the seed, `t` and the highest row id
//! before it, so the writer (`torture-writer`, a separate process that may be killed at any
//! moment and restarted) and the checker agree on every state without sharing anything but the
//! database. The checker replays transactions 1..=K and compares the database row by row: a torn
//! state, a lost transaction or an invented row cannot pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use rand::{RngExt, SeedableRng};
/// The suite's seeded random generator (small, fast, reproducible).
pub use rand_pcg::Pcg64Mcg;
use rusqlite::{Connection, OpenFlags};

/// The schema: `meta` holds the number of the last committed transaction.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, tx INTEGER NOT NULL, pad BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta(one INTEGER PRIMARY KEY CHECK (one = 1), tx INTEGER NOT NULL, max_id INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES (1, 0, 0);";

/// What a workload's transactions look like; the writer and the checker must use the same.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Seeds every choice.
    pub seed: u64,
    /// The chance that a transaction is large (hundreds of KB, spilling pages into the WAL
    /// before it commits).
    pub big: f64,
    /// One transaction of this many MiB at this transaction number (scenario: huge commits).
    pub huge: Option<(u64, u64)>,
}

/// Parses `TX:MIB`, the huge transaction of a workload, for the programs' flags.
pub fn parse_huge(s: &str) -> Result<(u64, u64), String> {
    let (tx, mib) = s.split_once(':').ok_or("give TX:MIB")?;
    Ok((
        tx.parse().map_err(|e| format!("{e}"))?,
        mib.parse().map_err(|e| format!("{e}"))?,
    ))
}

/// The changes of one transaction.
#[derive(Debug, PartialEq)]
pub struct TxPlan {
    /// New rows, ids `first_id..first_id + inserts`, each `row_len` bytes long.
    pub first_id: i64,
    /// How many rows it inserts.
    pub inserts: i64,
    /// Bytes of each inserted row's pad.
    pub row_len: usize,
    /// A row it rewrites, if that row still exists.
    pub update: Option<i64>,
    /// A row it deletes, if that row still exists.
    pub delete: Option<i64>,
}

impl Workload {
    /// Transaction `tx` (from 1) when the highest row id so far is `max_id`.
    pub fn plan(&self, tx: u64, max_id: i64) -> TxPlan {
        let mut rng = Pcg64Mcg::seed_from_u64(self.seed ^ tx.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (inserts, row_len) = match self.huge {
            Some((at, mib)) if at == tx => ((mib << 20) as i64 / 4000, 4000),
            _ if rng.random_bool(self.big) => (rng.random_range(100..400), 3000),
            _ => (rng.random_range(1..8), rng.random_range(10..1500)),
        };
        let pick = |rng: &mut Pcg64Mcg| (max_id > 0).then(|| rng.random_range(1..=max_id));
        let update = if rng.random_bool(0.3) {
            pick(&mut rng)
        } else {
            None
        };
        let delete = if rng.random_bool(0.1) {
            pick(&mut rng)
        } else {
            None
        };
        TxPlan {
            first_id: max_id + 1,
            inserts,
            row_len,
            update,
            delete,
        }
    }

    /// The pad of row `id` as transaction `tx` wrote it.
    pub fn pad(&self, id: i64, tx: u64, len: usize) -> Vec<u8> {
        let mut rng = Pcg64Mcg::seed_from_u64(self.seed ^ (id as u64) << 20 ^ tx);
        let mut pad = vec![0u8; len];
        rng.fill(&mut pad[..]);
        pad
    }

    /// The length of an updated row's pad.
    pub fn update_len(&self, id: i64, tx: u64) -> usize {
        (id as usize * 31 + tx as usize * 17) % 1200 + 8
    }

    /// Applies transaction `tx` to `conn` (inside the caller's transaction); returns the new
    /// highest row id.
    pub fn apply(&self, conn: &Connection, tx: u64, max_id: i64) -> rusqlite::Result<i64> {
        let plan = self.plan(tx, max_id);
        let mut insert =
            conn.prepare_cached("INSERT INTO rows(id, tx, pad) VALUES (?1, ?2, ?3)")?;
        for id in plan.first_id..plan.first_id + plan.inserts {
            insert.execute(rusqlite::params![
                id,
                tx as i64,
                self.pad(id, tx, plan.row_len)
            ])?;
        }
        if let Some(id) = plan.update {
            let pad = self.pad(id, tx, self.update_len(id, tx));
            conn.execute(
                "UPDATE rows SET tx = ?2, pad = ?3 WHERE id = ?1",
                rusqlite::params![id, tx as i64, pad],
            )?;
        }
        if let Some(id) = plan.delete {
            conn.execute("DELETE FROM rows WHERE id = ?1", [id])?;
        }
        let max_id = plan.first_id + plan.inserts - 1;
        conn.execute(
            "UPDATE meta SET tx = ?1, max_id = ?2",
            rusqlite::params![tx as i64, max_id],
        )?;
        Ok(max_id)
    }

    /// The state after transactions 1..=`k`: each live row's id, the transaction that last wrote
    /// it and its pad's length.
    pub fn state(&self, k: u64) -> (BTreeMap<i64, (u64, usize)>, i64) {
        let mut rows = BTreeMap::new();
        let mut max_id = 0;
        for tx in 1..=k {
            let plan = self.plan(tx, max_id);
            for id in plan.first_id..plan.first_id + plan.inserts {
                rows.insert(id, (tx, plan.row_len));
            }
            if let Some(id) = plan.update {
                if let Some(row) = rows.get_mut(&id) {
                    *row = (tx, self.update_len(id, tx));
                }
            }
            if let Some(id) = plan.delete {
                rows.remove(&id);
            }
            max_id = plan.first_id + plan.inserts - 1;
        }
        (rows, max_id)
    }

    /// Checks that the database at `path` is exactly the state after some transaction, and that
    /// `PRAGMA integrity_check` is ok; returns that transaction's number.
    pub fn check(&self, path: &Path) -> Result<u64, String> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| format!("{}: integrity_check: {e}", path.display()))?;
        if ok != "ok" {
            return Err(format!("{}: integrity_check says {ok}", path.display()));
        }
        let (k, max_id) = conn
            .query_row("SELECT tx, max_id FROM meta", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
            })
            .map_err(|e| format!("{}: no meta row: {e}", path.display()))?;
        let (want, want_max) = self.state(k);
        if max_id != want_max {
            return Err(format!(
                "{}: transaction {k} left max id {max_id}, the workload says {want_max}",
                path.display()
            ));
        }
        let mut stmt = conn
            .prepare("SELECT id, tx, pad FROM rows ORDER BY id")
            .map_err(|e| e.to_string())?;
        let mut got = stmt.query([]).map_err(|e| e.to_string())?;
        let mut want = want.into_iter();
        loop {
            let row = got.next().map_err(|e| e.to_string())?;
            let got_row = row.map(|r| {
                (
                    r.get::<_, i64>(0).unwrap(),
                    r.get::<_, i64>(1).unwrap() as u64,
                    r.get::<_, Vec<u8>>(2).unwrap(),
                )
            });
            match (got_row, want.next()) {
                (None, None) => return Ok(k),
                (Some((id, tx, pad)), Some((wid, (wtx, wlen)))) => {
                    if id != wid || tx != wtx || pad != self.pad(wid, wtx, wlen) {
                        return Err(format!(
                            "{}: not the state after transaction {k}: row {id} (written by tx \
                             {tx}) where the workload has row {wid} written by tx {wtx}",
                            path.display()
                        ));
                    }
                }
                (got, want) => {
                    return Err(format!(
                        "{}: not the state after transaction {k}: row {:?} vs expected {:?}",
                        path.display(),
                        got.map(|g| g.0),
                        want.map(|w| w.0)
                    ))
                }
            }
        }
    }
}

/// The `torture-writer` program, built first if needed (a test of another crate cannot name a
/// binary of this one, and a stale build would test old code).
pub fn writer_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "testkit",
                    "--bin",
                    "torture-writer",
                ])
                .current_dir(crate::workspace_root())
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build of torture-writer failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target"));
            target.join("debug").join("torture-writer")
        })
        .clone()
}

/// The writer's journal: the time each attempt to commit a transaction began, one
/// `TX UNIX_NANOS` line per attempt, written before COMMIT.
pub struct Journal {
    attempts: BTreeMap<u64, SystemTime>,
}

impl Journal {
    /// Reads a journal; a torn last line (the writer killed while writing it) is ignored.
    pub fn read(path: &Path) -> Journal {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut attempts = BTreeMap::new();
        for line in text.lines() {
            let mut parts = line.split(' ');
            if let (Some(tx), Some(ns), None) = (parts.next(), parts.next(), parts.next()) {
                if let (Ok(tx), Ok(ns)) = (tx.parse::<u64>(), ns.parse::<u64>()) {
                    // The last attempt of a transaction is the one that committed.
                    attempts.insert(tx, UNIX_EPOCH + Duration::from_nanos(ns));
                }
            }
        }
        Journal { attempts }
    }

    /// When the committed attempt of transaction `tx` began, if the journal has it.
    pub fn began(&self, tx: u64) -> Option<SystemTime> {
        self.attempts.get(&tx).copied()
    }

    /// When the first commit attempt began (now if none).
    pub fn first(&self) -> SystemTime {
        self.attempts
            .values()
            .min()
            .copied()
            .unwrap_or_else(SystemTime::now)
    }

    /// From the first commit attempt to the last.
    pub fn span(&self) -> Duration {
        let first = self.attempts.values().min();
        let last = self.attempts.values().max();
        match (first, last) {
            (Some(a), Some(b)) => b.duration_since(*a).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    /// The highest transaction number attempted.
    pub fn last(&self) -> u64 {
        self.attempts.keys().next_back().copied().unwrap_or(0)
    }

    /// The last transaction whose commit began at or before `at`.
    pub fn last_began_by(&self, at: SystemTime) -> u64 {
        self.attempts
            .iter()
            .filter(|(_, t)| **t <= at)
            .map(|(tx, _)| *tx)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_state_matches_what_apply_wrote_and_a_changed_row_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let w = Workload {
            seed: 7,
            big: 0.05,
            huge: None,
        };
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut max_id = 0;
        for tx in 1..=200 {
            let t = conn.transaction().unwrap();
            max_id = w.apply(&t, tx, max_id).unwrap();
            t.commit().unwrap();
        }
        assert_eq!(w.check(&path), Ok(200));
        conn.execute(
            "UPDATE rows SET pad = x'00' WHERE id = (SELECT min(id) FROM rows)",
            [],
        )
        .unwrap();
        assert!(w.check(&path).unwrap_err().contains("not the state"));
    }
}
