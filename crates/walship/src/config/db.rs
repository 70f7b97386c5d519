//! One entry of `dbs:`: a database (or a directory of them) and its replicas.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::env::Env;
use super::error::{ConfigError, Place};
use super::fields::Fields;
use super::keys::Section;
use super::replica::{self, Draft, ReplicaConfig, Settings};
use super::SnapshotConfig;

/// How often the WAL is checked for new commits unless set.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);

/// The longest time between checkpoints unless set.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// SQLite's busy timeout on walship's connection unless set.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// WAL pages after which a PASSIVE checkpoint runs unless set.
pub const DEFAULT_MIN_CHECKPOINT_PAGE_COUNT: u32 = 1000;

/// WAL pages after which a TRUNCATE checkpoint runs unless set (about 500 MB at 4 KiB pages).
pub const DEFAULT_TRUNCATE_PAGE_N: u32 = 121_359;

/// The most WAL bytes one L0 file takes in unless set.
pub const DEFAULT_MAX_SYNC_WAL_BYTES: u64 = 64 << 20;

/// One database (or directory of databases) to replicate.
#[derive(Debug, Clone, PartialEq)]
pub struct DbConfig {
    /// The database file, or the directory whose databases to replicate.
    pub source: DbSource,
    /// Where local state lives instead of `.<db>-litestream/` beside the database.
    pub meta_path: Option<PathBuf>,
    /// For directories: the root under which each database's local state lives.
    pub meta_dir: Option<PathBuf>,
    /// How often the WAL is checked for new commits.
    pub monitor_interval: Duration,
    /// The longest time between checkpoints while there is data.
    pub checkpoint_interval: Duration,
    /// SQLite's busy timeout on walship's connection.
    pub busy_timeout: Duration,
    /// WAL pages after which a PASSIVE checkpoint runs.
    pub min_checkpoint_page_count: u32,
    /// WAL pages after which a TRUNCATE checkpoint runs.
    pub truncate_page_n: u32,
    /// The most WAL bytes one L0 file takes in.
    pub max_sync_wal_bytes: u64,
    /// Snapshot interval and retention for this database.
    pub snapshot: SnapshotConfig,
    /// Restore the database from a replica at start if the file does not exist.
    pub restore_if_db_not_exists: bool,
    /// Its replicas, each live, with distinct names.
    pub replicas: Vec<ReplicaConfig>,
}

/// What a `dbs:` entry replicates.
#[derive(Debug, Clone, PartialEq)]
pub enum DbSource {
    /// One database file.
    Path(PathBuf),
    /// Every SQLite database in a directory whose name matches a pattern.
    Dir(DirConfig),
}

/// A directory of databases (`dir:`, `pattern:`, `recursive:`, `watch:`).
#[derive(Debug, Clone, PartialEq)]
pub struct DirConfig {
    /// The directory.
    pub dir: PathBuf,
    /// A glob for file names, such as `*.db`.
    pub pattern: String,
    /// Whether subdirectories are searched too.
    pub recursive: bool,
    /// Whether databases created later are picked up.
    pub watch: bool,
}

impl DbConfig {
    /// A database with every setting at its default.
    pub fn new(source: DbSource, snapshot: SnapshotConfig, replicas: Vec<ReplicaConfig>) -> Self {
        Self {
            source,
            meta_path: None,
            meta_dir: None,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            min_checkpoint_page_count: DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
            truncate_page_n: DEFAULT_TRUNCATE_PAGE_N,
            max_sync_wal_bytes: DEFAULT_MAX_SYNC_WAL_BYTES,
            snapshot,
            restore_if_db_not_exists: false,
            replicas,
        }
    }
}

/// What every database inherits from the top level.
pub(super) struct Inherited<'a> {
    pub(super) snapshot: SnapshotConfig,
    pub(super) replica_defaults: &'a Settings,
}

