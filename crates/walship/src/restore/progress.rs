//! How a restore tells a caller that its downloads advance (for a progress bar), without the
//! restore knowing how, or whether, that is shown.

use std::fmt::Debug;

/// Told how a restore's downloads advance. Downloads run in parallel, so calls come from
/// several tasks at once and must be quick; every method does nothing unless implemented.
pub trait Progress: Send + Sync + Debug {
    /// Downloads begin: `files` files of `bytes` bytes in all (sizes as the replica listed them).
    fn start(&self, _files: usize, _bytes: u64) {}

    /// `bytes` more bytes of one of the files arrived.
    fn advance(&self, _bytes: u64) {}

    /// One file arrived whole: its name as messages give it, and its size.
    fn file_done(&self, _file: &str, _size: u64) {}

    /// Every file arrived (and for an LTX restore, was applied); the rest of the work on the
    /// database and its check follow.
    fn downloaded(&self) {}
}

/// Reports nothing: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
