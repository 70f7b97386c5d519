//! The config module against whole files: every key, several replicas, env expansion, URL forms,
//! credentials, and the messages of bad input.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use walship::config::{
    AbsConfig, Backend, Config, ConfigError, CustomerKey, DbSource, DirConfig, LogFormat, LogLevel,
    ParseOptions, Parsed, ReplicaConfig, S3Config, Secret, ServerSideEncryption,
};

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_with(yaml: &str, vars: &[(&str, &str)]) -> Parsed {
    Config::parse(yaml, &env(vars), ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse(yaml: &str) -> Parsed {
    parse_with(yaml, &[])
}

fn error_with(yaml: &str, vars: &[(&str, &str)]) -> String {
    match Config::parse(yaml, &env(vars), ParseOptions::default()) {
        Ok(parsed) => panic!("expected an error, parsed {:?}", parsed.config),
        Err(err) => err.to_string(),
    }
}

fn error(yaml: &str) -> String {
    error_with(yaml, &[])
}

/// The backends of the replicas of the first database.
fn backends(parsed: &Parsed) -> Vec<&Backend> {
    parsed.config.dbs[0]
        .replicas
        .iter()
        .map(|r| &r.backend)
        .collect()
}

fn s3(parsed: &Parsed) -> &S3Config {
    match backends(parsed)[0] {
        Backend::S3(s3) => s3,
        other => panic!("not s3: {other:?}"),
    }
}

/// One database replicated to the replica block `replica`, for short tests.
fn one_replica(replica: &str) -> String {
    format!("dbs:\n  - path: /data/app.db\n    replica:\n{replica}")
}

const FULL: &str = r#"
addr: "127.0.0.1:9090"
exec: "python app.py"
levels:
  - interval: 10s
  - interval: 1m
snapshot:
  interval: 12h
  retention: 72h
l0-retention: 10m
l0-retention-check-interval: 30s
retention:
  enabled: false
shutdown-sync-timeout: 1m30s
shutdown-sync-interval: 250ms
logging:
  level: debug
  type: json
  stderr: true
  source: yes
# Replica settings at the top level are defaults for every replica.
sync-interval: 5s
region: eu-west-1
access-key-id: AKIDTOP
secret-access-key: TOPSECRET
max-sync-ltx-files: 100
auto-recover: true
dbs:
  - path: /data/app.db
    meta-path: /var/lib/walship/app
    monitor-interval: 500ms
    checkpoint-interval: 2m
    busy-timeout: 3s
    min-checkpoint-page-count: 2000
    truncate-page-n: 200000
    max-sync-wal-bytes: 32MiB
    restore-if-db-not-exists: true
    snapshot:
      interval: 1h
    replica:
      type: s3
      name: primary
      bucket: my-bucket
      path: backups/app
      endpoint: minio.internal:9000
      force-path-style: false
      access-key-id: AKIDOWN
      secret-access-key: OWNSECRET
      sign-payload: false
      require-content-md5: false
      skip-verify: true
      storage-class: STANDARD_IA
      part-size: 10MiB
      concurrency: 4
      sse-kms-key-id: alias/backups
      sync-interval: 2s
  - dir: /data/tenants
    pattern: "*.db"
    recursive: true
    watch: true
    meta-dir: /var/lib/walship/tenants
    replicas:
      - path: /backups/tenants
      - url: gs://gbucket/tenants
      - url: abs://acct@container/tenants
        account-key: AZKEY
        sas-token: SAS
        endpoint: https://acct.blob.core.windows.net
      - type: s3
        bucket: other
        path: tenants
        sse-customer-key-path: /etc/walship/sse.key
"#;

#[test]
fn a_file_with_every_key() {
    let parsed = parse(FULL);
    assert_eq!(parsed.warnings, Vec::<String>::new());
    let c = &parsed.config;
    assert_eq!(c.addr.as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(c.exec.as_deref(), Some("python app.py"));
    let secs = Duration::from_secs;
    assert_eq!(c.levels, [secs(10), secs(60)]);
    assert_eq!(c.snapshot.interval, secs(12 * 3600));
    assert_eq!(c.snapshot.retention, secs(72 * 3600));
    assert_eq!(c.l0_retention, secs(600));
    assert_eq!(c.l0_retention_check_interval, secs(30));
    assert!(!c.retention.enabled);
    assert_eq!(c.shutdown_sync_timeout, secs(90));
    assert_eq!(c.shutdown_sync_interval, Duration::from_millis(250));
    assert_eq!(c.logging.level, LogLevel::Debug);
    assert_eq!(c.logging.format, LogFormat::Json);
    assert!(c.logging.stderr && c.logging.source);

    let app = &c.dbs[0];
    assert_eq!(app.source, DbSource::Path("/data/app.db".into()));
    assert_eq!(app.meta_path, Some("/var/lib/walship/app".into()));
    assert_eq!(app.monitor_interval, Duration::from_millis(500));
    assert_eq!(app.checkpoint_interval, secs(120));
    assert_eq!(app.busy_timeout, secs(3));
    assert_eq!(app.min_checkpoint_page_count, 2000);
    assert_eq!(app.truncate_page_n, 200_000);
    assert_eq!(app.max_sync_wal_bytes, 32 << 20);
    assert!(app.restore_if_db_not_exists);
    // The database's own snapshot interval; the retention comes from the top level.
    assert_eq!(app.snapshot.interval, secs(3600));
    assert_eq!(app.snapshot.retention, secs(72 * 3600));
    let expected = ReplicaConfig {
        name: "primary".into(),
        backend: Backend::S3(S3Config {
            bucket: "my-bucket".into(),
            path: "backups/app".into(),
            region: Some("eu-west-1".into()),
            endpoint: Some("https://minio.internal:9000".into()),
            force_path_style: false,
            access_key_id: Some(Secret::new("AKIDOWN")),
            secret_access_key: Some(Secret::new("OWNSECRET")),
            skip_verify: true,
            sign_payload: false,
            require_content_md5: false,
            storage_class: Some("STANDARD_IA".into()),
            part_size: Some(10 << 20),
            concurrency: Some(4),
            sse: Some(ServerSideEncryption::Kms {
                key_id: "alias/backups".into(),
            }),
        }),
        sync_interval: secs(2),
        max_sync_ltx_files: 100,
        auto_recover: true,
    };
    assert_eq!(app.replicas, [expected]);

    let tenants = &c.dbs[1];
    let dir = DirConfig {
        dir: "/data/tenants".into(),
        pattern: "*.db".into(),
        recursive: true,
        watch: true,
    };
    assert_eq!(tenants.source, DbSource::Dir(dir));
    assert_eq!(tenants.meta_dir, Some("/var/lib/walship/tenants".into()));
    // Settings left out take Litestream's defaults.
    assert_eq!(tenants.monitor_interval, secs(1));
    assert_eq!(tenants.checkpoint_interval, secs(60));
    assert_eq!(tenants.busy_timeout, secs(1));
    assert_eq!(tenants.min_checkpoint_page_count, 1000);
    assert_eq!(tenants.truncate_page_n, 121_359);
    assert_eq!(tenants.max_sync_wal_bytes, 64 << 20);
    assert_eq!(tenants.snapshot, c.snapshot);
    let names: Vec<_> = tenants.replicas.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["file", "gs", "abs", "s3"]);
    assert!(tenants.replicas.iter().all(|r| r.sync_interval == secs(5)));
    assert_eq!(
        tenants.replicas[0].backend,
        Backend::File {
            path: "/backups/tenants".into()
        }
    );
    assert_eq!(
        tenants.replicas[1].backend,
        Backend::Gcs {
            bucket: "gbucket".into(),
            path: "tenants".into()
        }
    );
    let abs = AbsConfig {
        account_name: Some("acct".into()),
        account_key: Some(Secret::new("AZKEY")),
        sas_token: Some(Secret::new("SAS")),
        container: "container".into(),
        path: "tenants".into(),
        endpoint: Some("https://acct.blob.core.windows.net".into()),
    };
    assert_eq!(tenants.replicas[2].backend, Backend::Abs(abs));
    let Backend::S3(other) = &tenants.replicas[3].backend else {
        panic!("not s3")
    };
    // Top-level defaults fill what the replica leaves out.
    assert_eq!(other.access_key_id, Some(Secret::new("AKIDTOP")));
    assert_eq!(other.region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        other.sse,
        Some(ServerSideEncryption::Customer(CustomerKey::File(
            "/etc/walship/sse.key".into()
        )))
    );
    assert!(!other.force_path_style && other.sign_payload && other.require_content_md5);
}

#[test]
fn defaults_of_a_minimal_file() {
    let parsed = parse("dbs:\n  - path: app.db\n    replica:\n      url: s3://b/app\n");
    let c = &parsed.config;
    assert_eq!(c.levels, [30, 300, 3600].map(Duration::from_secs));
    assert_eq!(c.snapshot.interval, Duration::from_secs(86_400));
    assert_eq!(c.l0_retention, Duration::from_secs(300));
    assert_eq!(c.l0_retention_check_interval, Duration::from_secs(15));
    assert!(c.retention.enabled);
    assert_eq!(c.shutdown_sync_timeout, Duration::from_secs(30));
    assert_eq!(c.shutdown_sync_interval, Duration::from_millis(500));
    assert_eq!(
        (c.logging.level, c.logging.format),
        (LogLevel::Info, LogFormat::Text)
    );
    assert_eq!(c.addr, None);
    let replica = &c.dbs[0].replicas[0];
    assert_eq!(replica.sync_interval, Duration::from_secs(1));
    assert_eq!(replica.max_sync_ltx_files, 256);
    assert!(!replica.auto_recover);
    // Relative paths stay relative: they are resolved against the working directory on open.
    assert_eq!(c.dbs[0].source, DbSource::Path("app.db".into()));
}

#[test]
fn several_replicas_are_all_live_with_unique_names() {
    let parsed = parse(
        "dbs:
  - path: /data/app.db
    replicas:
      - url: s3://one/app
      - url: s3://two/app
      - name: s3-2
        url: file:///backups/app
      - url: /mnt/backup/app
      - url: gs://g/app
",
    );
    let names: Vec<_> = parsed.config.dbs[0]
        .replicas
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["s3", "s3-3", "s3-2", "file", "gs"]);
    assert_eq!(
        backends(&parsed)[3],
        &Backend::File {
            path: "/mnt/backup/app".into()
        }
    );
}

#[test]
fn anchors_and_merge_keys() {
    let parsed = parse(
        "dbs:
  - path: /a.db
    replica: &shared
      type: s3
      bucket: b
      path: a
  - path: /b.db
    replica:
      <<: *shared
      path: b
",
    );
    let Backend::S3(second) = &parsed.config.dbs[1].replicas[0].backend else {
        panic!("not s3")
    };
    assert_eq!((second.bucket.as_str(), second.path.as_str()), ("b", "b"));
}

#[test]
fn env_expansion_both_forms_and_the_opt_out() {
    let yaml = "addr: ${ADDR}
exec: echo $$ $NOPE
dbs:
  - path: $DATA/app.db
    replica:
      url: s3://${BUCKET}/$PREFIX
";
    let vars = [
        ("ADDR", ":9090"),
        ("DATA", "/srv"),
        ("BUCKET", "b"),
        ("PREFIX", "p"),
    ];
    let parsed = parse_with(yaml, &vars);
    assert_eq!(parsed.config.addr.as_deref(), Some(":9090"));
    // Unset variables become empty, as with Go's os.Expand.
    assert_eq!(parsed.config.exec.as_deref(), Some("echo"));
    assert_eq!(
        parsed.config.dbs[0].source,
        DbSource::Path("/srv/app.db".into())
    );
    assert_eq!(
        (s3(&parsed).bucket.as_str(), s3(&parsed).path.as_str()),
        ("b", "p")
    );

    let literal = "exec: echo $HOME ${X}\ndbs:\n  - path: /a.db\n    replica:\n      path: /b\n";
    let options = ParseOptions {
        no_expand_env: true,
    };
    let parsed = Config::parse(literal, &env(&[("HOME", "/root"), ("X", "x")]), options).unwrap();
    assert_eq!(parsed.config.exec.as_deref(), Some("echo $HOME ${X}"));
}

#[test]
fn the_env_is_a_closure_or_a_map() {
    let lookup = |name: &str| (name == "B").then(|| "from-closure".to_owned());
    let parsed = Config::parse(
        "dbs:\n  - path: /a.db\n    replica:\n      url: gs://$B/x\n",
        &lookup,
        ParseOptions::default(),
    )
    .unwrap();
    assert_eq!(
        backends(&parsed)[0],
        &Backend::Gcs {
            bucket: "from-closure".into(),
            path: "x".into()
        }
    );
}

#[test]
fn s3_url_query_parameters() {
    let parsed = parse(&one_replica(
        "      url: \"s3://bkt/db/app?endpoint=localhost:9000&region=auto&forcePathStyle=false\
         &skipVerify=true&signPayload=false&requireContentMD5=false&storageClass=GLACIER_IR\
         &partSize=8388608&concurrency=8&sseCustomerKey=a2V5&sseCustomerAlgorithm=AES256\"\n",
    ));
    let s3 = s3(&parsed);
    assert_eq!((s3.bucket.as_str(), s3.path.as_str()), ("bkt", "db/app"));
    assert_eq!(s3.endpoint.as_deref(), Some("http://localhost:9000"));
    assert_eq!(s3.region.as_deref(), Some("auto"));
    assert!(!s3.force_path_style && s3.skip_verify);
    assert!(!s3.sign_payload && !s3.require_content_md5);
    assert_eq!(s3.storage_class.as_deref(), Some("GLACIER_IR"));
    assert_eq!((s3.part_size, s3.concurrency), (Some(8 << 20), Some(8)));
    assert_eq!(
        s3.sse,
        Some(ServerSideEncryption::Customer(CustomerKey::Inline(
            Secret::new("a2V5")
        )))
    );
    // Kebab-case names work too, and the SSE-KMS key id.
    let parsed = parse(&one_replica(
        "      url: s3://bkt/app?force-path-style=true&skip-verify=false&storage-class=X\
         &part-size=5&sse-kms-key-id=k\n",
    ));
    let s3 = self::s3(&parsed);
    assert!(s3.force_path_style && !s3.skip_verify);
    assert_eq!(
        (s3.storage_class.as_deref(), s3.part_size),
        (Some("X"), Some(5))
    );
    assert_eq!(
        s3.sse,
        Some(ServerSideEncryption::Kms { key_id: "k".into() })
    );
}

#[test]
fn an_endpoint_means_path_style_unless_said_otherwise() {
    let with = |replica: &str| {
        let parsed = parse(&one_replica(replica));
        let s3 = s3(&parsed);
        (s3.endpoint.clone(), s3.force_path_style)
    };
    assert_eq!(
        with("      url: s3://b/p?endpoint=https://s3.example.com\n"),
        (Some("https://s3.example.com".into()), true)
    );
    assert_eq!(
        with("      type: s3\n      bucket: b\n      path: p\n      endpoint: 127.0.0.1:9000\n"),
        (Some("http://127.0.0.1:9000".into()), true)
    );
    assert_eq!(with("      url: s3://b/p\n"), (None, false));
    // Providers recognised by host name, as Litestream does.
    assert_eq!(
        with("      url: s3://b.nyc3.digitaloceanspaces.com/p\n"),
        (Some("https://nyc3.digitaloceanspaces.com".into()), false)
    );
    assert_eq!(
        with("      url: s3://b.minio.local:9000/p\n"),
        (Some("http://minio.local:9000".into()), true)
    );
    let parsed = parse(&one_replica(
        "      url: s3://b.s3.eu-west-2.amazonaws.com/p\n",
    ));
    assert_eq!(
        (s3(&parsed).bucket.as_str(), s3(&parsed).region.as_deref()),
        ("b", Some("eu-west-2"))
    );
    // LITESTREAM_S3_ENDPOINT serves replicas that name none.
    let parsed = parse_with(
        &one_replica("      url: s3://b/p\n"),
        &[("LITESTREAM_S3_ENDPOINT", "localhost:9000")],
    );
    assert_eq!(
        s3(&parsed).endpoint.as_deref(),
        Some("http://localhost:9000")
    );
    assert!(s3(&parsed).force_path_style);
}

#[test]
fn the_url_scheme_wins_over_type() {
    let parsed = parse(&one_replica(
        "      type: s3\n      url: file:///backups/app\n",
    ));
    assert_eq!(
        backends(&parsed)[0],
        &Backend::File {
            path: "/backups/app".into()
        }
    );
    assert_eq!(
        parsed.warnings,
        ["dbs[0].replica.type: type \"s3\" ignored: the url's scheme makes this a file replica"]
    );
}

#[test]
fn gs_and_abs_urls() {
    let parsed = parse(&one_replica("      url: gs://bucket/a/b\n"));
    assert_eq!(
        backends(&parsed)[0],
        &Backend::Gcs {
            bucket: "bucket".into(),
            path: "a/b".into()
        }
    );
    let parsed = parse_with(
        &one_replica("      url: abs://container/db\n"),
        &[("LITESTREAM_AZURE_ACCOUNT_KEY", "envkey")],
    );
    let Backend::Abs(abs) = backends(&parsed)[0] else {
        panic!("not abs")
    };
    assert_eq!(
        (abs.account_name.as_deref(), abs.container.as_str()),
        (None, "container")
    );
    assert_eq!(abs.account_key, Some(Secret::new("envkey")));
}

#[test]
fn the_short_form_builds_the_same_config() {
    let urls = [
        "s3://b/app?region=us-west-1",
        "file:///backups/app",
        "/mnt/app",
    ];
    let config = Config::from_args("sqlite:///data/app.db", &urls, &env(&[])).unwrap();
    let parsed = parse(
        "dbs:
  - path: /data/app.db
    replicas:
      - url: s3://b/app?region=us-west-1
      - url: file:///backups/app
      - url: /mnt/app
",
    );
    assert_eq!(config, parsed.config);
    let names: Vec<_> = config.dbs[0]
        .replicas
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["s3", "file", "file-2"]);
}

