//! Property tests: round trips over random page sets, and corruption always detected.

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;

use common::{decode, encode, header, page_bytes, Chunky, Fill};
use ltx::{compact, CompactOptions, Error, PageEncoding, PageIndex};
use proptest::prelude::*;

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        Just(Fill::Zero),
        Just(Fill::Random),
        Just(Fill::Pattern),
        Just(Fill::HalfRandom)
    ]
}

fn encoding() -> impl Strategy<Value = PageEncoding> {
    prop_oneof![Just(PageEncoding::Block), Just(PageEncoding::Frame)]
}

fn page_size() -> impl Strategy<Value = u32> {
    (9u32..=16).prop_map(|shift| 1 << shift)
}

/// A page size and a page set small enough to keep a case around 256 KiB.
fn page_set() -> impl Strategy<Value = (u32, BTreeMap<u32, Vec<u8>>)> {
    pages_of(page_size(), 256 * 1024)
}

/// A small file's worth of pages, for tests that decode it once per byte.
fn small_page_set() -> impl Strategy<Value = (u32, BTreeMap<u32, Vec<u8>>)> {
    pages_of(prop_oneof![Just(512u32), Just(1024)], 4 * 1024)
}

fn pages_of(
    size: impl Strategy<Value = u32>,
    budget: usize,
) -> impl Strategy<Value = (u32, BTreeMap<u32, Vec<u8>>)> {
    size.prop_flat_map(move |ps| {
        let max_pages = (budget / ps as usize).clamp(1, 40);
        prop::collection::btree_map(1u32..200, (fill(), any::<u64>()), 1..=max_pages).prop_map(
            move |m| {
                let pages = m
                    .into_iter()
                    .map(|(pgno, (f, seed))| (pgno, page_bytes(ps, f, seed)))
                    .collect();
                (ps, pages)
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip((ps, pages) in page_set(), enc in encoding(), chunk in 1usize..64, txid in 2u64..1000) {
        let commit = *pages.keys().last().unwrap() + 3;
        let h = header(ps, commit, txid, txid + 2);
        let (file, trailer) = encode(h, &pages, enc);

        let (h2, got, t2) = decode(&file[..]).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(t2, trailer);
        prop_assert!(got == pages, "pages differ after a round trip");

        // The same through a reader that returns a few bytes at a time.
        let (_, got, _) = decode(Chunky { data: &file, chunk }).unwrap();
        prop_assert!(got == pages);

        // Random access through the index.
        let index = PageIndex::read(&mut Cursor::new(&file)).unwrap();
        prop_assert_eq!(index.entries().len(), pages.len());
        let mut buf = vec![0u8; ps as usize];
        for (pgno, data) in &pages {
            prop_assert!(index.read_page(&mut Cursor::new(&file), *pgno, &mut buf).unwrap());
            prop_assert!(&buf == data, "page {} differs through the index", pgno);
        }
        prop_assert!(!index.read_page(&mut Cursor::new(&file), commit, &mut buf).unwrap());
    }

    #[test]
    fn snapshot_round_trip(ps in page_size(), n in 1u32..12, f in fill(), seed in any::<u64>(), enc in encoding()) {
        let pages: BTreeMap<u32, Vec<u8>> = (1..=n).map(|p| (p, page_bytes(ps, f, seed ^ u64::from(p)))).collect();
        let (file, _) = encode(header(ps, n, 1, 9), &pages, enc);
        let (_, got, _) = decode(&file[..]).unwrap();
        prop_assert!(got == pages);
    }

    /// Any byte flipped anywhere is an error, unless it sits inside compressed page data and the
    /// page still decompresses to the very same bytes (LZ4 can encode a run of equal bytes in
    /// several ways; the format checksums the decompressed pages, so such a file is still sound).
    #[test]
    fn every_flip_is_detected_or_harmless((ps, pages) in small_page_set(), enc in encoding(), xor in 1u8..=255) {
        let commit = *pages.keys().last().unwrap();
        let h = header(ps, commit, 5, 5);
        let (file, _) = encode(h, &pages, enc);
        let index = PageIndex::read(&mut Cursor::new(&file)).unwrap();
        let in_page_data = |pos: u64| index.entries().iter().any(|e| pos >= e.offset + 10 && pos < e.offset + e.size);
        for pos in 0..file.len() {
            let mut bad = file.clone();
            bad[pos] ^= xor;
            match decode(&bad[..]) {
                Err(_) => {}
                Ok((h2, got, _)) => {
                    prop_assert!(in_page_data(pos as u64), "flip at {} of {} went undetected", pos, file.len());
                    prop_assert!(h2 == h && got == pages, "flip at {} gave different content", pos);
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error((ps, pages) in small_page_set(), enc in encoding()) {
        let commit = *pages.keys().last().unwrap();
        let (file, _) = encode(header(ps, commit, 3, 4), &pages, enc);
        for len in 0..file.len() {
            prop_assert!(decode(&file[..len]).is_err(), "truncation to {} bytes went undetected", len);
            prop_assert!(PageIndex::read(&mut Cursor::new(&file[..len])).is_err() || len >= file.len());
        }
    }

    /// Compaction keeps, for every page, the newest version, and drops pages past the last commit.
    #[test]
    fn compaction_matches_a_model(
        ps in prop_oneof![Just(512u32), Just(4096)],
        files in prop::collection::vec((prop::collection::btree_map(1u32..40, any::<u64>(), 0..10), 20u32..45, 1u64..3), 1..8),
        enc in encoding(),
    ) {
        let mut model: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut inputs = Vec::new();
        let mut next_txid = 2u64;
        for (pages, commit, span) in &files {
            let pages: BTreeMap<u32, Vec<u8>> = pages
                .iter()
                .filter(|(p, _)| **p <= *commit)
                .map(|(p, seed)| (*p, page_bytes(ps, Fill::Random, *seed)))
                .collect();
            // Overlapping ranges are allowed as long as each file reaches further.
            let min = next_txid.saturating_sub(1).max(2);
            let max = next_txid + span - 1;
            next_txid = max + 1;
            let (file, _) = encode(header(ps, *commit, min, max), &pages, enc);
            inputs.push(file);
            model.extend(pages);
        }
        let last_commit = files.last().unwrap().1;
        model.retain(|p, _| *p <= last_commit);

        let readers: Vec<&[u8]> = inputs.iter().map(|f| &f[..]).collect();
        let (out, h, _) = compact(readers, Vec::new(), CompactOptions { encoding: enc, ..Default::default() }).unwrap();
        let (h2, got, _) = decode(&out[..]).unwrap();
        prop_assert_eq!(h, h2);
        prop_assert_eq!(h.commit, last_commit);
        prop_assert_eq!(h.max_txid.0, next_txid - 1);
        prop_assert!(got == model, "merged pages differ from the model");
    }
}

/// Every value of every byte: outside compressed page data each change is detected; inside it,
/// a change is detected or decodes to the very same page (for example the match-length nibble of
/// an LZ4 block's last token, which decoders ignore). A wrong page is never returned.
#[test]
fn exhaustive_byte_changes_never_yield_wrong_content() {
    for enc in [PageEncoding::Block, PageEncoding::Frame] {
        let pages: BTreeMap<u32, Vec<u8>> = [(3u32, page_bytes(512, Fill::Random, 3))].into();
        let h = header(512, 8, 4, 6);
        let (file, _) = encode(h, &pages, enc);
        let index = PageIndex::read(&mut Cursor::new(&file)).unwrap();
        let entry = index.entries()[0];
        let data_start = entry.offset + if enc == PageEncoding::Block { 10 } else { 6 };
        let data = data_start..entry.offset + entry.size;
        let mut harmless = 0;
        for pos in 0..file.len() {
            for xor in 1..=255u8 {
                let mut bad = file.clone();
                bad[pos] ^= xor;
                if let Ok((h2, got, _)) = decode(&bad[..]) {
                    assert!(
                        data.contains(&(pos as u64)),
                        "{enc:?}: change 0x{xor:02x} at {pos} went undetected"
                    );
                    assert!(
                        h2 == h && got == pages,
                        "{enc:?}: change 0x{xor:02x} at {pos} gave other content"
                    );
                    harmless += 1;
                }
            }
        }
        // Only the final token's match nibble (15 values) of the one LZ4 block may be ignored.
        assert!(
            harmless <= 15,
            "{enc:?}: {harmless} changes were harmless, expected at most 15"
        );
    }
}

#[test]
fn errors_say_what_and_where() {
    let pages: BTreeMap<u32, Vec<u8>> = [(1u32, page_bytes(4096, Fill::Random, 1))].into();
    let (file, _) = encode(header(4096, 1, 1, 1), &pages, PageEncoding::Block);

    let mut bad = file.clone();
    bad[8] = 0x13; // page size
    let msg = decode(&bad[..]).unwrap_err().to_string();
    assert!(
        msg.contains("offset 8") && msg.contains("page size"),
        "{msg}"
    );

    let msg = decode(&file[..file.len() - 3]).unwrap_err().to_string();
    assert!(
        msg.contains("truncated") && msg.contains("trailer"),
        "{msg}"
    );

    let mut bad = file.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    match decode(&bad[..]).unwrap_err() {
        Error::ChecksumMismatch { offset, .. } => assert_eq!(offset, file.len() as u64 - 8),
        e => panic!("expected a checksum mismatch, got {e}"),
    }

    let mut extra = file.clone();
    extra.push(0);
    let msg = decode(&extra[..]).unwrap_err().to_string();
    assert!(msg.contains("after the trailer"), "{msg}");
}

#[test]
fn encoder_refuses_what_the_format_forbids() {
    use ltx::{Encoder, EncoderOptions};
    let page = vec![0u8; 4096];
    let mut enc = Encoder::new(
        Vec::new(),
        header(4096, 10, 2, 2),
        EncoderOptions::default(),
    )
    .unwrap();
    enc.write_page(5, &page).unwrap();
    assert!(enc.write_page(5, &page).is_err(), "repeated page");
    assert!(enc.write_page(4, &page).is_err(), "descending page");
    assert!(enc.write_page(11, &page).is_err(), "page beyond commit");
    assert!(enc.write_page(6, &page[..100]).is_err(), "short page");

    let lock = ltx::lock_pgno(4096);
    let mut enc = Encoder::new(
        Vec::new(),
        header(4096, lock + 1, 2, 2),
        EncoderOptions::default(),
    )
    .unwrap();
    assert!(enc.write_page(lock, &page).is_err(), "lock page");

    let mut snap =
        Encoder::new(Vec::new(), header(4096, 3, 1, 2), EncoderOptions::default()).unwrap();
    assert!(
        snap.write_page(2, &page).is_err(),
        "snapshot must start at page 1"
    );
    snap.write_page(1, &page).unwrap();
    snap.write_page(2, &page).unwrap();
    assert!(snap.finish().is_err(), "snapshot missing page 3");

    assert!(Encoder::new(Vec::new(), header(4096, 0, 2, 2), EncoderOptions::default()).is_err());
}

#[test]
fn snapshot_skips_the_lock_page() {
    let ps = 512;
    let lock = ltx::lock_pgno(ps);
    let commit = lock + 2;
    let mut enc = ltx::Encoder::new(
        Vec::new(),
        header(ps, commit, 1, 1),
        ltx::EncoderOptions::default(),
    )
    .unwrap();
    let page = page_bytes(ps, Fill::Pattern, 3);
    for pgno in (1..=commit).filter(|p| *p != lock) {
        enc.write_page(pgno, &page).unwrap();
    }
    let (file, _) = enc.finish().unwrap();
    let (out, h) = ltx::database::decode_snapshot(&file[..], Vec::new()).unwrap();
    assert_eq!(h.commit, commit);
    assert_eq!(out.len(), commit as usize * ps as usize);
    let lock_at = (lock as usize - 1) * ps as usize;
    assert!(out[lock_at..lock_at + ps as usize].iter().all(|b| *b == 0));
    assert_eq!(
        &out[lock_at + ps as usize..lock_at + 2 * ps as usize],
        &page[..]
    );
}

#[test]
fn compaction_rejects_gaps_and_names_the_input() {
    let pages: BTreeMap<u32, Vec<u8>> = [(1u32, vec![1u8; 512])].into();
    let (a, _) = encode(header(512, 1, 2, 3), &pages, PageEncoding::Block);
    let (b, _) = encode(header(512, 1, 5, 5), &pages, PageEncoding::Block);
    let err = compact(vec![&a[..], &b[..]], Vec::new(), CompactOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input 1") && err.contains("do not continue"),
        "{err}"
    );

    let mut corrupt = b.clone();
    corrupt[120] ^= 0xff;
    let (c, _) = encode(header(512, 1, 4, 4), &pages, PageEncoding::Block);
    let mut corrupt_c = c.clone();
    let n = corrupt_c.len();
    corrupt_c[n - 1] ^= 1;
    let err = compact(
        vec![&a[..], &corrupt_c[..]],
        Vec::new(),
        CompactOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("input 1") && err.contains("checksum"), "{err}");
}
