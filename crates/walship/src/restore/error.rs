use std::path::PathBuf;

use ltx::Txid;

/// Why a restore could not be planned or carried out; each names the replica, file or path.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The replica holds no LTX files at all.
    #[error("replica {replica:?} holds no backups: nothing to restore")]
    NoBackups {
        /// The replica's name.
        replica: String,
    },

    /// The replica holds backups, but none that reach the requested state.
    #[error("replica {replica:?}: cannot restore {target}: {reason}")]
    NotAvailable {
        /// The replica's name.
        replica: String,
        /// The requested state, as the user gave it.
        target: String,
        /// What the replica does hold.
        reason: String,
    },

    /// Files the restore needs are missing: the TXIDs after `after` up to `next` are in no file.
    #[error(
        "replica {replica:?}: non-contiguous LTX files: after {after} the next file starts at \
         {next} (level {level}); the files for the TXIDs between are missing"
    )]
    NonContiguous {
        /// The replica's name.
        replica: String,
        /// The last TXID the chain of files reaches.
        after: Txid,
        /// The first TXID of the next file found.
        next: Txid,
        /// The level of that file.
        level: u32,
    },

    /// The chain of files does not start with a full state of the database.
    #[error(
        "replica {replica:?}: no snapshot to start from: the oldest usable file, {file}, starts \
         at TXID {min}, not 0000000000000001"
    )]
    NoSnapshot {
        /// The replica's name.
        replica: String,
        /// The first file of the chain, as [`super::describe`] names it.
        file: String,
        /// Its first TXID.
        min: Txid,
    },

    /// One file of the plan is missing, unreadable or corrupt.
    // The cause is part of the message and deliberately not a `#[source]`, so that printing
    // the error chain does not repeat it.
    #[error("{file}: {cause}")]
    File {
        /// The file, as [`super::describe`] names it.
        file: String,
        /// What went wrong with it.
        cause: Box<crate::Error>,
    },

    /// An object of a Litestream 0.3 backup (or the backup as a whole) is missing, unreadable
    /// or corrupt.
    #[error("{object} in replica {replica:?} ({location}): {reason}")]
    Legacy {
        /// What the object is, and its key below the replica's prefix.
        object: String,
        /// The replica's name.
        replica: String,
        /// The object's full key.
        location: String,
        /// What went wrong with it.
        reason: String,
    },

    /// A Litestream 0.3 backup lacks a WAL segment between two it holds.
    #[error(
        "replica {replica:?}: the Litestream 0.3 backup is missing {missing}: after {after} the \
         next object is {next}"
    )]
    LegacyGap {
        /// The replica's name.
        replica: String,
        /// The segment that should follow, as Litestream 0.3 names it.
        missing: String,
        /// The last snapshot or segment before the gap.
        after: String,
        /// The first segment after it.
        next: String,
    },

    /// The output path cannot be restored into as it is.
    #[error("cannot restore to {}: {reason}", path.display())]
    Output {
        /// The path concerned.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },

    /// The restored database failed SQLite's check; it was not put in place.
    #[error(
        "the restored database failed PRAGMA {check}: {result}; {} was not written",
        path.display()
    )]
    Integrity {
        /// The output path that was not written.
        path: PathBuf,
        /// `quick_check` or `integrity_check`.
        check: &'static str,
        /// SQLite's answer.
        result: String,
    },
}
