//! The state of every database and replica, gathered for `/status`, `/metrics` and logs.
//!
//! Monitors and uploaders publish what they do on watch channels; a [`StatusBoard`] holds the
//! receiving ends and turns them into one [`StatusReport`] when asked, so nothing on the
//! replication path waits for a reader of the status.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Backend, ReplicaConfig};
use crate::monitor::DbStatus;
use crate::replica::timestamp::format_rfc3339_nano;
use crate::replica::uploader::ReplicaStatus;

/// A replica is "lagging" once its oldest missing capture is older than this many sync
/// intervals (and at least [`MIN_LAGGING_AFTER`]).
const LAGGING_INTERVALS: u32 = 10;
/// The shortest lag that counts as lagging, so a one-second sync interval does not flap.
const MIN_LAGGING_AFTER: Duration = Duration::from_secs(10);

/// Everything a status page shows, collected from the live channels.
pub struct StatusBoard {
    started_at: SystemTime,
    /// Grows when a watched directory gains a database.
    databases: RwLock<Vec<DatabaseEntry>>,
    /// Databases being opened: their replicas are asked where TXIDs stand, which can take up
    /// to a minute when one is unreachable.
    starting: RwLock<BTreeSet<PathBuf>>,
    initial_start_done: AtomicBool,
}

/// A database shown as starting on a [`StatusBoard`] until dropped.
pub struct Starting<'a> {
    board: &'a StatusBoard,
    path: &'a Path,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.board
            .starting
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.path);
    }
}

/// One database on the board.
pub struct DatabaseEntry {
    /// The database file.
    pub path: PathBuf,
    /// What its monitor publishes.
    pub status: watch::Receiver<DbStatus>,
    /// Its replicas, in config order.
    pub replicas: Vec<ReplicaEntry>,
}

/// One replica on the board.
pub struct ReplicaEntry {
    /// Its name, unique within the database.
    pub name: String,
    /// Litestream's type name: file, s3, gs or abs.
    pub kind: &'static str,
    /// Where it is, without credentials.
    pub url: String,
    /// How often it uploads, which sets when it counts as lagging.
    pub sync_interval: Duration,
    /// What its uploader publishes.
    pub status: watch::Receiver<ReplicaStatus>,
}

impl ReplicaEntry {
    /// A board entry for the replica `cfg`, following `status`.
    pub fn new(cfg: &ReplicaConfig, status: watch::Receiver<ReplicaStatus>) -> Self {
        ReplicaEntry {
            name: cfg.name.clone(),
            kind: cfg.backend.type_name(),
            url: display_url(&cfg.backend),
            sync_interval: cfg.sync_interval,
            status,
        }
    }
}

/// The JSON document served at `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub version: &'static str,
    pub pid: u32,
    pub started_at: String,
    pub now: String,
    pub databases: Vec<DatabaseReport>,
    /// Databases not replicating yet: their replicas are being asked where TXIDs stand.
    pub starting: Vec<String>,
}

/// One database in a [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseReport {
    pub path: String,
    /// The newest TXID durable in the local store.
    pub txid: Option<u64>,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    pub captures: u64,
    pub full_captures: u64,
    pub checkpoints: u64,
    pub checkpoint_errors: u64,
    pub checkpoint_seconds: f64,
    pub sync_errors: u64,
    pub sync_seconds: f64,
    pub db_size: u64,
    pub wal_size: u64,
    pub total_wal_bytes: u64,
    pub replicas: Vec<ReplicaReport>,
}

/// How a replica is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Its position is not known yet.
    Starting,
    /// Up to date, or behind by less than the lagging threshold.
    Healthy,
    /// Uploading, but its oldest missing capture is older than the threshold.
    Lagging,
    /// Its last attempt failed; it retries with backoff.
    Failing,
}

/// One replica in a [`DatabaseReport`].
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
    pub state: ReplicaState,
    /// The newest TXID the replica holds.
    pub position: Option<u64>,
    /// How many TXIDs the replica is behind the local store.
    pub lag_txids: Option<u64>,
    /// How long the oldest capture the replica lacks has waited; 0 when up to date.
    pub lag_seconds: Option<f64>,
    pub last_upload: Option<String>,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub files_uploaded: u64,
    pub bytes_uploaded: u64,
    pub lists: u64,
    pub files_deleted: u64,
}

impl StatusBoard {
    /// A board for `databases`, for a process that started at `started_at`.
    pub fn new(started_at: SystemTime, databases: Vec<DatabaseEntry>) -> Self {
        StatusBoard {
            started_at,
            databases: RwLock::new(databases),
            starting: RwLock::default(),
            initial_start_done: AtomicBool::new(false),
        }
    }

