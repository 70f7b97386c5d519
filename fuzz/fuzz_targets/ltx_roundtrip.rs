//! A fuzzer-chosen history of a database written as a run of LTX files (a snapshot or not,
//! with or without checksums, either page encoding), then:
//! - each file decodes to exactly the pages written, is sound, and `verify` passes;
//! - with checksums, each file's pre-apply checksum is the previous file's post-apply checksum,
//!   and the post-apply checksum is that of the database after the file (the checksum chain);
//! - a snapshot restores to the database image;
//! - `compact` of the run holds the newest version of every page within the last commit size,
//!   and as a snapshot it succeeds exactly when that is every page of the database;
//! - a damaged file (bytes changed, cut short, or trailing bytes) is refused, unless the change
//!   left its content intact; random access to it never panics.

#![no_main]

use std::collections::BTreeMap;
use std::io::Cursor;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ltx::{
    lock_pgno, CompactOptions, Header, PageEncoding, PageIndex, Txid, CHECKSUM_FLAG,
    HEADER_FLAG_NO_CHECKSUM,
};
use walship_fuzz::ltx_check::{self, check_sound, database_checksum, snapshot_image};
use walship_fuzz::Content;

#[derive(Arbitrary, Debug)]
struct Input {
    page_size: u8,
    checksums: bool,
    frame_encoding: bool,
    frame_output: bool,
    /// The first file is a snapshot of this many pages (its page specs cycled), else `None`.
    snapshot: Option<u8>,
    files: Vec<FileSpec>,
    damage: Option<Damage>,
}

#[derive(Arbitrary, Debug)]
struct FileSpec {
    extra_txids: u8,
    timestamp: u32,
    /// Change of the commit size from the previous file (it never falls below the pages written).
    commit_delta: i8,
    wal: Option<(u16, u16, u32, u32)>,
    pages: Vec<PageSpec>,
}

#[derive(Arbitrary, Debug)]
struct PageSpec {
    /// Small page numbers, or (when `near_lock`) pages around the lock page.
    pgno: u8,
    near_lock: bool,
    content: Content,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip {
        file: u8,
        at: u32,
        xor: u8,
    },
    Truncate {
        file: u8,
        at: u32,
    },
    Append {
        file: u8,
        bytes: Vec<u8>,
    },
    /// Bytes written over the file at `at` (counted back from the end when `from_end`, where the
    /// page index and trailer are).
    Overwrite {
        file: u8,
        at: u16,
        from_end: bool,
        bytes: Vec<u8>,
    },
}

struct File {
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
    post_apply: u64,
}

fn page_size(choice: u8) -> u32 {
    // Mostly small pages, which keep iterations fast; every SQLite size now and then.
    match choice % 16 {
        0..=7 => 512,
        8..=11 => 1024,
        12 | 13 => 4096,
        n => 512 << (n as u32 - 14 + (u32::from(choice) / 16) % 8).min(7),
    }
}

