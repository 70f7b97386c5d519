//! Compacting a chain into a snapshot: allowed only when the chain's first file is a whole
//! database (a full capture need not start at TXID 1). And merging across a change of page size,
//! which only a whole database at the change makes possible.

use ltx::database::decode_snapshot;
use ltx::{
    compact, CompactOptions, Encoder, EncoderOptions, Header, Txid, HEADER_FLAG_NO_CHECKSUM,
};

const PAGE: u32 = 512;

fn file(min: u64, max: u64, commit: u32, pages: &[(u32, u8)]) -> Vec<u8> {
    file_of(PAGE, min, max, commit, pages)
}

fn file_of(page: u32, min: u64, max: u64, commit: u32, pages: &[(u32, u8)]) -> Vec<u8> {
    let mut h = Header::new(
        page,
        commit,
        Txid(min),
        Txid(max),
        1_700_000_000_000 + max as i64,
    );
    h.flags = HEADER_FLAG_NO_CHECKSUM;
    let mut enc = Encoder::new(Vec::new(), h, EncoderOptions::default()).unwrap();
    for &(pgno, fill) in pages {
        enc.write_page(pgno, &vec![fill; page as usize]).unwrap();
    }
    enc.finish().unwrap().0
}

fn snapshot(inputs: Vec<Vec<u8>>) -> ltx::Result<Vec<u8>> {
    let opts = CompactOptions {
        snapshot: true,
        ..CompactOptions::default()
    };
    let readers = inputs.iter().map(|f| f.as_slice()).collect();
    compact(readers, Vec::new(), opts).map(|(out, _, _)| out)
}

#[test]
fn a_chain_from_a_full_capture_becomes_a_snapshot_from_txid_one() {
    let full = file(5, 5, 3, &[(1, 1), (2, 2), (3, 3)]);
    let next = file(6, 7, 4, &[(2, 20), (4, 40)]);
    let out = snapshot(vec![full, next]).unwrap();
    let (db, h) = decode_snapshot(out.as_slice(), Vec::new()).unwrap();
    assert_eq!((h.min_txid, h.max_txid, h.commit), (Txid(1), Txid(7), 4));
    let fills: Vec<u8> = db.chunks(PAGE as usize).map(|p| p[0]).collect();
    assert_eq!(fills, [1, 20, 3, 40]);
}

#[test]
fn a_chain_missing_pages_is_refused() {
    let hole = file(5, 5, 3, &[(1, 1), (3, 3)]);
    let err = snapshot(vec![hole]).unwrap_err().to_string();
    assert!(err.contains("needs page 2"), "{err}");
    let short = file(5, 5, 3, &[(1, 1), (2, 2)]);
    let err = snapshot(vec![short]).unwrap_err().to_string();
    assert!(err.contains("2 of the database's 3 pages"), "{err}");
}

fn merge(inputs: Vec<Vec<u8>>) -> ltx::Result<(Vec<u8>, Header)> {
    let readers = inputs.iter().map(|f| f.as_slice()).collect();
    compact(readers, Vec::new(), CompactOptions::default()).map(|(out, h, _)| (out, h))
}

#[test]
fn a_page_size_change_starts_over_from_the_whole_database_captured_at_it() {
    let before = file(1, 1, 3, &[(1, 1), (2, 2), (3, 3)]);
    let more = file(2, 2, 3, &[(3, 30)]);
    let changed = file_of(1024, 3, 3, 2, &[(1, 7), (2, 8)]);
    let after = file_of(1024, 4, 5, 3, &[(3, 9)]);
    let (out, h) = merge(vec![before, more, changed, after]).unwrap();
    assert_eq!(
        (h.page_size, h.min_txid, h.max_txid, h.commit),
        (1024, Txid(1), Txid(5), 3)
    );
    let (db, _) = decode_snapshot(out.as_slice(), Vec::new()).unwrap();
    let fills: Vec<u8> = db.chunks(1024).map(|p| p[0]).collect();
    assert_eq!(fills, [7, 8, 9]);
}

#[test]
fn a_page_size_change_without_the_whole_database_is_refused() {
    let before = file(1, 1, 3, &[(1, 1), (2, 2), (3, 3)]);
    let partial = file_of(1024, 2, 2, 3, &[(1, 7)]);
    let err = merge(vec![before, partial]).unwrap_err().to_string();
    assert!(err.contains("page size changes to 1024"), "{err}");
}
