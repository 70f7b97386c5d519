//! The upload loop of one replica: ships the database's local L0 files in TXID order.
//!
//! Each replica has its own loop and its own position (the newest TXID it holds), so a slow or
//! failing replica holds back neither the database nor the other replicas. The position comes
//! from the replica itself when the loop starts, so a restart resumes where the replica is.

use std::time::{Duration, SystemTime};

use ltx::Txid;
use tokio::sync::watch;

use crate::monitor::DbStatus;
use crate::replica::client::ReplicaClient;
use crate::store::LocalStore;
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
}

impl Default for UploaderOptions {
    fn default() -> Self {
        UploaderOptions {
            sync_interval: Duration::from_secs(1),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
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
}

/// The upload loop of one replica of one database.
pub struct Uploader {
    client: ReplicaClient,
    store: LocalStore,
    db: watch::Receiver<DbStatus>,
    status: watch::Sender<ReplicaStatus>,
    opts: UploaderOptions,
}

impl Uploader {
    /// A loop uploading `store`'s L0 files to `client`, woken by `db`'s captures.
    pub fn new(
        client: ReplicaClient,
        store: LocalStore,
        db: watch::Receiver<DbStatus>,
        opts: UploaderOptions,
    ) -> (Uploader, watch::Receiver<ReplicaStatus>) {
        let (status, rx) = watch::channel(ReplicaStatus::default());
        let uploader = Uploader {
            client,
            store,
            db,
            status,
            opts,
        };
        (uploader, rx)
    }

    /// Uploads until `stop` turns true, then makes one last pass bounded by `final_timeout`.
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
        match tokio::time::timeout(final_timeout, self.pass()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.report_error(&e),
            Err(_) => tracing::warn!(
                replica = self.client.name(),
                "final upload did not finish within {final_timeout:?}"
            ),
        }
    }

    /// Returns at once if there is something to upload, else when the database captures more.
    async fn caught_up_then_changed(&mut self) {
        let position = self.status.borrow().position;
        let behind = |db: &DbStatus| db.txid.is_some() && db.txid > position;
        if behind(&self.db.borrow_and_update()) || self.status.borrow().last_error.is_some() {
            return;
        }
        if self.db.wait_for(behind).await.is_err() {
            // The monitor is gone; only the stop signal can end the loop now.
            std::future::pending::<()>().await;
        }
    }

    /// Uploads every local L0 file newer than the replica's position, in TXID order.
    async fn pass(&mut self) -> Result<()> {
        let known = self.status.borrow().position;
        let position = match known {
            Some(p) => p,
            None => self.client.max_txid(0).await?.unwrap_or(Txid(0)),
        };
        self.status.send_modify(|s| s.position = Some(position));
        let mut position = position;
        for file in self.store.list(0)? {
            if file.max_txid <= position {
                continue;
            }
            if file.min_txid.0 != position.0 + 1 {
                return Err(Error::Gap {
                    replica: self.client.name().to_string(),
                    position,
                    next: file.min_txid,
                });
            }
            let info = self.client.put_file(0, &file.path).await?;
            position = file.max_txid;
            self.status.send_modify(|s| {
                s.position = Some(position);
                s.last_upload = Some(SystemTime::now());
                s.last_error = None;
                s.failing_since = None;
                s.files_uploaded += 1;
                s.bytes_uploaded += info.size;
            });
            tracing::debug!(replica = self.client.name(), txid = %position, "uploaded");
        }
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
