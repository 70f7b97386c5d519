//! An idle database costs nothing: with a counting proxy between walship and the S3 server, an
//! idle database makes no request at all (no uploads, no LIST, no GET) and writes nothing to its
//! local store, across compaction and snapshot boundaries; a database committing once a second
//! makes about one PUT (its L0 file) per commit, plus the compactions due, and nothing else.
//!
//! Compaction runs at wall-clock boundaries; the levels (L1 5 s, L2 10 s) and the snapshot
//! interval (10 s) are short here so that several boundaries fall inside each window.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testkit::{free_port, wait_until, ChildGuard, Proxy, Request, S3Server};

mod support;

use support::http;
use support::workload::{app, walship};

const BUCKET: &str = "idle";

/// The levels and snapshot intervals of the config below, by level.
const INTERVALS: [(&str, u64); 3] = [("1", 5), ("2", 10), ("9", 10)];

/// The replica's (TXID, position), once the database has a TXID.
fn progress(addr: &str) -> Option<(u64, u64)> {
    let (code, body) = http::get(addr, "/status")?;
    assert_eq!(code, 200, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    let db = &s["databases"][0];
    Some((
        db["txid"].as_u64()?,
        db["replicas"][0]["position"].as_u64().unwrap_or(0),
    ))
}

/// Waits until the replica holds the database's newest TXID, at least `min`; returns it.
fn caught_up(addr: &str, min: u64, log: &Path) -> u64 {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(60), || {
        last = progress(addr);
        last.is_some_and(|(txid, pos)| txid >= min && pos == txid)
    });
    assert!(
        ok,
        "the replica never caught up to TXID {min}: (txid, position) = {last:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    last.unwrap().0
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sleeps until `at` (seconds since the epoch).
fn sleep_until(at: f64) {
    let left = at - now_secs();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

/// Every file under `dir` with its size and modification time.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out
}

/// What a request was for: `PUT L0`, `PUT L1`, ..., `LIST`, or method and path.
fn kind((method, path): &Request) -> String {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if method == "GET" && (query.contains("list-type") || path.trim_end_matches('/') == "/idle") {
        return "LIST".into();
    }
    // Litestream 0.5's layout: PATH/LEVEL/MIN-MAX.ltx, LEVEL in four hex digits.
    let mut segments = path.rsplit('/');
    let (file, dir) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    match u32::from_str_radix(dir, 16) {
        Ok(level) if file.ends_with(".ltx") && dir.len() == 4 => format!("{method} L{level}"),
        _ => format!("{method} {path}"),
    }
}

fn breakdown(requests: &[Request]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry(kind(r)).or_default() += 1;
    }
    out
}

/// How many multiples of `step` seconds lie in `(from, to]`.
fn boundaries(from: f64, to: f64, step: u64) -> usize {
    let step = step as f64;
    ((to / step).floor() - (from / step).floor()).max(0.0) as usize
}

#[test]
fn an_idle_database_makes_no_requests_and_commits_cost_one_put_each() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let upstream: SocketAddr = s3.endpoint()["http://".len()..].parse().unwrap();
    let proxy = Proxy::start(upstream);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    for i in 1..=5 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, ?1, 'x')", [i])
            .unwrap();
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "addr: {addr}\n\
             levels:\n  - interval: 5s\n  - interval: 10s\n\
             snapshot:\n  interval: 10s\n\
             dbs:\n  - path: {}\n    replica:\n      url: s3://{BUCKET}/app.db?endpoint={}&forcePathStyle=true&region=us-east-1\n",
            db.display(),
            proxy.endpoint(),
        ),
    )
    .unwrap();
    let log = dir.path().join("walship.log");
    let _ws = ChildGuard::spawn(
        walship()
            .args(["replicate", "-config"])
            .arg(&config)
            .envs(s3.credential_env())
            .env("LOG_LEVEL", "debug"),
        &log,
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let txid = caught_up(&addr, 1, &log);

    // Let two boundaries of every level pass, so what the writes left is compacted and mirrored.
    sleep_until(((now_secs() / 10.0).floor() + 2.0) * 10.0 + 2.0);
    assert_eq!(caught_up(&addr, txid, &log), txid, "nothing was written");
    let store = dir.path().join(".app.db-litestream");
    assert!(store.is_dir(), "no local store at {}", store.display());
    let before = listing(&store);

    // Idle: no request, no local write.
    proxy.reset_counts();
    let start = now_secs();
    std::thread::sleep(Duration::from_secs(15));
    let idle = proxy.requests();
    let crossed: Vec<String> = INTERVALS
        .iter()
        .map(|(l, s)| format!("L{l}: {}", boundaries(start, now_secs(), *s)))
        .collect();
    println!(
        "idle 15 s (boundaries crossed {crossed:?}): {} requests {:?}",
        idle.len(),
        breakdown(&idle)
    );
    assert!(
        idle.is_empty(),
        "an idle database made {} requests to S3 in 15 s: {:?}\n{idle:#?}\nwalship's log:\n{}",
        idle.len(),
        breakdown(&idle),
        log_text()
    );
    let after = listing(&store);
    assert_eq!(
        before,
        after,
        "an idle database changed its local store\nwalship's log:\n{}",
        log_text()
    );

    // One commit a second: one PUT of an L0 file per commit, the compactions due, nothing else.
    proxy.reset_counts();
    let start = now_secs();
    let commits = 10;
    for i in 0..commits {
        sleep_until(start + i as f64 + 0.5);
        conn.execute(
            "INSERT INTO rows(id, tx, pad) VALUES (?1, ?1, 'y')",
            [100 + i as i64],
        )
        .unwrap();
    }
    caught_up(&addr, txid + commits as u64, &log);
    let end = now_secs();
    let busy = proxy.requests();
    let counts = breakdown(&busy);
    println!(
        "{commits} commits at one a second ({:.1} s): {} requests {counts:?}",
        end - start,
        busy.len()
    );
    let l0 = counts.get("PUT L0").copied().unwrap_or(0);
    assert!(
        (commits - 3..=commits + 1).contains(&l0),
        "{l0} L0 uploads for {commits} commits: {counts:?}\n{busy:#?}"
    );
    for (level, step) in INTERVALS {
        let puts = counts.get(&format!("PUT L{level}")).copied().unwrap_or(0);
        let allowed = boundaries(start, end, step) + 1;
        assert!(
            puts <= allowed,
            "{puts} uploads to level {level} with {allowed} boundaries: {counts:?}"
        );
    }
    let unexpected: Vec<&Request> = busy
        .iter()
        .filter(|r| !["PUT L0", "PUT L1", "PUT L2", "PUT L9"].contains(&kind(r).as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "requests beyond the uploads a commit needs: {unexpected:#?}\nall: {counts:?}"
    );
}
