//! `walship restore` end to end: replicas written by the real `walship replicate` and by the real
//! `litestream replicate` 0.5.17, on file and S3 replicas, restored by the real binary; and what
//! a restore reports of its progress, to an observer and on a terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ltx::database::encode_snapshot;
use ltx::{Encoder, EncoderOptions, Header, Txid};
use testkit::db::{checkpointed_image, fill_sample, integrity_check};
use testkit::{litestream, ChildGuard, S3Server};
use walship::replica::client::{ReplicaClient, SNAPSHOT_LEVEL};
use walship::replica::timestamp::format_rfc3339_nano;
use walship::restore::{describe, Progress, RestoreOptions, RestorePlan, Target};

mod support;

use support::faulty::{FaultyStore, Op};
use support::workload::{app, assert_commit_boundary, walship, write_for, Commit};

type Commits = Vec<Commit>;

/// Runs a replicator while a writer commits for `secs`, then stops it cleanly.
fn replicate_while_writing(mut cmd: Command, db: &Path, secs: f64, log: &Path) -> Commits {
    drop(app(db));
    let mut child = ChildGuard::spawn(&mut cmd, log);
    std::thread::sleep(Duration::from_millis(500));
    let commits = write_for(db, secs);
    // Let the last commits reach the replica before the stop.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        child.terminate(Duration::from_secs(30)),
        "replicator did not stop"
    );
    commits
}

fn walship_replicate(db: &Path, url: &str, s3: Option<&S3Server>) -> Command {
    let mut cmd = walship();
    cmd.arg("replicate").arg(db).arg(url);
    if let Some(s3) = s3 {
        cmd.envs(s3.credential_env());
    }
    cmd
}

/// Runs `walship restore ARGS... -o OUT URL`.
fn restore(url: &str, out: &Path, args: &[&str], s3: Option<&S3Server>) -> Output {
    let mut cmd = walship();
    cmd.arg("restore").args(args).arg("-o").arg(out).arg(url);
    if let Some(s3) = s3 {
        cmd.envs(s3.credential_env());
    }
    cmd.output().unwrap()
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

/// The L0 TXIDs of a file replica.
fn l0_txids(replica: &Path) -> Vec<u64> {
    let mut txids: Vec<u64> = std::fs::read_dir(replica.join("ltx/0"))
        .unwrap()
        .filter_map(|e| ltx::parse_filename(e.unwrap().file_name().to_str()?))
        .map(|(_, max)| max.0)
        .collect();
    txids.sort();
    txids
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Restores latest, at a TXID and at timestamps with both tools and checks they agree.
fn check_restores(dir: &Path, url: &str, commits: &Commits, s3: Option<&S3Server>, mid_txid: u64) {
    let latest = dir.join("latest.db");
    restore_ok(url, &latest, &[], s3);
    assert_eq!(
        assert_commit_boundary(&latest, commits, "latest"),
        commits.last().unwrap().1
    );

    let txid = format!("{mid_txid:016x}");
    let (ours, theirs) = (dir.join("txid.db"), dir.join("txid-ls.db"));
    restore_ok(url, &ours, &["-txid", &txid], s3);
    litestream_restore(url, &theirs, &["-txid", &txid], s3);
    assert_commit_boundary(&ours, commits, "at a TXID");
    assert!(
        read(&ours) == read(&theirs),
        "{url}: TXID {txid} differs from Litestream's"
    );

    let start = commits.first().unwrap().0;
    let mut prev = 0;
    for i in 1..=4u32 {
        let at = start + Duration::from_millis(700 * u64::from(i));
        let stamp = format_rfc3339_nano(at);
        let (ours, theirs) = (
            dir.join(format!("at-{i}.db")),
            dir.join(format!("at-{i}-ls.db")),
        );
        restore_ok(url, &ours, &["-timestamp", &stamp], s3);
        let max = assert_commit_boundary(&ours, commits, &stamp);
        let by_then = commits.iter().filter(|(t, _)| *t <= at).map(|c| c.1).max();
        assert!(max <= by_then.unwrap_or(0), "{stamp}: holds later rows");
        assert!(max >= prev, "restores went back in time");
        prev = max;
        litestream_restore(url, &theirs, &["-timestamp", &stamp], s3);
        assert!(
            read(&ours) == read(&theirs),
            "{url} at {stamp} differs from Litestream's"
        );
    }
    assert!(prev > 0 && prev < commits.last().unwrap().1);
}

#[test]
fn walship_replicas_restore_latest_at_txids_and_timestamps() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    for (name, s3) in [("file", None), ("s3", Some(&s3))] {
        let work = dir.path().join(name);
        std::fs::create_dir(&work).unwrap();
        let db = work.join("app.db");
        let replica = work.join("replica");
        let url = match s3 {
            Some(s3) => s3.replica_url("backups", "app.db"),
            None => format!("file://{}", replica.display()),
        };
        let log = work.join("walship.log");
        let commits = replicate_while_writing(walship_replicate(&db, &url, s3), &db, 4.0, &log);
        let want = checkpointed_image(&db);
        let latest = work.join("check.db");
        restore_ok(&url, &latest, &[], s3);
        assert!(
            read(&latest) == want,
            "{name}: latest is not the source's image"
        );
        check_restores(&work, &url, &commits, s3, 3);
    }
}

/// A Litestream config with fast compaction levels and snapshots, so restores cross levels.
fn litestream_config(dir: &Path, db: &Path, url: &str) -> PathBuf {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "levels:\n  - interval: 1s\n  - interval: 3s\nsnapshot:\n  interval: 4s\n\
             dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      url: {url}\n      sync-interval: 200ms\n",
            db.display()
        ),
    )
    .unwrap();
    config
}

