//! `walship replicate` end to end: real processes, real files, the real S3 server, and the real
//! `litestream restore` 0.5.17 reading what walship wrote.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use testkit::db::{checkpointed_image, first_different_page};
use testkit::{litestream, wait_until, ChildGuard, S3Server};
use walship::replica::timestamp::format_rfc3339_nano;

mod support;

use support::workload::{app, assert_commit_boundary, rows, walship, write_config, Writer};

/// Restores `url` with Litestream 0.5.17, optionally as of `at`.
fn litestream_restore(
    url: &str,
    out: &Path,
    at: Option<SystemTime>,
    s3: Option<&S3Server>,
) -> Output {
    let _ = std::fs::remove_file(out);
    let mut cmd = litestream();
    cmd.args(["restore", "-o"]).arg(out);
    if let Some(at) = at {
        cmd.arg("-timestamp").arg(format_rfc3339_nano(at));
    }
    if let Some(s3) = s3 {
        cmd.envs(s3.credential_env());
    }
    cmd.arg(url).output().unwrap()
}

fn spawn_walship(
    args: &[&str],
    config: Option<&Path>,
    env: &[(&str, &str)],
    log: &Path,
) -> ChildGuard {
    let mut cmd = walship();
    cmd.arg("replicate");
    if let Some(c) = config {
        cmd.arg("-config").arg(c);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("LOG_LEVEL", "debug");
    // Append, so the log of every run of a restarted walship survives.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = file.try_clone().unwrap();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap();
    ChildGuard(child)
}

#[test]
fn replicas_on_file_and_s3_restore_with_litestream_latest_and_in_the_past() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let file_replica = dir.path().join("file-replica");
    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: file://{}\n      - url: {}\n",
            db.display(),
            file_replica.display(),
            s3.replica_url("backups", "app.db")
        ),
    )
    .unwrap();
    let log = dir.path().join("walship.log");
    let mut ws = spawn_walship(&[], Some(&config), &s3.credential_env(), &log);
    // The probes in the past start from the first commit: walship must have captured the
    // database by then, however slowly it started on a loaded machine.
    let l0 = dir.path().join(".app.db-litestream/ltx/0");
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(&l0).is_ok_and(|mut d| d.next().is_some())
    }));

    let writer = Writer::start(&db);
    std::thread::sleep(Duration::from_secs(5));
    let commits = writer.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ws.terminate(Duration::from_secs(30)),
        "walship did not stop on SIGTERM"
    );
    let status = ws.0.wait().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "walship exited with {status}\n{log_text}");

    let last = commits.last().unwrap().1;
    let want = checkpointed_image(&db);
    let urls = [
        (format!("file://{}", file_replica.display()), None),
        (s3.replica_url("backups", "app.db"), Some(&s3)),
    ];
    for (url, s3) in &urls {
        // Latest: the final sync at shutdown took every commit.
        let out = dir.path().join("latest.db");
        let res = litestream_restore(url, &out, None, *s3);
        assert!(
            res.status.success(),
            "{url}: {}\n{log_text}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(assert_commit_boundary(&out, &commits, url), last);
        assert_eq!(
            first_different_page(&want, &std::fs::read(&out).unwrap(), 4096),
            None
        );

        // In the past: each restore is the state after some commit, and time moves forward.
        // Litestream refuses a timestamp past the newest file's listed time, which S3 gives in
        // whole seconds, so the probes stay more than a second before the end of the run.
        let start = commits.first().unwrap().0;
        let mut prev = 0;
        for i in 1..=6 {
            let at = start + Duration::from_millis(600 * i);
            let out = dir.path().join(format!("at-{i}.db"));
            let res = litestream_restore(url, &out, Some(at), *s3);
            assert!(
                res.status.success(),
                "{url} at +{i}: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            let max = assert_commit_boundary(&out, &commits, &format!("{url} at +{}ms", 600 * i));
            assert!(
                max >= prev,
                "restores went back in time: {max} after {prev}"
            );
            // A restore as of `at` holds no commit made after `at`.
            let committed_by_then = commits
                .iter()
                .filter(|(t, _)| *t <= at)
                .map(|(_, id)| *id)
                .max()
                .unwrap_or(0);
            assert!(
                max <= committed_by_then,
                "{url}: restore at +{i} holds rows committed later"
            );
            prev = max;
        }
        assert!(
            prev > 0 && prev < last,
            "restores in the past saw some but not all rows"
        );
    }
}

#[test]
fn survives_sigkill_and_every_restore_is_a_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let log = dir.path().join("walship.log");
    let db_arg = db.display().to_string();

    let writer = Writer::start(&db);
    let mut ws = spawn_walship(&[&db_arg, &url], None, &[], &log);
    for round in 0..6u64 {
        std::thread::sleep(Duration::from_millis(700 + round * 131 % 600));
        ws.0.kill().unwrap();
        ws.0.wait().unwrap();
        // While walship is away the application's own checkpoints may restart the WAL.
        std::thread::sleep(Duration::from_millis(300 + round * 97 % 400));
        ws = spawn_walship(&[&db_arg, &url], None, &[], &log);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let commits = writer.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ws.terminate(Duration::from_secs(30)));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(ws.0.wait().unwrap().success(), "{log_text}");

    let out = dir.path().join("latest.db");
    let res = litestream_restore(&url, &out, None, None);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        assert_commit_boundary(&out, &commits, "latest"),
        commits.last().unwrap().1
    );

    let start = commits.first().unwrap().0;
    let end = commits.last().unwrap().0;
    let span = end.duration_since(start).unwrap();
    for i in 1..=20u32 {
        let at = start + span * i / 21;
        let out = dir.path().join(format!("at-{i}.db"));
        let res = litestream_restore(&url, &out, Some(at), None);
        assert!(
            res.status.success(),
            "at {i}/21: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_commit_boundary(&out, &commits, &format!("restore at {i}/21 of the run"));
    }
}

