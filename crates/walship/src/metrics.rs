//! `/metrics`: the status in Prometheus text format, under Litestream 0.5's metric names and
//! labels (so existing dashboards keep working), plus walship's per-replica position and lag.
//!
//! The values are read from a [`StatusReport`] at scrape time rather than kept in a registry
//! that the replication path updates: the report is already the one record of what happened,
//! and a scrape then costs the replication path nothing.

use prometheus::core::Collector;
use prometheus::{CounterVec, Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder};

use crate::status::{ReplicaState, StatusReport};

/// The Prometheus text (format 0.0.4) for `report`.
pub fn render(report: &StatusReport) -> String {
    let mut families = Vec::new();
    let db = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["db"]).unwrap();
    let db_counter =
        |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["db"]).unwrap();
    let replica = |name: &str, help: &str| {
        GaugeVec::new(Opts::new(name, help), &["db", "name", "replica_type"]).unwrap()
    };

    let db_size = db(
        "litestream_db_size",
        "The current size of the database file",
    );
    let wal_size = db(
        "litestream_wal_size",
        "The WAL offset of the newest capture",
    );
    let txid = db("litestream_txid", "The newest TXID in the local store");
    let total_wal = db_counter(
        "litestream_total_wal_bytes",
        "WAL bytes captured since start",
    );
    let syncs = db_counter("litestream_sync_count", "Captures since start");
    let sync_errors = db_counter("litestream_sync_error_count", "Failed captures");
    let sync_seconds = CounterVec::new(
        Opts::new("litestream_sync_seconds", "Time spent capturing"),
        &["db"],
    )
    .unwrap();
    let checkpoint = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), &["db", "mode"]).unwrap()
    };
    let checkpoints = checkpoint("litestream_checkpoint_count", "Checkpoints since start");
    let checkpoint_errors = checkpoint("litestream_checkpoint_error_count", "Failed checkpoints");
    let checkpoint_seconds = CounterVec::new(
        Opts::new("litestream_checkpoint_seconds", "Time spent checkpointing"),
        &["db", "mode"],
    )
    .unwrap();
    let op = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), &["replica_type", "operation"]).unwrap()
    };
    let operations = op(
        "litestream_replica_operation_total",
        "Replica operations by type",
    );
    let operation_bytes = op(
        "litestream_replica_operation_bytes",
        "Bytes moved by replica operations",
    );
    let position = replica("walship_replica_txid", "The newest TXID the replica holds");
    let lag_txids = replica(
        "walship_replica_lag_txids",
        "TXIDs the replica is behind the local store",
    );
    let lag_seconds = replica(
        "walship_replica_lag_seconds",
        "Age of the oldest capture the replica lacks",
    );
    let failing = replica(
        "walship_replica_failing",
        "1 while the replica's last attempt failed",
    );

    for d in &report.databases {
        let l = [d.path.as_str()];
        db_size.with_label_values(&l).set(d.db_size as i64);
        wal_size.with_label_values(&l).set(d.wal_size as i64);
        if let Some(t) = d.txid {
            txid.with_label_values(&l).set(t as i64);
        }
        total_wal.with_label_values(&l).inc_by(d.total_wal_bytes);
        syncs.with_label_values(&l).inc_by(d.captures);
        sync_errors.with_label_values(&l).inc_by(d.sync_errors);
        sync_seconds.with_label_values(&l).inc_by(d.sync_seconds);
        let cl = [d.path.as_str(), "PASSIVE"];
        checkpoints.with_label_values(&cl).inc_by(d.checkpoints);
        checkpoint_errors
            .with_label_values(&cl)
            .inc_by(d.checkpoint_errors);
        checkpoint_seconds
            .with_label_values(&cl)
            .inc_by(d.checkpoint_seconds);
        for r in &d.replicas {
            let ol = [r.kind, "PUT"];
            operations.with_label_values(&ol).inc_by(r.files_uploaded);
            operation_bytes
                .with_label_values(&ol)
                .inc_by(r.bytes_uploaded);
            operations
                .with_label_values(&[r.kind, "LIST"])
                .inc_by(r.lists);
            operations
                .with_label_values(&[r.kind, "DELETE"])
                .inc_by(r.files_deleted);
            let rl = [d.path.as_str(), r.name.as_str(), r.kind];
            if let Some(p) = r.position {
                position.with_label_values(&rl).set(p as f64);
            }
            if let Some(t) = r.lag_txids {
                lag_txids.with_label_values(&rl).set(t as f64);
            }
            if let Some(s) = r.lag_seconds {
                lag_seconds.with_label_values(&rl).set(s);
            }
            let is_failing = r.state == ReplicaState::Failing;
            failing
                .with_label_values(&rl)
                .set(f64::from(u8::from(is_failing)));
        }
    }

    let collectors: [&dyn Collector; 16] = [
        &db_size,
        &wal_size,
        &txid,
        &total_wal,
        &syncs,
        &sync_errors,
        &sync_seconds,
        &checkpoints,
        &checkpoint_errors,
        &checkpoint_seconds,
        &operations,
        &operation_bytes,
        &position,
        &lag_txids,
        &lag_seconds,
        &failing,
    ];
    // A metric without a sample yet (no database opened, no upload made) is left out: the
    // encoder refuses an empty family, and a scrape during start-up must still answer.
    for c in collectors {
        families.extend(
            c.collect()
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding into memory cannot fail");
    String::from_utf8(out).expect("Prometheus text is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{DatabaseReport, ReplicaReport};

    fn report() -> StatusReport {
        StatusReport {
            version: "0",
            pid: 1,
            started_at: String::new(),
            now: String::new(),
            databases: vec![DatabaseReport {
                path: "/data/app.db".into(),
                txid: Some(42),
                last_sync: None,
                last_error: None,
                captures: 41,
                full_captures: 1,
                checkpoints: 3,
                checkpoint_errors: 0,
                checkpoint_seconds: 0.25,
                sync_errors: 2,
                sync_seconds: 1.5,
                db_size: 8192,
                wal_size: 4152,
                total_wal_bytes: 100_000,
                replicas: vec![ReplicaReport {
                    name: "s3".into(),
                    kind: "s3",
                    url: "s3://b/app".into(),
                    state: ReplicaState::Failing,
                    position: Some(40),
                    lag_txids: Some(2),
                    lag_seconds: Some(3.5),
                    last_upload: None,
                    last_error: Some("down".into()),
                    failing_since: None,
                    files_uploaded: 40,
                    bytes_uploaded: 123_456,
                    lists: 10,
                    files_deleted: 3,
                }],
            }],
            starting: Vec::new(),
        }
    }

    #[test]
    fn names_and_labels_are_litestreams() {
        let text = render(&report());
        for line in [
            r#"litestream_txid{db="/data/app.db"} 42"#,
            r#"litestream_db_size{db="/data/app.db"} 8192"#,
            r#"litestream_sync_count{db="/data/app.db"} 41"#,
            r#"litestream_sync_error_count{db="/data/app.db"} 2"#,
            r#"litestream_total_wal_bytes{db="/data/app.db"} 100000"#,
            r#"litestream_checkpoint_count{db="/data/app.db",mode="PASSIVE"} 3"#,
            r#"litestream_replica_operation_total{operation="PUT",replica_type="s3"} 40"#,
            r#"litestream_replica_operation_bytes{operation="PUT",replica_type="s3"} 123456"#,
            r#"litestream_replica_operation_total{operation="LIST",replica_type="s3"} 10"#,
            r#"litestream_replica_operation_total{operation="DELETE",replica_type="s3"} 3"#,
            r#"walship_replica_txid{db="/data/app.db",name="s3",replica_type="s3"} 40"#,
            r#"walship_replica_lag_seconds{db="/data/app.db",name="s3",replica_type="s3"} 3.5"#,
            r#"walship_replica_failing{db="/data/app.db",name="s3",replica_type="s3"} 1"#,
            "# TYPE litestream_sync_count counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("_count_total"), "no OpenMetrics suffixes");
    }

    #[test]
    fn renders_before_any_database_or_upload() {
        let mut report = report();
        assert_eq!(
            render(&StatusReport {
                databases: Vec::new(),
                ..report.clone()
            }),
            ""
        );
        let d = &mut report.databases[0];
        d.txid = None;
        d.replicas[0].position = None;
        d.replicas[0].lag_txids = None;
        d.replicas[0].lag_seconds = None;
        let text = render(&report);
        assert!(
            text.contains(r#"litestream_db_size{db="/data/app.db"} 8192"#),
            "{text}"
        );
        assert!(
            !text.contains("litestream_txid"),
            "no TXID yet, no sample: {text}"
        );
        assert!(
            !text.contains("walship_replica_txid"),
            "no upload yet, no sample: {text}"
        );
    }
}
