//! walship's configuration: Litestream 0.5's YAML file (or the short form `walship replicate DB
//! URL...`) read once into typed structs, with defaults, `$VAR` expansion and validation.
//!
//! Differences from Litestream, on purpose: unknown or misplaced keys are errors that name the
//! place, the YAML line and the nearest valid key (Litestream ignores them); `replicas:` with
//! several entries means several live replicas; an empty S3 key prefix is refused.
//!
//! YAML crate: serde_yaml_ng, the maintained fork of serde_yaml with the same API, pure Rust and
//! within our MSRV (serde-saphyr needs Rust 1.89); its errors carry positions, which
//! [`ConfigError`] uses to give lines.

mod db;
mod env;
mod error;
mod fields;
mod keys;
mod replica;
mod url;
mod values;

use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;

pub use db::{
    DbConfig, DbSource, DirConfig, DEFAULT_BUSY_TIMEOUT, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_MAX_SYNC_WAL_BYTES, DEFAULT_MIN_CHECKPOINT_PAGE_COUNT, DEFAULT_MONITOR_INTERVAL,
    DEFAULT_TRUNCATE_PAGE_N,
};
pub use env::{process_env, Env};
pub use error::ConfigError;
pub use replica::{
    AbsConfig, Backend, CustomerKey, ReplicaConfig, S3Config, Secret, ServerSideEncryption,
    DEFAULT_MAX_SYNC_LTX_FILES, DEFAULT_SYNC_INTERVAL,
};
pub use values::parse_duration;

use error::Place;
use fields::Fields;
use keys::Section;
use replica::Settings;

/// The compaction levels L1, L2, L3 unless `levels:` says otherwise.
pub const DEFAULT_LEVELS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(5 * 60),
    Duration::from_secs(60 * 60),
];

/// Compaction levels 1 to 8 may be configured; level 9 holds snapshots.
pub const MAX_LEVELS: usize = 8;

/// The whole configuration of a walship process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where to serve /metrics, /status and /healthz; none if unset.
    pub addr: Option<String>,
    /// Compaction intervals of levels 1, 2, ... (at most [`MAX_LEVELS`]).
    pub levels: Vec<Duration>,
    /// Snapshot interval and retention, the default of every database.
    pub snapshot: SnapshotConfig,
    /// How long L0 files stay after compaction into L1; zero keeps them.
    pub l0_retention: Duration,
    /// How often L0 retention runs.
    pub l0_retention_check_interval: Duration,
    /// Remote retention.
    pub retention: RetentionConfig,
    /// The longest the final sync at shutdown may take; zero skips it.
    pub shutdown_sync_timeout: Duration,
    /// The pause between final sync attempts.
    pub shutdown_sync_interval: Duration,
    /// A command to run while replicating; walship stops when it exits.
    pub exec: Option<String>,
    /// Log output.
    pub logging: LoggingConfig,
    /// The databases; never empty once parsed.
    pub dbs: Vec<DbConfig>,
}

/// Snapshot (level 9) settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotConfig {
    /// How often a snapshot is taken.
    pub interval: Duration,
    /// How long snapshots are kept.
    pub retention: Duration,
}

/// Remote retention settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionConfig {
    /// Whether walship deletes old files from replicas; off when bucket lifecycle rules do it.
    pub enabled: bool,
}

/// Log settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggingConfig {
    /// The least severe level logged; the `LOG_LEVEL` variable overrides the file.
    pub level: LogLevel,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Log to stderr instead of stdout.
    pub stderr: bool,
    /// Include source locations.
    pub source: bool,
}

/// A log level, as Litestream names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything, including per-frame detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Problems walship works around.
    Warn,
    /// Failures.
    Error,
}

/// A log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A parsed config file and the warnings it gave (keys accepted but ignored), for the caller to
/// log.
#[derive(Debug)]
pub struct Parsed {
    /// The configuration.
    pub config: Config,
    /// One sentence per ignored key or overridden setting.
    pub warnings: Vec<String>,
}