/// Builds the files of the history, tracking the database each one leaves behind.
fn build(input: &Input, size: u32) -> Option<Vec<File>> {
    let lock = lock_pgno(size);
    let flags = if input.checksums {
        0
    } else {
        HEADER_FLAG_NO_CHECKSUM
    };
    // The database after each file: page -> content.
    let mut db: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    // Pages written once and cut off by a shrink; a later file growing over one rewrites it, as
    // SQLite writes every page it adds.
    let mut ghosts: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut files: Vec<File> = Vec::new();
    let mut commit = 0u32;
    let mut next_txid = 1u64;
    // About 64 KiB of pages per file keeps an iteration within milliseconds.
    let max_pages = (65536 / size).clamp(2, 40);
    for (i, spec) in input.files.iter().take(4).enumerate() {
        let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let snapshot = i == 0 && input.snapshot.is_some();
        if snapshot {
            let n = u32::from(input.snapshot.unwrap()) % (max_pages + 1);
            commit = if n == 0 && !input.checksums { 1 } else { n };
            let contents: Vec<&Content> = spec.pages.iter().map(|p| &p.content).collect();
            for pgno in (1..=commit).filter(|p| *p != lock) {
                let page = match contents.len() {
                    0 => vec![0u8; size as usize],
                    n => contents[pgno as usize % n].page(size as usize),
                };
                pages.insert(pgno, page);
            }
        } else {
            if i == 0 {
                next_txid = 2;
            }
            for p in spec.pages.iter().take(max_pages as usize) {
                let pgno = if p.near_lock {
                    lock - 2 + u32::from(p.pgno % 5)
                } else {
                    1 + u32::from(p.pgno % 64)
                };
                if pgno != lock {
                    pages.insert(pgno, p.content.page(size as usize));
                }
            }
            let top = pages.keys().next_back().copied().unwrap_or(0);
            commit = commit
                .saturating_add_signed(i32::from(spec.commit_delta))
                .max(top);
            for (pgno, page) in ghosts.range(..=commit) {
                pages.entry(*pgno).or_insert_with(|| page.clone());
            }
            if commit == 0 && !input.checksums {
                commit = 1;
            }
        }
        for (pgno, page) in &pages {
            db.insert(*pgno, page.clone());
        }
        ghosts.retain(|pgno, _| *pgno > commit);
        ghosts.extend(db.split_off(&(commit + 1)));
        // The database before this file: the previous file's, or empty before the first.
        let pre = files.last().map_or(CHECKSUM_FLAG, |f| f.post_apply);
        let min = next_txid;
        let max = min + u64::from(spec.extra_txids % 3);
        next_txid = max + 1;
        let mut header = Header::new(
            size,
            commit,
            Txid(min),
            Txid(max),
            i64::from(spec.timestamp),
        );
        header.flags = flags;
        if input.checksums && !snapshot {
            header.pre_apply_checksum = ltx::Checksum(pre);
        }
        if let Some((offset, len, salt1, salt2)) = spec.wal {
            header.wal_offset = i64::from(offset) + 32;
            header.wal_size = i64::from(len);
            header.wal_salt1 = salt1;
            header.wal_salt2 = salt2;
        }
        let post_apply = if input.checksums {
            database_checksum(db.iter().map(|(p, v)| (*p, v.as_slice())))
        } else {
            0
        };
        files.push(File {
            header,
            pages: pages.into_iter().collect(),
            post_apply,
        });
    }
    (!files.is_empty()).then_some(files)
}