#[test]
fn a_replica_that_is_down_catches_up_and_does_not_hold_back_the_other() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let file_replica = dir.path().join("file-replica");
    let s3_url = s3.replica_url("late-bucket", "app.db");
    let log = dir.path().join("walship.log");
    let db_arg = db.display().to_string();
    let file_url = format!("file://{}", file_replica.display());
    let mut ws = spawn_walship(
        &[&db_arg, &file_url, &s3_url],
        None,
        &s3.credential_env(),
        &log,
    );

    // The bucket does not exist yet: the S3 replica fails while the file replica keeps up.
    for i in 0..50 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i + 1])
            .unwrap();
    }
    let file_has = |n: i64| {
        let out = dir.path().join("probe.db");
        litestream_restore(&file_url, &out, None, None)
            .status
            .success()
            && rows(&out).0 == n
    };
    assert!(
        wait_until(Duration::from_secs(20), || file_has(50)),
        "the file replica fell behind"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("NoSuchBucket") && text.contains("create the bucket"),
        "{text}"
    );

    // The bucket appears: the S3 replica uploads everything it missed.
    s3.create_bucket("late-bucket");
    for i in 50..80 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'y')", [i + 1])
            .unwrap();
    }
    let s3_has = |n: i64| {
        let out = dir.path().join("probe-s3.db");
        litestream_restore(&s3_url, &out, None, Some(&s3))
            .status
            .success()
            && rows(&out).0 == n
    };
    assert!(
        wait_until(Duration::from_secs(60), || s3_has(80)),
        "the S3 replica did not catch up"
    );
    assert!(wait_until(Duration::from_secs(10), || file_has(80)));
    assert!(ws.terminate(Duration::from_secs(30)));
}

fn replicate_fails(args: &[&str]) -> String {
    let out = walship().arg("replicate").args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "walship replicate {args:?} should fail"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configs_and_urls_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let db_arg = db.display().to_string();

    let msg = replicate_fails(&["-config", "/nonexistent/walship.yml"]);
    assert!(
        msg.contains("/nonexistent/walship.yml") && msg.contains("cannot read"),
        "{msg}"
    );

    let config = dir.path().join("bad.yml");
    std::fs::write(&config, format!("dbs:\n  - path: {db_arg}\n    monitor-intervall: 1s\n    replica:\n      url: file:///tmp/x\n")).unwrap();
    let msg = replicate_fails(&["-config", config.to_str().unwrap()]);
    assert!(
        msg.contains("monitor-intervall") && msg.contains("did you mean \"monitor-interval\""),
        "{msg}"
    );

    let msg = replicate_fails(&[&db_arg, "ftp://host/path"]);
    assert!(msg.contains("ftp"), "{msg}");

    let missing = dir.path().join("missing.db").display().to_string();
    let msg = replicate_fails(&[&missing, "file:///tmp/somewhere"]);
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(
        !dir.path().join("missing.db").exists(),
        "no database is created by mistake"
    );

    let msg = replicate_fails(&[&db_arg]);
    assert!(msg.contains("no replica URL"), "{msg}");
}

