//! Oracles for the config parser: the invariants every parsed config keeps, a writer that turns
//! a parsed config back into a file with every setting explicit (which must parse to the same
//! config), and Go's `os.Expand`, which `$VAR` expansion must match.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use walship::config::{
    Backend, Config, CustomerKey, DbConfig, DbSource, LogFormat, ParseOptions, ReplicaConfig,
    ServerSideEncryption, MAX_LEVELS,
};

/// The environment configs are parsed with: a home, variables for `$VAR`, one whose value holds
/// a `$` (never expanded twice), and credentials that replicas without their own pick up.
pub fn env() -> HashMap<String, String> {
    [
        ("HOME", "/home/fuzz"),
        ("BUCKET", "bkt"),
        ("DATA", "/data"),
        ("EMPTY", ""),
        ("DOLLAR", "$BUCKET"),
        ("1", "one"),
        ("LITESTREAM_ACCESS_KEY_ID", "AKID"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "SECRET"),
        ("LITESTREAM_AZURE_ACCOUNT_KEY", "AZKEY"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Go's `os.Expand`, transcribed from its documented behaviour: `$NAME` and `${NAME}`, the
/// one-character special names, `$` without a name kept, bad `${` syntax dropped.
pub fn go_expand(s: &str, env: &HashMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut i = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.extend_from_slice(&b[i..j]);
            let (name, w) = shell_name(&s[j + 1..]);
            match name {
                Some(name) => {
                    out.extend_from_slice(env.get(name).map_or("", String::as_str).as_bytes())
                }
                None if w > 0 => {}
                None => out.push(b'$'),
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&b[i.min(b.len())..]);
    String::from_utf8(out).expect("expansion keeps UTF-8")
}

fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return (None, 2);
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1);
    }
    if special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    ((n > 0).then(|| &s[..n]), n)
}

/// Checks the promises of a parsed config.
pub fn check_invariants(c: &Config) {
    let positive = |d: Duration, what: &str| assert!(!d.is_zero(), "{what} is zero");
    assert!(!c.dbs.is_empty(), "no databases");
    assert!(c.levels.len() <= MAX_LEVELS);
    for level in &c.levels {
        positive(*level, "a level interval");
    }
    positive(c.snapshot.interval, "snapshot interval");
    positive(c.snapshot.retention, "snapshot retention");
    positive(c.l0_retention_check_interval, "l0-retention-check-interval");
    positive(c.shutdown_sync_interval, "shutdown-sync-interval");
    for db in &c.dbs {
        let dir = matches!(db.source, DbSource::Dir(_));
        assert!(db.meta_dir.is_none() || (dir && db.meta_path.is_none()));
        positive(db.monitor_interval, "monitor-interval");
        positive(db.checkpoint_interval, "checkpoint-interval");
        positive(db.snapshot.interval, "db snapshot interval");
        positive(db.snapshot.retention, "db snapshot retention");
        assert_ne!(db.truncate_page_n, 0);
        assert_ne!(db.max_sync_wal_bytes, 0);
        assert!(!db.replicas.is_empty(), "a database without replicas");
        let mut names: Vec<&str> = db.replicas.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.iter().all(|n| !n.trim().is_empty()),
            "an empty replica name"
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), db.replicas.len(), "replica names repeat");
        for r in &db.replicas {
            positive(r.sync_interval, "sync-interval");
            match &r.backend {
                Backend::File { path } => assert!(!path.as_os_str().is_empty()),
                Backend::S3(s3) => {
                    assert!(
                        dir || !s3.path.is_empty(),
                        "an s3 replica at the bucket root"
                    );
                    if let Some(e) = &s3.endpoint {
                        assert!(e.starts_with("http://") || e.starts_with("https://"), "{e}");
                    }
                }
                Backend::Gcs { .. } | Backend::Abs(_) => {}
            }
        }
    }
}

