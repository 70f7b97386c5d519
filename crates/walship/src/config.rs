//! Placeholder: replaced by the config module (issue 3, item 1).

/// An error in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("config error")]
pub struct ConfigError;
