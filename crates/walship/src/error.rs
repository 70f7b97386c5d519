use std::path::PathBuf;

/// Everything that can go wrong in walship; each variant names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or command line is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file of the local store fails its checksums (a disk error): it is never uploaded.
    #[error(
        "local LTX file {} is corrupt ({source}); it was not uploaded. Remove the local store {} \
         to start afresh: walship then captures the database in full",
        path.display(),
        store.display()
    )]
    CorruptLocalFile {
        path: PathBuf,
        store: PathBuf,
        #[source]
        source: ltx::Error,
    },

    /// A replica holds TXIDs this database's local store never wrote: another database's
    /// history, or a store that was deleted or replaced while the replica was unreachable.
    #[error(
        "replica {replica} holds TXIDs up to {remote} but this database's local store ends at \
         {local}: the replica holds another database's history (or the local store was \
         deleted or replaced); nothing is uploaded to it until it is pointed at its own path \
         or emptied, or the local store is removed so that walship starts after the replica's \
         TXIDs"
    )]
    ReplicaAhead {
        replica: String,
        remote: ltx::Txid,
        local: ltx::Txid,
    },

    /// SQLite refused something walship needs from a database.
    #[error("database {}: {reason}", path.display())]
    Db { path: PathBuf, reason: String },

    /// A WAL file is not what SQLite writes.
    #[error("WAL {}: {reason} (at offset {offset})", path.display())]
    Wal {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The HTTP endpoints cannot listen where `addr` says.
    #[error("addr {addr:?}: {reason}")]
    Listen { addr: String, reason: String },

    /// An LTX file is unreadable or could not be written.
    #[error(transparent)]
    Ltx(#[from] ltx::Error),

    /// A replica could not be reached, read or written.
    #[error(transparent)]
    Replica(Box<ReplicaError>),

    /// A restore could not be planned or carried out.
    #[error(transparent)]
    Restore(Box<crate::restore::RestoreError>),
}

impl Error {
    /// Whether trying again soon may succeed: the replica could not be reached or failed in
    /// an unclassified way (a 500, a reset), unlike a missing bucket or refused credentials.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Replica(r) if matches!(r.kind, ReplicaErrorKind::Unreachable | ReplicaErrorKind::Other)
        )
    }
}

impl From<crate::restore::RestoreError> for Error {
    fn from(e: crate::restore::RestoreError) -> Self {
        Error::Restore(Box::new(e))
    }
}

impl From<ReplicaError> for Error {
    fn from(e: ReplicaError) -> Self {
        Error::Replica(Box::new(e))
    }
}

/// A failed replica operation: which replica, doing what, on which object, why, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("replica {replica:?}: cannot {op} {location}: {cause}{}", hint_suffix(.hint))]
pub struct ReplicaError {
    /// The replica's name, as configured.
    pub replica: String,
    /// What the replica client was doing.
    pub op: ReplicaOp,
    /// The object (or level directory) concerned, as a URL or path.
    pub location: String,
    /// The class of failure, for callers that react to it (retry, skip, report).
    pub kind: ReplicaErrorKind,
    /// What the storage or the operating system said.
    pub cause: String,
    /// What the user can do about it, when the cause is a common one.
    pub hint: Option<String>,
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("; hint: {h}"))
        .unwrap_or_default()
}

/// An operation of the replica client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaOp {
    /// Setting up the client from its options.
    Open,
    /// Writing an LTX file.
    Upload,
    /// Listing one level.
    List,
    /// Reading one object's creation time.
    Stat,
    /// Reading an LTX file.
    Download,
    /// Deleting LTX files.
    Delete,
}

impl std::fmt::Display for ReplicaOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplicaOp::Open => "open",
            ReplicaOp::Upload => "upload",
            ReplicaOp::List => "list",
            ReplicaOp::Stat => "read the timestamp of",
            ReplicaOp::Download => "download",
            ReplicaOp::Delete => "delete",
        })
    }
}

/// The classes of replica failure that callers and hints distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaErrorKind {
    /// The object does not exist.
    NotFound,
    /// The bucket (or container) does not exist.
    BucketMissing,
    /// The credentials were refused or lack permission.
    AccessDenied,
    /// The endpoint could not be reached: connection refused, DNS failure, timeout.
    Unreachable,
    /// The options are invalid (a bad prefix, an unreadable CA bundle).
    InvalidConfig,
    /// Anything else.
    Other,
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