/// Parses `text` again after [`to_yaml`] and checks it gives back `config`.
///
/// The second parse sees no variables but an unrelated `HOME`: every value, credentials from the
/// environment included, is written out explicitly, and no path may be expanded twice.
pub fn check_round_trip(config: &Config) {
    let text = to_yaml(config);
    let env: HashMap<String, String> = [("HOME".to_owned(), "/elsewhere".to_owned())].into();
    let options = ParseOptions {
        no_expand_env: true,
    };
    let again = match Config::parse(&text, &env, options) {
        Ok(parsed) => parsed.config,
        Err(e) => panic!("a parsed config, written out, does not parse: {e}\n{text}"),
    };
    let mut want = config.clone();
    // Byte sizes in YAML are read through a float, as Litestream's go-humanize does; a part size
    // from a URL query is exact, and comes back rounded to a float.
    for db in &mut want.dbs {
        for r in &mut db.replicas {
            if let Backend::S3(s3) = &mut r.backend {
                s3.part_size = s3.part_size.map(|n| n as f64 as u64);
            }
        }
    }
    assert!(
        again == want,
        "round trip changed the config\nfirst:  {want:?}\nsecond: {again:?}\ntext:\n{text}"
    );
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn duration(d: Duration) -> Value {
    s(&format!("{}ns", d.as_nanos()))
}

/// A path for a key read with `~` expansion: the `sqlite://` prefix, which is dropped once, keeps
/// a path that starts with a prefix or `~` as it is.
fn db_path(p: &Path) -> Value {
    s(&format!(
        "sqlite://{}",
        p.to_str().expect("paths come from UTF-8 text")
    ))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

/// Writes `config` as a config file with every setting explicit.
pub fn to_yaml(config: &Config) -> String {
    let c = config;
    let mut top = vec![
        (
            "levels",
            Value::Sequence(
                c.levels
                    .iter()
                    .map(|l| map(vec![("interval", duration(*l))]))
                    .collect(),
            ),
        ),
        (
            "snapshot",
            map(vec![
                ("interval", duration(c.snapshot.interval)),
                ("retention", duration(c.snapshot.retention)),
            ]),
        ),
        ("l0-retention", duration(c.l0_retention)),
        (
            "l0-retention-check-interval",
            duration(c.l0_retention_check_interval),
        ),
        (
            "retention",
            map(vec![("enabled", Value::Bool(c.retention.enabled))]),
        ),
        ("shutdown-sync-timeout", duration(c.shutdown_sync_timeout)),
        ("shutdown-sync-interval", duration(c.shutdown_sync_interval)),
        (
            "logging",
            map(vec![
                ("level", s(c.logging.level.as_str())),
                (
                    "type",
                    s(match c.logging.format {
                        LogFormat::Text => "text",
                        LogFormat::Json => "json",
                    }),
                ),
                ("stderr", Value::Bool(c.logging.stderr)),
                ("source", Value::Bool(c.logging.source)),
            ]),
        ),
        ("dbs", Value::Sequence(c.dbs.iter().map(db).collect())),
    ];
    if let Some(addr) = &c.addr {
        top.push(("addr", s(addr)));
    }
    if let Some(exec) = &c.exec {
        top.push(("exec", s(exec)));
    }
    serde_yaml_ng::to_string(&map(top)).expect("a Value serializes")
}

fn db(d: &DbConfig) -> Value {
    let mut e = match &d.source {
        DbSource::Path(p) => vec![("path", db_path(p))],
        DbSource::Dir(dir) => vec![
            ("dir", db_path(&dir.dir)),
            ("pattern", s(&dir.pattern)),
            ("recursive", Value::Bool(dir.recursive)),
            ("watch", Value::Bool(dir.watch)),
        ],
    };
    if let Some(p) = &d.meta_path {
        e.push(("meta-path", db_path(p)));
    }
    if let Some(p) = &d.meta_dir {
        e.push(("meta-dir", db_path(p)));
    }
    e.extend([
        ("monitor-interval", duration(d.monitor_interval)),
        ("checkpoint-interval", duration(d.checkpoint_interval)),
        ("busy-timeout", duration(d.busy_timeout)),
        (
            "min-checkpoint-page-count",
            Value::Number(d.min_checkpoint_page_count.into()),
        ),
        ("truncate-page-n", Value::Number(d.truncate_page_n.into())),
        (
            "max-sync-wal-bytes",
            Value::Number(d.max_sync_wal_bytes.into()),
        ),
        (
            "snapshot",
            map(vec![
                ("interval", duration(d.snapshot.interval)),
                ("retention", duration(d.snapshot.retention)),
            ]),
        ),
        (
            "restore-if-db-not-exists",
            Value::Bool(d.restore_if_db_not_exists),
        ),
        (
            "replicas",
            Value::Sequence(d.replicas.iter().map(replica).collect()),
        ),
    ]);
    map(e)
}

fn replica(r: &ReplicaConfig) -> Value {
    let mut e = vec![
        ("name", s(&r.name)),
        ("type", s(r.backend.type_name())),
        ("sync-interval", duration(r.sync_interval)),
        (
            "max-sync-ltx-files",
            Value::Number((r.max_sync_ltx_files as u64).into()),
        ),
        ("auto-recover", Value::Bool(r.auto_recover)),
    ];
    let opt = |e: &mut Vec<(&str, Value)>, key: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            e.push((key, s(v)));
        }
    };
    match &r.backend {
        Backend::File { path } => {
            // Replica paths are refused when they look like URLs, so no prefix here; a parsed
            // replica path never starts with `~` or `scheme://`.
            e.push(("path", s(path.to_str().unwrap())));
        }
        Backend::S3(c) => {
            e.push(("bucket", s(&c.bucket)));
            e.push(("path", s(&c.path)));
            opt(&mut e, "region", c.region.as_deref());
            opt(&mut e, "endpoint", c.endpoint.as_deref());
            e.push(("force-path-style", Value::Bool(c.force_path_style)));
            opt(
                &mut e,
                "access-key-id",
                c.access_key_id.as_ref().map(|k| k.expose()),
            );
            opt(
                &mut e,
                "secret-access-key",
                c.secret_access_key.as_ref().map(|k| k.expose()),
            );
            e.push(("skip-verify", Value::Bool(c.skip_verify)));
            e.push(("sign-payload", Value::Bool(c.sign_payload)));
            e.push(("require-content-md5", Value::Bool(c.require_content_md5)));
            opt(&mut e, "storage-class", c.storage_class.as_deref());
            if let Some(n) = c.part_size {
                e.push(("part-size", Value::Number(n.into())));
            }
            if let Some(n) = c.concurrency {
                e.push(("concurrency", Value::Number((n as u64).into())));
            }
            match &c.sse {
                None => {}
                Some(ServerSideEncryption::Kms { key_id }) => {
                    e.push(("sse-kms-key-id", s(key_id)));
                }
                Some(ServerSideEncryption::Customer(CustomerKey::Inline(k))) => {
                    e.push(("sse-customer-key", s(k.expose())));
                }
                Some(ServerSideEncryption::Customer(CustomerKey::File(p))) => {
                    e.push(("sse-customer-key-path", db_path(p)));
                }
            }
        }
        Backend::Gcs { bucket, path } => {
            e.push(("bucket", s(bucket)));
            e.push(("path", s(path)));
        }
        Backend::Abs(a) => {
            e.push(("bucket", s(&a.container)));
            e.push(("path", s(&a.path)));
            opt(&mut e, "account-name", a.account_name.as_deref());
            opt(
                &mut e,
                "account-key",
                a.account_key.as_ref().map(|k| k.expose()),
            );
            opt(
                &mut e,
                "sas-token",
                a.sas_token.as_ref().map(|k| k.expose()),
            );
            opt(&mut e, "endpoint", a.endpoint.as_deref());
        }
    }
    map(e)
}