/// How to read a config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// Leave `$VAR` and `${VAR}` as written (Litestream's `-no-expand-env`).
    pub no_expand_env: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: None,
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot: SnapshotConfig {
                interval: Duration::from_secs(24 * 60 * 60),
                retention: Duration::from_secs(24 * 60 * 60),
            },
            l0_retention: Duration::from_secs(5 * 60),
            l0_retention_check_interval: Duration::from_secs(15),
            retention: RetentionConfig { enabled: true },
            shutdown_sync_timeout: Duration::from_secs(30),
            shutdown_sync_interval: Duration::from_millis(500),
            exec: None,
            logging: LoggingConfig {
                level: LogLevel::Info,
                format: LogFormat::Text,
                stderr: false,
                source: false,
            },
            dbs: Vec::new(),
        }
    }
}

impl Config {
    /// Parses the text of a config file; `env` serves `$VAR` expansion and credentials.
    pub fn parse(text: &str, env: &dyn Env, options: ParseOptions) -> Result<Parsed, ConfigError> {
        let text = if options.no_expand_env {
            text.to_owned()
        } else {
            env::expand(text, env)
        };
        let invalid = |e: serde_yaml_ng::Error| ConfigError::new(format!("invalid YAML: {e}"));
        let mut value: Value = serde_yaml_ng::from_str(&text).map_err(invalid)?;
        value.apply_merge().map_err(invalid)?;
        let mut warnings = Vec::new();
        let config = read(&value, env, &mut warnings).map_err(|e| e.locate(&text))?;
        Ok(Parsed { config, warnings })
    }

    /// Reads and parses the config file at `path`; its errors name the file.
    pub fn load(path: &Path, env: &dyn Env, options: ParseOptions) -> Result<Parsed, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!("cannot read the config file: {e}"))
                .in_file(path)
                .hint("pass -config FILE, or DB_PATH and REPLICA_URL on the command line")
        })?;
        Self::parse(&text, env, options).map_err(|e| e.in_file(path))
    }

    /// The configuration of `walship replicate DB_PATH REPLICA_URL [REPLICA_URL...]`: one
    /// database, one live replica per URL, every other setting at its default.
    pub fn from_args<S: AsRef<str>>(
        db_path: &str,
        urls: &[S],
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let usage = "usage: walship replicate [flags] DB_PATH REPLICA_URL [REPLICA_URL...]";
        if urls.is_empty() {
            return Err(ConfigError::new(format!("no replica URL for {db_path}")).hint(usage));
        }
        let path = env::expand_path(db_path, env).map_err(ConfigError::new)?;
        let mut drafts = Vec::with_capacity(urls.len());
        for url in urls.iter().map(AsRef::as_ref) {
            if url.starts_with('-') {
                return Err(ConfigError::new(format!(
                    "{url:?} looks like a flag: flags must come before DB_PATH and REPLICA_URL"
                ))
                .hint(usage));
            }
            let value = Value::Mapping([("url".into(), url.into())].into_iter().collect());
            let place = Place::arg(format!("replica URL {url:?}"));
            let fields = Fields::new(&value, place.clone(), Section::Replica)?;
            let draft = replica::read(&fields, &Settings::default(), false, env, &mut Vec::new())?;
            drafts.push((place, draft));
        }
        let mut config = Config::default();
        let db = DbConfig::new(DbSource::Path(path), config.snapshot, db::name(drafts)?);
        config.dbs.push(db);
        config.logging.level = log_level_from_env(env)?.unwrap_or(config.logging.level);
        Ok(config)
    }
}