/// The (level, min, max) of every file in a `restore -dry-run -json` document.
fn plan_files(json: &[u8]) -> Vec<(u64, String, String)> {
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap();
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["level"].as_u64().unwrap(),
                f["min_txid"].as_str().unwrap().to_string(),
                f["max_txid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn litestream_replicas_restore_exactly() {
    let s3 = S3Server::start();
    s3.create_bucket("ls-backups");
    let dir = tempfile::tempdir().unwrap();
    for (name, s3) in [("file", None), ("s3", Some(&s3))] {
        let work = dir.path().join(name);
        std::fs::create_dir(&work).unwrap();
        let db = work.join("app.db");
        let url = match s3 {
            Some(s3) => s3.replica_url("ls-backups", "app.db"),
            None => format!("file://{}", work.join("replica").display()),
        };
        let mut cmd = litestream();
        cmd.arg("replicate")
            .arg("-config")
            .arg(litestream_config(&work, &db, &url));
        if let Some(s3) = s3 {
            cmd.envs(s3.credential_env());
        }
        let commits = replicate_while_writing(cmd, &db, 6.0, &work.join("litestream.log"));

        // Both tools choose the same files, across levels.
        let mut theirs = litestream();
        theirs
            .args(["restore", "-dry-run", "-json", "-o"])
            .arg(work.join("x.db"))
            .arg(&url);
        if let Some(s3) = s3 {
            theirs.envs(s3.credential_env());
        }
        let theirs = testkit::run_ok(&mut theirs);
        let ours = restore_ok(&url, &work.join("x.db"), &["-dry-run", "-json"], s3);
        let plan = plan_files(&ours.stdout);
        assert_eq!(plan, plan_files(&theirs.stdout), "{name}: plans differ");
        assert!(
            plan.iter().any(|f| f.0 > 0),
            "{name}: no compacted files: {plan:?}"
        );

        let latest = work.join("ls-latest.db");
        litestream_restore(&url, &latest, &[], s3);
        let ours = work.join("ws-latest.db");
        restore_ok(&url, &ours, &[], s3);
        assert!(
            read(&ours) == read(&latest),
            "{name}: latest differs from Litestream's"
        );
        check_restores(&work, &url, &commits, s3, 5);
    }
}

/// A small walship file replica with a handful of L0 files; returns the replica directory.
fn small_replica(dir: &Path) -> PathBuf {
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    let url = format!("file://{}", replica.display());
    let log = dir.join("walship.log");
    replicate_while_writing(walship_replicate(&db, &url, None), &db, 3.0, &log);
    assert!(
        l0_txids(&replica).len() >= 3,
        "too few L0 files for the test"
    );
    // Only L0 files, so that every one of them is on the restore path: the run may have crossed
    // an L1 boundary, and an L1 file would cover whatever the tests break in L0.
    for level in 1..10 {
        let _ = std::fs::remove_dir_all(replica.join("ltx").join(level.to_string()));
    }
    replica
}

/// Files left in `dir` whose names start with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) || n.starts_with(&format!(".{prefix}")))
        .collect()
}

