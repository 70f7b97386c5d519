//! Reading SQLite WAL files: the header, frames, the checksum chain, and committed transactions.
//!
//! A WAL is a 32-byte header followed by frames (a 24-byte header and one page). Each frame's
//! checksum continues the one before it, and carries the header's salts; the valid WAL ends at the
//! first frame that breaks either, which is how SQLite itself finds the end after a crash or a
//! restart that overwrote the WAL in place. Only frames up to the last commit frame count.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Size of the WAL header.
pub const WAL_HEADER_SIZE: u64 = 32;

/// Size of each frame's header.
pub const WAL_FRAME_HEADER_SIZE: u64 = 24;

const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;

/// The running checksum of the WAL: two 32-bit sums.
pub type WalChecksum = (u32, u32);

/// The WAL header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// Whether checksums are computed over big-endian words (magic 0x377f0683).
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: WalChecksum,
}

impl WalHeader {
    /// Parses and checks a header; `None` means the bytes are not a valid WAL header (SQLite
    /// treats such a WAL as empty).
    pub fn parse(b: &[u8; 32]) -> Option<WalHeader> {
        let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let big_endian = match u32_at(0) {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return None,
        };
        // The WAL stores 65536 as it is: unlike the database header's 16-bit field, 1 does not
        // stand for it, and SQLite finds a WAL whose field is 1 empty.
        let page_size = u32_at(8);
        let header = WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: u32_at(12),
            salt1: u32_at(16),
            salt2: u32_at(20),
            checksum: (u32_at(24), u32_at(28)),
        };
        let valid = u32_at(4) == WAL_VERSION
            && ltx::is_valid_page_size(page_size)
            && checksum(big_endian, (0, 0), &b[..24]) == header.checksum;
        valid.then_some(header)
    }
}

/// The header of one WAL frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// Database size in pages after this frame's transaction, on a commit frame; 0 otherwise.
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: WalChecksum,
}

impl FrameHeader {
    fn parse(b: &[u8; 24]) -> FrameHeader {
        let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        FrameHeader {
            pgno: u32_at(0),
            commit: u32_at(4),
            salt1: u32_at(8),
            salt2: u32_at(12),
            checksum: (u32_at(16), u32_at(20)),
        }
    }
}

/// SQLite's WAL checksum: Fibonacci-weighted sums over 32-bit words, continued from `seed`.
pub fn checksum(big_endian: bool, seed: WalChecksum, data: &[u8]) -> WalChecksum {
    debug_assert!(data.len() % 8 == 0);
    let (mut s0, mut s1) = seed;
    for pair in data.chunks_exact(8) {
        let (a, b) = (
            pair[0..4].try_into().unwrap(),
            pair[4..8].try_into().unwrap(),
        );
        let (x, y) = if big_endian {
            (u32::from_be_bytes(a), u32::from_be_bytes(b))
        } else {
            (u32::from_le_bytes(a), u32::from_le_bytes(b))
        };
        s0 = s0.wrapping_add(x).wrapping_add(s1);
        s1 = s1.wrapping_add(y).wrapping_add(s0);
    }
    (s0, s1)
}

/// Where reading a WAL can resume: the offset of the next frame and the checksum before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPosition {
    pub offset: u64,
    pub checksum: WalChecksum,
}

/// A frame found by a scan: its offset and the running checksum before it, so that a later read
/// can prove the frame is still the one scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub offset: u64,
    pub seed: WalChecksum,
}

/// The committed transactions found in a stretch of WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Where the stretch began.
    pub start: WalPosition,
    /// Just past the last commit frame; where the next read resumes.
    pub end: WalPosition,
    /// Database size in pages after the last transaction.
    pub commit: u32,
    /// For each page written, its newest frame (pages past `commit` dropped).
    pub pages: BTreeMap<u32, FrameRef>,
    /// How many transactions (commit frames) the stretch holds.
    pub transactions: u32,
}

/// Reads frames from a WAL file, verifying salts and the checksum chain.
pub struct WalReader<R> {
    r: R,
    path: PathBuf,
    header: WalHeader,
    frame: Vec<u8>,
}

