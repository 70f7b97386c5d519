//! `walship restore`: rebuild a database from a replica, as of the latest state, a timestamp or
//! a TXID, with Litestream 0.5's flags and meanings.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ltx::Txid;
use serde_json::json;
use walship::config::{process_env, ReplicaConfig};
use walship::replica::client::ReplicaClient;
use walship::replica::client_for;
use walship::replica::timestamp::{format_rfc3339_nano, parse_rfc3339};
use walship::restore::follow;
use walship::restore::{
    self, IntegrityCheck, LegacyPlan, NoProgress, Plan, Progress, RestoreError, RestoreOptions,
    RestorePlan, Target, DEFAULT_PARALLELISM,
};

/// Flags of `walship restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Config file, when DB_PATH is given; default $LITESTREAM_CONFIG, else /etc/litestream.yml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not expand $VAR and ${VAR} in the config file.
    #[arg(long)]
    no_expand_env: bool,
    /// Output path; required with a REPLICA_URL, else the database's own path.
    #[arg(short = 'o')]
    output: Option<PathBuf>,
    /// Restore the state as of this time (RFC 3339).
    #[arg(long, conflicts_with = "txid")]
    timestamp: Option<String>,
    /// Restore the state after this transaction (16 hex digits).
    #[arg(long)]
    txid: Option<String>,
    /// Exit successfully, doing nothing, if the output exists.
    #[arg(long)]
    if_db_not_exists: bool,
    /// Exit successfully, doing nothing, if the replica holds no backups.
    #[arg(long)]
    if_replica_exists: bool,
    /// Check the restored database before putting it in place.
    #[arg(long, value_enum, default_value = "quick")]
    integrity_check: CheckArg,
    /// Downloads in flight at once.
    #[arg(long, default_value_t = DEFAULT_PARALLELISM)]
    parallelism: usize,
    /// Print the plan (the files a restore would merge) and exit.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan or the result as JSON.
    #[arg(long)]
    json: bool,
    /// Replace an existing output database (and remove its -wal, -shm and -journal files).
    #[arg(long)]
    force: bool,
    /// Follow: after restoring, keep applying new files as they appear, until interrupted (a
    /// read replica). An output with a `-txid` file beside it goes on from that TXID.
    #[arg(short = 'f', conflicts_with_all = ["txid", "timestamp", "dry_run"])]
    follow: bool,
    /// How often follow mode looks for new files.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    follow_interval: std::time::Duration,
    /// The database's path in the config file, or a replica URL.
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    source: String,
}

/// The values of `-integrity-check`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CheckArg {
    None,
    Quick,
    Full,
}

impl From<CheckArg> for IntegrityCheck {
    fn from(c: CheckArg) -> Self {
        match c {
            CheckArg::None => IntegrityCheck::None,
            CheckArg::Quick => IntegrityCheck::Quick,
            CheckArg::Full => IntegrityCheck::Full,
        }
    }
}

