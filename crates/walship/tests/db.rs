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

/// A complete checkpoint leaves `mxFrame` as it was until a writer restarts the WAL: asking for
/// another checkpoint then looped the monitor every poll, starving its captures and its check
/// for a replaced file (seen in the torture suite's maintenance scenario).
#[test]
fn a_complete_checkpoint_is_not_asked_for_again_until_the_wal_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    let mut db = Db::open(
        &path,
        DbOptions {
            checkpoint_pages: 50,
            ..Default::default()
        },
    )
    .unwrap();
    db.sync().unwrap();
    insert(&conn, 100, "big");
    assert!(db.wants_checkpoint().unwrap());
    let done = db
        .checkpoint()
        .unwrap()
        .expect("nobody holds the write lock");
    assert!(done.complete);
    assert!(
        !db.wants_checkpoint().unwrap(),
        "the WAL index is unchanged since a complete checkpoint"
    );
    // The next commits restart the WAL and grow it past the threshold again.
    insert(&conn, 100, "more");
    assert!(db.wants_checkpoint().unwrap());
    assert!(db.checkpoint().unwrap().unwrap().complete);
    db.sync().unwrap();
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

fn wal_checkpoint(conn: &Connection, mode: &str) -> (i64, i64, i64) {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", db.display())).map_or(0, |m| m.len())
}

/// The SQLite facts walship's capture rests on (DESIGN.md, "The WAL, the read lock"): a reader
/// that began on a fully checkpointed WAL reads the database file only and stops all further
/// backfill; a reader that began with frames in the WAL stops backfill at its snapshot. Either
/// way no frame newer than the reader's start can be backfilled, so the WAL cannot restart
/// past it.
#[test]
fn a_reader_stops_backfill_at_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let app = app(&path);
    app.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    insert(&app, 20, "a");
    assert_eq!(wal_checkpoint(&app, "TRUNCATE").0, 0);
    assert_eq!(wal_len(&path), 0);

    // Read mark 0: the reader began on an empty WAL.
    let reader = Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    insert(&app, 30, "b");
    // No busy wait: a refused checkpoint should answer at once.
    let other = Connection::open(&path).unwrap();
    other.busy_timeout(std::time::Duration::ZERO).unwrap();
    let (_, log, done) = wal_checkpoint(&other, "PASSIVE");
    assert!(
        log > 0 && done == 0,
        "backfilled {done} of {log} frames past a mark-0 reader"
    );
    let (busy, _, _) = wal_checkpoint(&other, "TRUNCATE");
    assert_eq!(busy, 1, "TRUNCATE went past a reader");
    reader.execute_batch("ROLLBACK").unwrap();

    // Read mark k: the reader began with frames in the WAL; later frames stay unbackfilled.
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let (_, at_start, _) = wal_checkpoint(&other, "PASSIVE");
    insert(&app, 30, "c");
    let (_, log, done) = wal_checkpoint(&other, "PASSIVE");
    assert!(
        done <= at_start && log > at_start,
        "backfilled {done} frames, past the reader's {at_start} (WAL holds {log})"
    );
    reader.execute_batch("ROLLBACK").unwrap();
    let (_, log, done) = wal_checkpoint(&other, "PASSIVE");
    assert_eq!(done, log, "without the reader everything is backfilled");
}

