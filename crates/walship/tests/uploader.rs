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
use walship::monitor::DbStatus;
use walship::monitor::{Monitor, MonitorOptions};
use walship::replica::client::{KeyScheme, Layout, ReplicaClient};
use walship::replica::uploader::{ReplicaStatus, Uploader, UploaderOptions};
use walship::store::{LocalFile, LocalStore};

mod support;
use support::faulty::{Fault, FaultyStore, Op};

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

/// A database with its monitor running, a local store, and one replica in memory whose
/// uploads can be held.
struct Fixture {
    _dir: tempfile::TempDir,
    conn: Connection,
    store: LocalStore,
    db_status: watch::Receiver<DbStatus>,
    stop_monitor: Arc<AtomicBool>,
    monitor: Option<std::thread::JoinHandle<walship::Result<()>>>,
    rt: tokio::runtime::Runtime,
    faulty: Arc<FaultyStore>,
    client: ReplicaClient,
}

impl Fixture {
    fn new() -> Fixture {
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
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let layout = Layout::new(KeyScheme::S3, "app.db").unwrap();
        let client = ReplicaClient::from_store("slow", faulty.clone(), layout);
        Fixture {
            _dir: dir,
            conn,
            store,
            db_status,
            stop_monitor,
            monitor: Some(monitor),
            rt: tokio::runtime::Runtime::new().unwrap(),
            faulty,
            client,
        }
    }

    /// Commits `rows` rows and waits for their capture.
    fn write(&self, rows: usize) {
        let before = self.db_status.borrow().txid;
        insert(&self.conn, rows);
        assert!(testkit::wait_until(Duration::from_secs(10), || self
            .db_status
            .borrow()
            .txid
            > before));
    }

    fn compactor(&self) -> Compactor {
        let hour = Duration::from_secs(3600);
        let opts = CompactionOptions {
            levels: vec![hour],
            snapshot_interval: hour,
            snapshot_retention: hour,
            l0_retention: Duration::ZERO,
            l0_retention_check_interval: hour,
            encoding: ltx::PageEncoding::Block,
        };
        Compactor::new(self.store.clone(), opts).unwrap()
    }

    /// Starts the upload loop; returns its status, the compactor's signal, and the stop signal
    /// with the loop's task.
    fn upload(&self) -> Uploading {
        let (compacted, compacted_rx) = watch::channel(0u64);
        let opts = UploaderOptions {
            sync_interval: Duration::from_millis(50),
            shutdown_sync_interval: Duration::from_millis(50),
            ..UploaderOptions::default()
        };
        let (uploader, status) = Uploader::new(
            self.client.clone(),
            self.store.clone(),
            self.db_status.clone(),
            compacted_rx,
            opts,
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = self
            .rt
            .spawn(uploader.run(stop_rx, Duration::from_secs(10)));
        Uploading {
            status,
            compacted,
            stop,
            task,
        }
    }

    fn caught_up(&self, status: &watch::Receiver<ReplicaStatus>) -> bool {
        let db = self.db_status.borrow().txid;
        db.is_some() && status.borrow().position == db
    }

    fn holds(&self, level: u32, file: &LocalFile) -> bool {
        self.rt
            .block_on(self.client.list(level))
            .unwrap()
            .iter()
            .any(|f| (f.key.min_txid, f.key.max_txid) == (file.min_txid, file.max_txid))
    }

    /// Stops the monitor, then the upload loop, which must leave the replica caught up.
    fn stop(mut self, uploading: Uploading) {
        self.stop_monitor.store(true, Ordering::Relaxed);
        let monitor = self.monitor.take().expect("stopped once");
        monitor.join().unwrap().expect("the final capture");
        uploading.stop.send(true).unwrap();
        self.rt.block_on(uploading.task).unwrap();
        assert!(
            self.caught_up(&uploading.status),
            "the final pass left the replica behind"
        );
        assert_eq!(uploading.status.borrow().last_error, None);
    }
}

struct Uploading {
    status: watch::Receiver<ReplicaStatus>,
    compacted: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A snapshot of a big database takes minutes to upload; meanwhile each capture must still
/// reach the replica within a sync interval or so, not wait behind it (the torture suite saw
/// an S3 replica stay minutes behind while 800 MB level files uploaded).
#[test]
fn captures_reach_the_replica_while_a_level_file_is_still_uploading() {
    let fx = Fixture::new();
    let up = fx.upload();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)),
        "the replica never caught up: {:?}",
        up.status.borrow()
    );

    // Level 1's upload hangs, as an 800 MB one over a slow link would.
    fx.faulty.hold_uploads("/0001/");
    let l1 = fx
        .compactor()
        .compact_level(1)
        .unwrap()
        .expect("an L1 file");
    up.compacted.send_modify(|n| *n += 1);
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.faulty.held() == 1),
        "the L1 upload never started"
    );
    for round in 0..3 {
        fx.write(5);
        assert!(
            testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)),
            "round {round}: capture {:?} did not reach the replica while the L1 file uploads \
             (replica at {:?})",
            fx.db_status.borrow().txid,
            up.status.borrow().position
        );
    }
    assert_eq!(fx.faulty.held(), 1, "the L1 upload is still held");
    assert!(!fx.holds(1, &l1));

    fx.faulty.release();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.holds(1, &l1)),
        "the L1 file never arrived once released"
    );
    fx.stop(up);
}