/// Reads the whole document.
fn read(value: &Value, env: &dyn Env, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    if value.is_null() {
        return Err(no_dbs());
    }
    let top = Fields::new(value, Place::default(), Section::Top)?;
    warnings.extend(top.ignored());
    let defaults = Settings::read(&top, env)?;
    let mut config = Config::default();
    config.addr = top.string("addr")?;
    config.exec = top.string("exec")?;
    config.levels = levels(&top)?.unwrap_or(config.levels);
    if let Some(s) = top.child("snapshot", Section::Snapshot)? {
        config.snapshot.interval = s.interval("interval")?.unwrap_or(config.snapshot.interval);
        config.snapshot.retention = s
            .interval("retention")?
            .unwrap_or(config.snapshot.retention);
    }
    config.l0_retention = top.duration("l0-retention")?.unwrap_or(config.l0_retention);
    config.l0_retention_check_interval = top
        .interval("l0-retention-check-interval")?
        .unwrap_or(config.l0_retention_check_interval);
    if let Some(r) = top.child("retention", Section::Retention)? {
        config.retention.enabled = r.boolean("enabled")?.unwrap_or(true);
    }
    config.shutdown_sync_timeout = top
        .duration("shutdown-sync-timeout")?
        .unwrap_or(config.shutdown_sync_timeout);
    config.shutdown_sync_interval = top
        .interval("shutdown-sync-interval")?
        .unwrap_or(config.shutdown_sync_interval);
    if let Some(l) = top.child("logging", Section::Logging)? {
        config.logging = logging(&l)?;
    }
    config.logging.level = log_level_from_env(env)?.unwrap_or(config.logging.level);
    let inherited = db::Inherited {
        snapshot: config.snapshot,
        replica_defaults: &defaults,
    };
    for (place, value) in top.list("dbs")? {
        config
            .dbs
            .push(db::read(value, place, &inherited, env, warnings)?);
    }
    if config.dbs.is_empty() {
        return Err(no_dbs());
    }
    Ok(config)
}

fn no_dbs() -> ConfigError {
    ConfigError::new("no databases: the config has no dbs: entries")
        .hint("add for example dbs: [{path: /data/app.db, replica: {url: \"s3://bucket/app\"}}]")
}

/// `levels: [{interval: 30s}, ...]`, the compaction levels from L1 up.
fn levels(top: &Fields) -> Result<Option<Vec<Duration>>, ConfigError> {
    if !top.has("levels") {
        return Ok(None);
    }
    let items = top.list("levels")?;
    if items.len() > MAX_LEVELS {
        return Err(top.error(
            "levels",
            format!(
                "{} levels given; at most {MAX_LEVELS} (level 9 holds snapshots)",
                items.len()
            ),
        ));
    }
    items
        .into_iter()
        .map(|(place, value)| {
            let level = Fields::new(value, place, Section::Level)?;
            level.interval("interval")?.ok_or_else(|| {
                level
                    .whole_error("no interval")
                    .hint("for example interval: 30s")
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn logging(l: &Fields) -> Result<LoggingConfig, ConfigError> {
    let level = match l.string("level")? {
        Some(text) => LogLevel::parse(&text).map_err(|e| l.error("level", e))?,
        None => LogLevel::Info,
    };
    let format = match l.string("type")?.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(l.error(
                "type",
                format!("unknown log type {other:?}: expected text or json"),
            ))
        }
    };
    Ok(LoggingConfig {
        level,
        format,
        stderr: l.boolean("stderr")?.unwrap_or(false),
        source: l.boolean("source")?.unwrap_or(false),
    })
}

/// The `LOG_LEVEL` variable, which overrides the file's level as in Litestream.
fn log_level_from_env(env: &dyn Env) -> Result<Option<LogLevel>, ConfigError> {
    env.non_empty("LOG_LEVEL")
        .map(|text| LogLevel::parse(&text).map_err(|e| ConfigError::new(format!("LOG_LEVEL: {e}"))))
        .transpose()
}

impl LogLevel {
    /// The level's name in lower case, as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Reads a level name in any case; WARNING is WARN.
    fn parse(text: &str) -> Result<LogLevel, String> {
        Ok(match text.to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" | "WARNING" => LogLevel::Warn,
            "ERROR" => LogLevel::Error,
            _ => {
                return Err(format!(
                    "unknown log level {text:?}: expected trace, debug, info, warn or error"
                ))
            }
        })
    }
}
