//! Choosing the files that rebuild a database as of a target, as Litestream 0.5's
//! `CalcRestorePlan` does (formats/litestream.md §2.3): the newest eligible snapshot, then, over
//! levels 8..0, the file that extends the chain of TXIDs furthest, until the target is reached.

use std::cmp::Reverse;
use std::time::SystemTime;

use futures::future::try_join_all;
use futures::stream::{self, StreamExt, TryStreamExt};
use ltx::Txid;

use super::{describe, RestoreError};
use crate::replica::client::{LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL};
use crate::replica::timestamp::format_rfc3339_nano;
use crate::Result;

/// Creation-time requests in flight at once for a timestamp restore.
const STAT_CONCURRENCY: usize = 16;

/// The state to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The newest state the replica holds.
    #[default]
    Latest,
    /// The state after this transaction.
    Txid(Txid),
    /// The newest state whose files were all created strictly before this time (for a
    /// Litestream 0.3 backup, at or before it, as Litestream restores those).
    Timestamp(SystemTime),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => f.write_str("the latest state"),
            Target::Txid(t) => write!(f, "TXID {t}"),
            Target::Timestamp(t) => write!(f, "timestamp {}", format_rfc3339_nano(*t)),
        }
    }
}

/// The files to merge, oldest first: an optional snapshot, then files continuing its TXIDs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The files; the first starts at TXID 1 and each continues the previous one.
    pub files: Vec<LtxFileInfo>,
}

impl Plan {
    /// The TXID the restored database will be at.
    pub fn max_txid(&self) -> Txid {
        self.files.last().map_or(Txid(0), |f| f.key.max_txid)
    }