    /// The replicas that do not hold their database's last capture, one sentence each.
    pub fn behind(&self) -> Vec<String> {
        let databases = self.databases.read().expect("status board lock");
        let mut out = Vec::new();
        for db in databases.iter() {
            let Some(txid) = db.status.borrow().txid else {
                continue;
            };
            for r in &db.replicas {
                let position = r.status.borrow().position;
                if position.is_none_or(|p| p < txid) {
                    out.push(format!(
                        "replica {:?} of {} holds TXID {} but the last capture is {txid}",
                        r.name,
                        db.path.display(),
                        position.map_or("none".to_string(), |p| p.to_string())
                    ));
                }
            }
        }
        out
    }

    /// Shows `path` as starting while the guard lives (an open that fails or is cancelled
    /// leaves nothing behind).
    pub fn begin<'a>(&'a self, path: &'a Path) -> Starting<'a> {
        self.starting
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf());
        Starting { board: self, path }
    }

    /// Marks the databases configured at start as started (or given up), so that
    /// [`StatusBoard::is_starting`] turns false; databases found later in watched directories
    /// only show under `starting`.
    pub fn started(&self) {
        self.initial_start_done.store(true, Ordering::Relaxed);
    }

    /// Whether the databases configured at start are still starting.
    pub fn is_starting(&self) -> bool {
        !self.initial_start_done.load(Ordering::Relaxed)
    }

    /// The databases still starting.
    pub fn starting(&self) -> Vec<String> {
        self.starting
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Adds a database that started replicating.
    pub fn add(&self, entry: DatabaseEntry) {
        self.databases
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    /// The state of everything as of now.
    pub fn report(&self) -> StatusReport {
        let now = SystemTime::now();
        StatusReport {
            version: crate::VERSION,
            pid: std::process::id(),
            started_at: format_rfc3339_nano(self.started_at),
            now: format_rfc3339_nano(now),
            databases: self
                .databases
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|d| d.report(now))
                .collect(),
            starting: self.starting(),
        }
    }
}

impl DatabaseEntry {
    fn report(&self, now: SystemTime) -> DatabaseReport {
        let db = self.status.borrow().clone();
        let replicas = self.replicas.iter().map(|r| r.report(&db, now)).collect();
        DatabaseReport {
            path: self.path.display().to_string(),
            txid: db.txid.map(|t| t.0),
            last_sync: db.last_sync.map(format_rfc3339_nano),
            last_error: db.last_error,
            captures: db.captures,
            full_captures: db.full_captures,
            checkpoints: db.checkpoints,
            checkpoint_errors: db.checkpoint_errors,
            checkpoint_seconds: db.checkpoint_time.as_secs_f64(),
            sync_errors: db.sync_errors,
            sync_seconds: db.sync_time.as_secs_f64(),
            db_size: db.db_size,
            wal_size: db.wal_size,
            total_wal_bytes: db.total_wal_bytes,
            replicas,
        }
    }
}

impl ReplicaEntry {
    fn report(&self, db: &DbStatus, now: SystemTime) -> ReplicaReport {
        let r = self.status.borrow().clone();
        let lag_txids = match (db.txid, r.position) {
            (Some(txid), Some(pos)) => Some(txid.0.saturating_sub(pos.0)),
            (None, Some(_)) => Some(0),
            _ => None,
        };
        let lag = r.position.and_then(|pos| db.waiting_since(pos, now));
        let threshold = (self.sync_interval * LAGGING_INTERVALS).max(MIN_LAGGING_AFTER);
        let state = if r.last_error.is_some() {
            ReplicaState::Failing
        } else if r.position.is_none() {
            ReplicaState::Starting
        } else if lag.is_some_and(|l| l > threshold) {
            ReplicaState::Lagging
        } else {
            ReplicaState::Healthy
        };
        ReplicaReport {
            name: self.name.clone(),
            kind: self.kind,
            url: self.url.clone(),
            state,
            position: r.position.map(|t| t.0),
            lag_txids,
            lag_seconds: lag.map(|l| l.as_secs_f64()),
            last_upload: r.last_upload.map(format_rfc3339_nano),
            last_error: r.last_error,
            failing_since: r.failing_since.map(format_rfc3339_nano),
            files_uploaded: r.files_uploaded,
            bytes_uploaded: r.bytes_uploaded,
            lists: r.lists,
            files_deleted: r.files_deleted,
        }
    }
}

