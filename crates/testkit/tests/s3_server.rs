//! The S3 test server is real enough for the reference tool: Litestream 0.5.17 replicates to it
//! and restores from it.

use std::time::Duration;

use testkit::db::{fill_sample, integrity_check, open_wal};
use testkit::{litestream, run_ok, wait_until, ChildGuard, S3Server};

fn item_count(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn litestream_replicates_to_and_restores_from_the_s3_server() {
    let s3 = S3Server::start();
    s3.create_bucket("compat");
    let url = s3.replica_url("compat", "app.db");
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let conn = open_wal(&db_path);
    fill_sample(&conn, 7, 400);

    let log = dir.path().join("litestream.log");
    let mut ls = ChildGuard::spawn(
        litestream()
            .envs(s3.credential_env())
            .arg("replicate")
            .arg(&db_path)
            .arg(&url),
        &log,
    );
    std::thread::sleep(Duration::from_millis(1500));
    fill_sample(&conn, 8, 250);
    let want: i64 = conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();

    // Restore until the replica has caught up with the last write.
    let restored = dir.path().join("restored.db");
    let caught_up = wait_until(Duration::from_secs(30), || {
        let _ = std::fs::remove_file(&restored);
        let ok = litestream()
            .envs(s3.credential_env())
            .args(["restore", "-o"])
            .arg(&restored)
            .arg(&url)
            .output()
            .is_ok_and(|o| o.status.success());
        ok && item_count(&restored) == want
    });
    assert!(
        caught_up,
        "litestream never restored {want} rows from the S3 server\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        ls.terminate(Duration::from_secs(15)),
        "litestream did not stop on SIGTERM"
    );
    assert_eq!(integrity_check(&restored), "ok");

    // The objects are where Litestream 0.5 puts them on S3: <path>/<level %04x>/<min>-<max>.ltx.
    let keys = s3.list("compat", "app.db/");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("app.db/0000/") && k.ends_with(".ltx")),
        "no L0 files in the bucket: {keys:?}"
    );

    // And the reference restore of the final state still works after the replicator stopped.
    let again = dir.path().join("again.db");
    run_ok(
        litestream()
            .envs(s3.credential_env())
            .args(["restore", "-o"])
            .arg(&again)
            .arg(&url),
    );
    assert_eq!(item_count(&again), want);
}
