//! `walship restore` of replicas written by the real Litestream 0.3.11 (`generations/...`), on
//! file and S3 replicas, checked against the source database, against the commits a writer made
//! and against Litestream 0.5.17's own restore of the same replica.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testkit::db::checkpointed_image;
use testkit::{litestream, litestream_03, ChildGuard, S3Server, S3_REGION};
use walship::replica::timestamp::format_rfc3339_nano;

mod support;

use support::workload::{app, assert_commit_boundary, rows, walship, write_for, Commit};

const BUCKET: &str = "legacy-backups";

/// Runs a replicator while a writer commits for `secs`, then stops it cleanly.
fn replicate_while_writing(mut cmd: Command, db: &Path, secs: f64, log: &Path) -> Vec<Commit> {
    drop(app(db));
    let mut child = ChildGuard::spawn(&mut cmd, log);
    std::thread::sleep(Duration::from_millis(800));
    let commits = write_for(db, secs);
    // Let the last commits reach the replica before the stop.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        child.terminate(Duration::from_secs(30)),
        "replicator did not stop:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    commits
}

/// Litestream 0.3.11 replicating `db` to a file directory or an S3 bucket path, with short
/// intervals so that a few seconds make several WAL indexes, and a snapshot every
/// `snapshot_interval`.
fn litestream_03_replicate(
    work: &Path,
    db: &Path,
    s3: Option<&S3Server>,
    snapshot_interval: &str,
) -> Command {
    let replica = match s3 {
        Some(s3) => format!(
            "type: s3\n        bucket: {BUCKET}\n        path: app.db\n        endpoint: {}\n        \
             region: {S3_REGION}\n        force-path-style: true",
            s3.endpoint()
        ),
        None => format!("path: {}", work.join("replica").display()),
    };
    let config = work.join("litestream-0.3.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    monitor-interval: 100ms\n    checkpoint-interval: 1s\n    \
             min-checkpoint-page-count: 30\n    replicas:\n      - {replica}\n        \
             sync-interval: 200ms\n        snapshot-interval: {snapshot_interval}\n",
            db.display()
        ),
    )
    .unwrap();
    let mut cmd = litestream_03();
    cmd.arg("replicate").arg("-config").arg(config);
    if let Some(s3) = s3 {
        cmd.envs(s3.credential_env());
    }
    cmd
}

fn run(mut cmd: Command, s3: Option<&S3Server>) -> Output {
    if let Some(s3) = s3 {
        cmd.envs(s3.credential_env());
    }
    cmd.output().unwrap()
}

/// Runs `walship restore ARGS... -o OUT URL`.
fn restore(url: &str, out: &Path, args: &[&str], s3: Option<&S3Server>) -> Output {
    let mut cmd = walship();
    cmd.arg("restore").args(args).arg("-o").arg(out).arg(url);
    run(cmd, s3)
}

