//! Levels, snapshots and retention end to end, on fast settings: after compaction and retention
//! have run many times, `litestream restore` 0.5.17 still restores every point in the retention
//! window (no "non-contiguous" gaps), each one a committed state no older than the levels'
//! resolution, and old files are gone from the local store and the replicas.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use testkit::{litestream, ChildGuard, S3Server};
use walship::replica::timestamp::format_rfc3339_nano;

mod support;

use support::workload::{app, assert_commit_boundary, walship, Commit, Writer};

fn restore(url: &str, out: &Path, at: Option<SystemTime>, s3: &S3Server) -> Output {
    let _ = std::fs::remove_file(out);
    let mut cmd = litestream();
    cmd.args(["restore", "-o"]).arg(out);
    if let Some(at) = at {
        cmd.arg("-timestamp").arg(format_rfc3339_nano(at));
    }
    cmd.envs(s3.credential_env()).arg(url).output().unwrap()
}

fn ltx_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ltx"))
        })
        .count()
    })
}

/// Every file of a replica with its mtime, for failure messages.
fn listing(root: &Path) -> String {
    let mut out = String::new();
    for level in 0..10 {
        let Ok(rd) = std::fs::read_dir(root.join(level.to_string())) else {
            continue;
        };
        let mut names: Vec<_> = rd
            .flatten()
            .map(|e| {
                let t = e.metadata().unwrap().modified().unwrap();
                format!(
                    "L{level} {} {}",
                    e.file_name().to_string_lossy(),
                    format_rfc3339_nano(t)
                )
            })
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|n| n + "\n"));
    }
    out
}

/// The highest row id committed at or before `at`.
fn committed_at(commits: &[Commit], at: SystemTime) -> i64 {
    commits
        .iter()
        .take_while(|(t, _)| *t <= at)
        .last()
        .map_or(0, |c| c.1)
}

#[test]
fn every_time_in_the_retention_window_restores_after_compaction_and_retention() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let file_replica = dir.path().join("replica");
    let s3_url = s3.replica_url("backups", "app.db");
    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "levels:\n  - interval: 1s\n  - interval: 3s\n\
             snapshot:\n  interval: 6s\n  retention: 12s\n\
             l0-retention: 2s\nl0-retention-check-interval: 1s\n\
             dbs:\n  - path: {}\n    monitor-interval: 200ms\n    replicas:\n\
             \x20     - url: file://{}\n      - url: {s3_url}\n",
            db.display(),
            file_replica.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("walship.log");
    let mut ws = ChildGuard::spawn(
        walship()
            .args(["replicate", "-config"])
            .arg(&config)
            .env("LOG_LEVEL", "debug")
            .envs(s3.credential_env()),
        &log,
    );
    let writer = Writer::start(&db);
    std::thread::sleep(Duration::from_secs(30));
    let commits = writer.stop();
    std::thread::sleep(Duration::from_secs(2));
    assert!(ws.terminate(Duration::from_secs(30)));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(ws.0.wait().unwrap().success(), "{log_text}");
    let last = commits.last().unwrap().1;

    // Retention ran: the local store and the replicas hold far fewer L0 files than captures.
    let meta = dir.path().join(".app.db-litestream/ltx");
    let local_l0 = ltx_files(&meta.join("0"));
    let captures = log_text.matches("captured").count();
    assert!(captures > 60, "only {captures} captures\n{log_text}");
    assert!(
        local_l0 * 3 < captures,
        "{local_l0} local L0 files of {captures} captures"
    );
    assert!(ltx_files(&meta.join("9")) >= 1, "no local snapshot");
    let remote_l0 = ltx_files(&file_replica.join("ltx/0"));
    assert!(
        remote_l0 * 3 < captures,
        "{remote_l0} remote L0 files of {captures}"
    );
    for level in ["1", "2", "9"] {
        assert!(
            ltx_files(&file_replica.join("ltx").join(level)) >= 1,
            "no L{level} in the file replica"
        );
    }
    let s3_keys = s3.list("backups", "app.db/");
    for level in ["0000", "0001", "0002", "0009"] {
        assert!(
            s3_keys
                .iter()
                .any(|k| k.starts_with(&format!("app.db/{level}/"))),
            "no level {level} on S3: {s3_keys:?}"
        );
    }
    assert!(
        s3_keys
            .iter()
            .filter(|k| k.starts_with("app.db/0000/"))
            .count()
            * 3
            < captures,
        "S3 kept its L0 files: {s3_keys:?}"
    );

    let file_url = format!("file://{}", file_replica.display());
    for url in [&file_url, &s3_url] {
        let out = dir.path().join("latest.db");
        let res = restore(url, &out, None, &s3);
        assert!(
            res.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(
            assert_commit_boundary(&out, &commits, "latest"),
            last,
            "{url}"
        );
    }

    // The window: from the oldest snapshot kept (retention 12 s, taken every 6 s) to the end.
    let end = commits.last().unwrap().0;
    let window = Duration::from_secs(10);
    for i in 0..25u32 {
        let at = end - window + window * i / 25;
        let out = dir.path().join(format!("at-{i}.db"));
        let res = restore(&file_url, &out, Some(at), &s3);
        assert!(
            res.status.success(),
            "at {} (-{:?}): {}\n{}",
            format_rfc3339_nano(at),
            end.duration_since(at).unwrap(),
            String::from_utf8_lossy(&res.stderr),
            listing(&file_replica.join("ltx")),
        );
        let got = assert_commit_boundary(&out, &commits, &format!("restore at step {i}"));
        assert!(
            got <= committed_at(&commits, at),
            "step {i}: restored a state from after {at:?}"
        );
        // Level 1 (1 s) files stay until a snapshot covers them, so the resolution is a few
        // seconds at worst: capture interval plus L1 interval plus slack.
        let floor = committed_at(&commits, at - Duration::from_secs(3));
        assert!(
            got >= floor,
            "step {i}: restored {got} rows, but {floor} were committed 3 s earlier"
        );
    }
}

/// The first snapshot of a store must not take with it the files that restore the moments
/// before it that are still inside the retention window; once it is older than the window, they
/// go.
#[test]
fn the_files_before_a_snapshot_stay_while_the_window_still_reaches_before_it() {
    use walship::compaction::{CompactionOptions, Compactor};
    use walship::db::{Db, DbOptions};
    use walship::store::LocalStore;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = app(&path);
    let mut db = Db::open(&path, DbOptions::default()).unwrap();
    for i in 1..=3 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
        db.sync().unwrap().unwrap();
    }
    let store = LocalStore::open(&LocalStore::default_dir(&path)).unwrap();
    let l0 = |store: &LocalStore| store.list(0).unwrap().len();
    assert_eq!(l0(&store), 3);
    let opts = CompactionOptions {
        levels: vec![Duration::from_secs(3600)],
        snapshot_interval: Duration::from_secs(1),
        snapshot_retention: Duration::from_secs(60),
        l0_retention: Duration::ZERO,
        l0_retention_check_interval: Duration::from_secs(3600),
        encoding: ltx::PageEncoding::Block,
    };
    let mut compactor = Compactor::new(LocalStore::open(store.root()).unwrap(), opts).unwrap();
    let now = SystemTime::now();
    let report = compactor.tick(now + Duration::from_secs(2)).unwrap();
    assert!(report.written.iter().any(|w| w.0 == 9), "{report:?}");
    assert_eq!(l0(&store), 3, "the first snapshot took the files before it");
    compactor.tick(now + Duration::from_secs(120)).unwrap();
    assert_eq!(
        l0(&store),
        1,
        "files behind a snapshot older than the window stayed"
    );
}
