//! Captures of a live database into L0 files: what they hold restores the database exactly,
//! with our merge and with the real `litestream restore`.

use std::fs::File;
use std::path::{Path, PathBuf};

use ltx::{compact, CompactOptions, Txid};
use rusqlite::Connection;
use testkit::db::{checkpointed_image, first_different_page, integrity_check};
use testkit::{litestream, run_ok};
use walship::db::{CaptureKind, Db, DbOptions, FullReason};

/// An application connection, with SQLite's default auto-checkpoint.
fn app(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    conn
}

fn insert(conn: &Connection, n: usize, tag: &str) {
    for i in 0..n {
        let v = format!("{tag}-{i}-{}", "y".repeat(i * 53 % 1500));
        conn.execute("INSERT INTO t(v) VALUES (?1)", [v]).unwrap();
    }
}

fn l0_files(db: &Db) -> Vec<PathBuf> {
    db.store()
        .list(0)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect()
}

/// Merges every L0 file and returns the database it describes.
fn rebuilt(files: &[PathBuf]) -> Vec<u8> {
    let inputs: Vec<File> = files.iter().map(|p| File::open(p).unwrap()).collect();
    let (merged, header, _) = compact(inputs, Vec::new(), CompactOptions::default()).unwrap();
    assert_eq!(header.min_txid, Txid(1));
    ltx::database::decode_snapshot(&merged[..], Vec::new())
        .unwrap()
        .0
}

fn assert_same(files: &[PathBuf], db: &Path) {
    let want = checkpointed_image(db);
    let got = rebuilt(files);
    assert_eq!(
        first_different_page(&want, &got, 4096),
        None,
        "rebuilt database differs"
    );
}

#[test]
fn first_sync_is_a_snapshot_then_captures_are_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    insert(&conn, 50, "a");

    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let first = db.sync().unwrap().expect("first capture");
    assert_eq!(first.kind, CaptureKind::Full(FullReason::FirstSync));
    assert!(first.header.is_snapshot());
    assert!(db.sync().unwrap().is_none(), "nothing new, nothing written");

    insert(&conn, 30, "b");
    let second = db.sync().unwrap().expect("second capture");
    assert_eq!(second.kind, CaptureKind::Incremental);
    assert_eq!(second.header.min_txid, Txid(2));
    assert!(second.pages < first.pages, "only changed pages");
    assert_same(&l0_files(&db), &path);
}

#[test]
fn the_checkpoint_cycle_keeps_the_wal_small_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    let mut db = Db::open(
        &path,
        DbOptions {
            checkpoint_pages: 200,
            ..Default::default()
        },
    )
    .unwrap();
    db.sync().unwrap();
    let mut cycles = 0;
    let mut kinds = Vec::new();
    for round in 0..30 {
        insert(&conn, 40, &format!("r{round}"));
        let synced = if db.wants_checkpoint().unwrap() {
            let c = db
                .checkpoint()
                .unwrap()
                .expect("no one else holds the write lock");
            assert!(
                c.complete,
                "nothing else reads, so the checkpoint backfills everything"
            );
            cycles += 1;
            c.synced
        } else {
            db.sync().unwrap()
        };
        kinds.extend(synced.map(|s| s.kind));
    }
    kinds.extend(db.sync().unwrap().map(|s| s.kind));
    assert!(
        cycles >= 3,
        "the WAL grew past 200 pages several times ({cycles} cycles)"
    );
    // walship follows the restarts its own checkpoints cause, without capturing in full.
    assert!(
        kinds.iter().all(|k| *k == CaptureKind::Incremental),
        "{kinds:?}"
    );
    // The WAL restarted after each cycle instead of growing: it holds about one cycle's pages.
    let wal_len = std::fs::metadata(format!("{}-wal", path.display()))
        .unwrap()
        .len();
    assert!(wal_len < 2 * 400 * 4120, "WAL is {wal_len} bytes");
    assert_same(&l0_files(&db), &path);
}

#[test]
fn a_restart_of_walship_captures_in_full_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    insert(&conn, 20, "before");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    db.sync().unwrap();
    drop(db);

    // While walship is away the application's own checkpoints backfill and restart the WAL.
    for round in 0..5 {
        insert(&conn, 100, &format!("away{round}"));
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
    }
    insert(&conn, 3, "after");

    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let synced = db.sync().unwrap().unwrap();
    assert_eq!(synced.kind, CaptureKind::Full(FullReason::FirstSync));
    assert_eq!(
        synced.header.min_txid,
        Txid(2),
        "TXIDs continue from the local store"
    );
    assert_same(&l0_files(&db), &path);
}

#[test]
fn litestream_restores_what_walship_captured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    insert(&conn, 100, "a");
    let mut db = Db::open(
        &path,
        DbOptions {
            checkpoint_pages: 100,
            ..Default::default()
        },
    )
    .unwrap();
    db.sync().unwrap();
    for round in 0..8 {
        insert(&conn, 25, &format!("r{round}"));
        if round % 3 == 2 {
            db.checkpoint().unwrap();
        } else {
            db.sync().unwrap();
        }
    }
    // A file replica in Litestream's layout, holding the L0 files as they are.
    let replica = dir.path().join("replica");
    let l0 = replica.join("ltx").join("0");
    std::fs::create_dir_all(&l0).unwrap();
    for f in l0_files(&db) {
        std::fs::copy(&f, l0.join(f.file_name().unwrap())).unwrap();
    }
    let restored = dir.path().join("restored.db");
    run_ok(
        litestream()
            .args(["restore", "-o"])
            .arg(&restored)
            .arg(format!("file://{}", replica.display())),
    );
    let want = checkpointed_image(&path);
    let got = std::fs::read(&restored).unwrap();
    assert_eq!(first_different_page(&want, &got, 4096), None);
    assert_eq!(integrity_check(&restored), "ok");
}