#[test]
fn corrupt_and_missing_files_are_named_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let replica = small_replica(dir.path());
    let url = format!("file://{}", replica.display());
    let txids = l0_txids(&replica);
    let middle = txids[txids.len() / 2];
    let name = format!("{middle:016x}-{middle:016x}.ltx");
    let path = replica.join("ltx/0").join(&name);
    let out = dir.path().join("out.db");

    let original = read(&path);
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let msg = restore_err(&url, &out, &[]);
    assert!(msg.contains(&name) && msg.contains("level 0"), "{msg}");
    assert!(
        leftovers(dir.path(), "out.db").is_empty(),
        "{:?}",
        leftovers(dir.path(), "out.db")
    );

    std::fs::remove_file(&path).unwrap();
    let msg = restore_err(&url, &out, &[]);
    let around = format!(
        "after {:016x} the next file starts at {:016x}",
        middle - 1,
        middle + 1
    );
    assert!(
        msg.contains("non-contiguous") && msg.contains(&around),
        "{msg}"
    );
    assert!(leftovers(dir.path(), "out.db").is_empty());

    // Up to the hole is still there to restore.
    restore_ok(
        &url,
        &out,
        &["-txid", &format!("{:016x}", middle - 1)],
        None,
    );
}

#[test]
fn outputs_that_exist_or_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let replica = small_replica(dir.path());
    let url = format!("file://{}", replica.display());
    let out = dir.path().join("out.db");

    // Dry runs list the plan and write nothing.
    let res = restore_ok(&url, &out, &["-dry-run"], None);
    let text = String::from_utf8_lossy(&res.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("0 ")).collect();
    assert_eq!(lines.len(), l0_txids(&replica).len(), "{text}");
    assert!(
        lines[0].contains("0000000000000001  0000000000000001"),
        "{text}"
    );
    let res = restore_ok(&url, &out, &["-dry-run", "-json"], None);
    assert_eq!(plan_files(&res.stdout).len(), lines.len());
    assert!(!out.exists());

    restore_ok(&url, &out, &["-integrity-check", "full"], None);
    let msg = restore_err(&url, &out, &[]);
    assert!(msg.contains("exists") && msg.contains("-force"), "{msg}");
    restore_ok(&url, &out, &["-if-db-not-exists"], None);

    // -force replaces the database and removes a stale WAL that would corrupt it.
    std::fs::write(dir.path().join("out.db-wal"), b"stale").unwrap();
    let msg = restore_err(&url, &out, &[]);
    assert!(msg.contains("exists"), "{msg}");
    restore_ok(&url, &out, &["-force"], None);
    assert!(!dir.path().join("out.db-wal").exists());
    assert_eq!(integrity_check(&out), "ok");

    // A missing directory is created, as Litestream does.
    let nested = dir.path().join("a/b/restored.db");
    restore_ok(&url, &nested, &[], None);
    assert_eq!(integrity_check(&nested), "ok");

    // A parent that is a file, and a read-only directory (as an unprivileged user, since
    // tests run as root), give clear errors.
    let msg = restore_err(&url, &dir.path().join("out.db/x.db"), &[]);
    assert!(
        msg.contains("out.db/x.db") && msg.contains("Not a directory"),
        "{msg}"
    );
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(dir.path(), 0o755), (ro.as_path(), 0o555)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let res = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_walship"))
        .args(["restore", "-o"])
        .arg(ro.join("x.db"))
        .arg(&url)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{msg}");
    assert!(
        msg.contains("cannot write in the directory") && msg.contains("ermission denied"),
        "{msg}"
    );

    // -if-replica-exists: an empty replica is not an error.
    let empty = format!("file://{}", dir.path().join("empty").display());
    let msg = restore_err(&empty, &dir.path().join("e.db"), &[]);
    assert!(msg.contains("no backups"), "{msg}");
    restore_ok(
        &empty,
        &dir.path().join("e.db"),
        &["-if-replica-exists"],
        None,
    );
}