/// A writer in another process that opens, commits and closes each time: walship must keep its
/// locks (closing any descriptor of the database drops a process's POSIX locks), or the writer's
/// close takes itself for the last connection, checkpoints and deletes the WAL under walship.
#[test]
fn commits_from_short_lived_connections_in_another_process_are_captured() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let log = dir.path().join("walship.log");
    let python = testkit::venv_bin("python");
    let sql = |stmt: &str| {
        let script = format!(
            "import sqlite3\nc = sqlite3.connect({:?})\nc.execute({stmt:?})\nc.commit()\nc.close()",
            db.display().to_string()
        );
        testkit::run_ok(Command::new(&python).arg("-c").arg(script));
    };
    // Created in rollback-journal mode, as Datasette leaves databases; walship switches it to WAL.
    sql("CREATE TABLE rows(id INTEGER PRIMARY KEY, tx INTEGER, pad TEXT)");
    let db_arg = db.display().to_string();
    let mut ws = spawn_walship(&[&db_arg, &url], None, &[], &log);
    assert!(wait_until(Duration::from_secs(10), || replica
        .join("ltx/0")
        .is_dir()));
    for i in 1..=4 {
        sql(&format!(
            "INSERT INTO rows(id, tx, pad) VALUES ({i}, {i}, 'x')"
        ));
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            Path::new(&format!("{db_arg}-wal")).exists(),
            "the WAL was deleted by the writer's close after commit {i}"
        );
    }
    assert!(ws.terminate(Duration::from_secs(30)));
    let out = dir.path().join("latest.db");
    let res = litestream_restore(&url, &out, None, None);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        res.status.success(),
        "{}\n{log_text}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(rows(&out), (4, 4), "{log_text}");
}

#[test]
fn a_database_replaced_while_replicating_is_followed() {
    replaced_while_replicating(4096);
}

/// Litestream's restore refuses to merge files of two page sizes: the replica must let every
/// restore plan start at or after the change.
#[test]
fn a_database_replaced_by_one_of_another_page_size_restores_with_litestream() {
    replaced_while_replicating(8192);
}

fn replaced_while_replicating(new_page_size: u32) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    let log = dir.path().join("walship.log");
    // No compaction within the test: a level file merging the whole history would hide from
    // the restore plan the L0 files of both page sizes.
    let config = write_config(dir.path(), "levels:\n  - interval: 1h\n", &db, "", &[&url]);
    let mut ws = spawn_walship(&[], Some(&config), &[], &log);
    for i in 1..=40 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'old')", [i])
            .unwrap();
    }
    drop(conn);
    let probe = dir.path().join("probe.db");
    let has = |n: i64| {
        litestream_restore(&url, &probe, None, None)
            .status
            .success()
            && rows(&probe).0 == n
    };
    assert!(wait_until(Duration::from_secs(20), || has(40)));

    // Put another database in its place, as a restore to a temporary name and a rename does.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch(&format!(
            "PRAGMA page_size={new_page_size}; CREATE TABLE rows(id INTEGER PRIMARY KEY, \
             tx INTEGER, pad TEXT)"
        ))
        .unwrap();
    let conn = app(&other);
    for i in 1..=7 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 1, 'new')", [i])
            .unwrap();
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    std::fs::rename(&other, &db).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", db.display()));
    let _ = std::fs::remove_file(format!("{}-shm", db.display()));
    let conn = app(&db);
    conn.execute("INSERT INTO rows(id, tx, pad) VALUES (8, 2, 'after')", [])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || has(8)),
        "the replica never showed the new file\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let want = checkpointed_image(&db);
    let got = std::fs::read(&probe).unwrap();
    assert_eq!(
        first_different_page(&want, &got, new_page_size as usize),
        None
    );
    assert!(ws.terminate(Duration::from_secs(30)));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the database file was replaced"), "{text}");
}

