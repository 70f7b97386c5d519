//! The WAL reader (`walship::wal`) against a reference reading written from SQLite's recovery
//! rules (`walship_fuzz::wal_model`): the same header, the same valid frames with the same
//! running checksums, the same committed transactions, pages and end position, whatever the
//! size cap and wherever reading resumes.
//!
//! The first input byte picks the mode: even, the rest is a WAL file as it is (seeds are real
//! SQLite WALs); odd, the rest describes a WAL with every checksum right (byte order, page size
//! and the header field holding it, salts, frames and commits) and damage done to it: changed bytes, a cut, trailing bytes, or a restart that
//! rewrote the start with new salts over older frames.

#![no_main]

use std::io::Cursor;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use walship::wal::{WalPosition, WalReader};
use walship_fuzz::wal_model;
use walship_fuzz::Content;

#[derive(Arbitrary, Debug)]
struct Spec {
    big_endian: bool,
    page_size: u8,
    /// The header's page size field when not the pages' size: what another writer, or damage
    /// that kept the checksum right, could leave there.
    page_size_field: Option<u32>,
    checkpoint_seq: u32,
    salts: (u32, u32),
    frames: Vec<FrameSpec>,
    damage: Vec<Damage>,
    max_bytes: u16,
}

#[derive(Arbitrary, Debug)]
struct FrameSpec {
    pgno: u8,
    /// A commit frame, with this database size (grown to at least its page).
    commit: Option<u8>,
    content: Content,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip {
        at: u32,
        xor: u8,
    },
    Truncate {
        at: u32,
    },
    Append(Vec<u8>),
    /// SQLite restarted the WAL: a new header (salt-1 incremented, a new salt-2) and `frames`
    /// new frames written over the start, older frames left behind them.
    Restart {
        salt2: u32,
        frames: u8,
    },
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest, u64::MAX);
        check(rest, u64::from(mode) * 512);
        return;
    }
    let Ok(spec) = Spec::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let page_size = match spec.page_size % 8 {
        0..=3 => 512,
        4 | 5 => 1024,
        6 => 4096,
        _ => 65536,
    };
    let frames: Vec<(u32, u32, Vec<u8>)> = spec
        .frames
        .iter()
        .take(if page_size == 65536 { 4 } else { 40 })
        .map(|f| {
            let pgno = u32::from(f.pgno).max(1);
            let commit = f.commit.map_or(0, |c| u32::from(c).max(pgno));
            (pgno, commit, f.content.page(page_size as usize))
        })
        .collect();
    let write = |salts, frames: &[(u32, u32, Vec<u8>)]| {
        wal_model::write(
            spec.big_endian,
            spec.page_size_field.unwrap_or(page_size),
            page_size,
            spec.checkpoint_seq,
            salts,
            frames,
        )
    };
    let mut wal = write(spec.salts, &frames);
    // Undamaged, every frame is valid.
    if spec.page_size_field.is_none() {
        let h = wal_model::header(&wal).expect("a written header is valid");
        assert_eq!(
            wal_model::frames(&wal, &h, 32, h.checksum).len(),
            frames.len()
        );
    }
    check(&wal, u64::from(spec.max_bytes));

    for damage in spec.damage.iter().take(3) {
        match damage {
            Damage::Flip { at, xor } => {
                if !wal.is_empty() {
                    let at = *at as usize % wal.len();
                    wal[at] ^= (*xor).max(1);
                }
            }
            Damage::Truncate { at } => wal.truncate(*at as usize % (wal.len() + 1)),
            Damage::Append(bytes) => wal.extend_from_slice(bytes),
            Damage::Restart { salt2, frames: n } => {
                let salts = (spec.salts.0.wrapping_add(1), *salt2);
                let n = (usize::from(*n) % (frames.len() + 1)).min(frames.len());
                let new = write(salts, &frames[..n]);
                if new.len() > wal.len() {
                    wal.resize(new.len(), 0);
                }
                wal[..new.len()].copy_from_slice(&new);
            }
        }
        check(&wal, u64::from(spec.max_bytes));
    }
});