    /// The bytes to download.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Lists the replica's LTX files at every level for a restore to `target`. For a timestamp,
/// every file's precise creation time is read (S3 metadata), since listings give S3 times in
/// whole seconds.
pub(super) async fn list(client: &ReplicaClient, target: Target) -> Result<Vec<LtxFileInfo>> {
    let levels = try_join_all((0..=SNAPSHOT_LEVEL).map(|level| client.list(level))).await?;
    let files: Vec<LtxFileInfo> = levels.into_iter().flatten().collect();
    match target {
        Target::Timestamp(_) => precise_times(client, files).await,
        _ => Ok(files),
    }
}

/// Replaces listed creation times by precise ones, a bounded number of requests at a time.
async fn precise_times(
    client: &ReplicaClient,
    files: Vec<LtxFileInfo>,
) -> Result<Vec<LtxFileInfo>> {
    stream::iter(files)
        .map(|mut f| async move {
            f.created_at = client.created_at(f.key).await?;
            Ok(f)
        })
        .buffered(STAT_CONCURRENCY)
        .try_collect()
        .await
}

/// Plans a restore from a replica's files (any order, all levels).
pub fn choose(
    replica: &str,
    files: &[LtxFileInfo],
    target: Target,
) -> std::result::Result<Plan, RestoreError> {
    if files.is_empty() {
        return Err(RestoreError::NoBackups {
            replica: replica.into(),
        });
    }
    let eligible = |f: &LtxFileInfo| match target {
        Target::Latest => true,
        Target::Txid(t) => f.key.max_txid <= t,
        Target::Timestamp(at) => f.created_at < at,
    };
    let mut chosen: Vec<LtxFileInfo> = files
        .iter()
        .filter(|f| f.key.level == SNAPSHOT_LEVEL && eligible(f))
        .max_by_key(|f| f.key)
        .into_iter()
        .copied()
        .collect();
    let mut cursors: Vec<Cursor> = (0..SNAPSHOT_LEVEL)
        .rev()
        .map(|level| Cursor::new(files, level))
        .collect();
    let mut current = chosen.last().map_or(Txid(0), |f| f.key.max_txid);
    while !matches!(target, Target::Txid(t) if current >= t) {
        let best = cursors
            .iter_mut()
            .filter_map(|c| c.candidate(current, &eligible))
            .max_by_key(rank);
        let Some(next) = best else { break };
        chosen.push(next);
        current = next.key.max_txid;
    }
    check_chain(replica, files, &chosen, &eligible)?;
    check_reaches(replica, files, &chosen, target)?;
    Ok(Plan { files: chosen })
}

/// Checks that the chain starts at TXID 1 and that no eligible file lies beyond a hole after it.
fn check_chain(
    replica: &str,
    files: &[LtxFileInfo],
    chosen: &[LtxFileInfo],
    eligible: &impl Fn(&LtxFileInfo) -> bool,
) -> std::result::Result<(), RestoreError> {
    let first = chosen.first().or_else(|| {
        files
            .iter()
            .filter(|f| eligible(f))
            .min_by_key(|f| (f.key.min_txid, Reverse(f.key.max_txid)))
    });
    if let Some(first) = first.filter(|f| f.key.min_txid != Txid(1)) {
        return Err(RestoreError::NoSnapshot {
            replica: replica.into(),
            file: describe(first.key),
            min: first.key.min_txid,
        });
    }
    let current = chosen.last().map_or(Txid(0), |f| f.key.max_txid);
    let hole = files
        .iter()
        .filter(|f| f.key.level != SNAPSHOT_LEVEL && eligible(f))
        .filter(|f| f.key.min_txid.0 > current.0 + 1)
        .min_by_key(|f| f.key.min_txid);
    // A file too new for the target that covers the gap means retention removed the L0 files
    // it was compacted from: the target falls between the times the levels keep, and the chain
    // ends at the last state before it. No such file means files are missing.
    let retained_gap = files.iter().any(|f| {
        f.key.level != SNAPSHOT_LEVEL
            && !eligible(f)
            && (f.key.min_txid.0..=f.key.max_txid.0).contains(&(current.0 + 1))
    });
    match hole.filter(|_| !retained_gap) {
        Some(next) => Err(RestoreError::NonContiguous {
            replica: replica.into(),
            after: current,
            next: next.key.min_txid,
            level: next.key.level,
        }),
        None => Ok(()),
    }
}

/// Checks that a chain of files reaches the target.
fn check_reaches(
    replica: &str,
    files: &[LtxFileInfo],
    chosen: &[LtxFileInfo],
    target: Target,
) -> std::result::Result<(), RestoreError> {
    let not_available = |reason: String| RestoreError::NotAvailable {
        replica: replica.into(),
        target: target.to_string(),
        reason,
    };
    let newest_txid = files
        .iter()
        .map(|f| f.key.max_txid)
        .max()
        .unwrap_or_default();
    let Some(last) = chosen.last() else {
        let oldest = files.iter().map(|f| f.created_at).min().expect("not empty");
        return Err(not_available(format!(
            "no file qualifies; the oldest file was created at {} and the newest TXID is {newest_txid}",
            format_rfc3339_nano(oldest)
        )));
    };
    match target {
        Target::Txid(t) if last.key.max_txid < t => Err(not_available(format!(
            "the newest TXID in the replica is {newest_txid}"
        ))),
        Target::Timestamp(at) => {
            let newest = files.iter().map(|f| f.created_at).max().expect("not empty");
            if at > newest {
                Err(not_available(format!(
                    "it is after the newest backup (TXID {newest_txid}, created at {})",
                    format_rfc3339_nano(newest)
                )))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// How good a candidate is: the largest Max TXID, then the smallest Min, then the higher level,
/// then the earlier creation time (Litestream's `restoreCandidateBetter`).
fn rank(f: &LtxFileInfo) -> (Txid, Reverse<Txid>, u32, Reverse<SystemTime>) {
    (
        f.key.max_txid,
        Reverse(f.key.min_txid),
        f.key.level,
        Reverse(f.created_at),
    )
}

/// One level's files in TXID order, consumed as the chain grows; each file is looked at once,
/// so planning is linear in the number of files.
struct Cursor {
    files: Vec<LtxFileInfo>,
    next: usize,
    best: Option<LtxFileInfo>,
}

impl Cursor {
    fn new(all: &[LtxFileInfo], level: u32) -> Cursor {
        let mut files: Vec<LtxFileInfo> = all
            .iter()
            .filter(|f| f.key.level == level)
            .copied()
            .collect();
        files.sort_by_key(|f| f.key);
        Cursor {
            files,
            next: 0,
            best: None,
        }
    }

    /// The best eligible file of this level that continues a chain ending at `current`.
    fn candidate(
        &mut self,
        current: Txid,
        eligible: &impl Fn(&LtxFileInfo) -> bool,
    ) -> Option<LtxFileInfo> {
        self.best = self.best.filter(|b| b.key.max_txid > current);
        while let Some(f) = self.files.get(self.next) {
            if f.key.min_txid.0 > current.0 + 1 {
                break;
            }
            self.next += 1;
            if f.key.max_txid > current
                && eligible(f)
                && self.best.is_none_or(|b| rank(f) > rank(&b))
            {
                self.best = Some(*f);
            }
        }
        self.best
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::replica::client::LtxKey;

    fn file(level: u32, min: u64, max: u64, secs: u64) -> LtxFileInfo {
        LtxFileInfo {
            key: LtxKey::new(level, Txid(min), Txid(max)),
            size: 100,
            created_at: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn keys(plan: &Plan) -> Vec<(u32, u64, u64)> {
        plan.files
            .iter()
            .map(|f| (f.key.level, f.key.min_txid.0, f.key.max_txid.0))
            .collect()
    }

    fn at(secs: u64) -> Target {
        Target::Timestamp(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// A snapshot 1-4, L1 1-6 and 7-9, L0 1..=10 one per TXID, created at second TXID*10.
    fn replica() -> Vec<LtxFileInfo> {
        let mut files: Vec<_> = (1..=10).map(|t| file(0, t, t, t * 10)).collect();
        files.extend([file(1, 1, 6, 65), file(1, 7, 9, 95), file(9, 1, 4, 45)]);
        files
    }

    #[test]
    fn latest_takes_the_snapshot_then_the_widest_files() {
        let plan = choose("r", &replica(), Target::Latest).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 4), (1, 1, 6), (1, 7, 9), (0, 10, 10)]);
        assert_eq!(plan.max_txid(), Txid(10));
    }

    #[test]
    fn txid_targets_stop_exactly_and_skip_files_past_them() {
        let plan = choose("r", &replica(), Target::Txid(Txid(8))).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 4), (1, 1, 6), (0, 7, 7), (0, 8, 8)]);
        let plan = choose("r", &replica(), Target::Txid(Txid(4))).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 4)]);
        let plan = choose("r", &replica(), Target::Txid(Txid(3))).unwrap();
        assert_eq!(keys(&plan), [(0, 1, 1), (0, 2, 2), (0, 3, 3)]);
    }

    #[test]
    fn timestamps_take_files_created_strictly_before() {
        // At 60 s: L0 1..5 (created at 10..50 s; 60 s is not before 60 s), snapshot 1-4 (45 s).
        let plan = choose("r", &replica(), at(60)).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 4), (0, 5, 5)]);
        let plan = choose("r", &replica(), at(61)).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 4), (0, 5, 5), (0, 6, 6)]);
    }

    #[test]
    fn equal_ranges_prefer_the_higher_level_then_the_older_file() {
        let files = [file(0, 1, 3, 5), file(2, 1, 3, 9), file(1, 1, 3, 1)];
        let plan = choose("r", &files, Target::Latest).unwrap();
        assert_eq!(keys(&plan), [(2, 1, 3)]);
        let files = [file(0, 1, 2, 5), file(0, 1, 3, 9), file(1, 2, 3, 1)];
        assert_eq!(
            keys(&choose("r", &files, Target::Latest).unwrap()),
            [(0, 1, 3)]
        );
    }

    #[test]
    fn a_time_between_the_l0_files_retention_removed_restores_the_state_before_it() {
        // L0 2..3 were compacted into L1 2-4 (created at 50 s) and removed; L0 4, 5 remain.
        let files = [
            file(9, 1, 1, 1),
            file(1, 2, 4, 50),
            file(0, 4, 4, 40),
            file(0, 5, 5, 55),
            file(0, 6, 6, 70),
        ];
        let plan = choose("r", &files, at(45)).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 1)]);
        let plan = choose("r", &files, at(56)).unwrap();
        assert_eq!(keys(&plan), [(9, 1, 1), (1, 2, 4), (0, 5, 5)]);
        // Without the L1 file, the same gap is files missing.
        let err = choose(
            "r",
            &files[..1]
                .iter()
                .chain(&files[2..])
                .copied()
                .collect::<Vec<_>>(),
            at(45),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("non-contiguous"), "{err}");
    }

    #[test]
    fn holes_name_the_txids_around_them() {
        let files = [file(0, 1, 1, 1), file(0, 2, 7, 2), file(0, 10, 10, 3)];
        let err = choose("r", &files, Target::Latest).unwrap_err().to_string();
        assert!(
            err.contains("after 0000000000000007 the next file starts at 000000000000000a"),
            "{err}"
        );
        let err = choose("r", &files, at(3)).unwrap();
        assert_eq!(err.max_txid(), Txid(7));
        let err = choose("r", &files, Target::Txid(Txid(10)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("non-contiguous"), "{err}");
    }

    #[test]
    fn targets_beyond_the_replica_name_what_it_holds() {
        let err = choose("r", &replica(), Target::Txid(Txid(11)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("newest TXID in the replica is 000000000000000a"),
            "{err}"
        );
        let err = choose("r", &replica(), at(101)).unwrap_err().to_string();
        assert!(err.contains("after the newest backup"), "{err}");
        let err = choose("r", &replica(), at(5)).unwrap_err().to_string();
        assert!(err.contains("no file qualifies"), "{err}");
        let err = choose("r", &[], Target::Latest).unwrap_err();
        assert!(matches!(err, RestoreError::NoBackups { .. }));
    }

    #[test]
    fn a_chain_without_a_snapshot_is_refused() {
        let files = [file(0, 3, 3, 1), file(0, 4, 4, 2)];
        let err = choose("r", &files, Target::Latest).unwrap_err().to_string();
        assert!(err.contains("no snapshot"), "{err}");
    }
}
