//! `walship ltx`: the LTX files of a replica, per level, as Litestream's `ltx` command lists them,
//! with the pages each holds (read from its page index).

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use ltx::{PageIndex, HEADER_SIZE};
use serde_json::{json, Value};
use walship::compaction::SNAPSHOT_LEVEL;
use walship::config::{process_env, DbSource};
use walship::replica::client::{LtxFileInfo, ReplicaClient};
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
    /// Leave out page counts: list only, as Litestream's `ltx` does, without reading each
    /// file's page index (one to three ranged reads per file).
    #[arg(long)]
    no_page_count: bool,
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
    let pages = (!args.no_page_count).then(|| runtime.block_on(page_counts(&client, &files)));
    if args.json {
        let list: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut file = json!({
                    "level": f.key.level,
                    "min_txid": f.key.min_txid.to_string(),
                    "max_txid": f.key.max_txid.to_string(),
                    "size": f.size,
                    "created_at": format_rfc3339_nano(f.created_at),
                });
                match pages.as_ref().map(|p| &p[i]) {
                    Some(Ok(n)) => file["page_count"] = json!(n),
                    Some(Err(e)) => {
                        file["page_count"] = Value::Null;
                        file["page_count_error"] = json!(e);
                    }
                    None => {}
                }
                file
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
    } else {
        let counts: Option<Vec<Option<usize>>> = pages
            .as_ref()
            .map(|p| p.iter().map(|c| c.as_ref().ok().copied()).collect());
        super::print_ltx_table(&files, counts.as_deref());
    }
    if let Some(pages) = &pages {
        report_unknown(&files, pages);
    }
    Ok(())
}

/// Page counts read at once.
const PAGE_COUNT_PARALLELISM: usize = 8;

/// How much of a file's end is read first for its page index (Litestream reads as much for
/// a page fetch): the whole index of a file of a few thousand pages; a larger one takes one
/// more read.
const INDEX_ESTIMATE: u64 = 32 * 1024;

/// Reads at most this many times per file: the header and tail, then the rest of the index.
const MAX_READS: usize = 3;

/// The pages each file holds, in order, or why that is unknown.
async fn page_counts(client: &ReplicaClient, files: &[LtxFileInfo]) -> Vec<Result<usize, String>> {
    stream::iter(files)
        .map(|f| page_count(client, f))
        .buffered(PAGE_COUNT_PARALLELISM)
        .collect()
        .await
}

/// The pages `file` holds: the entries of its page index, read from its two ends by ranged
/// reads rather than by downloading it whole.
async fn page_count(client: &ReplicaClient, file: &LtxFileInfo) -> Result<usize, String> {
    let len = file.size;
    let head = HEADER_SIZE as u64;
    let mut wanted: Vec<Range<u64>> = Vec::with_capacity(2);
    if len > head + INDEX_ESTIMATE {
        wanted.extend([0..head, len - INDEX_ESTIMATE..len]);
    } else if len > 0 {
        wanted.push(0..len);
    }
    let mut sparse = Sparse::new(len);
    for _ in 0..MAX_READS {
        if !wanted.is_empty() {
            let got = client
                .get_ranges(file.key, &wanted)
                .await
                .map_err(|e| e.to_string())?;
            for (range, bytes) in wanted.iter().zip(got) {
                sparse.insert(range.start, bytes);
            }
        }
        match PageIndex::read(&mut sparse) {
            Ok(index) => return Ok(index.entries().len()),
            Err(e) => match Sparse::missing(&e) {
                Some(range) => wanted = vec![range],
                None => return Err(format!("no readable page index: {e}")),
            },
        }
    }
    Err("its page index lies beyond the ranges read".into())
}

/// Tells of files whose page count is unknown, on stderr, so that a table's `-` is explained.
fn report_unknown(files: &[LtxFileInfo], pages: &[Result<usize, String>]) {
    const SHOWN: usize = 5;
    let unknown: Vec<(&LtxFileInfo, &String)> = files
        .iter()
        .zip(pages)
        .filter_map(|(f, p)| p.as_ref().err().map(|e| (f, e)))
        .collect();
    for (f, e) in unknown.iter().take(SHOWN) {
        eprintln!(
            "walship: no page count for {}: {e}",
            walship::restore::describe(f.key)
        );
    }
    if unknown.len() > SHOWN {
        eprintln!(
            "walship: no page count for {} more files",
            unknown.len() - SHOWN
        );
    }
}

/// The parts of a remote file read so far, as a seekable file of its full length: the page
/// index parser reads what it needs, and a read of a part not yet fetched fails with
/// [`Missing`], naming the bytes to fetch.
struct Sparse {
    len: u64,
    /// Fetched parts by start offset; they do not overlap.
    parts: BTreeMap<u64, Bytes>,
    pos: u64,
}

/// The bytes a [`Sparse`] read needed but did not have.
#[derive(Debug)]
struct Missing(Range<u64>);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bytes {}..{} not read yet", self.0.start, self.0.end)
    }
}

impl std::error::Error for Missing {}

impl Sparse {
    fn new(len: u64) -> Sparse {
        Sparse {
            len,
            parts: BTreeMap::new(),
            pos: 0,
        }
    }

    fn insert(&mut self, start: u64, bytes: Bytes) {
        self.parts.insert(start, bytes);
    }

    /// The bytes that a failed parse lacked, if that is why it failed.
    fn missing(e: &ltx::Error) -> Option<Range<u64>> {
        match e {
            ltx::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<Missing>())
                .map(|m| m.0.clone()),
            _ => None,
        }
    }
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let covering = self
            .parts
            .range(..=self.pos)
            .next_back()
            .filter(|(start, bytes)| self.pos < **start + bytes.len() as u64);
        let Some((start, bytes)) = covering else {
            let next = self
                .parts
                .range(self.pos..)
                .next()
                .map_or(self.len, |(start, _)| *start);
            return Err(io::Error::other(Missing(self.pos..next)));
        };
        let from = (self.pos - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::other("seek before the start of the file"))?;
        Ok(self.pos)
    }
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
