//! Typed reads of one YAML mapping, with errors that name the key and its place.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::env::{expand_path, Env};
use super::error::{ConfigError, Place};
use super::keys::{self, Section};
use super::values::{parse_bool, parse_duration, parse_size};
use super::Secret;

/// One mapping of the document, whose keys have been checked against its section.
pub(super) struct Fields<'a> {
    map: &'a Mapping,
    place: Place,
    section: Section,
}

impl<'a> Fields<'a> {
    /// The mapping `value` found at `place`; fails if it is not a mapping or has unknown keys.
    pub(super) fn new(
        value: &'a Value,
        place: Place,
        section: Section,
    ) -> Result<Self, ConfigError> {
        let Value::Mapping(map) = value else {
            return Err(ConfigError::about(
                &place,
                format!(
                    "expected a mapping of keys to values, found {}",
                    describe(value)
                ),
            ));
        };
        keys::check(map, &place, section)?;
        Ok(Self {
            map,
            place,
            section,
        })
    }

    /// Warnings for the keys present that walship accepts but ignores.
    pub(super) fn ignored(&self) -> Vec<String> {
        self.keys()
            .filter_map(|key| {
                let why = self.section.ignored(&key)?;
                Some(format!("{}: ignored: {why}", self.place.key(&key)))
            })
            .collect()
    }

    /// Where this mapping is.
    pub(super) fn place(&self) -> &Place {
        &self.place
    }

    /// The keys present, in document order.
    pub(super) fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.map.keys().map(keys::key_text)
    }

    /// The value of `key`; a key with an empty (null) value counts as absent, as in Litestream.
    pub(super) fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is set.
    pub(super) fn has(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    /// An error about the value of `key`: "dbs[0].key (line N): message".
    pub(super) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::about(&self.place.key(key), message)
    }

    /// An error about the presence of `key` itself, located at the key.
    pub(super) fn key_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let at = self.place.key(key);
        ConfigError::about(&at, message).at_key(&at)
    }

    /// An error about this mapping as a whole: "dbs[0] (line N): message".
    pub(super) fn whole_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::about(&self.place, message)
    }

    /// A scalar as text; numbers and booleans are taken as written, as Litestream's YAML does.
    pub(super) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.value(key)
            .map(|value| match value {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => {
                    Err(self.error(key, format!("expected a string, found {}", describe(other))))
                }
            })
            .transpose()
    }

    /// A credential, kept out of `Debug` output from here on.
    pub(super) fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.string(key)?.map(Secret::new))
    }

    /// A file system path, with `~` expanded from `HOME`.
    pub(super) fn path(&self, key: &str, env: &dyn Env) -> Result<Option<PathBuf>, ConfigError> {
        self.string(key)?
            .map(|text| expand_path(&text, env).map_err(|e| self.error(key, e)))
            .transpose()
    }

    /// A boolean: true/false, or YAML 1.1's yes/no/on/off.
    pub(super) fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.parsed(key, |text| {
            parse_bool(text)
                .ok_or_else(|| format!("invalid boolean {text:?}: expected true or false"))
        })
    }

    /// A duration in Go syntax; may be zero.
    pub(super) fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.parsed(key, parse_duration)
    }

    /// A duration in Go syntax that must be greater than zero.
    pub(super) fn interval(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.duration(key)? {
            Some(Duration::ZERO) => Err(self.error(key, "must be greater than 0")),
            other => Ok(other),
        }
    }

    /// A byte size: a plain number, or with a unit such as MB or MiB.
    pub(super) fn size(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.parsed(key, parse_size)
    }

    /// A whole number that fits `T`.
    pub(super) fn number<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.parsed(key, |text| {
            let n: u64 = text
                .parse()
                .map_err(|_| format!("invalid number {text:?}: expected a whole number"))?;
            T::try_from(n).map_err(|_| format!("number {n} is too large"))
        })
    }

    /// The mapping under `key`, checked against `section`.
    pub(super) fn child(
        &self,
        key: &str,
        section: Section,
    ) -> Result<Option<Fields<'a>>, ConfigError> {
        self.value(key)
            .map(|value| Fields::new(value, self.place.key(key), section))
            .transpose()
    }

    /// The items of the sequence under `key`, each with its place.
    pub(super) fn list(&self, key: &str) -> Result<Vec<(Place, &'a Value)>, ConfigError> {
        let Some(value) = self.value(key) else {
            return Ok(Vec::new());
        };
        let Value::Sequence(items) = value else {
            return Err(self.error(key, format!("expected a list, found {}", describe(value))));
        };
        let place = self.place.key(key);
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (place.index(i), item))
            .collect())
    }

    /// A scalar read as text and converted by `parse`, whose error becomes this key's.
    fn parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.string(key)?
            .map(|text| parse(&text).map_err(|e| self.error(key, e)))
            .transpose()
    }
}

/// What kind of YAML node `value` is, for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