/// A file replica built directly: a snapshot of a sample database (TXID 1), then L0 files for
/// TXIDs 2..=6 that rewrite a few of its pages unchanged. Returns the replica and the image
/// every restore of it must give.
async fn built_replica(dir: &Path) -> (ReplicaClient, PathBuf, Vec<u8>) {
    let src = dir.join("src.db");
    let conn = rusqlite::Connection::open(&src).unwrap();
    fill_sample(&conn, 7, 400);
    drop(conn);
    let image = read(&src);
    let page_size = ltx::database::page_size_of(&image).unwrap();
    let commit = (image.len() / page_size as usize) as u32;
    let root = dir.join("replica");
    let client = ReplicaClient::file("file", &root).unwrap();
    let snapshot = dir.join("snapshot.ltx");
    let file = std::fs::File::create(&snapshot).unwrap();
    encode_snapshot(
        std::io::Cursor::new(&image),
        file,
        Txid(1),
        1_700_000_000_000,
        EncoderOptions::default(),
    )
    .unwrap();
    client.put_file(SNAPSHOT_LEVEL, &snapshot).await.unwrap();
    for txid in 2..=6u64 {
        let header = Header::new(page_size, commit, Txid(txid), Txid(txid), 1_700_000_000_000);
        let path = dir.join(format!("{txid}.ltx"));
        let mut enc = Encoder::new(
            std::fs::File::create(&path).unwrap(),
            header,
            EncoderOptions::default(),
        )
        .unwrap();
        for pgno in (1..=commit).step_by(txid as usize) {
            let at = (pgno as usize - 1) * page_size as usize;
            enc.write_page(pgno, &image[at..at + page_size as usize])
                .unwrap();
        }
        enc.finish().unwrap();
        client.put_file(0, &path).await.unwrap();
    }
    (client, root, image)
}

/// Retention as a replicator runs it, on [`built_replica`]'s replica at `root`: the L0 files
/// 2..=6 merged into one L1 file (timestamped as its newest input, as compaction does), then the
/// L0 files it covers deleted, but for the newest.
fn compact_and_retain(root: &Path) {
    let l0 = |txid: u64| {
        root.join("ltx/0")
            .join(ltx::format_filename(Txid(txid), Txid(txid)))
    };
    let inputs: Vec<std::fs::File> = (2..=6)
        .map(|t| std::fs::File::open(l0(t)).unwrap())
        .collect();
    let (merged, header, _) =
        ltx::compact(inputs, Vec::new(), ltx::CompactOptions::default()).unwrap();
    let l1 = root.join("ltx/1");
    std::fs::create_dir_all(&l1).unwrap();
    let path = l1.join(ltx::format_filename(Txid(2), Txid(6)));
    std::fs::write(&path, merged).unwrap();
    let created = std::time::UNIX_EPOCH + Duration::from_millis(header.timestamp as u64);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(created)
        .unwrap();
    for txid in 2..=5 {
        std::fs::remove_file(l0(txid)).unwrap();
    }
}

/// A restore whose listed files a replicator's retention deletes before it reads them (the
/// first request after the listing finds retention done) lists again and restores from the
/// compacted file, for the latest state (the downloads miss) and for a time (reading the files'
/// creation times misses).
#[tokio::test]
async fn a_restore_plans_again_when_retention_deletes_its_files_meanwhile() {
    let second = |s: u64| std::time::UNIX_EPOCH + Duration::from_secs(s);
    for target in [Target::Latest, Target::Timestamp(second(1_700_000_001))] {
        let dir = tempfile::tempdir().unwrap();
        let (local, root, image) = built_replica(dir.path()).await;
        // Every file was created at second 1_700_000_000; the newest now later, so that there
        // is a time after the others to restore.
        std::fs::File::options()
            .write(true)
            .open(
                root.join("ltx/0")
                    .join(ltx::format_filename(Txid(6), Txid(6))),
            )
            .unwrap()
            .set_modified(second(1_700_000_002))
            .unwrap();
        let store = Arc::new(FaultyStore::new(local.store().clone()));
        let client = local.wrap("file", store.clone());
        let retained = root.clone();
        store.before_next(Op::Get, move || compact_and_retain(&retained));
        let out = dir.path().join("out.db");
        let restored = walship::restore::restore_to(&client, target, &RestoreOptions::new(&out))
            .await
            .unwrap_or_else(|e| panic!("restore of {target}: {e}"));
        assert!(
            read(&out) == image,
            "the restore of {target} is not the source"
        );
        assert_eq!(restored.txid, Txid(6), "{target}");
        // The snapshot and the L1 file: the plan made after retention ran.
        assert_eq!(restored.files, 2, "{target}");
    }
}

/// What a restore told its observer.
#[derive(Debug, Default)]
struct Recorder {
    started: Mutex<Vec<(usize, u64)>>,
    bytes: AtomicU64,
    files: Mutex<Vec<(String, u64)>>,
    downloaded: AtomicBool,
}

impl Progress for Recorder {
    fn start(&self, files: usize, bytes: u64) {
        self.started.lock().unwrap().push((files, bytes));
    }

