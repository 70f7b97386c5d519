//! `walship replicate`: monitor databases and ship their changes to every replica until a
//! signal arrives, then capture and upload what is left.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use futures::stream::{FuturesUnordered, StreamExt};
use ltx::Txid;
use tokio::sync::watch;
use tokio::task::JoinSet;
use walship::compaction::{CompactionOptions, Compactor};
use walship::config::{process_env, Config, DbConfig, DbSource};
use walship::db::{Db, DbOptions};
use walship::discover::Discovery;
use walship::monitor::{Monitor, MonitorOptions};
use walship::replica::client::ReplicaClient;
use walship::replica::client_for;
use walship::replica::uploader::{Uploader, UploaderOptions};
use walship::server::Server;
use walship::status::{DatabaseEntry, ReplicaEntry, StatusBoard};
use walship::store::LocalStore;

/// Flags of `walship replicate`.
#[derive(clap::Args)]
pub struct ReplicateArgs {
    /// Config file; default $LITESTREAM_CONFIG, else /etc/litestream.yml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not expand $VAR and ${VAR} in the config file.
    #[arg(long)]
    no_expand_env: bool,
    /// Log level: debug, info, warn or error (overrides the config file).
    #[arg(long)]
    log_level: Option<String>,
    /// Run this command (through `sh -c`) while replicating; when it exits, make a final
    /// capture and upload and exit with its status (overrides `exec:` in the config file).
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// DB_PATH REPLICA_URL [REPLICA_URL...], instead of a config file.
    #[arg(value_name = "DB_PATH REPLICA_URL")]
    args: Vec<String>,
}

/// Runs the command; the exit status is the `-exec` child's, else success.
pub fn run(args: ReplicateArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(&args)?;
    if args.exec.is_some() {
        config.exec = args.exec.clone();
    }
    init_logging(
        args.log_level
            .as_deref()
            .unwrap_or(config.logging.level.as_str()),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(replicate(config))
}

fn load_config(args: &ReplicateArgs) -> anyhow::Result<Config> {
    let env = process_env;
    let parsed = if let Some((db, urls)) = args.args.split_first() {
        if args.config.is_some() {
            bail!("give either -config FILE or DB_PATH REPLICA_URL..., not both");
        }
        Config::from_args(db, urls, &env)?
    } else {
        super::load_config_file(args.config.as_deref(), args.no_expand_env)?.0
    };
    Ok(parsed)
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("walship={level}"))
        .with_context(|| format!("invalid log level {level:?}: use debug, info, warn or error"))?;
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never into log files or a supervisor's pipe.
    // A log line that cannot be written (the supervisor that read stderr died: EPIPE) must not
    // stop replication: tracing-subscriber's own report of it would panic on the same stderr
    // and lose the final sync.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
    Ok(())
}

/// Everything running for the databases: their threads, upload tasks and status board.
struct Replication {
    config: Arc<Config>,
    stop_flag: Arc<AtomicBool>,
    stop_rx: watch::Receiver<bool>,
    /// Monitor and compactor threads; a monitor's result is its final capture's.
    threads: Vec<std::thread::JoinHandle<walship::Result<()>>>,
    uploaders: JoinSet<()>,
    board: Arc<StatusBoard>,
    /// The database files being replicated, so a watched directory adds each only once.
    running: HashSet<PathBuf>,
}

impl Replication {
    /// Opens one database and starts replicating it, showing it as starting meanwhile.
    async fn start(&mut self, db_config: &DbConfig) -> anyhow::Result<()> {
        let opened = open_db(&self.board, db_config).await?;
        self.launch(db_config, opened)
    }