fn restore_ok(url: &str, out: &Path, args: &[&str], s3: Option<&S3Server>) -> Output {
    let res = restore(url, out, args, s3);
    assert!(
        res.status.success(),
        "walship restore {args:?} {url}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    res
}

fn restore_err(url: &str, out: &Path, args: &[&str]) -> String {
    let res = restore(url, out, args, None);
    assert!(
        !res.status.success(),
        "walship restore {args:?} should fail"
    );
    String::from_utf8_lossy(&res.stderr).into_owned()
}

/// Restores with Litestream 0.5.17.
fn litestream_restore(url: &str, out: &Path, args: &[&str], s3: Option<&S3Server>) {
    let mut cmd = litestream();
    cmd.arg("restore").args(args).arg("-o").arg(out).arg(url);
    if let Some(s3) = s3 {
        cmd.envs(s3.credential_env());
    }
    testkit::run_ok(&mut cmd);
}

/// The `walship restore -dry-run -json` document.
fn dry_run(url: &str, dir: &Path, args: &[&str], s3: Option<&S3Server>) -> serde_json::Value {
    let mut all = vec!["-dry-run", "-json"];
    all.extend_from_slice(args);
    let res = restore_ok(url, &dir.join("dry-run.db"), &all, s3);
    serde_json::from_slice(&res.stdout).unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The 0.3 object names in a replica (below its root or prefix), sorted.
fn legacy_objects(work: &Path, s3: Option<&S3Server>) -> Vec<String> {
    match s3 {
        Some(s3) => s3
            .list(BUCKET, "app.db/generations/")
            .into_iter()
            .map(|k| k.trim_start_matches("app.db/").to_string())
            .collect(),
        None => {
            let root = work.join("replica");
            let mut names = Vec::new();
            let mut dirs = vec![root.join("generations")];
            while let Some(dir) = dirs.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let path = e.unwrap().path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else {
                        let rel = path.strip_prefix(&root).unwrap();
                        names.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
            names.sort();
            names
        }
    }
}

/// Restores at timestamps across the run with both tools; each is a committed state no later
/// than the timestamp (`slack` allows for stores that keep whole seconds), they never go back
/// in time, and they are byte for byte Litestream 0.5.17's.
fn check_timestamps(
    work: &Path,
    url: &str,
    commits: &[Commit],
    s3: Option<&S3Server>,
    slack: Duration,
) {
    let start = commits.first().unwrap().0;
    let end = commits.last().unwrap().0;
    let span = end.duration_since(start).unwrap();
    let mut prev = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for i in 1..=5u32 {
        let at = start + span * i / 6;
        let stamp = format_rfc3339_nano(at);
        let (ours, theirs) = (
            work.join(format!("at-{i}.db")),
            work.join(format!("at-{i}-ls.db")),
        );
        restore_ok(url, &ours, &["-timestamp", &stamp], s3);
        let max = assert_commit_boundary(&ours, commits, &stamp);
        let by_then = commits
            .iter()
            .filter(|(t, _)| *t <= at + slack)
            .map(|c| c.1)
            .max();
        assert!(max <= by_then.unwrap_or(0), "{stamp}: holds later rows");
        assert!(max >= prev, "{stamp}: restores went back in time");
        prev = max;
        distinct.insert(max);
        litestream_restore(url, &theirs, &["-timestamp", &stamp], s3);
        assert!(
            read(&ours) == read(&theirs),
            "{url} at {stamp} differs from Litestream 0.5.17's restore ({:?} vs {:?} rows)",
            rows(&ours),
            rows(&theirs)
        );
    }
    assert!(
        distinct.len() >= 3,
        "timestamps restored too few distinct states: {distinct:?}"
    );
}

#[test]
fn litestream_03_replicas_restore_latest_and_at_timestamps() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    for (name, s3) in [("file", None), ("s3", Some(&s3))] {
        let work = dir.path().join(name);
        std::fs::create_dir(&work).unwrap();
        let db = work.join("app.db");
        let url = match s3 {
            Some(s3) => s3.replica_url(BUCKET, "app.db"),
            None => format!("file://{}", work.join("replica").display()),
        };
        let log = work.join("litestream-0.3.log");
        let commits = replicate_while_writing(
            litestream_03_replicate(&work, &db, s3, "2s"),
            &db,
            6.0,
            &log,
        );
        let objects = legacy_objects(&work, s3);
        let snapshots = objects.iter().filter(|o| o.contains("/snapshots/")).count();
        let indexes: std::collections::BTreeSet<&str> = objects
            .iter()
            .filter(|o| o.contains("/wal/"))
            .filter_map(|o| o.rsplit('/').next()?.split('_').next())
            .collect();
        assert!(
            snapshots >= 2 && indexes.len() >= 2,
            "{name}: expected several snapshots and WAL indexes: {objects:#?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );

        // The plan says what it will read.
        let plan = dry_run(&url, &work, &[], s3);
        assert_eq!(plan["format"], "litestream-0.3", "{plan:#}");
        let files = plan["files"].as_array().unwrap();
        assert_eq!(files[0]["type"], "snapshot", "{plan:#}");
        assert!(files.len() > 1, "{plan:#}");

        // Latest: the source database, and what Litestream 0.5.17 restores.
        let latest = work.join("latest.db");
        restore_ok(&url, &latest, &[], s3);
        assert_eq!(
            assert_commit_boundary(&latest, &commits, "latest"),
            commits.last().unwrap().1
        );
        assert_eq!(rows(&latest), rows(&db), "{name}: latest is not the source");
        let theirs = work.join("latest-ls.db");
        litestream_restore(&url, &theirs, &[], s3);
        assert!(
            read(&latest) == read(&theirs),
            "{name}: latest differs from Litestream 0.5.17's restore"
        );
        assert_eq!(
            read(&latest),
            checkpointed_image(&db),
            "{name}: latest is not the source's image"
        );

        let slack = match s3 {
            Some(_) => Duration::from_secs(1),
            None => Duration::ZERO,
        };
        check_timestamps(&work, &url, &commits, s3, slack);

        // A 0.3 backup has no TXIDs.
        let res = restore(
            &url,
            &work.join("txid.db"),
            &["-txid", "0000000000000002"],
            s3,
        );
        let msg = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success() && msg.contains("Litestream 0.3") && msg.contains("no TXIDs"),
            "{msg}"
        );
    }
}

/// A short 0.3.11 file replica with one snapshot (at the start), so that the latest state is
/// the snapshot plus every segment; returns the replica directory and the commits.
fn small_replica(dir: &Path) -> (PathBuf, Vec<Commit>) {
    let db = dir.join("app.db");
    let log = dir.join("litestream-0.3.log");
    let commits = replicate_while_writing(
        litestream_03_replicate(dir, &db, None, "1h"),
        &db,
        3.0,
        &log,
    );
    (dir.join("replica"), commits)
}

/// Files left in `dir` whose names start with `prefix` (or `.prefix`, the work directory).
fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) || n.starts_with(&format!(".{prefix}")))
        .collect()
}

