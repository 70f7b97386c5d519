//! `dir:` + `pattern:` configs: finding the databases in a directory, and giving each one its
//! own replica location (the replica's path plus the database's path relative to the directory,
//! as Litestream lays it out).

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};

use crate::config::{Backend, DbConfig, DbSource, DirConfig, ReplicaConfig};
use crate::{Error, Result};

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Finds the databases of one `dir:` config.
pub struct Discovery {
    dir: DirConfig,
    matcher: GlobMatcher,
}

impl Discovery {
    /// Compiles the config's pattern; a bad pattern is a config error naming it.
    pub fn new(dir: &DirConfig) -> Result<Discovery> {
        let matcher = Glob::new(&dir.pattern)
            .map_err(|e| Error::Db {
                path: dir.dir.clone(),
                reason: format!(
                    "pattern {:?} is not a valid glob ({e}); write e.g. \"*.db\"",
                    dir.pattern
                ),
            })?
            .compile_matcher();
        Ok(Discovery {
            dir: dir.clone(),
            matcher,
        })
    }

    /// The SQLite databases in the directory (and below, if recursive) whose file names match,
    /// sorted. Files that match but are not SQLite databases (`-wal`, `-shm`, empty or other
    /// files) are skipped.
    pub fn databases(&self) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        self.scan(&self.dir.dir, &mut found)?;
        found.sort();
        Ok(found)
    }

    fn scan(&self, dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if kind.is_dir() {
                // Hidden directories hold walship's (and Litestream's) own state.
                if self.dir.recursive && !hidden {
                    self.scan(&path, found)?;
                }
            } else if kind.is_file() && self.matcher.is_match(entry.file_name()) && is_sqlite(&path)
            {
                found.push(path);
            }
        }
        Ok(())
    }

    /// The config of one found database: the directory config's settings, its own path, and
    /// each replica's location extended by the database's path relative to the directory.
    pub fn config_for(&self, template: &DbConfig, db: &Path) -> DbConfig {
        let rel = db.strip_prefix(&self.dir.dir).unwrap_or(db);
        let mut cfg = template.clone();
        cfg.source = DbSource::Path(db.to_path_buf());
        if let Some(meta_dir) = &template.meta_dir {
            cfg.meta_path = Some(meta_dir.join(rel));
        }
        cfg.replicas = template
            .replicas
            .iter()
            .map(|r| replica_under(r, rel))
            .collect();
        cfg
    }
}

fn is_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == SQLITE_MAGIC)
}

fn join_key(prefix: &str, rel: &Path) -> String {
    let rel = rel.to_string_lossy();
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        rel.into_owned()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// `replica` with its location moved down to `rel`.
fn replica_under(replica: &ReplicaConfig, rel: &Path) -> ReplicaConfig {
    let mut r = replica.clone();
    match &mut r.backend {
        Backend::File { path } => *path = path.join(rel),
        Backend::S3(s3) => s3.path = join_key(&s3.path, rel),
        Backend::Gcs { path, .. } => *path = join_key(path, rel),
        Backend::Abs(abs) => abs.path = join_key(&abs.path, rel),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_file(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = SQLITE_MAGIC.to_vec();
        bytes.resize(512, 0);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn finds_matching_sqlite_files_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sqlite_file(&root.join("a.db"));
        sqlite_file(&root.join("team/b.db"));
        sqlite_file(&root.join(".a.db-litestream/c.db"));
        std::fs::write(root.join("notes.db"), "not sqlite").unwrap();
        sqlite_file(&root.join("a.db-wal"));
        sqlite_file(&root.join("other.sqlite"));
        let cfg = |recursive| DirConfig {
            dir: root.to_path_buf(),
            pattern: "*.db".into(),
            recursive,
            watch: false,
        };
        let flat = Discovery::new(&cfg(false)).unwrap().databases().unwrap();
        assert_eq!(flat, [root.join("a.db")]);
        let deep = Discovery::new(&cfg(true)).unwrap().databases().unwrap();
        assert_eq!(deep, [root.join("a.db"), root.join("team/b.db")]);
    }

    #[test]
    fn each_database_gets_its_own_place_in_every_replica() {
        let parsed = crate::config::Config::parse(
            "dbs:\n  - dir: /data\n    pattern: \"*.db\"\n    recursive: true\n    replicas:\n      - url: s3://bucket/backups\n      - path: /mnt/replica\n",
            &|_: &str| None,
            Default::default(),
        )
        .unwrap();
        let template = &parsed.config.dbs[0];
        let DbSource::Dir(dir) = &template.source else {
            panic!("not a dir config")
        };
        let discovery = Discovery::new(dir).unwrap();
        let cfg = discovery.config_for(template, Path::new("/data/team-a/db2.db"));
        assert_eq!(cfg.source, DbSource::Path("/data/team-a/db2.db".into()));
        match &cfg.replicas[0].backend {
            Backend::S3(s3) => assert_eq!(s3.path, "backups/team-a/db2.db"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cfg.replicas[1].backend,
            Backend::File {
                path: "/mnt/replica/team-a/db2.db".into()
            }
        );
    }

    #[test]
    fn a_bad_pattern_names_itself() {
        let err = Discovery::new(&DirConfig {
            dir: "/data".into(),
            pattern: "[*.db".into(),
            recursive: false,
            watch: false,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("[*.db") && err.contains("*.db\""), "{err}");
    }
}