fuzz_target!(|input: Input| {
    let size = page_size(input.page_size);
    let Some(files) = build(&input, size) else {
        return;
    };
    let encoding = if input.frame_encoding {
        PageEncoding::Frame
    } else {
        PageEncoding::Block
    };

    let mut encoded = Vec::new();
    let mut prev_post: Option<u64> = None;
    for f in &files {
        let post = (input.checksums && !f.header.is_snapshot()).then_some(f.post_apply);
        let (bytes, trailer) =
            ltx_check::encode(f.header, encoding, &f.pages, post).expect("a valid file encodes");
        let d = ltx_check::decode(&bytes).expect("an encoded file decodes");
        check_sound(&bytes, &d);
        assert_eq!(d.header, f.header);
        assert_eq!(d.trailer, trailer);
        assert!(
            d.pages == f.pages,
            "decoded pages differ from those written"
        );
        assert_eq!(ltx::verify(&bytes[..]).unwrap(), (f.header, trailer));
        // The checksum chain.
        assert_eq!(d.trailer.post_apply_checksum.0, f.post_apply);
        if input.checksums {
            if let Some(prev) = prev_post {
                assert_eq!(
                    d.header.pre_apply_checksum.0, prev,
                    "pre-apply continues the chain"
                );
            }
        }
        prev_post = Some(d.trailer.post_apply_checksum.0);
        if f.header.is_snapshot() {
            let (image, _) = ltx::database::decode_snapshot(&bytes[..], Vec::new()).unwrap();
            assert!(image == snapshot_image(&d));
        }
        encoded.push(bytes);
    }

    // Compaction: the newest version of each page within the last commit size.
    let last = files.last().unwrap().header;
    let mut newest: BTreeMap<u32, &Vec<u8>> = BTreeMap::new();
    for f in &files {
        for (pgno, page) in &f.pages {
            newest.insert(*pgno, page);
        }
    }
    newest.retain(|pgno, _| *pgno <= last.commit);
    let out_encoding = if input.frame_output {
        PageEncoding::Frame
    } else {
        PageEncoding::Block
    };
    let flags = files[0].header.flags;
    let last_post = files.last().unwrap().post_apply;
    let inputs = || encoded.iter().map(|b| &b[..]).collect::<Vec<_>>();
    let opts = CompactOptions {
        flags,
        encoding: out_encoding,
        snapshot: false,
    };
    // A run that starts with a snapshot compacts to a snapshot, which needs every page.
    let first = files[0].header;
    // Every key of `newest` is a distinct page in 1..=commit other than the lock page.
    let pages_in_db = last.commit - u32::from(last.lock_pgno() <= last.commit);
    let whole = newest.len() == pages_in_db as usize;
    for snapshot in [false, true] {
        let opts = CompactOptions { snapshot, ..opts };
        let possible = whole || !(snapshot || first.is_snapshot());
        match ltx::compact(inputs(), Vec::new(), opts) {
            Ok((out, h, _)) => {
                assert!(possible, "a snapshot written without every page");
                let c = ltx_check::decode(&out).expect("compacted file decodes");
                check_sound(&out, &c);
                assert_eq!((c.header, c.trailer.post_apply_checksum.0), (h, last_post));
                let got: BTreeMap<u32, &Vec<u8>> = c.pages.iter().map(|(p, v)| (*p, v)).collect();
                assert!(got == newest, "compaction did not keep the newest pages");
                let min = if snapshot { Txid(1) } else { first.min_txid };
                assert_eq!(
                    (h.min_txid, h.max_txid, h.commit, h.timestamp),
                    (min, last.max_txid, last.commit, last.timestamp)
                );
                if !h.is_snapshot() {
                    assert_eq!(h.pre_apply_checksum, first.pre_apply_checksum);
                } else {
                    let (image, _) = ltx::database::decode_snapshot(&out[..], Vec::new()).unwrap();
                    assert!(image == snapshot_image(&c));
                }
            }
            Err(e) => assert!(!possible, "compaction failed (snapshot: {snapshot}): {e}"),
        }
    }

    // Damage one file: it must be refused, or decode to exactly what was written.
    let Some(damage) = input.damage else {
        return;
    };
    let (index, damaged, benign_possible) = match damage {
        Damage::Flip { file, at, xor } => {
            let i = usize::from(file) % encoded.len();
            let mut b = encoded[i].clone();
            let at = at as usize % b.len();
            b[at] ^= xor.max(1);
            (i, b, true)
        }
        Damage::Truncate { file, at } => {
            let i = usize::from(file) % encoded.len();
            let b = encoded[i][..at as usize % encoded[i].len()].to_vec();
            (i, b, false)
        }
        Damage::Append { file, bytes } => {
            let i = usize::from(file) % encoded.len();
            let mut b = encoded[i].clone();
            b.extend_from_slice(if bytes.is_empty() { &[0] } else { &bytes });
            (i, b, false)
        }
        Damage::Overwrite {
            file,
            at,
            from_end,
            bytes,
        } => {
            let i = usize::from(file) % encoded.len();
            let mut b = encoded[i].clone();
            let len = b.len();
            let at = usize::from(at) % len;
            let at = if from_end { len - 1 - at } else { at };
            let n = bytes.len().min(len - at);
            b[at..at + n].copy_from_slice(&bytes[..n]);
            (i, b, true)
        }
    };
    // Random access never panics, whatever the damage.
    if let Ok(index) = PageIndex::read(&mut Cursor::new(&damaged)) {
        let mut page = vec![0u8; index.header().page_size as usize];
        for entry in index.entries().iter().take(64) {
            let _ = index.read_page(&mut Cursor::new(&damaged), entry.pgno, &mut page);
        }
    }
    match ltx_check::decode(&damaged) {
        Ok(d) => {
            assert!(benign_possible, "a cut or extended file was accepted");
            check_sound(&damaged, &d);
            let f = &files[index];
            assert!(
                d.header == f.header && d.pages == f.pages,
                "a damaged file decoded to other content"
            );
        }
        Err(_) => {
            assert!(ltx::verify(&damaged[..]).is_err());
            let mut all = inputs();
            all[index] = &damaged;
            assert!(
                ltx::compact(
                    all,
                    Vec::new(),
                    CompactOptions {
                        flags,
                        ..Default::default()
                    }
                )
                .is_err(),
                "compaction accepted a damaged input"
            );
        }
    }
});