#[test]
fn corrupt_and_missing_segments_are_named_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, _) = small_replica(dir.path());
    let url = format!("file://{}", replica.display());
    let out = dir.path().join("out.db");

    // A segment in the middle of an index of the latest plan: not the first of its index.
    let plan = dry_run(&url, dir.path(), &[], None);
    let segments: Vec<&serde_json::Value> = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["type"] == "wal")
        .collect();
    let middle = segments
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            f["offset"] != "00000000"
                && segments
                    .get(i + 1)
                    .is_some_and(|n| n["index"] == f["index"])
        })
        .map(|(_, f)| f["name"].as_str().unwrap().to_string())
        .next()
        .unwrap_or_else(|| panic!("no segment in the middle of an index: {plan:#}"));
    let path = replica.join(&middle);

    let original = read(&path);
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let msg = restore_err(&url, &out, &[]);
    assert!(
        msg.contains(&middle) && msg.contains("LZ4"),
        "{middle}: {msg}"
    );
    assert!(
        leftovers(dir.path(), "out.db").is_empty(),
        "{:?}",
        leftovers(dir.path(), "out.db")
    );

    std::fs::remove_file(&path).unwrap();
    let msg = restore_err(&url, &out, &[]);
    assert!(
        msg.contains(&format!("missing {middle}")),
        "{middle}: {msg}"
    );
    assert!(leftovers(dir.path(), "out.db").is_empty());

    // Back in place, it restores.
    std::fs::write(&path, &original).unwrap();
    restore_ok(&url, &out, &[], None);
}

#[test]
fn the_newer_layout_wins_when_a_replica_holds_both() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, old) = small_replica(dir.path());
    let url = format!("file://{}", replica.display());
    let db = dir.path().join("app.db");

    // walship takes over the same database and replica: its LTX files are the newer backup.
    let mut cmd = walship();
    cmd.arg("replicate").arg(&db).arg(&url);
    let new = replicate_while_writing(cmd, &db, 3.0, &dir.path().join("walship.log"));
    let all: Vec<Commit> = old.iter().chain(&new).copied().collect();

    let plan = dry_run(&url, dir.path(), &[], None);
    assert!(plan.get("format").is_none(), "latest is LTX: {plan:#}");
    let latest = dir.path().join("latest.db");
    restore_ok(&url, &latest, &[], None);
    assert_eq!(
        assert_commit_boundary(&latest, &all, "latest"),
        new.last().unwrap().1
    );
    let theirs = dir.path().join("latest-ls.db");
    litestream_restore(&url, &theirs, &[], None);
    assert_eq!(rows(&latest), rows(&theirs));

    // Before walship started, only the 0.3 backup holds the state.
    let at = old.last().unwrap().0;
    let stamp = format_rfc3339_nano(at);
    let plan = dry_run(&url, dir.path(), &["-timestamp", &stamp], None);
    assert_eq!(plan["format"], "litestream-0.3", "{plan:#}");
    let (ours, theirs) = (dir.path().join("at.db"), dir.path().join("at-ls.db"));
    restore_ok(&url, &ours, &["-timestamp", &stamp], None);
    let max = assert_commit_boundary(&ours, &all, &stamp);
    assert!(max <= old.last().unwrap().1 && max > 0, "{max}");
    litestream_restore(&url, &theirs, &["-timestamp", &stamp], None);
    assert!(
        read(&ours) == read(&theirs),
        "{stamp}: differs from Litestream 0.5.17's"
    );

    // -txid only reads LTX files.
    let res = restore_ok(
        &url,
        &dir.path().join("txid.db"),
        &["-txid", "0000000000000001", "-dry-run", "-json"],
        None,
    );
    let doc: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert!(doc.get("format").is_none(), "{doc:#}");
}
