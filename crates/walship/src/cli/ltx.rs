//! `walship ltx`: the LTX files of a replica, per level, as Litestream's `ltx` command lists them.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::json;
use walship::compaction::SNAPSHOT_LEVEL;
use walship::config::{process_env, DbSource};
use walship::replica::client::LtxFileInfo;
use walship::replica::client_for;
use walship::replica::timestamp::format_rfc3339_nano;

/// Flags of `walship ltx`.
#[derive(clap::Args)]
pub struct LtxArgs {
    /// Config file, when DB_PATH is given; default $LITESTREAM_CONFIG, else /etc/litestream.yml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not expand $VAR and ${VAR} in the config file.
    #[arg(long)]
    no_expand_env: bool,
    /// Only this level (0-9), or `all`.
    #[arg(long, default_value = "all")]
    level: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The database's path in the config file (its first replica), or a replica URL.
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    source: String,
}

/// Runs the command.
pub fn run(args: LtxArgs) -> anyhow::Result<()> {
    let levels: Vec<u32> = match args.level.as_str() {
        "all" => (0..=SNAPSHOT_LEVEL).collect(),
        n => match n.parse::<u32>() {
            Ok(l) if l <= SNAPSHOT_LEVEL => vec![l],
            _ => bail!("invalid -level {n:?}: give 0 to 9, or all"),
        },
    };
    let replica = super::replica_of(&args.source, args.config.as_deref(), args.no_expand_env)?.0;
    let client = client_for(&replica, &process_env)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut files: Vec<LtxFileInfo> = Vec::new();
    for level in levels {
        files.extend(runtime.block_on(client.list(level))?);
    }
    if args.json {
        let list: Vec<_> = files
            .iter()
            .map(|f| {
                json!({
                    "level": f.key.level,
                    "min_txid": f.key.min_txid.to_string(),
                    "max_txid": f.key.max_txid.to_string(),
                    "size": f.size,
                    "created_at": format_rfc3339_nano(f.created_at),
                })
            })
            .collect();
        // The span a restore can reach: from the oldest file that starts a chain (a snapshot
        // or a file from TXID 1) to the newest file.
        let earliest = files
            .iter()
            .filter(|f| f.key.min_txid.0 == 1)
            .map(|f| f.created_at)
            .min();
        let latest = files.iter().map(|f| f.created_at).max();
        let doc = json!({
            "replica": client.name(),
            "type": replica.backend.type_name(),
            "earliest": earliest.map(format_rfc3339_nano),
            "latest": latest.map(format_rfc3339_nano),
            "files": list,
        });
        println!("{doc:#}");
        return Ok(());
    }
    super::print_ltx_table(&files);
    Ok(())
}

/// Flags of `walship databases`.
#[derive(clap::Args)]
pub struct DatabasesArgs {
    /// Config file; default $LITESTREAM_CONFIG, else /etc/litestream.yml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not expand $VAR and ${VAR} in the config file.
    #[arg(long)]
    no_expand_env: bool,
}

/// Prints the configured databases and their replicas, credentials left out.
pub fn databases(args: DatabasesArgs) -> anyhow::Result<()> {
    let (config, _) = super::load_config_file(args.config.as_deref(), args.no_expand_env)?;
    println!("{:<40}  {:<12}  {:<5}  url", "path", "replica", "type");
    for db in &config.dbs {
        let path = match &db.source {
            DbSource::Path(p) => p.display().to_string(),
            DbSource::Dir(d) => format!("{}/{}", d.dir.display(), d.pattern),
        };
        for r in &db.replicas {
            println!(
                "{path:<40}  {:<12}  {:<5}  {}",
                r.name,
                r.backend.type_name(),
                walship::status::display_url(&r.backend)
            );
        }
    }
    Ok(())
}
