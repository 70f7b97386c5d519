//! The WAL reader against WAL files written by real SQLite.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use walship::wal::{checksum, WalHeader, WalReader};

fn wal_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

/// A WAL-mode database whose WAL is never checkpointed by SQLite itself.
fn open(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    conn
}

fn insert(conn: &Connection, n: usize, tag: &str) {
    for i in 0..n {
        let v = format!("{tag}-{i}-{}", "x".repeat(i * 37 % 900));
        conn.execute("INSERT INTO t(v) VALUES (?1)", [v]).unwrap();
    }
}

fn reader(db: &Path) -> WalReader<File> {
    let path = wal_path(db);
    WalReader::open(File::open(&path).unwrap(), &path)
        .unwrap()
        .expect("a valid WAL")
}

#[test]
fn finds_every_commit_and_the_newest_version_of_each_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let conn = open(&db);
    insert(&conn, 40, "a");
    // 1 transaction for CREATE TABLE plus 40 inserts.
    let mut r = reader(&db);
    assert_eq!(r.header().page_size, 4096);
    let c = r
        .committed(r.start(), u64::MAX)
        .unwrap()
        .expect("transactions");
    assert_eq!(c.transactions, 41);
    let wal_len = std::fs::metadata(wal_path(&db)).unwrap().len();
    assert_eq!(
        c.end.offset, wal_len,
        "every frame belongs to a committed transaction"
    );

    // The newest frame of each page is that page in the checkpointed database.
    let image = testkit::db::checkpointed_image(&db);
    assert_eq!(image.len(), c.commit as usize * 4096);
    for (pgno, frame) in &c.pages {
        let page = r.read_frame_page(*frame).unwrap();
        let at = (*pgno as usize - 1) * 4096;
        assert!(
            page == &image[at..at + 4096],
            "page {pgno} differs from the database"
        );
    }
}

#[test]
fn resumes_from_a_position_and_honours_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let conn = open(&db);
    insert(&conn, 5, "first");
    let mut r = reader(&db);
    let first = r.committed(r.start(), u64::MAX).unwrap().unwrap();
    assert!(
        r.committed(first.end, u64::MAX).unwrap().is_none(),
        "nothing new yet"
    );

    insert(&conn, 7, "second");
    let mut r = reader(&db);
    let second = r.committed(first.end, u64::MAX).unwrap().unwrap();
    assert_eq!(second.transactions, 7);
    assert_eq!(second.start, first.end);

    // A cap of one byte still takes one whole transaction, and stops at its commit frame.
    let one = r.committed(first.end, 1).unwrap().unwrap();
    assert_eq!(one.transactions, 1);
    let rest = r.committed(one.end, u64::MAX).unwrap().unwrap();
    assert_eq!(rest.transactions, 6);
    assert_eq!(rest.end, second.end);
}

#[test]
fn a_restarted_wal_ends_the_old_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let conn = open(&db);
    insert(&conn, 20, "old");
    let mut r = reader(&db);
    let old = r.committed(r.start(), u64::MAX).unwrap().unwrap();
    let old_salts = (r.header().salt1, r.header().salt2);

    // A full checkpoint lets the next writer restart the WAL from the top with new salts.
    conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
        .unwrap();
    insert(&conn, 2, "new");
    let mut r = reader(&db);
    assert_ne!((r.header().salt1, r.header().salt2), old_salts);
    assert!(
        r.committed(old.end, u64::MAX).unwrap().is_none(),
        "frames left over from before the restart must not count"
    );
    let fresh = r.committed(r.start(), u64::MAX).unwrap().unwrap();
    assert_eq!(fresh.transactions, 2);

    // A frame scanned before the restart can no longer be read as if it were the same.
    let stale = walship::wal::FrameRef {
        offset: old.start.offset,
        seed: old.start.checksum,
    };
    let err = r.read_frame_page(stale).unwrap_err().to_string();
    assert!(err.contains("changed while being captured"), "{err}");
}

#[test]
fn a_corrupt_frame_ends_the_valid_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let conn = open(&db);
    insert(&conn, 10, "x");
    // The connection stays open: closing the last one would checkpoint and delete the WAL.
    let path = wal_path(&db);
    let mut bytes = std::fs::read(&path).unwrap();
    let frame = 24 + 4096;
    let mut r = reader(&db);
    let all = r.committed(r.start(), u64::MAX).unwrap().unwrap();
    // Corrupt the page of a frame in the middle: the chain breaks there.
    let victim = 6usize;
    bytes[32 + victim * frame + 24 + 100] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let mut r = reader(&db);
    let some = r.committed(r.start(), u64::MAX).unwrap().unwrap();
    assert!(some.transactions < all.transactions);
    assert!(some.end.offset <= (32 + victim * frame) as u64);
    drop(conn);
}