/// Runs the command.
pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let target = target(&args)?;
    let (replica, output) = resolve(&args)?;
    if args.follow {
        if let Some(txid) = follow::read_txid(&output)?.filter(|_| output.exists()) {
            eprintln!("walship: following {} from TXID {txid}", output.display());
            return follow_from(&args, &replica, &output, txid);
        }
    }
    if args.if_db_not_exists && output.exists() {
        eprintln!(
            "walship: {} already exists: nothing to restore",
            output.display()
        );
        return Ok(());
    }
    let client = client_for(&replica, &process_env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // -if-replica-exists: a replica with no backups is nothing to restore, not an error.
    let nothing_there = |e: &walship::Error| {
        args.if_replica_exists
            && matches!(e, walship::Error::Restore(e) if matches!(**e, RestoreError::NoBackups { .. }))
    };
    if args.dry_run {
        let plan = match runtime.block_on(restore::plan(&client, target)) {
            Err(e) if nothing_there(&e) => {
                eprintln!("walship: {e}");
                return Ok(());
            }
            other => other?,
        };
        match &plan {
            RestorePlan::Ltx(plan) => print_plan(&args, &client, &replica, &output, plan),
            RestorePlan::Legacy(plan) => print_legacy_plan(&args, &client, &replica, &output, plan),
        }
        return Ok(());
    }
    // Scripts, tests and the Datasette plugin read stderr: a bar only for a person at a terminal.
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| Arc::new(Bar::new()));
    let opts = RestoreOptions {
        output: output.clone(),
        parallelism: args.parallelism,
        integrity_check: args.integrity_check.into(),
        force: args.force,
        progress: match &bar {
            Some(bar) => bar.clone(),
            None => Arc::new(NoProgress),
        },
    };
    let started = Instant::now();
    let restored = runtime.block_on(restore::restore_to(&client, target, &opts));
    if let Some(bar) = bar {
        bar.bar.finish_and_clear();
    }
    let restored = match restored {
        Err(e) if nothing_there(&e) => {
            eprintln!("walship: {e}");
            return Ok(());
        }
        other => other?,
    };
    let ms = started.elapsed().as_millis();
    let check = IntegrityCheck::from(args.integrity_check)
        .pragma()
        .unwrap_or("none");
    if let Some(position) = &restored.legacy {
        if args.json {
            let result = json!({
                "db_path": output,
                "replica": replica.backend.type_name(),
                "format": "litestream-0.3",
                "txid": null,
                "position": position,
                "duration_ms": ms,
                "integrity_check": check,
            });
            println!("{result:#}");
        } else {
            eprintln!(
                "walship: restored {} from the Litestream 0.3 backup, {position}, from {} files \
                 ({} bytes) in {ms} ms",
                output.display(),
                restored.files,
                restored.bytes
            );
        }
        return Ok(());
    }
    if args.follow {
        eprintln!(
            "walship: restored {} at TXID {}; following",
            output.display(),
            restored.txid
        );
        drop(runtime);
        return follow_from(&args, &replica, &output, restored.txid);
    }
    if args.json {
        let result = json!({
            "db_path": output,
            "replica": replica.backend.type_name(),
            "txid": restored.txid.to_string(),
            "duration_ms": ms,
            "integrity_check": check,
        });
        println!("{result:#}");
    } else {
        eprintln!(
            "walship: restored {} at TXID {} from {} files ({} bytes) in {ms} ms",
            output.display(),
            restored.txid,
            restored.files,
            restored.bytes
        );
    }
    Ok(())
}

/// The restore's downloads as a bar on stderr: bytes and files so far of the plan's, the rate
/// and the time left.
#[derive(Debug)]
struct Bar {
    bar: ProgressBar,
    files: AtomicUsize,
    total_files: AtomicUsize,
}

impl Bar {
    fn new() -> Bar {
        let style = ProgressStyle::with_template(
            "{spinner} restoring {bytes}/{total_bytes} [{wide_bar}] {msg}, \
             {binary_bytes_per_sec}, ETA {eta}",
        )
        .expect("the template is valid")
        .tick_chars("|/-\\ ")
        .progress_chars("=> ");
        // Hidden until the totals are known, so that no empty bar flashes first.
        let bar =
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()).with_style(style);
        Bar {
            bar,
            files: AtomicUsize::new(0),
            total_files: AtomicUsize::new(0),
        }
    }

    fn show_files(&self, done: usize) {
        let total = self.total_files.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} files"));
    }
}

impl Progress for Bar {
    fn start(&self, files: usize, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.show_files(0);
        self.bar.set_length(bytes);
        self.bar.reset_eta();
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.tick();
        // Ticks keep the rate and ETA moving while a large file downloads.
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn file_done(&self, _file: &str, _size: u64) {
        self.show_files(self.files.fetch_add(1, Ordering::Relaxed) + 1);
    }

    fn downloaded(&self) {
        let total = self.total_files.load(Ordering::Relaxed);
        self.bar
            .set_message(format!("{total}/{total} files, applying"));
    }
}

/// Keeps `output` (at `txid`) current until SIGINT or SIGTERM.
fn follow_from(
    args: &RestoreArgs,
    replica: &ReplicaConfig,
    output: &Path,
    txid: Txid,
) -> anyhow::Result<()> {
    let client = client_for(replica, &process_env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut follower = follow::Follower::open(output, txid)?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = super::wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        follower.run(&client, args.follow_interval, stop_rx).await
    })?;
    eprintln!(
        "walship: stopped following {} at TXID {}",
        output.display(),
        follower.txid()
    );
    Ok(())
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    walship::config::parse_duration(text)
}