/// While walship holds its read lock, WAL restarts and truncations by the application lose
/// nothing, so walship follows them incrementally (Litestream and earlier walship captured the
/// whole database each time, e.g. on the first write after start on an empty WAL).
#[test]
fn restarts_and_truncations_by_the_application_are_followed_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let app = app(&path);
    insert(&app, 40, "a");
    assert_eq!(wal_checkpoint(&app, "TRUNCATE").0, 0);

    let checkpointer = Connection::open(&path).unwrap();
    checkpointer
        .busy_timeout(std::time::Duration::ZERO)
        .unwrap();
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let first = db.sync().unwrap().unwrap();
    assert_eq!(first.kind, CaptureKind::Full(FullReason::FirstSync));
    let mut kinds = Vec::new();
    for round in 0..6 {
        // A new WAL header (new salts) on the first write after an empty WAL.
        insert(&app, 25, &format!("r{round}"));
        kinds.extend(db.sync().unwrap().map(|s| s.kind));
        // The application's own checkpoints: refused while new frames exist ...
        assert_eq!(wal_checkpoint(&checkpointer, "TRUNCATE").0, 1);
        insert(&app, 5, &format!("s{round}"));
        // ... walship's cycle backfills everything, then the application truncates the WAL.
        kinds.extend(db.checkpoint().unwrap().unwrap().synced.map(|s| s.kind));
        let (busy, _, _) = wal_checkpoint(&checkpointer, "TRUNCATE");
        assert_eq!(
            busy, 0,
            "round {round}: nothing new, so the truncation goes through"
        );
        assert_eq!(wal_len(&path), 0);
        assert!(
            db.sync().unwrap().is_none(),
            "an empty WAL holds nothing new"
        );
        assert_same(&l0_files(&db), &path);
    }
    assert!(kinds.len() >= 12, "{kinds:?}");
    assert!(
        kinds.iter().all(|k| *k == CaptureKind::Incremental),
        "{kinds:?}"
    );
}

/// Renames a new database (of `page_size`, if given) over the one at `path`, as a restore
/// does with its output.
fn replace_database(path: &Path, page_size: Option<u32>) {
    let other = path.with_file_name("restored.db");
    if let Some(size) = page_size {
        Connection::open(&other)
            .unwrap()
            .execute_batch(&format!(
                "PRAGMA page_size = {size}; PRAGMA journal_mode = wal;"
            ))
            .unwrap();
    }
    let conn = app(&other);
    insert(&conn, 7, "restored");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    std::fs::rename(&other, path).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", path.display()));
    let _ = std::fs::remove_file(format!("{}-shm", path.display()));
}

#[test]
fn a_replaced_database_file_is_followed_with_a_full_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let app_conn = app(&path);
    insert(&app_conn, 30, "old");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    db.sync().unwrap();
    assert!(!db.replaced().unwrap());
    drop(app_conn);

    replace_database(&path, None);

    assert!(db.replaced().unwrap());
    let mut db = db.reopen().unwrap();
    let synced = db.sync().unwrap().unwrap();
    assert_eq!(synced.kind, CaptureKind::Full(FullReason::DbReplaced));
    assert_eq!(synced.header.min_txid, Txid(2), "TXIDs continue");
    let app_conn = app(&path);
    insert(&app_conn, 3, "after");
    assert_eq!(db.sync().unwrap().unwrap().kind, CaptureKind::Incremental);
    assert_same(&l0_files(&db), &path);
}

/// A restart of walship while the application only appended to the WAL continues where the
/// last capture ended, instead of copying the whole database again (Litestream 0.3 started a
/// new generation, #393); once the WAL restarted while walship was away, it captures in full.
#[test]
fn a_restart_of_walship_resumes_when_the_wal_still_holds_its_last_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    insert(&conn, 20, "a");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    db.sync().unwrap();
    insert(&conn, 10, "b");
    assert_eq!(db.sync().unwrap().unwrap().kind, CaptureKind::Incremental);
    drop(db);

    insert(&conn, 15, "away");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let resumed = db.sync().unwrap().unwrap();
    assert_eq!(resumed.kind, CaptureKind::Incremental);
    assert_eq!(resumed.header.min_txid, Txid(3));
    assert_same(&l0_files(&db), &path);
    drop(db);

    // Nothing new while away: the restart captures nothing at all.
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    assert!(db.sync().unwrap().is_none());
    drop(db);

    // The WAL restarts while walship is away: its frames may have been overwritten.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    insert(&conn, 5, "after-restart");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let full = db.sync().unwrap().unwrap();
    assert_eq!(full.kind, CaptureKind::Full(FullReason::FirstSync));
    assert_same(&l0_files(&db), &path);

    // Replicas ahead of the local store (another machine wrote them): start afresh in full.
    drop(db);
    insert(&conn, 2, "c");
    let opts = DbOptions {
        min_txid: Txid(100),
        ..DbOptions::default()
    };
    let mut db = Db::open(&path, opts).unwrap();
    let synced = db.sync().unwrap().unwrap();
    assert_eq!(synced.kind, CaptureKind::Full(FullReason::FirstSync));
    assert_eq!(synced.header.min_txid, Txid(100));
}