    /// Starts the monitor, compactor and uploaders of an opened database.
    fn launch(
        &mut self,
        db_config: &DbConfig,
        (db, clients): (Db, Vec<ReplicaClient>),
    ) -> anyhow::Result<()> {
        let store = db.store().clone();
        let path = db.path().to_path_buf();
        let name = path.display().to_string();
        let (monitor, db_status) = Monitor::new(db, monitor_options(db_config));
        let flag = self.stop_flag.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name(format!("monitor {name}"))
                .spawn(move || monitor.run(&flag))
                .context("starting a monitor thread")?,
        );
        let compaction = CompactionOptions::from_config(&self.config, db_config);
        let compactor = Compactor::new(store.clone(), compaction)?;
        let (compacted_tx, compacted) = watch::channel(0u64);
        let flag = self.stop_flag.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name(format!("compactor {name}"))
                .spawn(move || {
                    compactor.run(&flag, compacted_tx);
                    Ok(())
                })
                .context("starting a compactor thread")?,
        );
        let mut replicas = Vec::new();
        for (client, replica) in clients.into_iter().zip(&db_config.replicas) {
            let opts = UploaderOptions {
                sync_interval: replica.sync_interval,
                remote_retention: self.config.retention.enabled,
                shutdown_sync_interval: self.config.shutdown_sync_interval,
                ..UploaderOptions::default()
            };
            let (uploader, status) = Uploader::new(
                client,
                store.clone(),
                db_status.clone(),
                compacted.clone(),
                opts,
            );
            let stop = self.stop_rx.clone();
            self.uploaders
                .spawn(uploader.run(stop, self.config.shutdown_sync_timeout));
            replicas.push(ReplicaEntry::new(replica, status));
        }
        tracing::info!(db = %name, replicas = db_config.replicas.len(), "replicating");
        self.board.add(DatabaseEntry {
            path: path.clone(),
            status: db_status,
            replicas,
        });
        self.running.insert(path);
        Ok(())
    }

    /// Starts every database of a `dir:` config that is not running yet. At start a failure
    /// ends walship; for databases that appear later it is logged and retried at the next scan.
    async fn start_dir(&mut self, template: &DbConfig, dir: &Discovery) -> anyhow::Result<()> {
        for path in dir.databases()? {
            if !self.running.contains(&path) {
                self.start(&dir.config_for(template, &path)).await?;
            }
        }
        Ok(())
    }
}

/// How often watched directories are scanned for new databases.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