    fn advance(&self, bytes: u64) {
        assert!(
            !self.downloaded.load(Ordering::SeqCst),
            "bytes after the end"
        );
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    fn file_done(&self, file: &str, size: u64) {
        self.files.lock().unwrap().push((file.to_string(), size));
    }

    fn downloaded(&self) {
        self.downloaded.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn progress_sees_every_file_and_the_plans_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _, image) = built_replica(dir.path()).await;
    let RestorePlan::Ltx(plan) = walship::restore::plan(&client, Target::Latest)
        .await
        .unwrap()
    else {
        panic!("not an LTX plan");
    };
    assert_eq!(plan.files.len(), 6, "{plan:?}");

    let recorder = Arc::new(Recorder::default());
    let out = dir.path().join("out.db");
    let opts = RestoreOptions {
        parallelism: 3,
        progress: recorder.clone(),
        ..RestoreOptions::new(&out)
    };
    let restored = walship::restore::restore(&client, &RestorePlan::Ltx(plan.clone()), &opts)
        .await
        .unwrap();
    assert!(read(&out) == image, "the restore is not the source");

    assert_eq!(*recorder.started.lock().unwrap(), [(6, plan.size())]);
    assert_eq!(recorder.bytes.load(Ordering::SeqCst), plan.size());
    assert_eq!(restored.bytes, plan.size());
    assert!(recorder.downloaded.load(Ordering::SeqCst));
    let mut seen = recorder.files.lock().unwrap().clone();
    seen.sort();
    let mut want: Vec<(String, u64)> = plan
        .files
        .iter()
        .map(|f| (describe(f.key), f.size))
        .collect();
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn no_progress_output_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, root, image) = built_replica(dir.path()).await;
    let url = format!("file://{}", root.display());
    let out = dir.path().join("out.db");
    // Piped, as scripts, tests and the Datasette plugin run it.
    let res = restore_ok(&url, &out, &[], None);
    assert!(read(&out) == image);
    let stderr = String::from_utf8(res.stderr).unwrap();
    assert!(
        stderr.starts_with("walship: restored ") && stderr.lines().count() == 1,
        "{stderr:?}"
    );
    assert!(
        !stderr.contains(['\r', '\x1b']) && !stderr.contains("restoring"),
        "{stderr:?}"
    );
    assert!(res.stdout.is_empty());
}

#[tokio::test]
async fn a_terminal_gets_a_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let (_, root, image) = built_replica(dir.path()).await;
    let out = dir.path().join("out.db");
    // `script` runs the restore on a pseudo-terminal and copies what it shows to stdout.
    let command = format!(
        "{} restore -o {} file://{}",
        env!("CARGO_BIN_EXE_walship"),
        out.display(),
        root.display()
    );
    let res = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{shown}");
    assert!(read(&out) == image);
    // Draws are rate-limited, so only the first (the totals) is sure to be shown.
    assert!(
        shown.contains("restoring 0 B/") && shown.contains("0/6 files"),
        "{shown:?}"
    );
    // The bar is cleared before the result is printed.
    let last = shown.rsplit("\x1b[2K").next().unwrap();
    assert!(last.starts_with("walship: restored "), "{shown:?}");
}

/// A file replica of `files` LTX files written straight into its directory: a snapshot of a
/// sample database (level 9, TXID 1), then L0 files for TXIDs 2..=`files`, each rewriting one
/// page with wrong bytes, the last rewriting every page but the first with the right ones: a
/// restore gives the sample only if it applied every file, in order. Returns the replica
/// directory and the sample's image.
fn many_file_replica(dir: &Path, files: u64) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src.db");
    let conn = rusqlite::Connection::open(&src).unwrap();
    fill_sample(&conn, 11, 200);
    drop(conn);
    let image = read(&src);
    let page_size = ltx::database::page_size_of(&image).unwrap() as usize;
    let commit = (image.len() / page_size) as u32;
    let root = dir.join("replica");
    let write = |level: u32, header: Header, pages: &mut dyn Iterator<Item = (u32, Vec<u8>)>| {
        let level_dir = root.join("ltx").join(level.to_string());
        std::fs::create_dir_all(&level_dir).unwrap();
        let name = ltx::format_filename(header.min_txid, header.max_txid);
        let file = std::fs::File::create(level_dir.join(name)).unwrap();
        let mut enc = Encoder::new(file, header, EncoderOptions::default()).unwrap();
        for (pgno, page) in pages {
            enc.write_page(pgno, &page).unwrap();
        }
        enc.finish().unwrap();
    };
    let page = |pgno: u32| image[(pgno as usize - 1) * page_size..][..page_size].to_vec();
    let header = |min: u64, max: u64| {
        Header::new(
            page_size as u32,
            commit,
            Txid(min),
            Txid(max),
            1_700_000_000_000,
        )
    };
    write(
        SNAPSHOT_LEVEL,
        header(1, 1),
        &mut (1..=commit).map(|p| (p, page(p))),
    );
    for txid in 2..files {
        let pgno = 2 + (txid as u32 % (commit - 1));
        let mut wrong = page(pgno);
        wrong[page_size / 2..].fill(txid as u8);
        write(0, header(txid, txid), &mut std::iter::once((pgno, wrong)));
    }
    write(
        0,
        header(files, files),
        &mut (2..=commit).map(|p| (p, page(p))),
    );
    (root, image)
}