/// Puts the WAL index header (both copies) of `db` back to `saved`, as it is when a writer died
/// after writing its frames but before the WAL index took them in.
fn rewind_wal_index(db: &Path, saved: &[u8]) {
    use std::os::unix::fs::FileExt;
    let shm = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}-shm", db.display()))
        .unwrap();
    shm.write_all_at(saved, 0).unwrap();
}

fn wal_index_header(db: &Path) -> Vec<u8> {
    std::fs::read(format!("{}-shm", db.display())).unwrap()[..96].to_vec()
}

#[test]
fn frames_a_dead_writer_wrote_past_the_wal_index_are_never_captured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    insert(&conn, 20, "committed");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    db.sync().unwrap().unwrap();
    let before = wal_index_header(&path);

    // A transaction whose frames (commit mark and all) reach the WAL, but not the WAL index.
    conn.execute("INSERT INTO t(v) VALUES ('phantom')", [])
        .unwrap();
    drop(conn);
    rewind_wal_index(&path, &before);
    let conn = app(&path);
    let phantom: i64 = conn
        .query_row("SELECT count(*) FROM t WHERE v = 'phantom'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        phantom, 0,
        "SQLite itself does not count the frames as committed"
    );
    assert!(
        db.sync().unwrap().is_none(),
        "walship captured frames the WAL index never took in"
    );

    // The next writer overwrites those frames with its own transaction.
    conn.execute("INSERT INTO t(v) VALUES ('real')", [])
        .unwrap();
    db.sync().unwrap().unwrap();
    assert_same(&l0_files(&db), &path);
}

#[test]
fn a_first_capture_while_the_first_transaction_is_open_misses_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let mut conn = app(&path);
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    // A transaction large enough to spill into the WAL (header and all) before it commits.
    conn.pragma_update(None, "cache_size", 10).unwrap();
    let tx = conn.transaction().unwrap();
    insert(&tx, 300, "spilled");
    assert!(wal_len(&path) > 32, "the transaction did not spill");

    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let first = db.sync().unwrap().expect("first capture");
    assert_eq!(first.kind, CaptureKind::Full(FullReason::FirstSync));
    tx.commit().unwrap();
    insert(&conn, 5, "after");
    let next = db
        .sync()
        .unwrap()
        .expect("the committed transaction is captured");
    assert_eq!(next.kind, CaptureKind::Incremental);
    assert_same(&l0_files(&db), &path);
}

/// A capture at a new page size is followed by a snapshot there (Litestream's restore refuses
/// plans mixing page sizes); if walship was killed between the two, the next start writes it.
#[test]
fn a_snapshot_missed_at_a_page_size_change_is_written_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let app_conn = app(&path);
    insert(&app_conn, 30, "old");
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    db.sync().unwrap();
    drop(db);
    let db = Db::open(&path, DbOptions::default()).unwrap();
    let snapshots = |db: &Db| db.store().list(9).unwrap();
    assert!(
        snapshots(&db).is_empty(),
        "no page-size change, no snapshot"
    );
    drop(app_conn);

    replace_database(&path, Some(8192));
    let mut db = db.reopen().unwrap();
    let synced = db.sync().unwrap().unwrap();
    assert_eq!(synced.header.page_size, 8192);
    let [snapshot] = &snapshots(&db)[..] else {
        panic!("one snapshot at the change: {:?}", snapshots(&db));
    };
    assert_eq!(snapshot.max_txid, synced.header.max_txid);
    let written = std::fs::read(&snapshot.path).unwrap();
    drop(db);

    // Killed between the capture and the snapshot: the next start writes the same one.
    std::fs::remove_file(&snapshot.path).unwrap();
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    let [again] = &snapshots(&db)[..] else {
        panic!("the snapshot was not written again: {:?}", snapshots(&db));
    };
    assert_eq!(
        (again.min_txid, again.max_txid),
        (Txid(1), synced.header.max_txid)
    );
    assert_eq!(std::fs::read(&again.path).unwrap(), written);
    let app_conn = app(&path);
    insert(&app_conn, 3, "after");
    db.sync().unwrap().unwrap();
    drop(db);
    let db = Db::open(&path, DbOptions::default()).unwrap();
    assert_eq!(snapshots(&db).len(), 1, "written once, not at every start");
}
