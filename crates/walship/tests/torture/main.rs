//! The torture suite: real processes on 127.0.0.1 (a writer committing numbered transactions,
//! walship, moto's S3 server behind a fault-injecting proxy), crashes and faults at random
//! moments, and after each scenario the checks of `harness::Run::finish`: the latest restore of
//! every replica is exactly the last committed transaction, every replica holds what walship
//! reported replicated, and restores at random times in the retention window are committed
//! states, no newer than the time, never going back in time, with `integrity_check` ok (by
//! walship and by Litestream 0.5.17).
//!
//! Short in `make test`; `make torture` sets `TORTURE_SECS` for long runs. `TORTURE_SEED`
//! reproduces a run.

use std::time::Duration;

use testkit::torture::{RngExt, Workload};
use testkit::{Fault, S3Server};

#[path = "../support/mod.rs"]
mod support;

mod harness;

use harness::{budget, rounds, seed, Restorer, Run};

fn workload(big: f64) -> Workload {
    Workload {
        seed: seed(),
        big,
        huge: None,
    }
}

/// Scenario 1: walship killed with SIGKILL at random moments (mid-capture, mid-upload,
/// mid-compaction, mid-snapshot) and restarted, over and over, replicating to a directory and
/// to S3.
#[test]
fn walship_killed_at_random_moments_loses_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket("torture");
    let mut run = Run::new("kill -9 walship", workload(0.03), None);
    run.add_s3_replica(&s3, s3.replica_url("torture", "app.db"));
    run.write_config();
    run.start_writer();
    run.start_walship();
    let kills = rounds(budget(25), |_| {
        run.pause(0.2..2.5);
        run.kill_walship();
        run.pause(0.0..1.0);
        run.start_walship();
    });
    let last = run.finish(12);
    eprintln!(
        "{}: {kills} kills of walship, {last} transactions, all checks passed",
        run.name
    );
    assert!(kills >= 5);
}

/// Scenario 2: the application killed with SIGKILL mid-transaction (large transactions that
/// spill uncommitted pages into the WAL, and rolled-back ones) and restarted.
#[test]
fn the_writer_killed_mid_transaction_leaves_only_committed_states() {
    let mut run = Run::new("kill -9 writer", workload(0.15), None);
    run.writer_flags = vec!["--rollback".into(), "0.15".into()];
    run.write_config();
    run.start_writer();
    run.start_walship();
    let kills = rounds(budget(20), |_| {
        run.pause(0.05..1.5);
        run.kill_writer();
        run.start_writer();
    });
    let last = run.finish(12);
    eprintln!(
        "{}: {kills} kills of the writer, {last} transactions",
        run.name
    );
}

/// Scenario 3: S3 misbehaves: the proxy in front of it delays, refuses, resets and blackholes
/// connections, and the S3 server itself is stopped (SIGSTOP) and resumed. The directory
/// replica keeps up meanwhile, and S3 catches up after.
#[test]
fn s3_faults_delay_but_never_lose_or_corrupt() {
    let s3 = S3Server::start();
    s3.create_bucket("torture");
    let proxy = s3.proxy();
    let mut run = Run::new("S3 faults", workload(0.03), None);
    run.add_s3_replica(&s3, s3.replica_url_through(&proxy, "torture", "app.db"));
    run.write_config();
    run.start_writer();
    run.start_walship();
    let has_captured = |run: &Run| {
        run.db_status()
            .is_some_and(|db| db["captures"].as_u64().unwrap_or(0) > 0)
    };
    // Faults begin after the first capture: with an empty local store walship waits (up to a
    // minute) for an unreachable replica before capturing, so a fault at once would only delay
    // the window's start (replicate.rs tests that wait; restarts below test capturing at once).
    assert!(
        testkit::wait_until(Duration::from_secs(30), || has_captured(&run)),
        "{}: walship did not capture within 30 s of starting:\n{}",
        run.name,
        run.log_tail()
    );
    let mut saw_failing = false;
    let mut faults = Vec::new();
    let mut restarts = 0;
    let n = rounds(budget(30), |_| {
        let fault = match run.rng.random_range(0..5) {
            0 => Fault::Delay(Duration::from_millis(run.rng.random_range(50..700))),
            1 => Fault::Refuse,
            2 => Fault::Reset,
            3 => Fault::Blackhole,
            _ => Fault::PassThrough, // and the server stopped
        };
        let stopped = fault == Fault::PassThrough;
        if stopped {
            signal(s3.pid(), "STOP");
        }
        proxy.set_fault(fault);
        faults.push(if stopped {
            "S3 stopped".to_string()
        } else {
            format!("{fault:?}")
        });
        let mut until =
            std::time::Instant::now() + Duration::from_secs_f64(run.rng.random_range(1.0..6.0));
        if run.rng.random_bool(0.3) && has_captured(&run) {
            // walship restarted while S3 cannot answer: its local store knows the TXIDs, so it
            // must capture at once rather than wait for the replica (with an empty store it
            // waits, up to a minute, to continue after the replica's TXIDs).
            run.kill_walship();
            run.start_walship();
            restarts += 1;
            let started = std::time::Instant::now();
            let captured = testkit::wait_until(Duration::from_secs(20), || has_captured(&run));
            assert!(
                captured,
                "{}: walship restarted during {fault:?} did not capture within 20 s:\n{}",
                run.name,
                run.log_tail()
            );
            eprintln!(
                "{}: restarted under {fault:?}, first capture after {:?}",
                run.name,
                started.elapsed()
            );
            until = until.max(std::time::Instant::now() + Duration::from_secs(1));
        }
        while std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(300));
            if let Some(db) = run.db_status() {
                saw_failing |= db["replicas"][1]["state"] == "failing";
            }
        }
        if stopped {
            signal(s3.pid(), "CONT");
        }
        proxy.set_fault(Fault::PassThrough);
        run.pause(0.5..3.0);
    });
    let last = run.finish(9);
    eprintln!(
        "{}: {n} faults ({}), {restarts} restarts of walship under a fault, {last} \
         transactions; failing seen: {saw_failing}",
        run.name,
        faults.join(", ")
    );
}

