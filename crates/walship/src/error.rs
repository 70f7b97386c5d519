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

    /// An LTX file is unreadable or could not be written.
    #[error(transparent)]
    Ltx(#[from] ltx::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