/// Reads `wal` with the reader and the reference and compares everything.
fn check(wal: &[u8], max_bytes: u64) {
    let path = Path::new("fuzz-wal");
    let reader = WalReader::open(Cursor::new(wal), path).expect("reading memory cannot fail");
    let (h, mut r) = match (wal_model::header(wal), reader) {
        (None, None) => return,
        (Some(h), Some(r)) => (h, r),
        (want, got) => panic!(
            "header: reference {want:?}, reader {:?}",
            got.map(|r| *r.header())
        ),
    };
    let rh = *r.header();
    assert_eq!(
        (
            rh.big_endian,
            rh.page_size,
            rh.checkpoint_seq,
            rh.salt1,
            rh.salt2,
            rh.checksum
        ),
        (
            h.big_endian,
            h.page_size,
            h.checkpoint_seq,
            h.salt1,
            h.salt2,
            h.checksum
        )
    );
    let size = 24 + u64::from(h.page_size);
    assert_eq!(r.frame_size(), size);
    let start = r.start();
    assert_eq!(
        start,
        WalPosition {
            offset: 32,
            checksum: h.checksum
        }
    );

    // Frame by frame.
    let frames = wal_model::frames(wal, &h, 32, h.checksum);
    let mut pos = start;
    let mut n = 0;
    while let Some((fh, next)) = r.read_frame(pos).unwrap() {
        let f = frames
            .get(n)
            .expect("the reader read past the valid frames");
        assert_eq!((pos.offset, pos.checksum), (f.offset, f.seed));
        assert_eq!((fh.pgno, fh.commit, fh.checksum), (f.pgno, f.commit, f.sum));
        assert_eq!((fh.salt1, fh.salt2), (h.salt1, h.salt2));
        assert_eq!(next.offset, f.offset + size);
        assert_eq!(next.checksum, f.sum);
        let at = f.offset as usize + 24;
        assert!(r.page() == &wal[at..at + h.page_size as usize]);
        pos = next;
        n += 1;
    }
    assert_eq!(
        n,
        frames.len(),
        "the reader stopped before the end of the valid frames"
    );

    // Committed transactions from the start, and from every frame boundary.
    for (k, from) in frames.iter().enumerate().take(8) {
        let resume = WalPosition {
            offset: from.offset,
            checksum: from.seed,
        };
        compare_committed(&mut r, wal, &frames[k..], size, resume, max_bytes);
    }
    if frames.is_empty() {
        compare_committed(&mut r, wal, &[], size, start, max_bytes);
    }

    // Reading in capped steps takes the same transactions as reading everything at once.
    let all = r.committed(start, u64::MAX).unwrap();
    let mut pos = start;
    let mut transactions = 0;
    let mut last = None;
    for _ in 0..=frames.len() {
        let Some(c) = r.committed(pos, max_bytes).unwrap() else {
            break;
        };
        assert!(c.end.offset > pos.offset);
        transactions += c.transactions;
        pos = c.end;
        last = Some(c.end);
    }
    assert_eq!(last, all.as_ref().map(|c| c.end));
    assert_eq!(transactions, all.map_or(0, |c| c.transactions));
}

fn compare_committed(
    r: &mut WalReader<Cursor<&[u8]>>,
    wal: &[u8],
    frames: &[wal_model::Frame],
    size: u64,
    from: WalPosition,
    max_bytes: u64,
) {
    let got = r.committed(from, max_bytes).unwrap();
    let want = wal_model::committed(frames, size, from.offset, max_bytes);
    let (got, want) = match (got, want) {
        (None, None) => return,
        (Some(g), Some(w)) => (g, w),
        (g, w) => panic!("committed from {from:?}: reader {g:?}, reference {w:?}"),
    };
    assert_eq!(got.start, from);
    assert_eq!(
        (
            got.end.offset,
            got.end.checksum,
            got.commit,
            got.transactions
        ),
        (
            want.end_offset,
            want.end_checksum,
            want.commit,
            want.transactions
        )
    );
    let offsets: Vec<(u32, u64)> = got.pages.iter().map(|(p, f)| (*p, f.offset)).collect();
    let expected: Vec<(u32, u64)> = want.pages.iter().map(|(p, o)| (*p, *o)).collect();
    assert_eq!(offsets, expected, "newest frame of each page");
    for (pgno, frame) in &got.pages {
        let f = frames.iter().find(|f| f.offset == frame.offset).unwrap();
        assert_eq!((f.pgno, f.seed), (*pgno, frame.seed));
        let at = frame.offset as usize + 24;
        let page = r
            .read_frame_page(*frame)
            .expect("an unchanged frame reads back");
        assert!(page == &wal[at..at + size as usize - 24]);
    }
}