/// Where a replica is, as a URL that carries no credentials.
pub fn display_url(backend: &Backend) -> String {
    match backend {
        Backend::File { path } => format!("file://{}", path.display()),
        Backend::S3(s3) => {
            let mut url = format!("s3://{}/{}", s3.bucket, s3.path);
            let mut query = Vec::new();
            if let Some(endpoint) = &s3.endpoint {
                query.push(format!("endpoint={endpoint}"));
            }
            if let Some(region) = &s3.region {
                query.push(format!("region={region}"));
            }
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query.join("&"));
            }
            url
        }
        Backend::Gcs { bucket, path } => format!("gs://{bucket}/{path}"),
        Backend::Abs(abs) => match &abs.account_name {
            Some(account) => format!("abs://{account}@{}/{}", abs.container, abs.path),
            None => format!("abs://{}/{}", abs.container, abs.path),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ltx::Txid;

    fn board(db: DbStatus, replica: ReplicaStatus, sync: Duration) -> StatusBoard {
        let (_db_tx, db_rx) = watch::channel(db);
        let (_r_tx, r_rx) = watch::channel(replica);
        StatusBoard::new(
            SystemTime::now(),
            vec![DatabaseEntry {
                path: PathBuf::from("/data/app.db"),
                status: db_rx,
                replicas: vec![ReplicaEntry {
                    name: "s3".into(),
                    kind: "s3",
                    url: "s3://bucket/app".into(),
                    sync_interval: sync,
                    status: r_rx,
                }],
            }],
        )
    }

    fn db_with_captures(captures: &[(u64, Duration)]) -> DbStatus {
        let now = SystemTime::now();
        let mut db = DbStatus::default();
        for &(txid, age) in captures {
            db.record_capture(Txid(txid), now - age);
        }
        db
    }

    #[test]
    fn a_replica_at_the_newest_txid_is_healthy_with_no_lag() {
        let db = db_with_captures(&[(1, Duration::from_secs(60)), (2, Duration::from_secs(1))]);
        let replica = ReplicaStatus {
            position: Some(Txid(2)),
            ..ReplicaStatus::default()
        };
        let r = &board(db, replica, Duration::from_secs(1))
            .report()
            .databases[0]
            .replicas[0];
        assert_eq!(r.state, ReplicaState::Healthy);
        assert_eq!((r.lag_txids, r.lag_seconds), (Some(0), Some(0.0)));
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_missing_capture() {
        let db = db_with_captures(&[
            (1, Duration::from_secs(300)),
            (2, Duration::from_secs(120)),
            (3, Duration::from_secs(5)),
        ]);
        let replica = ReplicaStatus {
            position: Some(Txid(1)),
            ..ReplicaStatus::default()
        };
        let r = &board(db, replica, Duration::from_secs(1))
            .report()
            .databases[0]
            .replicas[0];
        assert_eq!(r.lag_txids, Some(2));
        let lag = r.lag_seconds.unwrap();
        assert!((119.0..125.0).contains(&lag), "lag {lag}");
        assert_eq!(r.state, ReplicaState::Lagging);
    }

    #[test]
    fn a_short_lag_is_not_lagging_and_an_error_is_failing() {
        let db = db_with_captures(&[(1, Duration::from_secs(3))]);
        let replica = ReplicaStatus {
            position: Some(Txid(0)),
            ..ReplicaStatus::default()
        };
        let b = board(db.clone(), replica, Duration::from_secs(1));
        assert_eq!(
            b.report().databases[0].replicas[0].state,
            ReplicaState::Healthy
        );
        let failing = ReplicaStatus {
            position: Some(Txid(0)),
            last_error: Some("connection refused".into()),
            failing_since: Some(SystemTime::now()),
            ..ReplicaStatus::default()
        };
        let b = board(db, failing, Duration::from_secs(1));
        let r = &b.report().databases[0].replicas[0];
        assert_eq!(r.state, ReplicaState::Failing);
        assert_eq!(r.last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn unknown_position_is_starting() {
        let b = board(
            DbStatus::default(),
            ReplicaStatus::default(),
            Duration::from_secs(1),
        );
        let r = &b.report().databases[0].replicas[0];
        assert_eq!(r.state, ReplicaState::Starting);
        assert_eq!((r.position, r.lag_txids, r.lag_seconds), (None, None, None));
    }

    #[test]
    fn urls_never_show_credentials() {
        let cfg = crate::config::Config::from_args(
            "/tmp/x.db",
            &["s3://bucket/app?endpoint=http://127.0.0.1:9000&region=eu-west-1"],
            &|name: &str| match name {
                "LITESTREAM_ACCESS_KEY_ID" => Some("AKIDSECRETID".to_string()),
                "LITESTREAM_SECRET_ACCESS_KEY" => Some("verysecretkey".to_string()),
                _ => None,
            },
        )
        .unwrap();
        let url = display_url(&cfg.dbs[0].replicas[0].backend);
        assert_eq!(
            url,
            "s3://bucket/app?endpoint=http://127.0.0.1:9000&region=eu-west-1"
        );
        assert!(!url.contains("SECRET") && !url.contains("secret"));
    }
}
