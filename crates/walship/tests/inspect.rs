//! `walship ltx` and `walship databases`: what a replica holds and what a config replicates.

use std::time::Duration;

use serde_json::Value;
use testkit::{wait_until, ChildGuard};

mod support;

use support::workload::{app, walship};

#[test]
fn ltx_lists_a_replicas_files_and_databases_lists_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = app(&db);
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let log = dir.path().join("walship.log");
    let mut ws = ChildGuard::spawn(walship().arg("replicate").arg(&db).arg(&url), &log);
    for i in 1..=3 {
        conn.execute("INSERT INTO rows(id, tx, pad) VALUES (?1, 0, 'x')", [i])
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
    }
    let ltx_json = || -> Value {
        let out = walship().args(["ltx", "-json", &url]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(wait_until(Duration::from_secs(20), || {
        ltx_json()["files"].as_array().unwrap().len() >= 3
    }));
    assert!(ws.terminate(Duration::from_secs(30)));

    let doc = ltx_json();
    let files = doc["files"].as_array().unwrap();
    let on_disk = std::fs::read_dir(replica.join("ltx/0")).unwrap().count();
    let l0: Vec<&Value> = files.iter().filter(|f| f["level"] == 0).collect();
    assert_eq!(l0.len(), on_disk);
    assert_eq!(l0[0]["min_txid"], "0000000000000001");
    assert!(l0.iter().all(|f| f["size"].as_u64().unwrap() > 0));
    assert_eq!(doc["type"], "file");
    assert!(doc["earliest"].as_str().unwrap() <= doc["latest"].as_str().unwrap());

    let table = walship()
        .args(["ltx", "-level", "0", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().count(), 1 + on_disk, "{text}");
    assert!(
        text.contains("0000000000000001  0000000000000001"),
        "{text}"
    );

    let bad = walship()
        .args(["ltx", "-level", "12", &url])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give 0 to 9"));

    let config = dir.path().join("walship.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: {url}\n      - url: s3://bucket/app?endpoint=http://127.0.0.1:9&region=x\n        access-key-id: AKIDVISIBLE\n        secret-access-key: hushhush\n",
            db.display()
        ),
    )
    .unwrap();
    let out = walship()
        .args(["databases", "-config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&db.display().to_string()) && text.contains(&url),
        "{text}"
    );
    assert!(text.contains("s3://bucket/app"), "{text}");
    assert!(
        !text.contains("hushhush") && !text.contains("AKIDVISIBLE"),
        "{text}"
    );
}