/// Runs `walship restore ARGS -o OUT URL` with the soft open-file limit at 1024, the usual
/// default, as a shell sets it.
fn restore_limited(url: &str, out: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_walship"))
        .arg("restore")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(url)
        .output()
        .unwrap()
}

#[test]
fn more_files_than_the_open_file_limit_restore_and_a_corrupt_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (root, image) = many_file_replica(dir.path(), 1200);
    let url = format!("file://{}", root.display());
    let out = dir.path().join("out.db");
    let res = restore_limited(&url, &out, &[]);
    let msg = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{msg}");
    assert!(msg.contains("from 1200 files"), "{msg}");
    assert!(read(&out) == image, "the restore is not the source");

    // A byte flipped in the middle of a file in the middle of the chain: the restore fails
    // naming that file, and leaves nothing behind.
    let name = ltx::format_filename(Txid(600), Txid(600));
    let path = root.join("ltx/0").join(&name);
    let mut bytes = read(&path);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let broken = dir.path().join("broken.db");
    let res = restore_limited(&url, &broken, &[]);
    let msg = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{msg}");
    assert!(msg.contains(&name) && msg.contains("level 0"), "{msg}");
    assert!(
        leftovers(dir.path(), "broken.db").is_empty(),
        "{:?}",
        leftovers(dir.path(), "broken.db")
    );
}

/// Restores `url` into `out` and returns the restore's peak resident memory (VmHWM), in KiB,
/// sampled from /proc while it runs; the high-water mark only grows, so the last sample is
/// the peak up to then.
fn restore_peak_kib(url: &str, out: &Path) -> u64 {
    let mut child = walship()
        .args(["restore", "-integrity-check", "none", "-o"])
        .arg(out)
        .arg(url)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            let hwm = text.lines().find_map(|l| l.strip_prefix("VmHWM:"));
            if let Some(kib) = hwm.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak = kib;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let res = child.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(peak > 0, "no sample of the restore's memory");
    peak
}

#[test]
fn memory_does_not_grow_with_the_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for files in [200, 2000] {
        let sub = dir.path().join(files.to_string());
        std::fs::create_dir(&sub).unwrap();
        let (root, image) = many_file_replica(&sub, files);
        let out = sub.join("out.db");
        peaks.push(restore_peak_kib(
            &format!("file://{}", root.display()),
            &out,
        ));
        assert!(
            read(&out) == image,
            "the restore of {files} files is not the source"
        );
    }
    eprintln!(
        "peak RSS: 200 files {} KiB, 2000 files {} KiB",
        peaks[0], peaks[1]
    );
    assert!(
        peaks[1] < peaks[0] + 4 * 1024,
        "peak RSS grows with the number of files: {} KiB for 200, {} KiB for 2000",
        peaks[0],
        peaks[1]
    );
}

#[tokio::test]
async fn more_downloads_than_the_open_file_limit_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (root, image) = many_file_replica(dir.path(), 1200);
    // This test runs in a process of its own (nextest), so the limit holds for it alone.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = 1024;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    // Through the object store API rather than in place: every file is downloaded.
    let local = ReplicaClient::file("file", &root).unwrap();
    let client = local.wrap("downloaded", local.store().clone());
    let RestorePlan::Ltx(plan) = walship::restore::plan(&client, Target::Latest)
        .await
        .unwrap()
    else {
        panic!("not an LTX plan");
    };
    assert_eq!(plan.files.len(), 1200);
    let out = dir.path().join("out.db");
    let restored =
        walship::restore::restore(&client, &RestorePlan::Ltx(plan), &RestoreOptions::new(&out))
            .await
            .unwrap();
    assert_eq!(restored.files, 1200);
    assert!(read(&out) == image, "the restore is not the source");
}
