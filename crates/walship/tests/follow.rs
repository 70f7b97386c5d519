//! `walship restore -f`: a read replica kept current from the replica while the source is
//! written; readers of the follower only ever see committed states; a restarted follower goes on
//! from its `-txid` file.

use std::path::Path;
use std::time::Duration;

use testkit::{wait_until, ChildGuard};

mod support;

use support::workload::{app, assert_commit_boundary, rows, walship, Writer};

fn follow(out: &Path, url: &str, log: &Path) -> ChildGuard {
    ChildGuard::spawn(
        walship()
            .args(["restore", "-f", "-follow-interval", "200ms", "-o"])
            .arg(out)
            .arg(url),
        log,
    )
}

#[test]
fn a_follower_stays_current_and_readers_see_only_committed_states() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut ws = ChildGuard::spawn(
        walship().arg("replicate").arg(&db).arg(&url),
        &dir.path().join("walship.log"),
    );
    let writer = Writer::start(&db);
    std::thread::sleep(Duration::from_secs(2));

    let out = dir.path().join("follower.db");
    let log = dir.path().join("follow.log");
    let mut follower = follow(&out, &url, &log);
    assert!(wait_until(Duration::from_secs(20), || out.exists()));
    // Readers during the follow: every look is a committed state, and the states move forward.
    let mut seen = Vec::new();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(300));
        let commits = writer_commits_so_far(&db);
        seen.push(assert_commit_boundary(
            &out,
            &commits,
            "a reader of the follower",
        ));
    }
    let commits = writer.stop();
    let last = commits.last().unwrap().1;
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "went back: {seen:?}");
    assert!(seen.last() > seen.first(), "never moved: {seen:?}");
    assert!(
        wait_until(Duration::from_secs(20), || rows(&out).1 == last),
        "the follower never reached row {last}: {:?}\n{}",
        rows(&out),
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(follower.terminate(Duration::from_secs(10)));
    let txid = std::fs::read_to_string(format!("{}-txid", out.display())).unwrap();
    assert_eq!(txid.trim().len(), 16, "{txid:?}");

    // Restarted, it goes on from its -txid file.
    let conn = app(&db);
    conn.execute(
        "INSERT INTO rows(id, tx, pad) VALUES (?1, -1, 'after')",
        [last + 1],
    )
    .unwrap();
    let mut follower = follow(&out, &url, &log);
    assert!(
        wait_until(Duration::from_secs(20), || rows(&out).1 == last + 1),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(follower.terminate(Duration::from_secs(10)));
    assert!(ws.terminate(Duration::from_secs(30)));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("following") && text.contains("from TXID"),
        "{text}"
    );
}

/// The rows committed so far, as commits for `assert_commit_boundary` (each transaction's last
/// row id); read from the source database itself.
fn writer_commits_so_far(db: &Path) -> Vec<support::workload::Commit> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT max(id) FROM rows GROUP BY tx ORDER BY tx")
        .unwrap();
    let ids: Vec<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    ids.into_iter()
        .map(|id| (std::time::SystemTime::now(), id))
        .collect()
}
