//! The monitor loop: captures while the application writes, stays idle when it does not, and
//! makes a final capture when stopped.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use walship::db::{Db, DbOptions};
use walship::monitor::{Monitor, MonitorOptions};

fn app(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    conn
}

#[test]
fn captures_while_writing_idles_when_not_and_syncs_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    let opts = DbOptions {
        checkpoint_pages: 100,
        ..Default::default()
    };
    let db = Db::open(&path, opts).unwrap();
    let store = db.store().clone();
    let (monitor, status) = Monitor::new(
        db,
        MonitorOptions {
            monitor_interval: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || monitor.run(&stop))
    };

    for i in 0..400 {
        conn.execute(
            "INSERT INTO t(v) VALUES (?1)",
            [format!("row {i} {}", "z".repeat(300))],
        )
        .unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    // Idle: once caught up, nothing more is written however long we wait.
    assert!(testkit::wait_until(Duration::from_secs(10), || {
        status
            .borrow()
            .txid
            .is_some_and(|t| store.last(0).unwrap().is_some_and(|f| f.max_txid == t))
            && !store.list(0).unwrap().is_empty()
    }));
    std::thread::sleep(Duration::from_millis(300));
    let settled = store.list(0).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        store.list(0).unwrap().len(),
        settled,
        "an idle database gets no new files"
    );

    // A last write, then stop: the final capture takes it.
    conn.execute("INSERT INTO t(v) VALUES ('last')", [])
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap().expect("the final capture");
    let st = status.borrow().clone();
    assert!(st.checkpoints >= 1, "the WAL grew past 100 pages: {st:?}");
    assert_eq!(
        st.full_captures, 1,
        "only the first capture is full: {st:?}"
    );
    assert!(st.last_error.is_none(), "{st:?}");

    let files: Vec<std::fs::File> = store
        .list(0)
        .unwrap()
        .iter()
        .map(|f| std::fs::File::open(&f.path).unwrap())
        .collect();
    let (merged, _, _) = ltx::compact(files, Vec::new(), Default::default()).unwrap();
    let (rebuilt, _) = ltx::database::decode_snapshot(&merged[..], Vec::new()).unwrap();
    let want = testkit::db::checkpointed_image(&path);
    assert_eq!(
        testkit::db::first_different_page(&want, &rebuilt, 4096),
        None
    );
}
