//! Commands and flags, as Litestream 0.5 spells them: `walship replicate -config FILE`.
//!
//! Litestream's flags are Go flags, one dash and a long name; GNU-style `--config` is accepted
//! too. Single-dash long flags are rewritten to double-dash before clap sees them.

mod ltx;
mod replicate;
mod restore;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use walship::config::{process_env, Config, DbSource, ParseOptions, ReplicaConfig};

/// Streaming SQLite replication to object storage, compatible with Litestream 0.5.
#[derive(Parser)]
#[command(name = "walship", version = walship::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate databases continuously until interrupted.
    Replicate(replicate::ReplicateArgs),
    /// Restore a database from a replica, as of the latest state, a timestamp or a TXID.
    Restore(restore::RestoreArgs),
    /// List a replica's LTX files per level.
    Ltx(ltx::LtxArgs),
    /// List the databases and replicas of a config file.
    Databases(ltx::DatabasesArgs),
    /// Print the version.
    Version,
}

/// Long flag names that may be written with one dash.
const LONG_FLAGS: &[&str] = &[
    "config",
    "no-expand-env",
    "log-level",
    "version",
    "help",
    "timestamp",
    "txid",
    "if-db-not-exists",
    "if-replica-exists",
    "integrity-check",
    "parallelism",
    "dry-run",
    "json",
    "force",
    "exec",
    "level",
    "follow-interval",
    "no-page-count",
];

/// Rewrites `-name` and `-name=value` to `--name...` for the known long flags.
fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(s) = arg.to_str() else { return arg };
            let is_single_dash_long = s.starts_with('-') && !s.starts_with("--") && s.len() > 2;
            let name = s
                .trim_start_matches('-')
                .split('=')
                .next()
                .unwrap_or_default();
            if is_single_dash_long && LONG_FLAGS.contains(&name) {
                OsString::from(format!("-{s}"))
            } else {
                arg
            }
        })
        .collect()
}

/// Reads the config file named by `-config`, else `$LITESTREAM_CONFIG`, else
/// `/etc/litestream.yml` (Litestream's order), and prints its warnings; returns the file read.
fn load_config_file(path: Option<&Path>, no_expand_env: bool) -> anyhow::Result<(Config, PathBuf)> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("LITESTREAM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/litestream.yml"));
    let parsed = Config::load(&path, &process_env, ParseOptions { no_expand_env })?;
    for warning in &parsed.warnings {
        eprintln!("walship: warning: {warning}");
    }
    Ok((parsed.config, path))
}

/// The replica named by `source` (a URL, or a database path in the config file: its first
/// replica), and the database path it belongs to, if the config gave one.
fn replica_of(
    source: &str,
    config: Option<&Path>,
    no_expand_env: bool,
) -> anyhow::Result<(ReplicaConfig, Option<PathBuf>)> {
    if is_url(source) {
        if config.is_some() {
            anyhow::bail!("give either a REPLICA_URL or -config FILE with a DB_PATH, not both");
        }
        let parsed = Config::from_args("replica.db", &[source], &process_env)?;
        return Ok((parsed.dbs[0].replicas[0].clone(), None));
    }
    let (parsed, path) = load_config_file(config, no_expand_env)?;
    let db_path = Path::new(source);
    let wanted = std::path::absolute(db_path)?;
    let db = parsed
        .dbs
        .iter()
        .find(|db| matches!(&db.source, DbSource::Path(p) if std::path::absolute(p).ok().as_ref() == Some(&wanted)))
        .ok_or_else(|| anyhow::anyhow!("database {} is not in {}", db_path.display(), path.display()))?;
    let replica = db.replicas.first().ok_or_else(|| {
        anyhow::anyhow!(
            "database {} has no replica in {}",
            db_path.display(),
            path.display()
        )
    })?;
    Ok((replica.clone(), Some(db_path.to_path_buf())))
}

/// Prints LTX files as a table: level, TXIDs, size, the pages each holds (when `pages` is given;
/// `-` where unknown), creation time.
fn print_ltx_table(
    files: &[walship::replica::client::LtxFileInfo],
    pages: Option<&[Option<usize>]>,
) {
    let pages_column = |text: &str| match pages {
        Some(_) => format!("{text:>9}  "),
        None => String::new(),
    };
    println!(
        "level  min_txid          max_txid          {:>12}  {}created",
        "size",
        pages_column("pages")
    );
    for (i, f) in files.iter().enumerate() {
        let count = pages
            .and_then(|p| p[i])
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        println!(
            "{:<5}  {}  {}  {:>12}  {}{}",
            f.key.level,
            f.key.min_txid,
            f.key.max_txid,
            f.size,
            pages_column(&count),
            walship::replica::timestamp::format_rfc3339_nano(f.created_at)
        );
    }
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}

/// Whether `text` is a URL (`scheme://...`) rather than a database path, as Litestream decides.
fn is_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Runs the command line; errors are printed with their causes, and exit with status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize(std::env::args_os()));
    let result = match cli.command {
        Command::Replicate(args) => replicate::run(args),
        Command::Restore(args) => restore::run(args).map(|()| ExitCode::SUCCESS),
        Command::Ltx(args) => ltx::run(args).map(|()| ExitCode::SUCCESS),
        Command::Databases(args) => ltx::databases(args).map(|()| ExitCode::SUCCESS),
        Command::Version => {
            println!("walship v{}", walship::VERSION);
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walship: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        let args = [
            "walship",
            "replicate",
            "-config",
            "x.yml",
            "-no-expand-env",
            "--log-level=debug",
            "-h",
            "db.sqlite",
        ];
        let got: Vec<String> = normalize(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "walship",
                "replicate",
                "--config",
                "x.yml",
                "--no-expand-env",
                "--log-level=debug",
                "-h",
                "db.sqlite"
            ]
        );
    }
}