/// Reads the `dbs:` entry `value` at `place`.
pub(super) fn read(
    value: &Value,
    place: Place,
    inherited: &Inherited,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<DbConfig, ConfigError> {
    let f = Fields::new(value, place, Section::Db)?;
    let source = source(&f, env)?;
    if f.has("meta-dir") && !matches!(source, DbSource::Dir(_)) {
        return Err(f.key_error("meta-dir", "only applies to a directory (dir:)"));
    }
    if f.has("meta-dir") && f.has("meta-path") {
        return Err(f.key_error("meta-dir", "meta-dir: and meta-path: cannot both be set"));
    }
    let mut db = DbConfig::new(source, snapshot(&f, inherited.snapshot)?, Vec::new());
    db.meta_path = f.path("meta-path", env)?;
    db.meta_dir = f.path("meta-dir", env)?;
    db.monitor_interval = f
        .interval("monitor-interval")?
        .unwrap_or(db.monitor_interval);
    db.checkpoint_interval = f
        .interval("checkpoint-interval")?
        .unwrap_or(db.checkpoint_interval);
    db.busy_timeout = f.duration("busy-timeout")?.unwrap_or(db.busy_timeout);
    db.min_checkpoint_page_count = f
        .number("min-checkpoint-page-count")?
        .unwrap_or(db.min_checkpoint_page_count);
    // Litestream reads 0 as "use the default" here.
    db.truncate_page_n = f
        .number("truncate-page-n")?
        .filter(|n| *n != 0)
        .unwrap_or(db.truncate_page_n);
    db.max_sync_wal_bytes = match f.size("max-sync-wal-bytes")? {
        Some(0) => return Err(f.error("max-sync-wal-bytes", "must be greater than 0")),
        other => other.unwrap_or(db.max_sync_wal_bytes),
    };
    db.restore_if_db_not_exists = f.boolean("restore-if-db-not-exists")?.unwrap_or(false);
    db.replicas = replicas(&f, &db.source, inherited.replica_defaults, env, warnings)?;
    Ok(db)
}

/// The database file, or the directory settings; exactly one of `path:` and `dir:`.
fn source(f: &Fields, env: &dyn Env) -> Result<DbSource, ConfigError> {
    let dir_only = ["pattern", "recursive", "watch"];
    match (f.path("path", env)?, f.path("dir", env)?) {
        (Some(_), Some(_)) => Err(f
            .key_error("dir", "path: and dir: cannot both be set")
            .hint("use path: for one database, dir: and pattern: for a directory of them")),
        (Some(path), None) => match dir_only.iter().find(|k| f.has(k)) {
            Some(key) => Err(f.key_error(key, "only applies to a directory (dir:)")),
            None => Ok(DbSource::Path(path)),
        },
        (None, Some(dir)) => {
            let pattern = f.string("pattern")?.ok_or_else(|| {
                f.whole_error("dir: needs a pattern: for the database file names")
                    .hint("for example pattern: \"*.db\"")
            })?;
            Ok(DbSource::Dir(DirConfig {
                dir,
                pattern,
                recursive: f.boolean("recursive")?.unwrap_or(false),
                watch: f.boolean("watch")?.unwrap_or(false),
            }))
        }
        (None, None) => Err(f.whole_error("no path").hint(
            "set path: to the database file, or dir: and pattern: for a directory of databases",
        )),
    }
}

/// The database's snapshot settings, each falling back to the top level's.
fn snapshot(f: &Fields, inherited: SnapshotConfig) -> Result<SnapshotConfig, ConfigError> {
    let Some(s) = f.child("snapshot", Section::Snapshot)? else {
        return Ok(inherited);
    };
    Ok(SnapshotConfig {
        interval: s.interval("interval")?.unwrap_or(inherited.interval),
        retention: s.interval("retention")?.unwrap_or(inherited.retention),
    })
}

/// The replicas from `replica:` or `replicas:` (not both; at least one), named uniquely.
fn replicas(
    f: &Fields,
    source: &DbSource,
    defaults: &Settings,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Vec<ReplicaConfig>, ConfigError> {
    if f.has("replica") && f.has("replicas") {
        return Err(f
            .key_error("replicas", "replica: and replicas: cannot both be set")
            .hint("list every replica under replicas:, or keep the one under replica:"));
    }
    let mut items = f.list("replicas")?;
    if let Some(single) = f.value("replica") {
        items.push((f.place().key("replica"), single));
    }
    if items.is_empty() {
        let what = match source {
            DbSource::Path(path) => path.display().to_string(),
            DbSource::Dir(dir) => dir.dir.display().to_string(),
        };
        return Err(f
            .whole_error(format!("no replica for {what}"))
            .hint("add replica: with a url: such as s3://bucket/db, or a replicas: list"));
    }
    let under_dir = matches!(source, DbSource::Dir(_));
    let mut drafts = Vec::with_capacity(items.len());
    for (place, value) in items {
        let fields = Fields::new(value, place.clone(), Section::Replica)?;
        warnings.extend(fields.ignored());
        let draft = replica::read(&fields, defaults, under_dir, env, warnings)?;
        drafts.push((place, draft));
    }
    name(drafts)
}

/// Gives every replica its final name: its `name:`, else its type, numbered from 2 when the
/// type repeats (`s3`, `s3-2`); given names must be distinct.
pub(super) fn name(drafts: Vec<(Place, Draft)>) -> Result<Vec<ReplicaConfig>, ConfigError> {
    let mut taken = HashSet::new();
    for (place, draft) in &drafts {
        if let Some(name) = &draft.name {
            if !taken.insert(name.clone()) {
                let at = place.key("name");
                return Err(ConfigError::about(
                    &at,
                    format!("another replica of this database is already named {name:?}"),
                )
                .hint("replica names must differ within a database"));
            }
        }
    }
    Ok(drafts
        .into_iter()
        .map(|(_, draft)| {
            let mut replica = draft.replica;
            replica.name = draft
                .name
                .unwrap_or_else(|| unique(replica.backend.type_name(), &mut taken));
            replica
        })
        .collect())
}

/// `base`, or the first of `base-2`, `base-3`... not yet taken; records the one chosen.
fn unique(base: &str, taken: &mut HashSet<String>) -> String {
    std::iter::once(base.to_owned())
        .chain((2..).map(|i| format!("{base}-{i}")))
        .find(|candidate| taken.insert(candidate.clone()))
        .expect("the numbered names never run out")
}