/// Scenario 5: the application checkpoints with TRUNCATE, VACUUMs, and replaces the database
/// file with a copy (a restore over it), sometimes with another page size, while walship runs.
#[test]
fn application_maintenance_is_followed() {
    let mut run = Run::new("maintenance", workload(0.02), None);
    run.writer_flags = vec!["--maintenance".into(), "0.04".into()];
    run.write_config();
    run.start_writer();
    run.start_walship();
    std::thread::sleep(budget(25));
    let last = run.finish(12);
    let actions = run.writer_log().matches("maintenance:").count();
    eprintln!(
        "{}: {actions} maintenance actions, {last} transactions",
        run.name
    );
    assert!(
        actions >= 3,
        "{}: only {actions} maintenance actions",
        run.name
    );
}

/// Scenario 7: point-in-time restores while walship runs, each round right after retention
/// deleted files from the replicas (L0 files L1 covers, every second; every third round right
/// after a snapshot and snapshot retention), at random moments inside the retention window, of
/// the directory and the S3 replica, by walship and by Litestream 0.5.17: every one restores
/// a committed state no newer than the moment and at most a few seconds older.
#[test]
fn point_in_time_restores_right_after_compaction_and_retention() {
    // Short snapshot retention, so that snapshots and the level files below them are dropped
    // within the run, as they are in production after a day.
    const RETENTION: Duration = Duration::from_secs(30);
    // L1 compacts every second and L0 files stay 3 s after it covers them: a restore holds
    // every transaction committed this long before its moment.
    const SLACK: Duration = Duration::from_secs(3);
    let s3 = S3Server::start();
    s3.create_bucket("torture");
    let mut run = Run::new("restores after retention", workload(0.005), None);
    // A database that stays small, so that a round's dozen restores take seconds, not minutes.
    run.writer_flags = vec!["--pause-ms".into(), "5".into()];
    run.snapshot_retention = RETENTION;
    run.add_s3_replica(&s3, s3.replica_url("torture", "app.db"));
    run.write_config();
    run.start_writer();
    run.start_walship();
    let snapshots = |run: &Run| run.log_lines(&["level=9", "wrote"]);
    let deletes = |run: &Run| run.log_lines(&["deleted after retention", "replica=\"s3\""]);
    // Until snapshot retention has dropped files: past the retention and two snapshots more.
    let warm = testkit::wait_until(RETENTION + Duration::from_secs(30), || {
        snapshots(&run) >= 5 && run.log_lines(&["deleted after retention"]) > 0
    });
    assert!(
        warm,
        "{}: no snapshots or no retention:\n{}",
        run.name,
        run.log_tail()
    );
    let replicas = run.replicas.clone();
    let tools = [Restorer::Walship, Restorer::Litestream];
    let mut restores = 0;
    let started = std::time::Instant::now();
    let n = rounds(budget(30), |round| {
        let (before_snapshots, before_deletes) = (snapshots(&run), deletes(&run));
        let retention_ran = testkit::wait_until(Duration::from_secs(20), || {
            deletes(&run) > before_deletes && (round % 3 != 0 || snapshots(&run) > before_snapshots)
        });
        assert!(
            retention_ran,
            "{}: retention stopped:\n{}",
            run.name,
            run.log_tail()
        );
        let first = testkit::torture::Journal::read(&run.journal).first();
        for i in 0..3 {
            // Every replica by every tool, a different one first each time.
            for j in 0..replicas.len() * tools.len() {
                // Each moment is drawn when its restore starts: the window moves on while a
                // round restores (a dozen restores take 10-25 s on a loaded machine), and only
                // `now - RETENTION` onwards is promised. The margin covers one restore.
                let now = std::time::SystemTime::now();
                let earliest =
                    (first + Duration::from_secs(3)).max(now - RETENTION + Duration::from_secs(8));
                let latest = now - Duration::from_secs(1);
                let span = latest.duration_since(earliest).unwrap();
                let at = earliest + span.mul_f64(run.rng.random_range(0.0..1.0));
                let k = (round as usize + i + j) % (replicas.len() * tools.len());
                let (url, by) = (&replicas[k / tools.len()], tools[k % tools.len()]);
                run.check_restore_at(url, by, at, SLACK);
                restores += 1;
            }
        }
    });
    let restoring = started.elapsed();
    let last = run.finish(6);
    eprintln!(
        "{}: {n} rounds, {restores} restores while replicating in {restoring:?}, {last} \
         transactions",
        run.name
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Scenario 6: one transaction of hundreds of MB (`TORTURE_HUGE_MIB`, 500 by default), spilled
/// into the WAL as SQLite writes it, replicated with walship's memory staying bounded.
#[test]
fn a_huge_transaction_replicates_in_bounded_memory() {
    let mib: u64 = std::env::var("TORTURE_HUGE_MIB")
        .map_or(500, |v| v.parse().expect("TORTURE_HUGE_MIB is a number"));
    let mut run = Run::new(
        "huge transaction",
        Workload {
            seed: seed(),
            big: 0.0,
            huge: Some((3, mib)),
        },
        None,
    );
    run.writer_flags = vec!["--until".into(), "6".into()];
    run.write_config();
    run.start_writer();
    run.start_walship();
    run.wait_writer(Duration::from_secs(600));
    run.wait_caught_up();
    let peak = run.walship_peak_rss();
    let db_size = std::fs::metadata(&run.db).unwrap().len();
    let last = run.finish(3);
    eprintln!(
        "{}: a {mib} MiB transaction ({} MB database, {last} transactions): walship's peak RSS {} MB",
        run.name,
        db_size >> 20,
        peak >> 20
    );
    assert_eq!(last, 6);
    assert!(
        peak < 150 << 20,
        "{}: walship's peak RSS was {} MB for a {mib} MiB transaction",
        run.name,
        peak >> 20
    );
}

/// A tmpfs mounted for one test (needs root), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs for the disk-full scenario needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem holding `path` with a ballast file until it is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// Scenario 4: the filesystem of the database and of walship's local store fills up, again and
/// again, while the application writes: walship reports it and catches up when space returns.
#[test]
fn a_full_disk_is_reported_and_recovered_from() {
    // Room for what the database and walship's local store hold at the end of the run (the
    // store keeps ~10 snapshots, one every 7 s for 60 s, of a database growing ~100 KB/s at this
    // pace), so the disk is full only while the ballast fills it: a disk our own retention
    // filled would never empty (a 96 MB, then a 428 MB tmpfs did, in 300 s runs). RAM-backed.
    let secs = budget(25).as_secs();
    let mnt = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(mnt.path(), 128 + 4 * secs);
    let mut run = Run::new("disk full", workload(0.0), Some(mnt.path()));
    run.writer_flags = vec!["--pause-ms".into(), "20".into()];
    run.write_config();
    run.start_writer();
    run.start_walship();
    let ballast = mnt.path().join("ballast");
    let mut reported = 0;
    let n = rounds(budget(25), |_| {
        run.pause(1.0..3.0);
        fill(&ballast);
        let until =
            std::time::Instant::now() + Duration::from_secs_f64(run.rng.random_range(2.0..5.0));
        let mut seen = false;
        while std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(250));
            let error = run
                .db_status()
                .and_then(|db| db["last_error"].as_str().map(String::from))
                .unwrap_or_default();
            seen |= error.contains("No space left on device");
        }
        reported += u32::from(seen);
        std::fs::remove_file(&ballast).unwrap();
    });
    let last = run.finish(9);
    let log = std::fs::read_to_string(&run.log).unwrap();
    eprintln!(
        "{}: the disk filled {n} times, walship's status named it {reported} times, {last} transactions",
        run.name
    );
    assert!(
        log.contains("No space left on device"),
        "{}: walship never reported the full disk:\n{}",
        run.name,
        run.log_tail()
    );
}