/// A replica that was away while the store compacted its missing L0 files into L1 and a
/// snapshot gets the L1 file that bridges the gap, then the newer captures, without waiting
/// for the snapshot's upload.
#[test]
fn a_replica_behind_compacted_files_resumes_captures_before_the_snapshot_is_up() {
    let fx = Fixture::new();
    for _ in 0..3 {
        fx.write(5);
    }
    let mut compactor = fx.compactor();
    let l1 = compactor.compact_level(1).unwrap().expect("an L1 file");
    let snapshot = compactor.snapshot().unwrap().expect("a snapshot");
    for file in fx.store.list(0).unwrap() {
        if file.max_txid <= l1.max_txid {
            fx.store.remove(&file).unwrap();
        }
    }
    for _ in 0..3 {
        fx.write(5);
    }

    fx.faulty.hold_uploads("/0009/");
    let up = fx.upload();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)),
        "the captures after the L1 file waited behind the snapshot: replica at {:?}, database at \
         {:?}",
        up.status.borrow().position,
        fx.db_status.borrow().txid
    );
    assert!(fx.holds(1, &l1), "the L1 file bridging the gap is up");
    assert_eq!(fx.faulty.held(), 1, "the snapshot is still held");

    fx.faulty.release();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.holds(9, &snapshot)),
        "the snapshot never arrived once released"
    );
    fx.stop(up);
}

/// A replica failing when walship stops (one S3 hiccup) gets the last captures once it
/// answers again within shutdown-sync-timeout: the final pass is tried again every
/// shutdown-sync-interval, as Litestream does.
#[test]
fn the_final_pass_is_tried_again_until_the_replica_answers() {
    let fx = Fixture::new();
    let up = fx.upload();
    assert!(testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)));
    fx.faulty.fail(Op::Put, Fault::Generic);
    fx.write(5);
    assert!(
        testkit::wait_until(Duration::from_secs(10), || up
            .status
            .borrow()
            .last_error
            .is_some()),
        "the upload never failed"
    );
    let faulty = fx.faulty.clone();
    let heal = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        faulty.reset();
    });
    fx.stop(up);
    heal.join().unwrap();
}

/// A replica that fell behind past the snapshot floor gets a level file beyond its hole before
/// the snapshot that fills it; until the snapshot is up its position (what status and the exit
/// code claim) must stay where restores reach, not jump to that file's end.
#[test]
fn a_level_file_beyond_a_hole_claims_nothing_until_the_snapshot_fills_it() {
    let fx = Fixture::new();
    let mut compactor = fx.compactor();
    fx.write(5);
    let early = compactor.compact_level(1).unwrap().expect("an L1 file");
    fx.write(5);
    fx.write(5);
    let late = compactor
        .compact_level(1)
        .unwrap()
        .expect("a second L1 file");
    let snapshot = compactor.snapshot().unwrap().expect("a snapshot");
    assert_eq!(snapshot.max_txid, late.max_txid);
    // Retention below the snapshot: the L0 files and the first L1 file go.
    for file in fx.store.list(0).unwrap() {
        fx.store.remove(&file).unwrap();
    }
    fx.store.remove(&early).unwrap();
    fx.write(5);

    fx.faulty.hold_uploads("/0009/");
    let up = fx.upload();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.holds(1, &late)
            && fx.faulty.held() == 1),
        "the second L1 file never went up"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        up.status.borrow().position,
        Some(ltx::Txid(0)),
        "the replica holds TXIDs {}..={} but not 1..{}",
        late.min_txid,
        late.max_txid,
        late.min_txid
    );

    fx.faulty.release();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)),
        "the replica never caught up once the snapshot was up: {:?}",
        up.status.borrow()
    );
    fx.stop(up);
}

/// A replica whose L0 uploads fell behind by more than l0-retention, while a snapshot upload
/// keeps the pass going, meets a gap no file of the pass fills: the L1 file written since covers
/// it, and the L0 lane uploads that file itself rather than wait for the snapshot.
#[test]
fn a_gap_retention_made_during_a_pass_is_bridged_without_waiting_for_the_snapshot() {
    let fx = Fixture::new();
    let up = fx.upload();
    assert!(testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)));
    let position = up.status.borrow().position.unwrap();

    let mut compactor = fx.compactor();
    fx.faulty.hold_uploads("/0009/");
    fx.faulty.hold_uploads("/0000/");
    compactor.snapshot().unwrap().expect("a snapshot");
    up.compacted.send_modify(|n| *n += 1);
    assert!(testkit::wait_until(Duration::from_secs(10), || fx
        .faulty
        .held()
        == 1));
    for _ in 0..3 {
        fx.write(5);
    }
    assert!(testkit::wait_until(Duration::from_secs(10), || fx
        .faulty
        .held()
        == 2));
    // Retention: an L1 file now covers the new captures, and all but the first go.
    let l1 = compactor.compact_level(1).unwrap().expect("an L1 file");
    assert!(l1.min_txid.0 <= position.0 + 1 && l1.max_txid.0 >= position.0 + 3);
    for file in fx.store.list(0).unwrap() {
        if file.min_txid.0 > position.0 + 1 && file.max_txid <= l1.max_txid {
            fx.store.remove(&file).unwrap();
        }
    }
    up.compacted.send_modify(|n| *n += 1);
    fx.write(5);

    fx.faulty.release_uploads("/0000/");
    assert!(
        testkit::wait_until(Duration::from_secs(10), || fx.caught_up(&up.status)),
        "the captures waited behind the snapshot: replica at {:?}, database at {:?}",
        up.status.borrow().position,
        fx.db_status.borrow().txid
    );
    assert!(fx.holds(1, &l1), "the L1 file bridging the gap is up");
    assert_eq!(fx.faulty.held(), 1, "the snapshot is still held");
    fx.faulty.release();
    fx.stop(up);
}
