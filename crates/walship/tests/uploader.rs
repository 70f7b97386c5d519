//! The upload loop of one replica: new captures keep reaching it while a compacted file that
//! takes long to upload is still going.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use rusqlite::Connection;
use tokio::sync::watch;
use walship::compaction::{CompactionOptions, Compactor};
use walship::db::{Db, DbOptions};
use walship::monitor::{Monitor, MonitorOptions};
use walship::replica::client::{KeyScheme, Layout, ReplicaClient};
use walship::replica::uploader::{Uploader, UploaderOptions};

mod support;
use support::faulty::FaultyStore;

fn app(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    conn
}

fn insert(conn: &Connection, rows: usize) {
    for i in 0..rows {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
}

/// A snapshot of a big database takes minutes to upload; meanwhile each capture must still
/// reach the replica within a sync interval or so, not wait behind it (the torture suite saw
/// an S3 replica stay minutes behind while 800 MB level files uploaded).
#[test]
fn captures_reach_the_replica_while_a_level_file_is_still_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    insert(&conn, 50);
    let db = Db::open(&path, DbOptions::default()).unwrap();
    let store = db.store().clone();
    let (monitor, db_status) = Monitor::new(
        db,
        MonitorOptions {
            monitor_interval: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let monitor = {
        let stop = stop_monitor.clone();
        std::thread::spawn(move || monitor.run(&stop))
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let layout = Layout::new(KeyScheme::S3, "app.db").unwrap();
    let client = ReplicaClient::from_store("slow", faulty.clone(), layout);
    let (compacted_tx, compacted) = watch::channel(0u64);
    let opts = UploaderOptions {
        sync_interval: Duration::from_millis(50),
        ..UploaderOptions::default()
    };
    let (uploader, status) = Uploader::new(
        client.clone(),
        store.clone(),
        db_status.clone(),
        compacted,
        opts,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let uploads = rt.spawn(uploader.run(stop_rx, Duration::from_secs(10)));
    let caught_up = || {
        let db = db_status.borrow().txid;
        db.is_some() && status.borrow().position == db
    };
    assert!(
        testkit::wait_until(Duration::from_secs(10), caught_up),
        "the replica never caught up: {:?}",
        status.borrow()
    );

    // Level 1's upload hangs, as an 800 MB one over a slow link would.
    faulty.hold_uploads("/0001/");
    let mut compactor = Compactor::new(
        store.clone(),
        CompactionOptions {
            levels: vec![Duration::from_secs(3600)],
            snapshot_interval: Duration::from_secs(3600),
            snapshot_retention: Duration::from_secs(3600),
            l0_retention: Duration::ZERO,
            l0_retention_check_interval: Duration::from_secs(3600),
            encoding: ltx::PageEncoding::Block,
        },
    )
    .unwrap();
    let l1 = compactor.compact_level(1).unwrap().expect("an L1 file");
    compacted_tx.send_modify(|n| *n += 1);
    assert!(
        testkit::wait_until(Duration::from_secs(10), || faulty.held() == 1),
        "the L1 upload never started"
    );

    for round in 0..3 {
        let before = db_status.borrow().txid;
        insert(&conn, 5);
        assert!(testkit::wait_until(Duration::from_secs(10), || db_status
            .borrow()
            .txid
            > before));
        assert!(
            testkit::wait_until(Duration::from_secs(10), caught_up),
            "round {round}: capture {:?} did not reach the replica while the L1 file uploads \
             (replica at {:?})",
            db_status.borrow().txid,
            status.borrow().position
        );
    }
    assert_eq!(faulty.held(), 1, "the L1 upload is still held");
    assert!(rt.block_on(client.list(1)).unwrap().is_empty());

    faulty.release();
    let l1_uploaded = || {
        rt.block_on(client.list(1))
            .unwrap()
            .iter()
            .any(|f| (f.key.min_txid, f.key.max_txid) == (l1.min_txid, l1.max_txid))
    };
    assert!(
        testkit::wait_until(Duration::from_secs(10), l1_uploaded),
        "the L1 file never arrived once released"
    );

    stop_monitor.store(true, Ordering::Relaxed);
    monitor.join().unwrap().expect("the final capture");
    stop_tx.send(true).unwrap();
    rt.block_on(uploads).unwrap();
    assert!(caught_up(), "the final pass left the replica behind");
    assert_eq!(status.borrow().last_error, None);
}