async fn replicate(config: Config) -> anyhow::Result<ExitCode> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = Arc::new(config);
    let mut replication = Replication {
        config: config.clone(),
        stop_flag: Arc::new(AtomicBool::new(false)),
        stop_rx: stop_rx.clone(),
        threads: Vec::new(),
        uploaders: JoinSet::new(),
        board: Arc::new(StatusBoard::new(SystemTime::now(), Vec::new())),
        running: HashSet::new(),
    };
    // Serving first: while databases start (up to a minute each when a replica is unreachable
    // and the local store empty) /status shows them as starting rather than refusing
    // connections.
    let server = match &config.addr {
        Some(addr) => {
            let server = Server::bind(addr, replication.board.clone()).await?;
            tracing::info!(
                "serving /status, /metrics and /healthz on http://{}",
                server.local_addr()?
            );
            Some(tokio::spawn(server.serve(stop_rx.clone())))
        }
        None => None,
    };
    let mut watched = Vec::new();
    let mut initial = Vec::new();
    for db_config in &config.dbs {
        match &db_config.source {
            DbSource::Path(_) => initial.push(db_config.clone()),
            DbSource::Dir(dir) => {
                let discovery = Discovery::new(dir)?;
                initial.extend(
                    discovery
                        .databases()?
                        .into_iter()
                        .map(|path| discovery.config_for(db_config, &path)),
                );
                if dir.watch {
                    watched.push((db_config.clone(), discovery));
                }
            }
        }
    }
    // A database named by path and found in a directory too starts once, with the options
    // given for it by name.
    initial.sort_by_key(|c| !config.dbs.iter().any(|d| d.source == c.source));
    let mut seen = HashSet::new();
    initial.retain(|c| matches!(&c.source, DbSource::Path(p) if seen.insert(p.clone())));
    // Each starts as soon as its replicas answered, not behind a slower one.
    let board = replication.board.clone();
    let mut opening: FuturesUnordered<_> = initial
        .iter()
        .map(|c| {
            let board = board.clone();
            async move { (c, open_db(&board, c).await) }
        })
        .collect();
    let launching = async {
        while let Some((db_config, opened)) = opening.next().await {
            replication.launch(db_config, opened?)?;
        }
        anyhow::Ok(())
    };
    // A signal while databases start (which can take a minute) stops the ones already
    // replicating properly, with their final capture and upload.
    let signalled = super::wait_for_signal();
    tokio::pin!(signalled);
    let interrupted = tokio::select! {
        launched = launching => {
            launched?;
            false
        }
        r = &mut signalled => {
            r?;
            tracing::info!("signal received while starting: final capture and upload of the databases started");
            true
        }
    };
    let never_started = replication.board.starting();
    drop(opening);
    replication.board.started();

    let until_done = async {
        match &config.exec {
            _ if interrupted => Ok(ExitCode::SUCCESS),
            Some(cmd) => run_child(cmd).await,
            None => {
                signalled.await?;
                tracing::info!("signal received: final capture and upload");
                Ok(ExitCode::SUCCESS)
            }
        }
    };
    let watching = async {
        if watched.is_empty() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            for (template, discovery) in &watched {
                if let Err(e) = replication.start_dir(template, discovery).await {
                    tracing::error!("{e:#}");
                }
            }
        }
    };
    let code = tokio::select! {
        code = until_done => code?,
        never = watching => never,
    };

    replication.stop_flag.store(true, Ordering::Relaxed);
    let threads = std::mem::take(&mut replication.threads);
    let mut unsynced: Vec<String> = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .filter_map(|t| match t.join() {
                Ok(Err(e)) => Some(format!("final capture failed: {e}")),
                _ => None,
            })
            .collect()
    })
    .await
    .context("waiting for the monitors")?;
    let _ = stop_tx.send(true);
    // The final uploads get `shutdown-sync-timeout`: a replica that stopped answering (a dead
    // connection waits for the client's own timeouts and retries) must not hold the stop forever.
    let uploads = async { while replication.uploaders.join_next().await.is_some() {} };
    let timed_out = tokio::time::timeout(config.shutdown_sync_timeout, uploads)
        .await
        .is_err();
    if timed_out {
        replication.uploaders.abort_all();
        while replication.uploaders.join_next().await.is_some() {}
    }
    if let Some(server) = server {
        server.await.context("stopping the HTTP server")??;
    }
    let behind = replication.board.behind();
    if timed_out {
        let what = format!(
            "the final uploads did not finish within shutdown-sync-timeout ({:?})",
            config.shutdown_sync_timeout
        );
        if behind.is_empty() {
            // Only compacted files (big, and not needed to restore the newest state) were
            // still going: every replica holds the last capture, so this is no failure.
            tracing::warn!(
                "{what}, but every replica holds the last capture; the compacted files still \
                 to upload go at the next start"
            );
        } else {
            unsynced.push(what);
        }
    }
    unsynced.extend(behind);
    unsynced.extend(never_started.iter().map(|path| {
        format!(
            "{path} never started replicating: stopped while asking its replicas where TXIDs stand"
        )
    }));
    if unsynced.is_empty() {
        tracing::info!("stopped");
        return Ok(code);
    }
    // Exiting 0 would tell a supervisor or script that everything committed is replicated.
    for problem in &unsynced {
        tracing::error!("{problem}");
    }
    tracing::error!(
        "stopped with the last transactions NOT replicated; start walship again once the cause \
         is fixed and it ships them"
    );
    Ok(if code == ExitCode::SUCCESS {
        ExitCode::FAILURE
    } else {
        code
    })
}

/// Runs `cmd` (split into words as a shell would, but run without one, as Litestream does, so
/// that signals reach the program itself) with walship's stdin, stdout and stderr, passing
/// SIGINT and SIGTERM on to it, until it exits; returns the status to exit with (128 + signal
/// if a signal ended it, as shells report it).
async fn run_child(cmd: &str) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::ExitStatusExt;
    use tokio::signal::unix::{signal, SignalKind};
    let words = shell_words::split(cmd).with_context(|| format!("cannot parse -exec {cmd:?}"))?;
    let Some((program, args)) = words.split_first() else {
        bail!("-exec is empty: give the command to run");
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot run -exec command {program:?}"))?;
    tracing::info!(pid = child.id(), "running {cmd:?}");
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let pid = child.id().map(|p| p as libc::pid_t);
    let status = loop {
        let forward = tokio::select! {
            status = child.wait() => break status.context("waiting for the -exec command")?,
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
        };
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the child walship spawned and has not reaped yet.
            unsafe { libc::kill(pid, forward) };
        }
    };
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    tracing::info!("{cmd:?} exited with status {code}: final capture and upload");
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
/// How long one request for a replica's newest TXID may take before the first capture.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long walship keeps asking a replica that is unreachable when the local store is empty.
const EMPTY_STORE_PROBE_PATIENCE: Duration = Duration::from_secs(60);

