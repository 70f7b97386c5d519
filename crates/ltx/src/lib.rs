//! The LTX file format as Litestream 0.5 reads and writes it.
//!
//! An LTX file holds the pages a range of transactions changed: a 100-byte [`Header`], a block of
//! compressed page frames in ascending page order, a page index for random access, and a
//! [`Trailer`] with a CRC-64 over the file's logical content. See `shared/formats/litestream.md` §1.
//!
//! The [`Encoder`] and [`Decoder`] stream over `Write` and `Read` and hold one page at a time (plus
//! the page index, a few bytes per page). [`PageIndex`] reads single pages from a seekable file,
//! [`compact`] merges a contiguous run of files, and [`database`] converts between LTX snapshots
//! and SQLite database files.

mod checksum;
mod compactor;
pub mod database;
mod decoder;
mod encoder;
mod error;
mod filename;
mod frame;
mod header;
mod index;
mod page;
mod source;

pub use checksum::{page_checksum, Checksum, DatabaseChecksum, CHECKSUM_FLAG};
pub use compactor::{compact, CompactOptions};
pub use decoder::{verify, Decoder};
pub use encoder::{Encoder, EncoderOptions};
pub use error::{Error, Result};
pub use filename::{format_filename, parse_filename};
pub use header::{Header, Trailer, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, TRAILER_SIZE};
pub use index::{PageIndex, PageIndexEntry};
pub use page::{PageEncoding, PageHeader, PAGE_HEADER_FLAG_SIZE, PAGE_HEADER_SIZE};

/// Magic bytes at the start of every LTX file.
pub const MAGIC: &[u8; 4] = b"LTX1";

/// Smallest SQLite page size.
pub const MIN_PAGE_SIZE: u32 = 512;

/// Largest SQLite page size.
pub const MAX_PAGE_SIZE: u32 = 65536;

/// Byte offset of SQLite's pending-byte lock range; the page holding it is never stored.
const PENDING_BYTE: u64 = 0x4000_0000;

/// A transaction ID: Litestream counts syncs, one per L0 file, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Txid(pub u64);

impl Txid {
    /// Parses the 16-hex-digit form used in file names and on the command line.
    pub fn parse(s: &str) -> Option<Txid> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Txid)
    }
}

impl std::fmt::Display for Txid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Whether `size` is a page size SQLite allows.
pub fn is_valid_page_size(size: u32) -> bool {
    (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&size) && size.is_power_of_two()
}

/// The page number of the lock page for a page size: the page that holds SQLite's pending byte.
pub fn lock_pgno(page_size: u32) -> u32 {
    (PENDING_BYTE / u64::from(page_size)) as u32 + 1
}
