//! One torture run: a writer process, walship, replicas, the faults a scenario injects, and the
//! checks every scenario ends with.
//!
//! `TORTURE_SEED` makes a run reproducible (the seed is printed, and named in every failure);
//! `TORTURE_SECS` is how long each scenario torments (short in `make test`, long in
//! `make torture`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testkit::torture::{writer_bin, Journal, Pcg64Mcg, RngExt, SeedableRng, Workload};
use testkit::{litestream, wait_until, ChildGuard};
use walship::replica::timestamp::{format_rfc3339_nano, parse_rfc3339};

use crate::support::http;

/// How long the torture config keeps snapshots unless a scenario says otherwise (and so the
/// window restores must reach over).
const SNAPSHOT_RETENTION: Duration = Duration::from_secs(60);

/// The seed of this run: `$TORTURE_SEED`, or the clock's nanoseconds.
pub fn seed() -> u64 {
    std::env::var("TORTURE_SEED")
        .ok()
        .map(|s| s.parse().expect("TORTURE_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// How long a scenario torments: `$TORTURE_SECS`, else `short`.
pub fn budget(short: u64) -> Duration {
    Duration::from_secs(
        std::env::var("TORTURE_SECS")
            .ok()
            .map_or(short, |s| s.parse().expect("TORTURE_SECS is a number")),
    )
}

/// A running scenario.
pub struct Run {
    /// Names the scenario and seed in messages.
    pub name: String,
    pub rng: Pcg64Mcg,
    pub workload: Workload,
    pub dir: tempfile::TempDir,
    /// The application's database.
    pub db: PathBuf,
    pub journal: PathBuf,
    /// Extra flags of the writer (`--big`, `--maintenance`, ...).
    pub writer_flags: Vec<String>,
    /// How long walship keeps snapshots; the window every time inside must restore.
    pub snapshot_retention: Duration,
    writer: Option<ChildGuard>,
    walship: Option<ChildGuard>,
    /// walship's log, appended to by every start.
    pub log: PathBuf,
    pub config: PathBuf,
    addr: String,
    /// Replica URLs, the first a local directory.
    pub replicas: Vec<String>,
    /// Environment for walship and restores (credentials).
    pub env: Vec<(String, String)>,
    /// The highest replicated position walship reported, per replica URL.
    reported: Vec<u64>,
    /// How many times walship was started.
    pub walship_starts: u32,
    /// How many times the writer was started.
    pub writer_starts: u32,
}

impl Run {
    /// Sets up a run whose database lives in `db_dir` (the temp dir if `None`).
    pub fn new(name: &str, workload: Workload, db_dir: Option<&Path>) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let db = db_dir.unwrap_or(dir.path()).join("app.db");
        let replica = dir.path().join("replica");
        eprintln!(
            "torture {name}: seed {} (TORTURE_SEED={} reproduces it), dir {}",
            workload.seed,
            workload.seed,
            dir.path().display()
        );
        Run {
            name: format!("{name} (TORTURE_SEED={})", workload.seed),
            rng: Pcg64Mcg::seed_from_u64(workload.seed),
            workload,
            journal: dir.path().join("journal"),
            log: dir.path().join("walship.log"),
            config: dir.path().join("walship.yml"),
            addr: format!("127.0.0.1:{}", testkit::free_port()),
            replicas: vec![format!("file://{}", replica.display())],
            db,
            dir,
            writer_flags: Vec::new(),
            snapshot_retention: SNAPSHOT_RETENTION,
            writer: None,
            walship: None,
            env: Vec::new(),
            reported: Vec::new(),
            walship_starts: 0,
            writer_starts: 0,
        }
    }

    /// Adds an S3 replica at `url` (of `s3`, perhaps through a proxy) and its credentials.
    pub fn add_s3_replica(&mut self, s3: &testkit::S3Server, url: String) {
        self.replicas.push(url);
        self.env
            .extend(s3.credential_env().map(|(k, v)| (k.into(), v.into())));
    }

    /// Writes walship's config: fast levels and snapshots, so kills land in compaction and
    /// snapshotting too, and a retention window the final checks sweep.
    pub fn write_config(&self) {
        let mut replicas = String::new();
        for url in &self.replicas {
            replicas.push_str(&format!("      - url: {url}\n"));
        }
        std::fs::write(
            &self.config,
            format!(
                "addr: {}\nlevels:\n  - interval: 1s\n  - interval: 4s\n\
                 snapshot:\n  interval: 7s\n  retention: {}s\n\
                 l0-retention: 3s\nl0-retention-check-interval: 1s\n\
                 dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replicas:\n{replicas}",
                self.addr,
                self.snapshot_retention.as_secs(),
                self.db.display()
            ),
        )
        .unwrap();
    }

    /// Starts the writer (again).
    pub fn start_writer(&mut self) {
        let mut cmd = Command::new(writer_bin());
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--journal")
            .arg(&self.journal)
            .args(["--seed", &self.workload.seed.to_string()])
            .args(["--big", &self.workload.big.to_string()])
            .args(&self.writer_flags);
        if let Some((tx, mib)) = self.workload.huge {
            cmd.arg("--huge").arg(format!("{tx}:{mib}"));
        }
        let log = append(&self.dir.path().join("writer.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.writer = Some(ChildGuard(child));
        self.writer_starts += 1;
        // walship refuses a database that does not exist yet.
        assert!(
            wait_until(Duration::from_secs(30), || self.db.exists()),
            "{}: the writer did not create the database:\n{}",
            self.name,
            self.writer_log()
        );
    }

    /// Waits for a writer started with `--until` to finish.
    pub fn wait_writer(&mut self, timeout: Duration) {
        let w = self.writer.as_mut().expect("a writer runs");
        assert!(
            wait_until(timeout, || matches!(w.0.try_wait(), Ok(Some(_)))),
            "{}: the writer did not finish in {timeout:?}",
            self.name
        );
        let status = w.0.wait().unwrap();
        assert!(
            status.success(),
            "{}: the writer failed ({status}):\n{}",
            self.name,
            self.writer_log()
        );
        self.writer = None;
    }

    /// Kills the writer with SIGKILL, wherever it is.
    pub fn kill_writer(&mut self) {
        if let Some(mut w) = self.writer.take() {
            if let Ok(Some(status)) = w.0.try_wait() {
                panic!(
                    "{}: the writer died by itself ({status}):\n{}",
                    self.name,
                    self.writer_log()
                );
            }
            w.0.kill().unwrap();
            w.0.wait().unwrap();
        }
    }

    /// The writer's output.
    pub fn writer_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("writer.log")).unwrap_or_default()
    }

    /// Starts walship (again), appending to its log.
    pub fn start_walship(&mut self) {
        let log = append(&self.log);
        let child = walship_cmd()
            .args(["replicate", "-config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.walship = Some(ChildGuard(child));
        self.walship_starts += 1;
    }

    /// walship's peak resident memory so far, from `/proc` (`VmHWM`).
    pub fn walship_peak_rss(&self) -> u64 {
        let pid = self.walship.as_ref().expect("walship runs").0.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    /// Records what walship reports as replicated, then kills it with SIGKILL.
    pub fn kill_walship(&mut self) {
        self.record_reported();
        if let Some(mut w) = self.walship.take() {
            if let Ok(Some(status)) = w.0.try_wait() {
                panic!(
                    "{}: walship died by itself ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            w.0.kill().unwrap();
            w.0.wait().unwrap();
        }
    }

    /// walship's `/status`, if it answers.
    pub fn status(&self) -> Option<Value> {
        let (code, body) = http::get(&self.addr, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    /// The database's status in `/status`.
    pub fn db_status(&self) -> Option<Value> {
        // The server answers before the database has started (it shows under "starting").
        self.status()
            .map(|s| s["databases"][0].clone())
            .filter(|db| !db.is_null())
    }

    /// Remembers each replica's reported position: after any crash, the replica must hold it.
    pub fn record_reported(&mut self) {
        let Some(db) = self.db_status() else { return };
        self.reported.resize(self.replicas.len(), 0);
        for (i, r) in db["replicas"].as_array().unwrap().iter().enumerate() {
            if let Some(p) = r["position"].as_u64() {
                self.reported[i] = self.reported[i].max(p);
            }
        }
    }

    /// The last lines of walship's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sleeps a random time in `range` seconds.
    pub fn pause(&mut self, range: std::ops::Range<f64>) {
        std::thread::sleep(Duration::from_secs_f64(self.rng.random_range(range)));
    }

    /// The last committed transaction, read from the database.
    pub fn committed(&self) -> u64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.query_row("SELECT tx FROM meta", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }

    /// Stops the writer, waits for walship to ship the last transaction, stops walship, and
    /// runs every check; returns the last transaction.
    pub fn finish(&mut self, time_restores: usize) -> u64 {
        if self.walship.is_none() {
            self.start_walship();
        }
        // Let the replicas close in while the writer still runs (a long run's replica can be
        // minutes behind after its last fault): caught up only long after the writes stopped,
        // retention would have dropped every time but the newest state, and the time sweep
        // would check nothing.
        let closing = Instant::now();
        let closed_in = wait_until(Duration::from_secs(180), || {
            self.db_status().is_some_and(|db| {
                db["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["lag_seconds"].as_f64().is_some_and(|lag| lag < 5.0))
            })
        });
        let lags: Vec<String> = self.db_status().map_or(Vec::new(), |db| {
            db["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| format!("{} {} lag {}s", r["name"], r["state"], r["lag_seconds"]))
                .collect()
        });
        eprintln!(
            "{}: replicas {} within 5 s of the writer after {:?} ({})",
            self.name,
            if closed_in { "came" } else { "did NOT come" },
            closing.elapsed(),
            lags.join(", ")
        );
        self.kill_writer();
        let last = self.committed();
        assert!(
            last > 0,
            "{}: the writer committed nothing:\n{}",
            self.name,
            self.writer_log()
        );
        let catching_up = Instant::now();
        self.wait_caught_up();
        eprintln!(
            "{}: replicas caught up {:?} after the writer stopped",
            self.name,
            catching_up.elapsed()
        );
        let mut ws = self.walship.take().unwrap();
        assert!(
            ws.terminate(Duration::from_secs(60)),
            "{}: walship did not stop on SIGTERM",
            self.name
        );
        let status = ws.0.wait().unwrap();
        assert!(
            status.success(),
            "{}: walship exited with {status}:\n{}",
            self.name,
            self.log_tail()
        );

        let journal = Journal::read(&self.journal);
        for (i, url) in self.replicas.clone().iter().enumerate() {
            let out = self.dir.path().join(format!("latest-{i}.db"));
            self.restore(url, &out, None)
                .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            let got = self.check(&out, &format!("latest of {url}"));
            assert_eq!(
                got, last,
                "{}: the latest restore of {url} lost transactions",
                self.name
            );
            let max = self.replica_max_txid(url);
            let reported = self.reported.get(i).copied().unwrap_or(0);
            assert!(
                max >= reported,
                "{}: walship reported TXID {reported} replicated to {url}, which holds only {max}",
                self.name
            );
        }
        // Litestream 0.5.17 restores the file replica's latest state too.
        let out = self.dir.path().join("litestream-latest.db");
        let res = litestream_restore(&self.replicas[0], &out, None, &[]);
        assert!(
            res.status.success(),
            "{}: litestream: {}",
            self.name,
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(self.check(&out, "litestream latest"), last, "{}", self.name);

        self.sweep_times(&journal, time_restores);
        last
    }

    /// Waits until every replica is at the database's position (the writer stopped).
    pub fn wait_caught_up(&mut self) {
        let caught_up = wait_until(Duration::from_secs(300), || {
            let Some(db) = self.db_status() else {
                return false;
            };
            let txid = db["txid"].as_u64();
            txid.is_some()
                && db["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["position"].as_u64() == txid)
        });
        assert!(
            caught_up,
            "{}: the replicas never caught up:\n{}",
            self.name,
            self.log_tail()
        );
        self.record_reported();
    }

    /// Restores the file replica at random times inside its window: each one a committed state
    /// that began before the time, and never older than a restore at an earlier time.
    fn sweep_times(&mut self, journal: &Journal, count: usize) {
        let url = self.replicas[0].clone();
        let (earliest, latest) = self.window(&url);
        let span = latest.duration_since(earliest).unwrap_or_else(|_| {
            panic!(
                "{}: the window of {url} ends ({}) before it begins ({})",
                self.name,
                format_rfc3339_nano(latest),
                format_rfc3339_nano(earliest)
            )
        });
        eprintln!(
            "{}: restoring at {count} times from {} to {}",
            self.name,
            format_rfc3339_nano(earliest),
            format_rfc3339_nano(latest)
        );
        // Retention must not eat into its window: every time since the first write or since
        // `now - retention` (whichever is later) restores, so the oldest chain start must be at
        // or before it (a few seconds' slack: walship's first capture follows the first writes).
        // Times after the newest file are refused, as Litestream does.
        let horizon = journal
            .first()
            .max(SystemTime::now() - self.snapshot_retention)
            .min(latest);
        assert!(
            earliest <= horizon + Duration::from_secs(5),
            "{}: the oldest restorable time is {} but retention keeps everything since {}",
            self.name,
            format_rfc3339_nano(earliest),
            format_rfc3339_nano(horizon)
        );
        // Restores take files created strictly before the time (as Litestream), and times carry
        // milliseconds: the first time that restores is a millisecond after the earliest file.
        let step = Duration::from_millis(1);
        if span <= step {
            // Nothing was written within the retention before this check: the window holds
            // only the newest state, which the latest restores above checked.
            eprintln!("{}: no time before the newest file is retained", self.name);
            return;
        }
        let mut times: Vec<SystemTime> = (0..count)
            .map(|_| {
                earliest
                    + step
                    + span
                        .saturating_sub(step)
                        .mul_f64(self.rng.random_range(0.0..1.0))
            })
            .collect();
        times.sort();
        let mut previous = 0;
        for (i, at) in times.into_iter().enumerate() {
            let out = self.dir.path().join(format!("at-{i}.db"));
            // Every third one by Litestream, the rest by walship.
            if i % 3 == 2 {
                let res = litestream_restore(&url, &out, Some(at), &[]);
                assert!(
                    res.status.success(),
                    "{}: litestream restore at {}: {}",
                    self.name,
                    format_rfc3339_nano(at),
                    String::from_utf8_lossy(&res.stderr)
                );
            } else {
                self.restore(&url, &out, Some(at)).unwrap_or_else(|e| {
                    panic!(
                        "{}: restore at {} inside the window: {e}",
                        self.name,
                        format_rfc3339_nano(at)
                    )
                });
            }
            let k = self.check(&out, &format!("restore at {}", format_rfc3339_nano(at)));
            let began = journal.began(k);
            assert!(
                k == 0 || began.is_some_and(|b| b <= at),
                "{}: a restore at {} holds transaction {k}, which began at {:?}",
                self.name,
                format_rfc3339_nano(at),
                began.map(format_rfc3339_nano)
            );
            assert!(
                k >= previous,
                "{}: a restore at {} is older ({k}) than one before it ({previous})",
                self.name,
                format_rfc3339_nano(at)
            );
            previous = k;
            let _ = std::fs::remove_file(&out);
        }
    }

    /// Restores `url` as of `at` with `by` (walship may be running: retention may delete files
    /// meanwhile) and checks the result: a committed state that began before `at` and holds
    /// every transaction committed `slack` before it. Returns its transaction.
    pub fn check_restore_at(
        &self,
        url: &str,
        by: Restorer,
        at: SystemTime,
        slack: Duration,
    ) -> u64 {
        let out = self.dir.path().join("at-live.db");
        remove_database(&out);
        let ago = SystemTime::now().duration_since(at).unwrap_or_default();
        let restored = match by {
            Restorer::Walship => self.restore(url, &out, Some(at)),
            Restorer::Litestream => {
                let res = litestream_restore(url, &out, Some(at), &self.env);
                if res.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&res.stderr).into_owned())
                }
            }
        };
        let at_text = format_rfc3339_nano(at);
        restored.unwrap_or_else(|e| {
            panic!(
                "{}: {by:?} restore of {url} at {at_text} ({ago:?} before it ran), inside \
                 retention: {e}\n{}",
                self.name,
                self.log_tail()
            )
        });
        let k = self.check(&out, &format!("{by:?} restore of {url} at {at_text}"));
        let journal = Journal::read(&self.journal);
        let began = journal.began(k);
        assert!(
            k == 0 || began.is_some_and(|b| b <= at),
            "{}: a {by:?} restore of {url} at {at_text} holds transaction {k}, which began at {:?}",
            self.name,
            began.map(format_rfc3339_nano)
        );
        // The writer is sequential: a transaction that began by then followed a commit.
        let committed = journal.last_began_by(at - slack).saturating_sub(1);
        assert!(
            k >= committed,
            "{}: a {by:?} restore of {url} at {at_text} holds transaction {k}, but {committed} \
             had committed {slack:?} before that time",
            self.name
        );
        remove_database(&out);
        k
    }

    /// How many lines of walship's log contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// The span a restore of `url` reaches, from `walship ltx -json`.
    fn window(&self, url: &str) -> (SystemTime, SystemTime) {
        let doc = self.ltx_json(url);
        let at = |key: &str| parse_rfc3339(doc[key].as_str().unwrap()).unwrap();
        (at("earliest"), at("latest"))
    }

    fn ltx_json(&self, url: &str) -> Value {
        let out = walship_cmd()
            .args(["ltx", "-json", url])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: walship ltx: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn replica_max_txid(&self, url: &str) -> u64 {
        self.ltx_json(url)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| u64::from_str_radix(f["max_txid"].as_str().unwrap(), 16).unwrap())
            .max()
            .unwrap_or(0)
    }

    /// Restores with walship.
    pub fn restore(&self, url: &str, out: &Path, at: Option<SystemTime>) -> Result<(), String> {
        let _ = std::fs::remove_file(out);
        let mut cmd = walship_cmd();
        cmd.args(["restore", "-o"]).arg(out);
        if let Some(at) = at {
            cmd.arg("-timestamp").arg(format_rfc3339_nano(at));
        }
        let res = cmd
            .arg(url)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        if res.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&res.stderr).into_owned())
        }
    }

    /// Checks a restored database against the workload; returns its transaction.
    pub fn check(&self, path: &Path, what: &str) -> u64 {
        self.workload
            .check(path)
            .unwrap_or_else(|e| panic!("{}: {what}: {e}\n{}", self.name, self.log_tail()))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Keep the evidence of a failed run.
        if std::thread::panicking() {
            let scenario: String = self
                .name
                .split(" (")
                .next()
                .unwrap()
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { '-' })
                .collect();
            let keep = std::env::temp_dir()
                .join(format!("torture-failed-{scenario}-{}", self.workload.seed));
            let _ = std::fs::remove_dir_all(&keep);
            let _ = Command::new("cp")
                .arg("-a")
                .arg(self.dir.path())
                .arg(&keep)
                .status();
            // Not eprintln!: it panics when stderr fails (a full disk under a redirected
            // stderr), and a panic in a destructor while panicking aborts the whole binary.
            let _ = writeln!(
                std::io::stderr(),
                "{}: kept the run's files in {}",
                self.name,
                keep.display()
            );
        }
    }
}

/// The program that restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restorer {
    Walship,
    /// Litestream 0.5.17.
    Litestream,
}

/// walship.
pub fn walship_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship"))
}

/// Restores with Litestream 0.5.17.
pub fn litestream_restore(
    url: &str,
    out: &Path,
    at: Option<SystemTime>,
    env: &[(String, String)],
) -> Output {
    let _ = std::fs::remove_file(out);
    let mut cmd = litestream();
    cmd.args(["restore", "-o"]).arg(out);
    if let Some(at) = at {
        cmd.arg("-timestamp").arg(format_rfc3339_nano(at));
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .arg(url)
        .output()
        .unwrap()
}

/// Removes a database file and its `-wal` and `-shm` files (a check opens it in WAL mode).
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Runs `f` until `budget` has passed; returns the number of rounds.
pub fn rounds(budget: Duration, mut f: impl FnMut(u32)) -> u32 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        f(n);
        n += 1;
    }
    n
}
