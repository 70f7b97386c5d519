//! Restoring a database from a replica as of the latest state, a TXID or a timestamp.
//!
//! [`plan`] chooses the files as Litestream 0.5 does; [`restore`] downloads them in parallel,
//! merges them page by page into one snapshot stream and writes the database beside the output
//! path, checks it with SQLite, and only then renames it into place.

mod apply;
mod error;
mod output;
mod plan;

pub use apply::{restore, Restored};
pub use error::RestoreError;
pub use plan::{choose, plan, Plan, Target};

use crate::replica::client::LtxKey;

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
}

impl RestoreOptions {
    /// Options writing `output` with the defaults: 8 downloads, a quick check, no overwriting.
    pub fn new(output: impl Into<std::path::PathBuf>) -> Self {
        RestoreOptions {
            output: output.into(),
            parallelism: DEFAULT_PARALLELISM,
            integrity_check: IntegrityCheck::default(),
            force: false,
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