/// Opens a database with TXIDs continuing past whatever its replicas already hold.
/// Opens the database of `cfg` and its replica clients, shown on `board` as starting
/// meanwhile (and forgotten there if it fails).
async fn open_db(board: &StatusBoard, cfg: &DbConfig) -> anyhow::Result<(Db, Vec<ReplicaClient>)> {
    let DbSource::Path(path) = &cfg.source else {
        bail!("internal error: a dir config reached open_db unexpanded");
    };
    let _starting = board.begin(path);
    open_path(path, cfg).await
}

async fn open_path(path: &Path, cfg: &DbConfig) -> anyhow::Result<(Db, Vec<ReplicaClient>)> {
    if !path.exists() {
        bail!(
            "database {} does not exist: create it (or restore it) first, or fix `path`",
            path.display()
        );
    }
    let clients = cfg
        .replicas
        .iter()
        .map(|r| client_for(r, &process_env))
        .collect::<walship::Result<Vec<_>>>()?;
    let meta = cfg
        .meta_path
        .clone()
        .unwrap_or_else(|| LocalStore::default_dir(path));
    let local = LocalStore::open(&meta)?.last(0)?.map(|f| f.max_txid);
    let remote = newest_remote_txid(path, &clients, local).await;
    let opts = DbOptions {
        meta_dir: cfg.meta_path.clone(),
        busy_timeout: cfg.busy_timeout,
        checkpoint_pages: cfg.min_checkpoint_page_count,
        max_capture_bytes: cfg.max_sync_wal_bytes,
        min_txid: Txid(remote.0 + 1),
        ..DbOptions::default()
    };
    let path = path.to_path_buf();
    let db = tokio::task::spawn_blocking(move || Db::open(&path, opts)).await??;
    Ok((db, clients))
}

/// The newest TXID any replica holds, so that new TXIDs never reuse one of a replica's.
///
/// A replica that cannot answer must not hold up replication to the others: with local TXIDs
/// known (`local`) the store is the authority and each replica gets one [`PROBE_TIMEOUT`]. With
/// an empty store (a database restored on a new machine) only the replica tells where TXIDs
/// stand, so an unreachable one is asked again for [`EMPTY_STORE_PROBE_PATIENCE`]. Either way,
/// a replica found ahead of the store later is refused by its uploader with a clear error
/// rather than mixed with this database's history.
async fn newest_remote_txid(db: &Path, clients: &[ReplicaClient], local: Option<Txid>) -> Txid {
    let probes = clients.iter().map(|client| async move {
        let deadline = tokio::time::Instant::now() + EMPTY_STORE_PROBE_PATIENCE;
        let mut wait = Duration::from_secs(1);
        loop {
            let (err, transient) =
                match tokio::time::timeout(PROBE_TIMEOUT, client.newest_txid()).await {
                    Ok(Ok(newest)) => return newest.unwrap_or_default(),
                    Ok(Err(e)) => (e.to_string(), e.is_transient()),
                    Err(_) => (format!("no answer within {PROBE_TIMEOUT:?}"), true),
                };
            let patient = local.is_none() && transient;
            if !patient || tokio::time::Instant::now() + wait > deadline {
                tracing::warn!(
                    db = %db.display(),
                    replica = client.name(),
                    "could not ask the replica for its newest TXID ({err}); replicating \
                     anyway, with TXIDs after the local store's{}",
                    if local.is_none() { " (it is empty)" } else { "" }
                );
                return Txid(0);
            }
            tracing::warn!(
                db = %db.display(),
                replica = client.name(),
                "asking the replica for its newest TXID failed ({err}); the local store is \
                 empty, so the first capture waits for the replica's answer to continue after \
                 its TXIDs; retrying in {wait:?}"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(15));
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .max()
        .unwrap_or_default()
}

fn monitor_options(cfg: &DbConfig) -> MonitorOptions {
    MonitorOptions {
        monitor_interval: cfg.monitor_interval,
        checkpoint_interval: cfg.checkpoint_interval,
        ..MonitorOptions::default()
    }
}
