//! A reference reading of a WAL file, written from SQLite's own recovery (`walIndexRecover` and
//! `walDecodeFrame` in wal.c), to hold `walship::wal` against; and a writer of valid WALs.
//!
//! SQLite's rules: the header is valid when the magic is 0x377f0682/3, the page size field is a
//! power of two in 512..=65536 (the WAL stores it as is; unlike the database header, 1 does not
//! mean 65536), and the header's checksum matches. (SQLite refuses to open a WAL whose version
//! is not 3007000; the reader treats it as empty.) A frame is valid when its salts equal the
//! header's, its page number is not 0, and its checksum continues the chain; the valid WAL ends
//! at the first frame that is not, and only frames up to the last commit frame count.

use std::collections::BTreeMap;

/// SQLite's `walChecksumBytes`: sums over pairs of 32-bit words in the WAL's byte order.
pub fn checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    assert!(data.len() % 8 == 0);
    let word = |b: &[u8]| {
        let a: [u8; 4] = b.try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let (mut s1, mut s2) = seed;
    for i in (0..data.len()).step_by(8) {
        s1 = s1.wrapping_add(word(&data[i..i + 4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&data[i + 4..i + 8])).wrapping_add(s1);
    }
    (s1, s2)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// A WAL header as SQLite accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: (u32, u32),
}

/// The header of `wal`, or `None` when SQLite would treat the WAL as holding nothing.
pub fn header(wal: &[u8]) -> Option<Header> {
    let b = wal.get(..32)?;
    let magic = be32(b, 0);
    let page_size = be32(b, 8);
    if magic & 0xFFFF_FFFE != 0x377f_0682
        || !page_size.is_power_of_two()
        || !(512..=65536).contains(&page_size)
        || be32(b, 4) != 3_007_000
    {
        return None;
    }
    let big_endian = magic & 1 == 1;
    let sum = checksum(big_endian, (0, 0), &b[..24]);
    (sum == (be32(b, 24), be32(b, 28))).then_some(Header {
        big_endian,
        page_size,
        checkpoint_seq: be32(b, 12),
        salt1: be32(b, 16),
        salt2: be32(b, 20),
        checksum: sum,
    })
}

/// One valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub pgno: u32,
    pub commit: u32,
    /// The running checksum before this frame, and after it.
    pub seed: (u32, u32),
    pub sum: (u32, u32),
}

/// The valid frames from `offset` on, the running checksum before it being `seed`.
pub fn frames(wal: &[u8], h: &Header, offset: u64, seed: (u32, u32)) -> Vec<Frame> {
    let size = 24 + h.page_size as usize;
    let mut out = Vec::new();
    let (mut at, mut sum) = (offset as usize, seed);
    while let Some(f) = wal.get(at..at + size) {
        let pgno = be32(f, 0);
        if pgno == 0 || be32(f, 8) != h.salt1 || be32(f, 12) != h.salt2 {
            break;
        }
        let next = checksum(h.big_endian, checksum(h.big_endian, sum, &f[..8]), &f[24..]);
        if next != (be32(f, 16), be32(f, 20)) {
            break;
        }
        out.push(Frame {
            offset: at as u64,
            pgno,
            commit: be32(f, 4),
            seed: sum,
            sum: next,
        });
        sum = next;
        at += size;
    }
    out
}

/// What `WalReader::committed` should find: the frames up to the last commit frame, cut after
/// the first commit frame at which `max_bytes` is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub end_offset: u64,
    pub end_checksum: (u32, u32),
    pub commit: u32,
    pub transactions: u32,
    /// Newest frame offset per page, pages past `commit` dropped.
    pub pages: BTreeMap<u32, u64>,
}

/// The committed transactions in `frames` (as [`frames`] returns them), read from `start`.
pub fn committed(
    frames: &[Frame],
    frame_size: u64,
    start: u64,
    max_bytes: u64,
) -> Option<Committed> {
    let mut result: Option<Committed> = None;
    let mut pending = BTreeMap::new();
    for f in frames {
        pending.insert(f.pgno, f.offset);
        if f.commit == 0 {
            continue;
        }
        let end = f.offset + frame_size;
        let c = result.get_or_insert(Committed {
            end_offset: end,
            end_checksum: f.sum,
            commit: 0,
            transactions: 0,
            pages: BTreeMap::new(),
        });
        c.pages.append(&mut pending);
        c.commit = f.commit;
        c.transactions += 1;
        c.end_offset = end;
        c.end_checksum = f.sum;
        if end - start >= max_bytes {
            break;
        }
    }
    if let Some(c) = result.as_mut() {
        let commit = c.commit;
        c.pages.retain(|pgno, _| *pgno <= commit);
    }
    result
}

/// Writes a WAL: the header, then each `(pgno, commit, page)` frame chained. The header's page
/// size field is `page_size_field`; every checksum is right, so the WAL is valid exactly when
/// that field is a valid page size equal to the pages' length.
pub fn write(
    big_endian: bool,
    page_size_field: u32,
    page_size: u32,
    checkpoint_seq: u32,
    salts: (u32, u32),
    frames: &[(u32, u32, Vec<u8>)],
) -> Vec<u8> {
    let magic: u32 = if big_endian { 0x377f_0683 } else { 0x377f_0682 };
    let mut out = Vec::new();
    for v in [
        magic,
        3_007_000,
        page_size_field,
        checkpoint_seq,
        salts.0,
        salts.1,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut sum = checksum(big_endian, (0, 0), &out);
    out.extend_from_slice(&sum.0.to_be_bytes());
    out.extend_from_slice(&sum.1.to_be_bytes());
    for (pgno, commit, page) in frames {
        assert_eq!(page.len(), page_size as usize);
        let mut head = Vec::with_capacity(24);
        for v in [*pgno, *commit, salts.0, salts.1] {
            head.extend_from_slice(&v.to_be_bytes());
        }
        sum = checksum(big_endian, checksum(big_endian, sum, &head[..8]), page);
        head.extend_from_slice(&sum.0.to_be_bytes());
        head.extend_from_slice(&sum.1.to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(page);
    }
    out
}
