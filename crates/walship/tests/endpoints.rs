//! `/status`, `/metrics` and `/healthz` of a running `walship replicate`, with one replica that
//! works and one that fails until its bucket appears.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testkit::{free_port, wait_until, ChildGuard, S3Server};

mod support;

use support::http;
use support::workload::{app, walship};

fn replica<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["databases"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no replica {name} in {status}"))
}

/// `walship replicate -config config` with `s3`'s credentials, logging to `log`.
fn replicate(config: &Path, s3: &S3Server, log: &Path) -> ChildGuard {
    ChildGuard::spawn(
        walship()
            .args(["replicate", "-config"])
            .arg(config)
            .envs(s3.credential_env()),
        log,
    )
}

/// walship's `/status` at `addr`, once it answers.
fn status_at(addr: &str) -> Option<Value> {
    let (code, body) = http::get(addr, "/status")?;
    assert_eq!(code, 200, "{body}");
    Some(serde_json::from_str(&body).unwrap())
}

#[test]
fn status_metrics_and_health_follow_the_replicas() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "addr: {addr}\ndbs:\n  - path: {}\n    replicas:\n      - name: local\n        url: file://{}\n      - name: remote\n        url: {}\n",
            db.display(),
            dir.path().join("replica").display(),
            s3.replica_url("late-bucket", "app.db"),
        ),
    )
    .unwrap();
    let log = dir.path().join("walship.log");
    let mut ws = replicate(&config, &s3, &log);
    for i in 0..20 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i + 1])
            .unwrap();
    }

    let status = || status_at(&addr);
    // The bucket is missing: the file replica keeps up, the S3 replica reports why it fails.
    let caught_up = |s: &Value, name: &str| {
        let txid = &s["databases"][0]["txid"];
        !txid.is_null() && replica(s, name)["position"] == *txid
    };
    assert!(
        wait_until(Duration::from_secs(30), || status().is_some_and(|s| {
            caught_up(&s, "local") && replica(&s, "remote")["state"] == "failing"
        })),
        "status never showed local caught up and remote failing: {:?}\n{}",
        status(),
        std::fs::read_to_string(&log).unwrap()
    );
    let s = status().unwrap();
    let db_status = &s["databases"][0];
    assert_eq!(db_status["path"], db.display().to_string());
    assert!(db_status["db_size"].as_u64().unwrap() > 0);
    let local = replica(&s, "local");
    assert_eq!(local["state"], "healthy");
    assert_eq!(
        (local["lag_txids"].as_u64(), local["lag_seconds"].as_f64()),
        (Some(0), Some(0.0))
    );
    assert!(local["files_uploaded"].as_u64().unwrap() >= 1);
    assert!(local["url"].as_str().unwrap().starts_with("file://"));
    let remote = replica(&s, "remote");
    let error = remote["last_error"].as_str().unwrap();
    assert!(
        error.contains("NoSuchBucket") || error.contains("bucket"),
        "{error}"
    );
    assert!(!remote["failing_since"].is_null());
    let url = remote["url"].as_str().unwrap();
    assert!(
        url.starts_with("s3://late-bucket/app.db") && !url.contains("secret"),
        "{url}"
    );
    assert!(
        !s.to_string().contains(s3.credential_env()[1].1),
        "a secret leaked: {s}"
    );

    let (code, body) = http::get(&addr, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("remote"), "{body}");

    let (code, metrics) = http::get(&addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let txid = db_status["txid"].as_u64().unwrap();
    let line = format!("litestream_txid{{db=\"{}\"}} {txid}", db.display());
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in\n{metrics}"
    );
    assert!(metrics.contains("walship_replica_failing{"), "{metrics}");

    // The bucket appears: the S3 replica catches up and health returns.
    s3.create_bucket("late-bucket");
    conn.execute("INSERT INTO rows(id, tx, pad) VALUES (100, 0, 'y')", [])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || status().is_some_and(|s| {
            caught_up(&s, "remote") && replica(&s, "remote")["state"] == "healthy"
        })),
        "the S3 replica never recovered: {:?}",
        status()
    );
    assert!(status().unwrap()["databases"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["last_error"].is_null()));
    assert_eq!(http::get(&addr, "/healthz").unwrap().0, 200);
    assert!(ws.terminate(Duration::from_secs(30)));
    assert!(
        http::get(&addr, "/status").is_none(),
        "still serving after exit"
    );
}

#[test]
fn an_address_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(app(&db));
    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "addr: {addr}\ndbs:\n  - path: {}\n    replica:\n      url: file://{}\n",
            db.display(),
            dir.path().join("replica").display()
        ),
    )
    .unwrap();
    let out = walship()
        .args(["replicate", "-config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&addr) && err.contains("choose a free port"),
        "{err}"
    );
}