/// The state asked for by `-timestamp` or `-txid`.
fn target(args: &RestoreArgs) -> anyhow::Result<Target> {
    if let Some(text) = &args.timestamp {
        let at = parse_rfc3339(text).with_context(|| {
            format!("invalid -timestamp {text:?}: use RFC 3339, such as 2000-01-01T00:00:00Z")
        })?;
        return Ok(Target::Timestamp(at));
    }
    if let Some(text) = &args.txid {
        let txid = Txid::parse(text).filter(|t| t.0 > 0).with_context(|| {
            format!("invalid -txid {text:?}: use 16 hex digits, such as 00000000000000ff")
        })?;
        return Ok(Target::Txid(txid));
    }
    Ok(Target::Latest)
}

/// The replica to read and the path to write, from a URL and -o, or from the config file.
fn resolve(args: &RestoreArgs) -> anyhow::Result<(ReplicaConfig, PathBuf)> {
    let (replica, db_path) =
        super::replica_of(&args.source, args.config.as_deref(), args.no_expand_env)?;
    match args.output.clone().or(db_path) {
        Some(output) => Ok((replica, output)),
        None => bail!(
            "-o is required when restoring from a replica URL: walship restore -o /path/to/db {}",
            args.source
        ),
    }
}

/// Prints the plan: a table, or Litestream's `-dry-run -json` document.
fn print_plan(
    args: &RestoreArgs,
    client: &ReplicaClient,
    replica: &ReplicaConfig,
    output: &Path,
    plan: &Plan,
) {
    let first = plan.files.first().map_or(Txid(0), |f| f.key.min_txid);
    if args.json {
        let files: Vec<_> = plan
            .files
            .iter()
            .map(|f| {
                json!({
                    "level": f.key.level,
                    "name": ltx::format_filename(f.key.min_txid, f.key.max_txid),
                    "min_txid": f.key.min_txid.to_string(),
                    "max_txid": f.key.max_txid.to_string(),
                    "size": f.size,
                    "timestamp": format_rfc3339_nano(f.created_at),
                })
            })
            .collect();
        let doc = json!({
            "source": args.source,
            "target_path": output,
            "replica": replica.backend.type_name(),
            "min_txid": first.to_string(),
            "max_txid": plan.max_txid().to_string(),
            "files": files,
        });
        println!("{doc:#}");
        return;
    }
    println!(
        "restore plan: {} (replica {:?}) -> {}",
        args.source,
        client.name(),
        output.display()
    );
    println!(
        "TXIDs {first}-{}, {} files, {} bytes",
        plan.max_txid(),
        plan.files.len(),
        plan.size()
    );
    super::print_ltx_table(&plan.files, None);
}

/// Prints the plan of a restore from a Litestream 0.3 backup: a table, or a JSON document like
/// the LTX one (`files` with names, sizes and timestamps) that says its format.
fn print_legacy_plan(
    args: &RestoreArgs,
    client: &ReplicaClient,
    replica: &ReplicaConfig,
    output: &Path,
    plan: &LegacyPlan,
) {
    let objects: Vec<_> = std::iter::once(&plan.snapshot)
        .chain(&plan.segments)
        .collect();
    if args.json {
        let files: Vec<_> = objects
            .iter()
            .map(|o| {
                json!({
                    "type": if o.is_snapshot() { "snapshot" } else { "wal" },
                    "name": o.name,
                    "generation": o.generation,
                    "index": format!("{:08x}", o.index),
                    "offset": o.offset.map(|off| format!("{off:08x}")),
                    "size": o.size,
                    "timestamp": format_rfc3339_nano(o.created_at),
                })
            })
            .collect();
        let doc = json!({
            "source": args.source,
            "target_path": output,
            "replica": replica.backend.type_name(),
            "format": "litestream-0.3",
            "generation": plan.generation(),
            "position": plan.position(),
            "files": files,
        });
        println!("{doc:#}");
        return;
    }
    println!(
        "restore plan: {} (replica {:?}) -> {}",
        args.source,
        client.name(),
        output.display()
    );
    println!(
        "Litestream 0.3 backup, {}: a snapshot and {} WAL segments, {} bytes",
        plan.position(),
        plan.segments.len(),
        plan.size()
    );
    println!("type      index     offset    {:>12}  created", "size");
    for o in objects {
        println!(
            "{:<8}  {:08x}  {:<8}  {:>12}  {}",
            if o.is_snapshot() { "snapshot" } else { "wal" },
            o.index,
            o.offset
                .map_or_else(|| "-".into(), |off| format!("{off:08x}")),
            o.size,
            format_rfc3339_nano(o.created_at)
        );
    }
}
