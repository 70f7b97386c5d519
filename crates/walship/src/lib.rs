//! walship: a streaming SQLite replicator whose replicas Litestream 0.5 restores.
//!
//! The engine grows here module by module (see `shared/DESIGN.md`); the `walship` binary in
//! `main.rs` is its command line.

pub mod compaction;
pub mod config;
pub mod db;
pub mod discover;
mod error;
pub mod metrics;
pub mod monitor;
pub mod replica;
pub mod restore;
pub mod server;
pub mod status;
pub mod store;
pub mod wal;

pub use error::{Error, ReplicaError, ReplicaErrorKind, Result};

/// The version printed by `walship version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
