//! The keys each place of the config accepts, and the errors for keys it does not.

use serde_yaml_ng::{Mapping, Value};

use super::error::{ConfigError, Place};

/// The kinds of mapping in a config file, each with its own keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Section {
    Top,
    Db,
    Replica,
    Snapshot,
    Retention,
    Logging,
    Level,
}

/// Keys only the top level has.
const TOP: &[&str] = &[
    "addr",
    "socket",
    "levels",
    "snapshot",
    "validation",
    "l0-retention",
    "l0-retention-check-interval",
    "verify-compaction",
    "retention",
    "heartbeat-url",
    "heartbeat-interval",
    "exec",
    "logging",
    "mcp-addr",
    "shutdown-sync-timeout",
    "shutdown-sync-interval",
    "dbs",
];

/// Replica settings, which the top level may also set as defaults for every replica.
pub(super) const SETTINGS: &[&str] = &[
    "sync-interval",
    "validation-interval",
    "max-sync-ltx-files",
    "auto-recover",
    "access-key-id",
    "secret-access-key",
    "region",
    "bucket",
    "endpoint",
    "force-path-style",
    "sign-payload",
    "require-content-md5",
    "skip-verify",
    "storage-class",
    "part-size",
    "concurrency",
    "sse-customer-algorithm",
    "sse-customer-key",
    "sse-customer-key-path",
    "sse-kms-key-id",
    "account-name",
    "account-key",
    "sas-token",
    "age",
];

/// Keys only a replica has; the last three are Litestream 0.3's.
const REPLICA: &[&str] = &[
    "type",
    "name",
    "path",
    "url",
    "retention",
    "retention-check-interval",
    "snapshot-interval",
];

const DB: &[&str] = &[
    "path",
    "dir",
    "pattern",
    "recursive",
    "watch",
    "snapshot",
    "meta-path",
    "meta-dir",
    "monitor-interval",
    "checkpoint-interval",
    "busy-timeout",
    "min-checkpoint-page-count",
    "truncate-page-n",
    "max-sync-wal-bytes",
    "restore-if-db-not-exists",
    "replica",
    "replicas",
];

/// Settings of Litestream's replica backends that walship does not have, by backend.
const UNSUPPORTED_BACKEND_KEYS: &[(&str, &[&str])] = &[
    (
        "sftp",
        &[
            "host",
            "user",
            "password",
            "key-path",
            "concurrent-writes",
            "host-key",
        ],
    ),
    (
        "webdav",
        &["webdav-url", "webdav-username", "webdav-password"],
    ),
    (
        "nats",
        &[
            "jwt",
            "seed",
            "creds",
            "nkey",
            "username",
            "token",
            "tls",
            "root-cas",
            "client-cert",
            "client-key",
            "max-reconnects",
            "reconnect-wait",
            "timeout",
        ],
    ),
];

/// The replica types walship supports, as a message lists them.
pub(super) const SUPPORTED_TYPES: &str = "supported types: file, s3, gs, abs";

impl Section {
    /// The keys valid in this section.
    fn keys(self) -> Vec<&'static str> {
        match self {
            Section::Top => [TOP, SETTINGS].concat(),
            Section::Db => DB.to_vec(),
            Section::Replica => [REPLICA, SETTINGS].concat(),
            Section::Snapshot => vec!["interval", "retention"],
            Section::Retention => vec!["enabled"],
            Section::Logging => vec!["level", "type", "stderr", "source"],
            Section::Level => vec!["interval"],
        }
    }

    /// Where a key that is valid elsewhere belongs, said from this section's point of view.
    fn belongs_elsewhere(self, key: &str) -> Option<&'static str> {
        let is = |keys: &[&str]| keys.contains(&key);
        match self {
            Section::Top if is(DB) => {
                Some("it is a database setting: put it in each entry of dbs:")
            }
            Section::Top if is(REPLICA) => {
                Some("it is a replica setting: put it under replica: in each entry of dbs:")
            }
            Section::Db | Section::Replica if is(TOP) => Some("it is a top-level setting"),
            Section::Db if is(REPLICA) || is(SETTINGS) => {
                Some("it is a replica setting: put it under replica: (or in a replicas: entry)")
            }
            Section::Replica if is(DB) => {
                Some("it is a database setting: put it in the database entry, beside replica:")
            }
            _ => None,
        }
    }

    /// Why a known key is accepted but has no effect in walship, if it is one of those.
    pub(super) fn ignored(self, key: &str) -> Option<&'static str> {
        let top = matches!(self, Section::Top);
        let replica = matches!(self, Section::Replica);
        Some(match key {
            "socket" if top => "walship has no control socket",
            "mcp-addr" if top => "walship has no MCP server",
            "heartbeat-url" | "heartbeat-interval" if top => "walship sends no heartbeats",
            "validation" | "verify-compaction" if top => {
                "walship verifies every LTX file by its checksum instead"
            }
            "validation-interval" if top || replica => {
                "walship verifies every LTX file by its checksum instead"
            }
            "retention" | "retention-check-interval" | "snapshot-interval" if replica => {
                "it is a Litestream 0.3 replica setting; use the top-level snapshot:, \
                 l0-retention and retention: settings"
            }
            _ => return None,
        })
    }
}