/// walship replicating two databases: `waiting`, with an empty local store and one S3 replica
/// behind a blackholed proxy, and `other`, with a directory replica and a row.
struct OneWaiting {
    dir: tempfile::TempDir,
    _s3: S3Server,
    proxy: testkit::Proxy,
    waiting: std::path::PathBuf,
    other: std::path::PathBuf,
    addr: String,
    log: std::path::PathBuf,
    ws: ChildGuard,
}

impl OneWaiting {
    fn start() -> OneWaiting {
        let s3 = S3Server::start();
        s3.create_bucket("start");
        let proxy = s3.proxy();
        proxy.set_fault(testkit::Fault::Blackhole);
        let dir = tempfile::tempdir().unwrap();
        let waiting = dir.path().join("waiting.db");
        let other = dir.path().join("other.db");
        app(&waiting);
        app(&other)
            .execute("INSERT INTO rows(id, tx, pad) VALUES (1, 0, 'x')", [])
            .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("walship.yml");
        std::fs::write(
            &config,
            format!(
                "addr: {addr}\ndbs:\n  - path: {}\n    replicas:\n      - url: {}\n  - path: {}\n    replicas:\n      - url: file://{}\n",
                waiting.display(),
                s3.replica_url_through(&proxy, "start", "waiting.db"),
                other.display(),
                dir.path().join("other-replica").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("walship.log");
        let ws = replicate(&config, &s3, &log);
        let fx = OneWaiting {
            dir,
            _s3: s3,
            proxy,
            waiting,
            other,
            addr,
            log,
            ws,
        };
        assert!(
            wait_until(Duration::from_secs(15), || fx.status().is_some_and(|s| {
                fx.other_replicated(&s)
                    && s["starting"] == serde_json::json!([fx.waiting.display().to_string()])
            })),
            "status never showed the other database replicated and this one starting: {:?}\n{}",
            fx.status(),
            fx.log()
        );
        fx
    }

    fn status(&self) -> Option<Value> {
        status_at(&self.addr)
    }

    fn other_replicated(&self, s: &Value) -> bool {
        s["databases"].as_array().unwrap().iter().any(|d| {
            d["path"] == self.other.display().to_string()
                && !d["txid"].is_null()
                && d["replicas"][0]["position"] == d["txid"]
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// With an empty local store walship waits (up to a minute) for an unreachable replica before
/// a database's first capture; meanwhile the HTTP server answers, shows that database as
/// starting (healthz 503 saying so), and the other databases replicate.
#[test]
fn a_database_waiting_for_its_replica_at_start_shows_as_starting_and_holds_up_no_other() {
    let mut fx = OneWaiting::start();
    let (code, body) = http::get(&fx.addr, "/healthz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("starting") && body.contains(&fx.waiting.display().to_string()),
        "{body}"
    );

    // The replica answers: the database starts, and health follows.
    fx.proxy.set_fault(testkit::Fault::PassThrough);
    assert!(
        wait_until(Duration::from_secs(30), || fx.status().is_some_and(|s| {
            s["starting"] == serde_json::json!([]) && s["databases"].as_array().unwrap().len() == 2
        })),
        "the database never started once its replica answered: {:?}\n{}",
        fx.status(),
        fx.log()
    );
    assert!(wait_until(Duration::from_secs(15), || {
        http::get(&fx.addr, "/healthz").is_some_and(|(code, _)| code == 200)
    }));
    assert!(fx.ws.terminate(Duration::from_secs(30)));
}

/// A signal while a database still waits for its replica stops the started databases with
/// their final capture and upload, and exits 1 naming the one that never started (exit 0 would
/// tell a supervisor it was replicated).
#[test]
fn a_signal_while_a_database_starts_stops_the_others_properly_and_names_it() {
    let mut fx = OneWaiting::start();
    let conn = app(&fx.other);
    conn.execute("INSERT INTO rows(id, tx, pad) VALUES (2, 0, 'x')", [])
        .unwrap();
    assert!(
        fx.ws.terminate(Duration::from_secs(30)),
        "walship did not stop"
    );
    let status = fx.ws.0.wait().unwrap();
    let log = fx.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "{} never started replicating",
            fx.waiting.display()
        )),
        "{log}"
    );
    // The started database's last row went with the final capture.
    let out = fx.dir.path().join("other-restored.db");
    let restored = walship()
        .args(["restore", "-o"])
        .arg(&out)
        .arg(format!(
            "file://{}",
            fx.dir.path().join("other-replica").display()
        ))
        .output()
        .unwrap();
    assert!(restored.status.success(), "{restored:?}");
    let rows: i64 = rusqlite::Connection::open(&out)
        .unwrap()
        .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "{log}");
}