#[test]
fn garbage_and_empty_wals_are_no_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x-wal");
    std::fs::write(&path, b"").unwrap();
    assert!(WalReader::open(File::open(&path).unwrap(), &path)
        .unwrap()
        .is_none());
    std::fs::write(&path, [0x37u8; 100]).unwrap();
    assert!(WalReader::open(File::open(&path).unwrap(), &path)
        .unwrap()
        .is_none());
}

/// WALs with big-endian checksums (magic 0x377f0683), as SQLite writes on big-endian machines.
#[test]
fn reads_big_endian_checksum_wals() {
    let page_size = 512u32;
    let mut wal = Vec::new();
    wal.extend_from_slice(&0x377f_0683u32.to_be_bytes());
    wal.extend_from_slice(&3_007_000u32.to_be_bytes());
    wal.extend_from_slice(&page_size.to_be_bytes());
    wal.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56, 0x78]);
    let mut sum = checksum(true, (0, 0), &wal[..24]);
    wal.extend_from_slice(&sum.0.to_be_bytes());
    wal.extend_from_slice(&sum.1.to_be_bytes());
    let header = WalHeader::parse(wal[..32].try_into().unwrap()).expect("valid header");
    assert!(header.big_endian);
    for (pgno, commit) in [(1u32, 0u32), (2, 2), (1, 2)] {
        let mut fh = Vec::new();
        fh.extend_from_slice(&pgno.to_be_bytes());
        fh.extend_from_slice(&commit.to_be_bytes());
        fh.extend_from_slice(&wal[16..24]);
        let page = vec![pgno as u8 * 3; page_size as usize];
        sum = checksum(true, sum, &fh[..8]);
        sum = checksum(true, sum, &page);
        fh.extend_from_slice(&sum.0.to_be_bytes());
        fh.extend_from_slice(&sum.1.to_be_bytes());
        wal.extend_from_slice(&fh);
        wal.extend_from_slice(&page);
    }
    let cursor = std::io::Cursor::new(wal);
    let mut r = WalReader::open(cursor, Path::new("be-wal"))
        .unwrap()
        .unwrap();
    let c = r.committed(r.start(), u64::MAX).unwrap().unwrap();
    assert_eq!(c.transactions, 2);
    assert_eq!(c.commit, 2);
    assert_eq!(c.pages.len(), 2);
    assert_eq!(
        c.pages[&1].offset,
        32 + 2 * (24 + 512),
        "newest frame of page 1"
    );
}

/// Found by fuzzing (fuzz/fuzz_targets/wal.rs, against SQLite's recovery rules): the reader took
/// a page size field of 1 for 65536, as in the database header; SQLite writes 65536 into the WAL
/// as it is and treats a WAL whose field is 1 as empty.
#[test]
fn page_size_65536_is_stored_as_is_and_1_is_no_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let conn = Connection::open(&db).unwrap();
    // Before anything is written, so that the new database takes it.
    conn.pragma_update(None, "page_size", 65536).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    insert(&conn, 3, "big");
    let path = wal_path(&db);
    let wal = std::fs::read(&path).unwrap();
    assert_eq!(&wal[8..12], &65536u32.to_be_bytes(), "SQLite's own field");
    let mut r = reader(&db);
    assert_eq!(r.header().page_size, 65536);
    let c = r
        .committed(r.start(), u64::MAX)
        .unwrap()
        .expect("transactions");
    assert_eq!(c.end.offset, wal.len() as u64);

    // The same header with 1 in the field and its checksum recomputed is not a WAL header.
    let mut header: [u8; 32] = wal[..32].try_into().unwrap();
    header[8..12].copy_from_slice(&1u32.to_be_bytes());
    let big_endian = header[3] == 0x83;
    let (s1, s2) = checksum(big_endian, (0, 0), &header[..24]);
    header[24..28].copy_from_slice(&s1.to_be_bytes());
    header[28..32].copy_from_slice(&s2.to_be_bytes());
    assert_eq!(WalHeader::parse(&header), None);
    let mut bad = wal.clone();
    bad[..32].copy_from_slice(&header);
    let opened = WalReader::open(std::io::Cursor::new(bad), &path).unwrap();
    assert!(
        opened.is_none(),
        "a WAL whose page size field is 1 holds nothing"
    );
}