#[test]
fn exec_replicates_while_the_child_runs_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let url = format!("file://{}", dir.path().join("replica").display());
    let python = testkit::venv_bin("python");
    // The child commits 100 rows and exits 3 at once: only the final capture can catch the last.
    let script = format!(
        "import sqlite3\nc = sqlite3.connect({db:?})\n\
         for i in range(1, 101):\n    c.execute(\"INSERT INTO rows(id, tx, pad) VALUES (?, 0, 1)\", (i,))\n    c.commit()\n\
         raise SystemExit(3)\n",
        db = db.display().to_string()
    );
    let cmd = format!("{} -c '{script}'", python.display());
    let out = walship()
        .args(["replicate", "-exec", &cmd])
        .arg(&db)
        .arg(&url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{log}");
    let restored = dir.path().join("restored.db");
    let res = litestream_restore(&url, &restored, None, None);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(rows(&restored), (100, 100), "{log}");

    // SIGTERM to walship reaches the child; walship exits with the child's status.
    let script = "import signal, sys, time\n\
                  signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n\
                  print(\"child\" + \"-ready\", flush=True)\ntime.sleep(60)\n";
    let log_path = dir.path().join("walship.log");
    let mut ws = ChildGuard::spawn(
        walship()
            .args([
                "replicate",
                "-exec",
                &format!("{} -c '{script}'", python.display()),
            ])
            .arg(&db)
            .arg(&url),
        &log_path,
    );
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.contains("child-ready"))
    }));
    assert!(ws.terminate(Duration::from_secs(30)));
    let status = ws.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
}

#[test]
fn a_watched_directory_replicates_every_database_in_it_including_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("team")).unwrap();
    let replica = dir.path().join("replica");
    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    recursive: true\n    watch: true\n    replica:\n      url: file://{}\n",
            data.display(),
            replica.display()
        ),
    )
    .unwrap();
    let insert = |db: &Path, n: i64| {
        let conn = app(db);
        for i in 1..=n {
            conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
                .unwrap();
        }
    };
    insert(&data.join("a.db"), 3);
    insert(&data.join("team/b.db"), 5);
    std::fs::write(data.join("notes.db"), "not a database").unwrap();
    let log = dir.path().join("walship.log");
    let mut ws = spawn_walship(&[], Some(&config), &[], &log);

    // A database created while walship runs is found by the watch.
    std::thread::sleep(Duration::from_millis(500));
    insert(&data.join("team/c.db"), 7);
    let restored = |rel: &str, n: i64| {
        let out = dir.path().join("probe.db");
        let url = format!("file://{}", replica.join(rel).display());
        litestream_restore(&url, &out, None, None).status.success() && rows(&out).0 == n
    };
    for (rel, n) in [("a.db", 3), ("team/b.db", 5), ("team/c.db", 7)] {
        assert!(
            wait_until(Duration::from_secs(20), || restored(rel, n)),
            "{rel} never reached its replica\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    assert!(ws.terminate(Duration::from_secs(30)));
    assert!(!replica.join("notes.db").exists());
}

#[test]
fn a_closed_stderr_does_not_stop_the_final_sync() {
    // A supervisor that read walship's stderr died (Datasette killed with SIGKILL): every log
    // line now fails with EPIPE, and SIGTERM must still end in a final sync and exit 0.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut child = walship()
        .args(["replicate", db.to_str().unwrap(), &url])
        .env("LOG_LEVEL", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    for i in 1..=20 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "walship exited with {status}");
    let out = dir.path().join("out.db");
    let res = litestream_restore(&url, &out, None, None);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(rows(&out).0, 20);
}

#[test]
fn stopping_with_a_replica_behind_exits_with_failure_naming_it() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let url = s3.replica_url("missing-bucket", "app.db");
    let file_url = format!("file://{}", dir.path().join("replica").display());
    let log = dir.path().join("walship.log");
    let db_arg = db.display().to_string();
    let mut ws = spawn_walship(
        &[&db_arg, &file_url, &url],
        None,
        &s3.credential_env(),
        &log,
    );
    for i in 1..=10 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ws.terminate(Duration::from_secs(30)));
    let status = ws.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("replica \"s3\"") && text.contains("NOT replicated"),
        "{text}"
    );
}

