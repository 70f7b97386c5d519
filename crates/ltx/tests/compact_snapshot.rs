//! Compacting a chain into a snapshot: allowed only when the chain's first file is a whole
//! database (a full capture need not start at TXID 1).

use ltx::database::decode_snapshot;
use ltx::{
    compact, CompactOptions, Encoder, EncoderOptions, Header, Txid, HEADER_FLAG_NO_CHECKSUM,
};

const PAGE: u32 = 512;

fn file(min: u64, max: u64, commit: u32, pages: &[(u32, u8)]) -> Vec<u8> {
    let mut h = Header::new(
        PAGE,
        commit,
        Txid(min),
        Txid(max),
        1_700_000_000_000 + max as i64,
    );
    h.flags = HEADER_FLAG_NO_CHECKSUM;
    let mut enc = Encoder::new(Vec::new(), h, EncoderOptions::default()).unwrap();
    for &(pgno, fill) in pages {
        enc.write_page(pgno, &vec![fill; PAGE as usize]).unwrap();
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
