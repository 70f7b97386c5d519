//! Regression tests for bugs found by the fuzz targets in fuzz/ (cargo fuzz).

use ltx::{compact, CompactOptions, Encoder, EncoderOptions, Error, Header, Txid};

/// An LTX file of one page whose TXIDs end at `max`.
fn file(min: u64, max: u64) -> Vec<u8> {
    let header = Header::new(512, 1, Txid(min), Txid(max), 0);
    let mut enc = Encoder::new(Vec::new(), header, EncoderOptions::default()).unwrap();
    enc.write_page(1, &[7u8; 512]).unwrap();
    enc.finish().unwrap().0
}

/// Found by fuzz/fuzz_targets/ltx_decode.rs: checking that the second input continues the first
/// computed `max_txid + 1`, which overflowed (a panic with overflow checks) when the first input
/// ended at the largest TXID.
#[test]
fn compact_after_the_largest_txid_is_an_error() {
    let last = file(2, u64::MAX);
    for next in [file(2, u64::MAX), file(u64::MAX, u64::MAX)] {
        let inputs = vec![&last[..], &next[..]];
        match compact(inputs, Vec::new(), CompactOptions::default()) {
            Err(Error::MergeInput { input: 1, source }) => {
                assert!(source.to_string().contains("do not continue"), "{source}")
            }
            other => panic!("expected a TXID error, got {:?}", other.map(|_| ())),
        }
    }
}
