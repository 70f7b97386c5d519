//! Arbitrary bytes as an LTX file. Nothing may panic; what the decoder accepts must be sound
//! (see `ltx_check::check_sound`), and every reader must agree on whether the file is sound:
//! `verify`, the streaming decoder, `decode_snapshot`, and `compact` of the file alone (a merge
//! of the file with itself always fails). A sound file re-encodes, in either page encoding, to
//! a sound file with the same pages, byte for byte the same on a second encoding.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use ltx::{CompactOptions, Header, PageEncoding, PageIndex, HEADER_SIZE};
use walship_fuzz::ltx_check::{self, check_sound, snapshot_image};

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.first_chunk::<HEADER_SIZE>() {
        if let Ok(h) = Header::from_bytes(head) {
            // Only the 20 reserved bytes at the end are not round-tripped.
            assert_eq!(&h.to_bytes()[..80], &head[..80]);
            assert_eq!(Header::from_bytes(&h.to_bytes()).unwrap(), h);
        }
    }

    let decoded = ltx_check::decode(data);
    let verified = ltx::verify(data);
    match (&decoded, &verified) {
        (Ok(d), Ok((h, t))) => assert_eq!((d.header, d.trailer), (*h, *t)),
        (Err(_), Err(_)) => {}
        (d, v) => panic!("decode and verify disagree: {d:?} vs {v:?}"),
    }

    // Random access never panics, whatever the index says.
    if let Ok(index) = PageIndex::read(&mut Cursor::new(data)) {
        let mut page = vec![0u8; index.header().page_size as usize];
        for entry in index.entries().iter().take(64) {
            let _ = index.read_page(&mut Cursor::new(data), entry.pgno, &mut page);
        }
    }

    // A file cannot follow itself in a merge: its TXIDs do not advance.
    assert!(
        ltx::compact(vec![data, data], Vec::new(), CompactOptions::default()).is_err(),
        "compact merged a file with itself"
    );

    let snapshot = ltx::database::decode_snapshot(data, Vec::new());
    let compacted = ltx::compact(vec![data], Vec::new(), CompactOptions::default());
    let Ok(d) = decoded else {
        assert!(
            snapshot.is_err(),
            "decode_snapshot accepted a file the decoder refuses"
        );
        assert!(
            compacted.is_err(),
            "compact accepted a file the decoder refuses"
        );
        return;
    };
    check_sound(data, &d);

    match snapshot {
        Ok((image, h)) => {
            assert!(d.header.is_snapshot());
            assert_eq!(h, d.header);
            assert!(
                image == snapshot_image(&d),
                "decode_snapshot wrote another image"
            );
        }
        Err(e) => assert!(!d.header.is_snapshot(), "sound snapshot refused: {e}"),
    }

    // Compacting one file keeps its pages; only an empty database cannot be written without
    // checksums (the default output flags).
    match compacted {
        Ok((out, h, t)) => {
            let c = ltx_check::decode(&out).expect("compact output decodes");
            check_sound(&out, &c);
            assert_eq!((c.header, c.trailer), (h, t));
            assert_eq!(c.pages, d.pages);
            assert_eq!(
                (h.commit, h.min_txid, h.max_txid, h.timestamp),
                (
                    d.header.commit,
                    d.header.min_txid,
                    d.header.max_txid,
                    d.header.timestamp
                )
            );
        }
        Err(e) => assert_eq!(d.header.commit, 0, "compact refused a sound file: {e}"),
    }

    // Re-encoding what was decoded gives a sound file with the same content, and the encoder
    // is deterministic.
    if d.header.commit == 0 && d.header.no_checksum() {
        return;
    }
    let post = (!d.header.no_checksum() && !d.header.is_snapshot())
        .then_some(d.trailer.post_apply_checksum.0);
    for encoding in [PageEncoding::Block, PageEncoding::Frame] {
        let (again, trailer) =
            ltx_check::encode(d.header, encoding, &d.pages, post).expect("re-encode");
        let e = ltx_check::decode(&again).expect("re-encoded file decodes");
        check_sound(&again, &e);
        assert_eq!((e.header, &e.pages), (d.header, &d.pages));
        assert_eq!(e.trailer, trailer);
        assert_eq!(trailer.post_apply_checksum, d.trailer.post_apply_checksum);
        let (twice, _) = ltx_check::encode(d.header, encoding, &d.pages, post).unwrap();
        assert!(twice == again, "the encoder is not deterministic");
    }
});