#[test]
fn short_form_errors() {
    let e = env(&[]);
    let none: [&str; 0] = [];
    let err = Config::from_args("/a.db", &none, &e).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no replica URL for /a.db; usage: walship replicate [flags] DB_PATH REPLICA_URL \
         [REPLICA_URL...]"
    );
    let err = Config::from_args("/a.db", &["ftp://x/y"], &e).unwrap_err();
    assert_eq!(
        err.to_string(),
        "replica URL \"ftp://x/y\": unknown replica type \"ftp\"; supported types: file, s3, \
         gs, abs"
    );
    let err = Config::from_args("/a.db", &["s3://bucket"], &e).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "replica URL \"s3://bucket\": the s3 path (key prefix) is empty; give a prefix"
        ),
        "{err}"
    );
    let err = Config::from_args("/a.db", &["s3://b/p", "-once"], &e).unwrap_err();
    assert!(
        err.to_string().starts_with("\"-once\" looks like a flag"),
        "{err}"
    );
}

#[test]
fn credentials_precedence() {
    let key = |replica: &str, vars: &[(&str, &str)]| {
        let parsed = parse_with(
            &format!("{replica}{}", one_replica("      url: s3://b/p\n")),
            vars,
        );
        let s3 = s3(&parsed);
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
        (expose(&s3.access_key_id), expose(&s3.secret_access_key))
    };
    let all_env = [
        ("LITESTREAM_ACCESS_KEY_ID", "ls-id"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "ls-secret"),
        ("AWS_ACCESS_KEY_ID", "aws-id"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
    ];
    let some = |a: &str, b: &str| (Some(a.to_owned()), Some(b.to_owned()));
    // Config keys win (here the top level's, which every replica inherits).
    assert_eq!(
        key(
            "access-key-id: cfg-id\nsecret-access-key: cfg-secret\n",
            &all_env
        ),
        some("cfg-id", "cfg-secret")
    );
    // Then LITESTREAM_*, then AWS_*, key by key; empty variables count as unset.
    assert_eq!(key("", &all_env), some("ls-id", "ls-secret"));
    assert_eq!(key("", &all_env[2..]), some("aws-id", "aws-secret"));
    let mixed = [
        ("LITESTREAM_ACCESS_KEY_ID", ""),
        ("AWS_ACCESS_KEY_ID", "aws-id"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "ls-secret"),
    ];
    assert_eq!(key("", &mixed), some("aws-id", "ls-secret"));
    assert_eq!(key("", &[]), (None, None));
    // A replica's own key beats the top level's.
    let parsed = parse(&format!(
        "access-key-id: top\n{}",
        one_replica("      url: s3://b/p\n      access-key-id: own\n")
    ));
    assert_eq!(s3(&parsed).access_key_id, Some(Secret::new("own")));
}

#[test]
fn secrets_never_print() {
    let parsed = parse_with(
        &one_replica(
            "      url: s3://b/p\n      secret-access-key: hunter2\n      \
             sse-customer-key: c2VjcmV0\n",
        ),
        &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")],
    );
    let logged = format!("{:?} {:#?}", parsed.config, parsed.config);
    for secret in ["hunter2", "AKIAEXAMPLE", "c2VjcmV0"] {
        assert!(!logged.contains(secret), "{secret} leaked");
    }
    assert!(logged.contains("[redacted]"));
    let s3 = s3(&parsed);
    assert_eq!(
        s3.secret_access_key.as_ref().unwrap().to_string(),
        "[redacted]"
    );
    assert_eq!(s3.secret_access_key.as_ref().unwrap().expose(), "hunter2");
}

#[test]
fn ignored_keys_give_warnings() {
    let parsed = parse(
        "socket: {enabled: true}
dbs:
  - path: /a.db
    replica:
      url: file:///b
      retention: 24h
      snapshot-interval: 1h
",
    );
    assert_eq!(
        parsed.warnings,
        [
            "socket: ignored: walship has no control socket",
            "dbs[0].replica.retention: ignored: it is a Litestream 0.3 replica setting; use the \
             top-level snapshot:, l0-retention and retention: settings",
            "dbs[0].replica.snapshot-interval: ignored: it is a Litestream 0.3 replica setting; \
             use the top-level snapshot:, l0-retention and retention: settings",
        ]
    );
}

#[test]
fn misspelled_keys_name_place_line_and_suggestion() {
    assert_eq!(
        error("adr: ':9090'\ndbs: []\n"),
        "unknown key \"adr\" at top level (line 1); did you mean \"addr\"?"
    );
    assert_eq!(
        error("dbs:\n  - path: /a.db\n    monitor-intervall: 1s\n"),
        "unknown key \"monitor-intervall\" in dbs[0] (line 3); did you mean \"monitor-interval\"?"
    );
    assert_eq!(
        error(
            "dbs:
  - path: /a.db
    replicas:
      - url: file:///b
      - type: s3
        bukcet: b
"
        ),
        "unknown key \"bukcet\" in dbs[0].replicas[1] (line 6); did you mean \"bucket\"?"
    );
    assert_eq!(
        error("logging:\n  levle: info\n"),
        "unknown key \"levle\" in logging (line 2); did you mean \"level\"?"
    );
    assert_eq!(
        error("snapshot:\n  every: 1h\n"),
        "unknown key \"every\" in snapshot (line 2); valid keys: interval, retention"
    );
}

#[test]
fn misplaced_keys_say_where_they_belong() {
    assert_eq!(
        error("monitor-interval: 1s\n"),
        "unknown key \"monitor-interval\" at top level (line 1); it is a database setting: put \
         it in each entry of dbs:"
    );
    assert_eq!(
        error("dbs:\n  - path: /a.db\n    url: s3://b/a\n"),
        "unknown key \"url\" in dbs[0] (line 3); it is a replica setting: put it under replica: \
         (or in a replicas: entry)"
    );
    assert_eq!(
        error("url: s3://b/a\n"),
        "unknown key \"url\" at top level (line 1); it is a replica setting: put it under \
         replica: in each entry of dbs:"
    );
    assert_eq!(
        error("dbs:\n  - path: /a.db\n    levels: []\n"),
        "unknown key \"levels\" in dbs[0] (line 3); it is a top-level setting"
    );
    assert_eq!(
        error(&one_replica(
            "      url: s3://b/a\n      busy-timeout: 1s\n"
        )),
        "unknown key \"busy-timeout\" in dbs[0].replica (line 5); it is a database setting: put \
         it in the database entry, beside replica:"
    );
}

#[test]
fn bad_values_name_key_place_and_line() {
    assert_eq!(
        error("dbs:\n  - path: /a.db\n    monitor-interval: fast\n"),
        "dbs[0].monitor-interval (line 3): invalid duration \"fast\": expected Go syntax like 1s \
         or 500ms"
    );
    assert_eq!(
        error("shutdown-sync-interval: 0\n"),
        "shutdown-sync-interval (line 1): must be greater than 0"
    );
    assert_eq!(
        error(&one_replica("      url: s3://b/a\n      part-size: lots\n")),
        "dbs[0].replica.part-size (line 5): invalid size \"lots\": expected bytes like 5242880, \
         5MB or 5MiB"
    );
    assert_eq!(
        error(&one_replica(
            "      url: s3://b/a\n      skip-verify: perhaps\n"
        )),
        "dbs[0].replica.skip-verify (line 5): invalid boolean \"perhaps\": expected true or false"
    );
    assert_eq!(
        error("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: -5\n"),
        "dbs[0].min-checkpoint-page-count (line 3): invalid number \"-5\": expected a whole number"
    );
    assert_eq!(
        error("logging:\n  level: loud\n"),
        "logging.level (line 2): unknown log level \"loud\": expected trace, debug, info, warn or \
         error"
    );
    assert_eq!(
        error("dbs: {path: /a.db}\n"),
        "dbs (line 1): expected a list, found a mapping"
    );
}

#[test]
fn bad_urls() {
    assert_eq!(
        error(&one_replica("      url: ftp://host/backups\n")),
        "dbs[0].replica.url (line 4): unknown replica type \"ftp\"; supported types: file, s3, \
         gs, abs"
    );
    assert_eq!(
        error(&one_replica("      url: s3://b/a?forcePathstyle=true\n")),
        "dbs[0].replica.url (line 4): unknown query parameter \"forcePathstyle\"; did you mean \
         \"forcePathStyle\"?"
    );
    assert_eq!(
        error(&one_replica("      url: s3://b/a\n      path: other\n")),
        "dbs[0].replica.path (line 5): url: and path: cannot both be set; the URL already holds \
         the path: remove path: or put it in the URL"
    );
    assert_eq!(
        error(&one_replica("      path: s3://b/a\n")),
        "dbs[0].replica.path (line 4): \"s3://b/a\" is a URL, not a path; put it in url: instead"
    );
}

#[test]
fn replica_and_replicas_together() {
    assert_eq!(
        error(
            "dbs:
  - path: /a.db
    replica:
      url: s3://b/a
    replicas:
      - url: file:///c
"
        ),
        "dbs[0].replicas (line 5): replica: and replicas: cannot both be set; list every replica \
         under replicas:, or keep the one under replica:"
    );
}

#[test]
fn age_is_refused() {
    assert_eq!(
        error(&one_replica(
            "      url: s3://b/a\n      age:\n        recipients: [age1xyz]\n"
        )),
        "dbs[0].replica.age (line 5): age encryption was removed in Litestream 0.5 and walship \
         does not have it; remove age:, and encrypt at rest with the store's own encryption \
         (sse-* settings on S3)"
    );
}

#[test]
fn unsupported_backends() {
    assert_eq!(
        error(&one_replica("      type: sftp\n      path: /x\n")),
        "dbs[0].replica.type (line 4): walship does not support sftp replicas; supported types: \
         file, s3, gs, abs"
    );
    assert_eq!(
        error(&one_replica("      url: nats://host/bucket\n")),
        "dbs[0].replica.url (line 4): walship does not support nats replicas; supported types: \
         file, s3, gs, abs"
    );
    assert_eq!(
        error(&one_replica("      host: example.com:22\n")),
        "dbs[0].replica.host (line 4): a setting of sftp replicas, which walship does not \
         support; supported types: file, s3, gs, abs"
    );
    assert_eq!(
        error(&one_replica("      type: s4\n")),
        "dbs[0].replica.type (line 4): unknown replica type \"s4\" (did you mean \"s3\"?); \
         supported types: file, s3, gs, abs"
    );
}

#[test]
fn keys_of_another_backend() {
    assert_eq!(
        error(&one_replica("      path: /backups\n      bucket: b\n")),
        "dbs[0].replica.bucket (line 5): not a setting of file replicas; a replica without type: \
         or url: is a file replica; set type: or url:"
    );
    assert_eq!(
        error(&one_replica("      url: gs://b/p\n      region: x\n")),
        "dbs[0].replica.region (line 5): not a setting of gs replicas"
    );
}

#[test]
fn missing_pieces() {
    assert_eq!(
        error("addr: ':9090'\n"),
        "no databases: the config has no dbs: entries; add for example dbs: [{path: \
         /data/app.db, replica: {url: \"s3://bucket/app\"}}]"
    );
    assert_eq!(error(""), error("dbs: []\n"));
    assert_eq!(
        error("dbs:\n  - monitor-interval: 1s\n    replica: {url: 's3://b/a'}\n"),
        "dbs[0] (line 2): no path; set path: to the database file, or dir: and pattern: for a \
         directory of databases"
    );
    assert_eq!(
        error("dbs:\n  - path: /a.db\n"),
        "dbs[0] (line 2): no replica for /a.db; add replica: with a url: such as s3://bucket/db, \
         or a replicas: list"
    );
    assert_eq!(
        error(&one_replica("      type: s3\n      path: p\n")),
        "dbs[0].replica (line 4): no bucket for this s3 replica; set url: s3://BUCKET/PATH, or \
         bucket: and path:"
    );
    assert_eq!(
        error("dbs:\n  - dir: /data\n    replica: {path: /b}\n"),
        "dbs[0] (line 2): dir: needs a pattern: for the database file names; for example \
         pattern: \"*.db\""
    );
}

#[test]
fn empty_s3_prefix() {
    let hint = "give a prefix such as s3://bucket/db or path: db; walship does not write at the \
                bucket root, where Litestream's key layout is not well defined";
    assert_eq!(
        error(&one_replica("      url: s3://bucket\n")),
        format!("dbs[0].replica.url (line 4): the s3 path (key prefix) is empty; {hint}")
    );
    assert_eq!(
        error(&one_replica("      url: s3://bucket/\n")),
        format!("dbs[0].replica.url (line 4): the s3 path (key prefix) is empty; {hint}")
    );
    assert_eq!(
        error(&one_replica("      type: s3\n      bucket: b\n")),
        format!("dbs[0].replica.path: the s3 path (key prefix) is empty; {hint}")
    );
    // A directory's databases each add their relative path, so the bucket root is fine there.
    let parsed = parse("dbs:\n  - dir: /data\n    pattern: '*.db'\n    replica: {url: 's3://b'}\n");
    assert_eq!(s3(&parsed).path, "");
}

#[test]
fn validation() {
    assert_eq!(
        error(
            "dbs:
  - path: /a.db
    replicas:
      - {name: x, url: 's3://b/a'}
      - {name: x, url: 'file:///c'}
"
        ),
        "dbs[0].replicas[1].name (line 5): another replica of this database is already named \
         \"x\"; replica names must differ within a database"
    );
    assert_eq!(
        error("dbs:\n  - path: /a.db\n    dir: /b\n"),
        "dbs[0].dir (line 3): path: and dir: cannot both be set; use path: for one database, \
         dir: and pattern: for a directory of them"
    );
    assert_eq!(
        error(&one_replica(
            "      url: s3://b/a\n      sync-interval: 0s\n"
        )),
        "dbs[0].replica.sync-interval (line 5): must be greater than 0"
    );
    assert_eq!(
        error("levels:\n  - interval: 1m\n  - {}\n"),
        "levels[1] (line 3): no interval; for example interval: 30s"
    );
    assert!(error("addr: [unclosed\n").starts_with("invalid YAML: "));
}

#[test]
fn log_level_from_the_environment() {
    let yaml = "logging: {level: error}\ndbs: [{path: /a.db, replica: {path: /b}}]\n";
    let parsed = parse_with(yaml, &[("LOG_LEVEL", "warning")]);
    assert_eq!(parsed.config.logging.level, LogLevel::Warn);
    assert_eq!(parsed.config.logging.level.as_str(), "warn");
    assert_eq!(
        error_with(yaml, &[("LOG_LEVEL", "chatty")]),
        "LOG_LEVEL: unknown log level \"chatty\": expected trace, debug, info, warn or error"
    );
}

#[test]
fn home_and_sqlite_prefixes_in_paths() {
    let parsed = parse_with(
        "dbs:\n  - path: sqlite://~/app.db\n    replica:\n      path: ~/backups\n",
        &[("HOME", "/home/me")],
    );
    assert_eq!(
        parsed.config.dbs[0].source,
        DbSource::Path("/home/me/app.db".into())
    );
    assert_eq!(
        backends(&parsed)[0],
        &Backend::File {
            path: PathBuf::from("/home/me/backups")
        }
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("walship.yml");
    std::fs::write(&path, "dbs:\n  - path: /a.db\n    replca: {}\n").unwrap();
    let err: ConfigError = Config::load(&path, &env(&[]), ParseOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unknown key \"replca\" in dbs[0] (line 3); did you mean \"replica\"?",
            path.display()
        )
    );
    let missing = dir.path().join("nope.yml");
    let err = Config::load(&missing, &env(&[]), ParseOptions::default()).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )),
        "{err}"
    );
}

/// Found by fuzzing (fuzz/fuzz_targets/replica_url.rs): the check for an access point ARN sliced
/// the URL at byte 9, which panicked when that byte fell inside a multi-byte character.
#[test]
fn urls_with_a_multibyte_character_at_the_arn_check() {
    let err = Config::from_args("/a.db", &["file://tRԊe"], &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("names a host"), "{err}");
    let config = Config::from_args("/a.db", &["s3://arnԊx/db"], &env(&[])).unwrap();
    let Backend::S3(s3) = &config.dbs[0].replicas[0].backend else {
        panic!("not s3")
    };
    // An ordinary S3 URL; the URL parser percent-encodes the host's non-ASCII character.
    assert_eq!((s3.bucket.as_str(), s3.path.as_str()), ("arn%D4%8Ax", "db"));
}