/// The text of a mapping key, for messages and lookups.
pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_owned(),
        _ => "(a non-scalar key)".to_owned(),
    }
}

/// Fails on the first key of `map` (at `place`) that `section` does not accept, naming the
/// nearest valid key or the place the key belongs in.
pub(super) fn check(map: &Mapping, place: &Place, section: Section) -> Result<(), ConfigError> {
    let valid = section.keys();
    for key in map.keys().map(key_text) {
        if valid.contains(&key.as_str()) {
            continue;
        }
        let at = place.key(&key);
        if let Some(backend) = unsupported_backend(section, &key) {
            let detail = format!("a setting of {backend} replicas, which walship does not support");
            return Err(ConfigError::about(&at, detail)
                .at_key(&at)
                .hint(SUPPORTED_TYPES));
        }
        let err = ConfigError::new(format!("unknown key {key:?} {}", place.within())).at_key(&at);
        return Err(match section.belongs_elsewhere(&key) {
            Some(hint) => err.hint(hint),
            None => match nearest(&key, &valid) {
                Some(near) => err.hint(format!("did you mean {near:?}?")),
                // Long lists help nobody; the short ones (logging, snapshot) are worth showing.
                None if valid.len() <= 8 => err.hint(format!("valid keys: {}", valid.join(", "))),
                None => err,
            },
        });
    }
    Ok(())
}

/// The unsupported backend whose setting `key` is, where replica settings are allowed.
fn unsupported_backend(section: Section, key: &str) -> Option<&'static str> {
    if !matches!(section, Section::Top | Section::Replica) {
        return None;
    }
    UNSUPPORTED_BACKEND_KEYS
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(backend, _)| *backend)
}

/// The candidate closest to `word`, if it is close enough to be what was meant.
pub(super) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // `sync_interval` and `syncInterval` mean `sync-interval`: compare in kebab case first.
    let kebab = to_kebab(word);
    if let Some(exact) = candidates.iter().find(|c| **c == kebab) {
        return Some(exact);
    }
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| {
            let distance = strsim::damerau_levenshtein(word, c);
            (distance.min(strsim::damerau_levenshtein(&kebab, c)), *c)
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `forcePathStyle`, `requireContentMD5` and `force_path_style` in kebab case.
fn to_kebab(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 4);
    let mut after_lower = false;
    for c in word.chars() {
        if c == '_' {
            out.push('-');
        } else if c.is_ascii_uppercase() {
            if after_lower {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
        after_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_keys() {
        let keys = Section::Db.keys();
        assert_eq!(
            nearest("monitor-intervall", &keys),
            Some("monitor-interval")
        );
        assert_eq!(nearest("busy_timeout", &keys), Some("busy-timeout"));
        assert_eq!(nearest("metaPath", &keys), Some("meta-path"));
        assert_eq!(nearest("pth", &keys), Some("path"));
        assert_eq!(nearest("completely-different", &keys), None);
        assert_eq!(to_kebab("requireContentMD5"), "require-content-md5");
    }

    #[test]
    fn sections_share_replica_settings() {
        assert!(Section::Top.keys().contains(&"sync-interval"));
        assert!(Section::Replica.keys().contains(&"sync-interval"));
        assert!(!Section::Db.keys().contains(&"sync-interval"));
        assert_eq!(unsupported_backend(Section::Replica, "host"), Some("sftp"));
        assert_eq!(unsupported_backend(Section::Db, "host"), None);
    }
}