#[test]
fn a_replica_that_stopped_answering_holds_the_stop_only_for_shutdown_sync_timeout() {
    use testkit::Fault;
    let s3 = S3Server::start();
    s3.create_bucket("slow");
    let proxy = s3.proxy();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let url = s3.replica_url_through(&proxy, "slow", "app.db");
    let config = write_config(dir.path(), "shutdown-sync-timeout: 2s\n", &db, "", &[&url]);
    let log = dir.path().join("walship.log");
    let mut ws = spawn_walship(&[], Some(&config), &s3.credential_env(), &log);
    conn.execute("INSERT INTO rows(id, tx, pad) VALUES (1, 0, 'x')", [])
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Connections now hang without an answer, as behind a dead network path.
    proxy.set_fault(Fault::Blackhole);
    conn.execute("INSERT INTO rows(id, tx, pad) VALUES (2, 0, 'x')", [])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert!(
        ws.terminate(Duration::from_secs(20)),
        "walship did not stop within 20 s of SIGTERM"
    );
    let waited = started.elapsed();
    let status = ws.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("shutdown-sync-timeout"), "{text}");
    assert!(waited < Duration::from_secs(15), "stopping took {waited:?}");
}

/// Writes `n` rows into `db`, one transaction each, with a pause after each so that walship
/// captures them one TXID at a time.
fn insert_spaced(conn: &rusqlite::Connection, ids: std::ops::Range<i64>) {
    for i in ids {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_replica_unreachable_at_start_holds_up_nothing_and_one_holding_another_history_is_refused() {
    use testkit::Fault;
    let s3 = S3Server::start();
    s3.create_bucket("shared");
    let proxy = s3.proxy();
    let dir = tempfile::tempdir().unwrap();
    let config = |db: &Path, urls: &[&str]| {
        write_config(dir.path(), "", db, "monitor-interval: 100ms", urls)
    };
    let env = s3.credential_env();
    let direct = s3.replica_url("shared", "app.db");
    let through = s3.replica_url_through(&proxy, "shared", "app.db");

    // Database A fills the S3 replica with six TXIDs of its own history.
    let a = dir.path().join("a.db");
    let conn_a = app(&a);
    let log_a = dir.path().join("a.log");
    let mut ws = spawn_walship(&[], Some(&config(&a, &[&direct])), &env, &log_a);
    insert_spaced(&conn_a, 1..6);
    assert!(ws.terminate(Duration::from_secs(30)));
    assert!(ws.0.wait().unwrap().success());

    // Database B has a local store of two TXIDs, replicated to a directory.
    let b = dir.path().join("b.db");
    let conn_b = app(&b);
    let file_url = format!("file://{}", dir.path().join("b-replica").display());
    let log_b = dir.path().join("b.log");
    let mut ws = spawn_walship(&[], Some(&config(&b, &[&file_url])), &env, &log_b);
    insert_spaced(&conn_b, 101..102);
    assert!(ws.terminate(Duration::from_secs(30)));
    assert!(ws.0.wait().unwrap().success());

    // B is then (wrongly) pointed at A's replica too, which does not answer at start: B's
    // first capture must not wait for it, as its store knows where B's TXIDs stand.
    proxy.set_fault(Fault::Blackhole);
    let started = std::time::Instant::now();
    let mut ws = spawn_walship(&[], Some(&config(&b, &[&file_url, &through])), &env, &log_b);
    conn_b
        .execute("INSERT INTO rows(id, tx, pad) VALUES (102, 0, 'x')", [])
        .unwrap();
    let file_has = |n: i64| {
        let out = dir.path().join("probe.db");
        litestream_restore(&file_url, &out, None, None)
            .status
            .success()
            && rows(&out).0 == n
    };
    assert!(
        wait_until(Duration::from_secs(30), || file_has(2)),
        "the file replica waited for the unreachable one:\n{}",
        std::fs::read_to_string(&log_b).unwrap()
    );
    let waited = started.elapsed();
    proxy.set_fault(Fault::PassThrough);

    // Once it answers (after the client's 30 s timeout of the request the blackhole held), it
    // is found to hold TXIDs B never wrote: refused, named, not mixed.
    assert!(
        wait_until(Duration::from_secs(90), || std::fs::read_to_string(&log_b)
            .unwrap()
            .contains("holds TXIDs up to")),
        "{}",
        std::fs::read_to_string(&log_b).unwrap()
    );
    insert_spaced(&conn_b, 103..105);
    assert!(wait_until(Duration::from_secs(20), || file_has(4)));
    assert!(ws.terminate(Duration::from_secs(30)));
    let status = ws.0.wait().unwrap();
    let text = std::fs::read_to_string(&log_b).unwrap();
    assert!(text.contains("could not ask the replica"), "{text}");
    assert_eq!(status.code(), Some(1), "B's S3 replica is behind: {text}");
    let out = dir.path().join("a-restored.db");
    let res = litestream_restore(&direct, &out, None, Some(&s3));
    assert!(res.status.success(), "{res:?}");
    assert_eq!(rows(&out), (5, 5), "A's replica was written into by B");
    assert!(
        waited < Duration::from_secs(20),
        "B's first capture waited {waited:?} for the unreachable replica"
    );
}

/// Found by the torture suite: with every replica holding the last capture, a final pass still
/// uploading big compacted files past shutdown-sync-timeout made walship exit 1 saying the last
/// transactions were NOT replicated, a false alarm to any supervisor.
#[test]
fn compacted_files_still_uploading_at_stop_are_no_failure_when_replicas_hold_the_last_capture() {
    use testkit::Fault;
    let s3 = S3Server::start();
    s3.create_bucket("levels");
    let proxy = s3.proxy();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let url = s3.replica_url_through(&proxy, "levels", "app.db");
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let config = write_config(
        dir.path(),
        &format!("addr: {addr}\nshutdown-sync-timeout: 2s\nlevels:\n  - interval: 1s\n"),
        &db,
        "monitor-interval: 100ms",
        &[&url],
    );
    let log = dir.path().join("walship.log");
    let mut ws = spawn_walship(&[], Some(&config), &s3.credential_env(), &log);
    for i in 1..=20 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
    }
    let status = || -> Option<serde_json::Value> {
        let (code, body) = support::http::get(&addr, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    };
    let caught_up = || {
        status().is_some_and(|s| {
            let db = &s["databases"][0];
            db["txid"].as_u64().is_some() && db["replicas"][0]["position"] == db["txid"]
        })
    };
    assert!(wait_until(Duration::from_secs(30), caught_up));
    // S3 stops answering; the next L1 compaction's upload hangs, while the replica holds
    // every capture (nothing is written any more).
    proxy.set_fault(Fault::Blackhole);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(caught_up(), "{}", std::fs::read_to_string(&log).unwrap());
    assert!(ws.terminate(Duration::from_secs(30)));
    let code = ws.0.wait().unwrap().code();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("every replica holds the last capture"),
        "{text}"
    );
    assert_eq!(code, Some(0), "{text}");
}

/// A database restored on a new machine continues its replica's TXIDs. A second replica added
/// there, empty, lacks the files before them: until a snapshot exists nothing in it restores,
/// and the scheduled one may be a day away. walship writes a snapshot after that first capture.
#[test]
fn a_new_replica_of_a_database_restored_elsewhere_restores_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let old = format!("file://{}", dir.path().join("old").display());
    let new = format!("file://{}", dir.path().join("new").display());
    let log = dir.path().join("walship.log");

    let conn = app(&db);
    let config = write_config(dir.path(), "", &db, "monitor-interval: 100ms", &[&old]);
    let mut ws = spawn_walship(&[], Some(&config), &[], &log);
    insert_spaced(&conn, 1..4);
    assert!(ws.terminate(Duration::from_secs(30)));
    assert!(ws.0.wait().unwrap().success());
    drop(conn);

    // The new machine: the database restored from the old replica, no local store.
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db.display()));
    }
    std::fs::remove_dir_all(walship::store::LocalStore::default_dir(&db)).unwrap();
    let restored = walship()
        .args(["restore", "-o"])
        .arg(&db)
        .arg(&old)
        .output()
        .unwrap();
    assert!(restored.status.success(), "{restored:?}");
    let conn = app(&db);
    let config = write_config(
        dir.path(),
        "",
        &db,
        "monitor-interval: 100ms",
        &[&old, &new],
    );
    let mut ws = spawn_walship(&[], Some(&config), &[], &log);
    insert_spaced(&conn, 4..6);
    let out = dir.path().join("from-new.db");
    assert!(
        wait_until(Duration::from_secs(30), || {
            litestream_restore(&new, &out, None, None).status.success() && rows(&out) == (5, 5)
        }),
        "the new replica did not restore with Litestream: {:?}\n{}",
        litestream_restore(&new, &out, None, None),
        std::fs::read_to_string(&log).unwrap()
    );
    let from_old = dir.path().join("from-old.db");
    assert!(litestream_restore(&old, &from_old, None, None)
        .status
        .success());
    assert_eq!(rows(&from_old), (5, 5));
    assert!(ws.terminate(Duration::from_secs(30)));
    assert!(ws.0.wait().unwrap().success());
}
