//! Restoring a database from a replica as of the latest state, a TXID or a timestamp.
//!
//! [`plan`] chooses the files as Litestream 0.5 does; [`restore`] applies them one at a time, in
//! TXID order, into a new database file beside the output path while the next ones download in
//! parallel, checks it with SQLite, and only then renames it into place.
//!
//! Replicas written by Litestream 0.3 (`generations/...`) restore too ([`legacy`]); when a
//! replica holds both layouts, the newer backup wins, as in Litestream 0.5.

mod applier;
mod apply;
mod error;
mod fetch;
pub mod follow;
pub mod legacy;
mod output;
mod plan;
mod progress;

pub use apply::Restored;
pub use error::RestoreError;
pub use legacy::{LegacyBackups, LegacyObject, LegacyPlan};
pub use plan::{choose, Plan, Target};
pub use progress::{NoProgress, Progress};

use std::sync::Arc;

use crate::error::{ReplicaErrorKind, ReplicaOp};
use crate::replica::client::{LtxKey, ReplicaClient};

/// What a restore will read: LTX files, or a Litestream 0.3 snapshot and WAL segments.
#[derive(Debug, Clone, PartialEq)]
pub enum RestorePlan {
    /// LTX files, as Litestream 0.5 writes them (and walship).
    Ltx(Plan),
    /// A Litestream 0.3 backup.
    Legacy(LegacyPlan),
}

/// How many times a restore plans again when files it listed were deleted before it read them.
const MAX_REPLANS: u32 = 10;

/// Lists the replica (LTX files and any Litestream 0.3 backup) and plans a restore to `target`
/// from the format Litestream 0.5 would choose: the 0.3 backup when there are no LTX files, or
/// when it is the newer one ([`legacy::prefer_legacy`]); never for a TXID. A listed file deleted
/// before its creation time was read makes it list again (see [`deleted_meanwhile`]).
pub async fn plan(client: &ReplicaClient, target: Target) -> crate::Result<RestorePlan> {
    let mut replans = 0;
    loop {
        match plan_once(client, target).await {
            Err(e) if deleted_meanwhile(&e) && replans < MAX_REPLANS => {
                replans += 1;
                tracing::info!(replica = client.name(), "{e}; listing the replica again");
            }
            planned => return planned,
        }
    }
}

async fn plan_once(client: &ReplicaClient, target: Target) -> crate::Result<RestorePlan> {
    let (files, legacy) = futures::try_join!(plan::list(client, target), legacy::list(client))?;
    if legacy::prefer_legacy(&files, &legacy, target) {
        return Ok(RestorePlan::Legacy(legacy.choose(client.name(), target)?));
    }
    if files.is_empty() && !legacy.is_empty() {
        return Err(RestoreError::NotAvailable {
            replica: client.name().into(),
            target: target.to_string(),
            reason: legacy::TXID_NOT_LEGACY.into(),
        }
        .into());
    }
    Ok(RestorePlan::Ltx(choose(client.name(), &files, target)?))
}

/// Plans a restore to `target` and carries it out into `opts.output`; when a file of the plan
/// was deleted before it was read, it plans again from a new listing and starts over.
pub async fn restore_to(
    client: &ReplicaClient,
    target: Target,
    opts: &RestoreOptions,
) -> crate::Result<Restored> {
    let mut replans = 0;
    loop {
        let planned = plan(client, target).await?;
        match restore(client, &planned, opts).await {
            Err(e) if deleted_meanwhile(&e) && replans < MAX_REPLANS => {
                replans += 1;
                tracing::info!(replica = client.name(), "{e}; planning the restore again");
            }
            restored => return restored,
        }
    }
}

/// Whether `e` says that a replica file is not there. A replicator running beside the restore
/// deletes files once retention no longer needs them (L0 files a compacted file covers, level
/// files below the oldest kept snapshot), so a file listed a moment ago may be gone: a new
/// listing holds the files that replaced it. A file missing from a listing that was not deleted
/// since shows as a gap in the new plan instead, and fails it.
fn deleted_meanwhile(e: &crate::Error) -> bool {
    match e {
        crate::Error::Replica(r) => {
            r.kind == ReplicaErrorKind::NotFound
                && matches!(r.op, ReplicaOp::Stat | ReplicaOp::Download)
        }
        crate::Error::Restore(r) => {
            matches!(&**r, RestoreError::File { cause, .. } if deleted_meanwhile(cause))
        }
        _ => false,
    }
}

/// Restores the database `plan` describes into `opts.output`. Nothing appears at the output
/// unless every file was read whole, checksums matched and the integrity check passed.
pub async fn restore(
    client: &ReplicaClient,
    plan: &RestorePlan,
    opts: &RestoreOptions,
) -> crate::Result<Restored> {
    match plan {
        RestorePlan::Ltx(plan) => apply::restore_ltx(client, plan, opts).await,
        RestorePlan::Legacy(plan) => legacy::restore(client, plan, opts).await,
    }
}

/// Downloads in flight at once unless told otherwise (Litestream's `-parallelism` default).
pub const DEFAULT_PARALLELISM: usize = 8;

/// How the restored database is checked before it is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntegrityCheck {
    /// No check.
    None,
    /// `PRAGMA quick_check`: structure, without comparing indexes to tables.
    #[default]
    Quick,
    /// `PRAGMA integrity_check`: everything.
    Full,
}

impl IntegrityCheck {
    /// The pragma that runs the check, if any.
    pub fn pragma(self) -> Option<&'static str> {
        match self {
            IntegrityCheck::None => None,
            IntegrityCheck::Quick => Some("quick_check"),
            IntegrityCheck::Full => Some("integrity_check"),
        }
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The database file to write.
    pub output: std::path::PathBuf,
    /// Downloads in flight at once.
    pub parallelism: usize,
    /// The check run before the database is put in place.
    pub integrity_check: IntegrityCheck,
    /// Replace an existing output and remove its `-wal`, `-shm` and `-journal` files.
    pub force: bool,
    /// Told how the downloads advance.
    pub progress: Arc<dyn Progress>,
}

impl RestoreOptions {
    /// Options writing `output` with the defaults: 8 downloads, a quick check, no overwriting,
    /// no progress reports.
    pub fn new(output: impl Into<std::path::PathBuf>) -> Self {
        RestoreOptions {
            output: output.into(),
            parallelism: DEFAULT_PARALLELISM,
            integrity_check: IntegrityCheck::default(),
            force: false,
            progress: Arc::new(NoProgress),
        }
    }
}

/// Names an LTX file in messages: its level, TXID range and file name.
pub fn describe(key: LtxKey) -> String {
    format!(
        "LTX file level {} TXIDs {}-{} ({})",
        key.level,
        key.min_txid,
        key.max_txid,
        ltx::format_filename(key.min_txid, key.max_txid)
    )
}