impl<R: Read + Seek> WalReader<R> {
    /// Reads the WAL header; `None` when the WAL is empty or its header is not valid.
    pub fn open(mut r: R, path: &Path) -> Result<Option<WalReader<R>>> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        r.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut b = [0u8; 32];
        if !read_full(&mut r, &mut b).map_err(io)? {
            return Ok(None);
        }
        let Some(header) = WalHeader::parse(&b) else {
            return Ok(None);
        };
        let frame = vec![0u8; (WAL_FRAME_HEADER_SIZE + u64::from(header.page_size)) as usize];
        Ok(Some(WalReader {
            r,
            path: path.to_path_buf(),
            header,
            frame,
        }))
    }

    /// The WAL header.
    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// The position of the first frame.
    pub fn start(&self) -> WalPosition {
        WalPosition {
            offset: WAL_HEADER_SIZE,
            checksum: self.header.checksum,
        }
    }

    /// Size of one frame, header included.
    pub fn frame_size(&self) -> u64 {
        self.frame.len() as u64
    }

    /// Reads the frame at `pos`; `None` if it is past the end of the valid WAL.
    ///
    /// On success the page is in [`WalReader::page`] and the returned position is the next frame's.
    pub fn read_frame(&mut self, pos: WalPosition) -> Result<Option<(FrameHeader, WalPosition)>> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        self.r.seek(SeekFrom::Start(pos.offset)).map_err(io)?;
        if !read_full(&mut self.r, &mut self.frame).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })? {
            return Ok(None);
        }
        let fh = FrameHeader::parse(self.frame[..24].try_into().unwrap());
        if fh.salt1 != self.header.salt1 || fh.salt2 != self.header.salt2 {
            return Ok(None);
        }
        let sum = checksum(self.header.big_endian, pos.checksum, &self.frame[..8]);
        let sum = checksum(self.header.big_endian, sum, &self.frame[24..]);
        if sum != fh.checksum || fh.pgno == 0 {
            return Ok(None);
        }
        Ok(Some((
            fh,
            WalPosition {
                offset: pos.offset + self.frame_size(),
                checksum: sum,
            },
        )))
    }

    /// The page of the frame last read.
    pub fn page(&self) -> &[u8] {
        &self.frame[WAL_FRAME_HEADER_SIZE as usize..]
    }

    /// Reads the page of a frame found by a scan, proving it unchanged since: same salts, same
    /// checksum from the same seed. A WAL restarted in between fails with an error.
    pub fn read_frame_page(&mut self, frame: FrameRef) -> Result<&[u8]> {
        let pos = WalPosition {
            offset: frame.offset,
            checksum: frame.seed,
        };
        match self.read_frame(pos)? {
            Some(_) => Ok(self.page()),
            None => Err(Error::Wal {
                path: self.path.clone(),
                offset: frame.offset,
                reason: "frame changed while being captured (the WAL was restarted); \
                         the next sync captures the database in full"
                    .into(),
            }),
        }
    }

    /// Scans from `start` to the end of the valid WAL and returns the committed transactions,
    /// or `None` if no transaction was committed after `start`. At most `max_bytes` of frames are
    /// taken, cut at a commit boundary (at least one transaction is always taken).
    pub fn committed(&mut self, start: WalPosition, max_bytes: u64) -> Result<Option<Committed>> {
        self.committed_until(start, max_bytes, u32::MAX)
    }

    /// As [`WalReader::committed`], but only frames numbered up to `max_frame` (from 1).
    ///
    /// While any connection has the database open, a transaction is committed when the WAL
    /// index (`mxFrame` in `-shm`) takes it in, not when its frames are written: a writer that
    /// dies between the two leaves valid frames with a commit mark past `mxFrame`, which the next
    /// writer overwrites. They must never be captured.
    pub fn committed_until(
        &mut self,
        start: WalPosition,
        max_bytes: u64,
        max_frame: u32,
    ) -> Result<Option<Committed>> {
        let end = WAL_HEADER_SIZE.saturating_add(u64::from(max_frame) * self.frame_size());
        let mut pos = start;
        let mut pending: BTreeMap<u32, FrameRef> = BTreeMap::new();
        let mut done: Option<Committed> = None;
        while pos.offset < end {
            let Some((fh, next)) = self.read_frame(pos)? else {
                break;
            };
            let frame = FrameRef {
                offset: pos.offset,
                seed: pos.checksum,
            };
            pending.insert(fh.pgno, frame);
            if fh.commit != 0 {
                let c = done.get_or_insert_with(|| Committed {
                    start,
                    end: next,
                    commit: 0,
                    pages: BTreeMap::new(),
                    transactions: 0,
                });
                c.pages.append(&mut pending);
                c.commit = fh.commit;
                c.end = next;
                c.transactions += 1;
                if next.offset - start.offset >= max_bytes {
                    break;
                }
            }
            pos = next;
        }
        if let Some(c) = done.as_mut() {
            let commit = c.commit;
            c.pages.retain(|pgno, _| *pgno <= commit);
        }
        Ok(done)
    }
}

/// Fills `buf`; returns false if the input ended first (a short final frame is not an error).
fn read_full(r: &mut impl Read, mut buf: &mut [u8]) -> std::io::Result<bool> {
    while !buf.is_empty() {
        match r.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
