//! The replica client: the one way walship talks to replica storage.
//!
//! A [`ReplicaClient`] writes, lists, reads and deletes the LTX files of one `file`, `s3`, `gs`
//! or `abs` replica through the `object_store` crate, with keys, creation times and upload sizes
//! exactly as Litestream 0.5 uses them (formats/litestream.md §2.1-§2.3), so that either tool
//! restores the other's replicas. It is built from plain options and never reads the
//! environment.

use std::io;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use ltx::{Header, Txid, HEADER_SIZE};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use super::azure::{AbsOptions, ServicePrincipal, AZURE_TIMESTAMP_METADATA_KEY};
use super::failure::{classify_io, classify_store, invalid_config, Hints};
pub use super::gcs::GcsOptions;
pub use super::layout::{KeyScheme, Layout, LtxKey};
pub use super::s3::S3Options;
use super::{azure, durable, gcs, s3, timestamp};
pub use crate::error::{ReplicaError, ReplicaErrorKind, ReplicaOp};
use crate::{Error, Result};

/// The level Litestream keeps full snapshots at.
pub const SNAPSHOT_LEVEL: u32 = 9;

/// The user metadata key holding an LTX file's creation time on S3 and GCS, as Litestream
/// writes it (Azure's is [`AZURE_TIMESTAMP_METADATA_KEY`]).
pub const TIMESTAMP_METADATA_KEY: &str = "litestream-timestamp";

/// Files larger than this are uploaded in parts of this size (Litestream's S3 default).
pub const DEFAULT_PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one multipart upload in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// How much of a local file is read per step of a multipart upload.
const READ_CHUNK: usize = 1024 * 1024;

/// One LTX file in a replica, as a listing or an upload describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LtxFileInfo {
    /// Level and TXID range.
    pub key: LtxKey,
    /// Size in bytes.
    pub size: u64,
    /// Creation time: the file's mtime, or S3's LastModified in listings (see
    /// [`ReplicaClient::created_at`] for the precise one).
    pub created_at: SystemTime,
}

/// A client for one replica's LTX files; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplicaClient {
    name: String,
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    writer: Writer,
    hints: Hints,
    /// What error messages put before a key: `s3://bucket/`, `/`, or the store's name.
    location_base: String,
    /// The metadata key the creation time is written to and read from.
    timestamp_key: &'static str,
}

/// How LTX files are written.
#[derive(Debug, Clone)]
enum Writer {
    /// Through the object store: one PUT up to `part_size`, a multipart upload above it,
    /// with the creation time as `litestream-timestamp` user metadata.
    Store {
        part_size: usize,
        concurrency: usize,
    },
    /// Straight into the directory tree behind a local store, durably, with the creation time
    /// as mtime: object_store's local puts accept no metadata and stage files as `<name>#<n>`.
    Dir(Arc<LocalFileSystem>),
}

impl ReplicaClient {
    /// A client for a `file` replica rooted at `root` (created on the first upload).
    pub fn file(name: impl Into<String>, root: impl AsRef<FsPath>) -> Result<Self> {
        let name = name.into();
        let root = root.as_ref();
        let invalid = |cause: String| {
            let hint = "give the replica a directory path of plain names";
            invalid_config(&name, root.display().to_string(), cause, hint)
        };
        let root = std::path::absolute(root).map_err(|e| invalid(e.to_string()))?;
        let prefix = Path::from_absolute_path(&root).map_err(|e| invalid(e.to_string()))?;
        let layout =
            Layout::new(KeyScheme::File, prefix.as_ref()).map_err(|e| invalid(e.to_string()))?;
        let local = Arc::new(LocalFileSystem::new());
        Ok(ReplicaClient {
            name,
            store: local.clone(),
            layout,
            writer: Writer::Dir(local),
            hints: Hints::dir(&root),
            location_base: "/".into(),
            timestamp_key: TIMESTAMP_METADATA_KEY,
        })
    }

    /// A client for an `s3` replica.
    ///
    /// Transient HTTP failures are retried a few times within seconds, not object_store's
    /// default of 10 retries over 3 minutes (see the `s3` module for the numbers): the upload
    /// loop retries later anyway, and a dead endpoint must show up quickly.
    pub fn s3(name: impl Into<String>, opts: &S3Options) -> Result<Self> {
        let name = name.into();
        let (store, layout) = s3::open(&name, opts)?;
        Ok(ReplicaClient {
            name,
            store,
            layout,
            writer: Writer::Store {
                part_size: opts.part_size.max(1),
                concurrency: opts.concurrency.max(1),
            },
            hints: Hints::s3(&opts.endpoint_url()),
            location_base: format!("s3://{}/", opts.bucket),
            timestamp_key: TIMESTAMP_METADATA_KEY,
        })
    }

    /// A client for a `gs` (Google Cloud Storage) replica, or for a GCS emulator.
    ///
    /// Files larger than a part go up as a resumable upload in chunks of the part size, one
    /// after another, as GCS requires.
    pub fn gcs(name: impl Into<String>, opts: &GcsOptions) -> Result<Self> {
        let name = name.into();
        let (store, layout) = gcs::open(&name, opts)?;
        Ok(ReplicaClient {
            name,
            store,
            layout,
            writer: Writer::Store {
                part_size: opts.chunk_size(),
                concurrency: 1,
            },
            hints: Hints::gcs(&opts.base_url(), opts.emulator_host.is_some()),
            location_base: format!("gs://{}/", opts.bucket),
            timestamp_key: TIMESTAMP_METADATA_KEY,
        })
    }

    /// A client for an `abs` (Azure Blob Storage) replica.
    pub fn abs(name: impl Into<String>, opts: &AbsOptions) -> Result<Self> {
        let name = name.into();
        let (store, layout) = azure::open(&name, opts)?;
        Ok(ReplicaClient {
            name,
            store,
            layout,
            writer: Writer::Store {
                part_size: opts.part_size.max(1),
                concurrency: opts.concurrency.max(1),
            },
            hints: Hints::abs(opts.endpoint_url().as_deref().unwrap_or_default()),
            location_base: opts.location_base(),
            timestamp_key: AZURE_TIMESTAMP_METADATA_KEY,
        })
    }

    /// A client over any object store, for tests (in-memory, fault-injecting) and other
    /// backends; creation times are written as `litestream-timestamp` metadata, which the store
    /// must accept.
    pub fn from_store(
        name: impl Into<String>,
        store: Arc<dyn ObjectStore>,
        layout: Layout,
    ) -> Self {
        ReplicaClient {
            name: name.into(),
            location_base: format!("{store}/"),
            store,
            layout,
            writer: Writer::Store {
                part_size: DEFAULT_PART_SIZE,
                concurrency: DEFAULT_CONCURRENCY,
            },
            hints: Hints::store(),
            timestamp_key: TIMESTAMP_METADATA_KEY,
        }
    }

    /// The same replica (layout, part sizes, timestamp metadata key) over another store, such
    /// as a fault-injecting wrapper of this one's, under `name` and with generic hints.
    pub fn wrap(&self, name: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        let writer = match &self.writer {
            Writer::Store { .. } => self.writer.clone(),
            Writer::Dir(_) => Writer::Store {
                part_size: DEFAULT_PART_SIZE,
                concurrency: DEFAULT_CONCURRENCY,
            },
        };
        ReplicaClient {
            name: name.into(),
            location_base: format!("{store}/"),
            store,
            layout: self.layout.clone(),
            writer,
            hints: Hints::store(),
            timestamp_key: self.timestamp_key,
        }
    }

    /// The replica's name, as error messages give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the replica's files live.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The object store underneath, for wrapping (fault injection) and raw inspection in tests.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Uploads the LTX file at `src` to `level`, named and timestamped from its header.
    pub async fn put_file(&self, level: u32, src: &FsPath) -> Result<LtxFileInfo> {
        let header = read_header(src).await?;
        let key = LtxKey::new(level, header.min_txid, header.max_txid);
        let created_at = timestamp::from_unix_millis(header.timestamp);
        let location = self.layout.key(key);
        let size = match &self.writer {
            Writer::Dir(local) => self.install(local, src, &location, created_at).await?,
            Writer::Store {
                part_size,
                concurrency,
            } => {
                let upload = Upload {
                    src,
                    location: &location,
                    part_size: *part_size,
                    concurrency: *concurrency,
                };
                self.upload(upload, created_at).await?
            }
        };
        Ok(LtxFileInfo {
            key,
            size,
            created_at,
        })
    }

    /// The LTX files at `level`, sorted by TXID range; other objects there are ignored.
    pub async fn list(&self, level: u32) -> Result<Vec<LtxFileInfo>> {
        let dir = self.layout.level_dir(level);
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| self.store_error(ReplicaOp::List, &dir, &e))?;
        let mut files: Vec<LtxFileInfo> = listing
            .objects
            .into_iter()
            .filter_map(|meta| {
                Some(LtxFileInfo {
                    key: self.layout.parse(level, &meta.location)?,
                    size: meta.size,
                    created_at: meta.last_modified.into(),
                })
            })
            .collect();
        files.sort_by_key(|f| f.key);
        Ok(files)
    }

    /// The largest TXID among the files at `level`, or `None` if the level is empty.
    pub async fn max_txid(&self, level: u32) -> Result<Option<Txid>> {
        let files = self.list(level).await?;
        Ok(files.iter().map(|f| f.key.max_txid).max())
    }

    /// The newest TXID the replica holds at any level, or `None` if it holds nothing.
    pub async fn newest_txid(&self) -> Result<Option<Txid>> {
        let mut newest = None;
        for level in 0..=crate::compaction::SNAPSHOT_LEVEL {
            newest = newest.max(self.max_txid(level).await?);
        }
        Ok(newest)
    }

    /// The precise creation time of one file: its `litestream-timestamp` metadata
    /// (`litestreamtimestamp` on Azure), else its LastModified time (or mtime), as Litestream's
    /// timestamp restore reads it.
    pub async fn created_at(&self, key: LtxKey) -> Result<SystemTime> {
        let location = self.layout.key(key);
        let head = self
            .store
            .get_opts(&location, GetOptions::default().with_head(true))
            .await
            .map_err(|e| self.store_error(ReplicaOp::Stat, &location, &e))?;
        let stored = head
            .attributes
            .get(&Attribute::Metadata(self.timestamp_key.into()))
            .and_then(|value| timestamp::parse_rfc3339(value));
        Ok(stored.unwrap_or_else(|| head.meta.last_modified.into()))
    }

    /// The content of one file, as a stream of chunks.
    pub async fn get(&self, key: LtxKey) -> Result<BoxStream<'static, Result<Bytes>>> {
        let location = self.layout.key(key);
        let result = self
            .store
            .get_opts(&location, GetOptions::default())
            .await
            .map_err(|e| self.store_error(ReplicaOp::Download, &location, &e))?;
        let this = self.clone();
        Ok(result
            .into_stream()
            .map_err(move |e| this.store_error(ReplicaOp::Download, &location, &e))
            .boxed())
    }

    /// Byte ranges of one file, by ranged reads (the store may join nearby ranges into one
    /// request): a file's header or page index without downloading all of it.
    pub async fn get_ranges(&self, key: LtxKey, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let location = self.layout.key(key);
        self.store
            .get_ranges(&location, ranges)
            .await
            .map_err(|e| self.store_error(ReplicaOp::Download, &location, &e))
    }

    /// Opens one file of a `file` replica for reading in place, rather than copying it; `None`
    /// for the other stores. A file deleted since it was listed fails as a download would.
    pub fn open_local(&self, key: LtxKey) -> Option<Result<std::fs::File>> {
        let Writer::Dir(local) = &self.writer else {
            return None;
        };
        let location = self.layout.key(key);
        let opened = local
            .path_to_filesystem(&location)
            .map_err(|e| self.store_error(ReplicaOp::Download, &location, &e))
            .and_then(|path| {
                std::fs::File::open(path)
                    .map_err(|e| self.io_error(ReplicaOp::Download, &location, &e))
            });
        Some(opened)
    }

    /// Downloads one file to `dest` (temporary name, fsync, rename); returns its size.
    pub async fn get_to_file(&self, key: LtxKey, dest: &FsPath) -> Result<u64> {
        let chunks = self.get(key).await?;
        let tmp = durable::tmp_path(dest);
        match write_synced(chunks, &tmp).await {
            Ok(size) => {
                let (from, to) = (tmp.clone(), dest.to_path_buf());
                blocking(move || durable::publish(&from, &to))
                    .await
                    .map_err(local_io(dest))?;
                Ok(size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Deletes files; files already gone count as deleted.
    pub async fn delete(&self, keys: &[LtxKey]) -> Result<()> {
        let locations: Vec<Path> = keys.iter().map(|k| self.layout.key(*k)).collect();
        let requests = stream::iter(locations.clone().into_iter().map(Ok)).boxed();
        // Results come back in request order, so the n-th one concerns the n-th key.
        let mut results = self.store.delete_stream(requests).enumerate();
        while let Some((i, result)) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(ReplicaOp::Delete, &locations[i], &e)),
            }
        }
        Ok(())
    }

    /// Copies `src` into the replica directory durably, with `created_at` as mtime.
    async fn install(
        &self,
        local: &LocalFileSystem,
        src: &FsPath,
        location: &Path,
        created_at: SystemTime,
    ) -> Result<u64> {
        let dest = local
            .path_to_filesystem(location)
            .map_err(|e| self.store_error(ReplicaOp::Upload, location, &e))?;
        let src = src.to_path_buf();
        blocking(move || durable::install_copy(&src, &dest, created_at))
            .await
            .map_err(|e| self.io_error(ReplicaOp::Upload, location, &e))
    }

    /// Uploads through the object store, in one PUT or in parts depending on the size.
    async fn upload(&self, upload: Upload<'_>, created_at: SystemTime) -> Result<u64> {
        let attributes = timestamp_attributes(self.timestamp_key, created_at);
        let local = local_io(upload.src);
        let mut file = tokio::fs::File::open(upload.src).await.map_err(&local)?;
        let len = file.metadata().await.map_err(&local)?.len();
        if len <= upload.part_size as u64 {
            self.put_whole(&mut file, upload, attributes).await
        } else {
            self.put_multipart(&mut file, upload, attributes).await
        }
    }

    /// Uploads a file no larger than a part in one PUT.
    async fn put_whole(
        &self,
        file: &mut tokio::fs::File,
        upload: Upload<'_>,
        attributes: Attributes,
    ) -> Result<u64> {
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .await
            .map_err(local_io(upload.src))?;
        let size = content.len() as u64;
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(upload.location, PutPayload::from(content), opts)
            .await
            .map_err(|e| self.store_error(ReplicaOp::Upload, upload.location, &e))?;
        Ok(size)
    }

    /// Uploads a file in parts, holding at most `concurrency + 1` parts in memory; a failed
    /// upload is aborted so that no orphaned parts are left to pay for.
    async fn put_multipart(
        &self,
        file: &mut tokio::fs::File,
        upload: Upload<'_>,
        attributes: Attributes,
    ) -> Result<u64> {
        let remote =
            |e: object_store::Error| self.store_error(ReplicaOp::Upload, upload.location, &e);
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let started = self
            .store
            .put_multipart_opts(upload.location, opts)
            .await
            .map_err(remote)?;
        let mut parts = WriteMultipart::new_with_chunk_size(started, upload.part_size);
        match send_parts(file, &mut parts, upload.concurrency).await {
            Ok(size) => {
                parts.finish().await.map_err(remote)?;
                Ok(size)
            }
            Err(failure) => {
                let _ = parts.abort().await;
                Err(match failure {
                    PartFailure::Read(e) => local_io(upload.src)(e),
                    PartFailure::Store(e) => remote(e),
                })
            }
        }
    }

    fn store_error(&self, op: ReplicaOp, location: &Path, e: &object_store::Error) -> Error {
        let (kind, cause) = classify_store(e);
        self.error(op, location, kind, cause)
    }

    fn io_error(&self, op: ReplicaOp, location: &Path, e: &io::Error) -> Error {
        let (kind, cause) = classify_io(e);
        self.error(op, location, kind, cause)
    }

    fn error(
        &self,
        op: ReplicaOp,
        location: &Path,
        kind: ReplicaErrorKind,
        cause: String,
    ) -> Error {
        Error::from(ReplicaError {
            replica: self.name.clone(),
            op,
            location: format!("{}{location}", self.location_base),
            kind,
            cause,
            hint: self.hints.for_kind(kind),
        })
    }
}

/// One upload's source, destination and part sizes.
#[derive(Clone, Copy)]
struct Upload<'a> {
    src: &'a FsPath,
    location: &'a Path,
    part_size: usize,
    concurrency: usize,
}

/// Why sending parts stopped: the local file or the store.
enum PartFailure {
    Read(io::Error),
    Store(object_store::Error),
}

/// Streams the rest of `file` into `parts`, waiting for a free slot before each chunk.
async fn send_parts(
    file: &mut tokio::fs::File,
    parts: &mut WriteMultipart,
    concurrency: usize,
) -> std::result::Result<u64, PartFailure> {
    let mut size = 0;
    loop {
        let mut chunk = BytesMut::with_capacity(READ_CHUNK);
        let n = file.read_buf(&mut chunk).await.map_err(PartFailure::Read)?;
        if n == 0 {
            return Ok(size);
        }
        parts
            .wait_for_capacity(concurrency)
            .await
            .map_err(PartFailure::Store)?;
        parts.put(chunk.freeze());
        size += n as u64;
    }
}

/// Writes a download to `path` and fsyncs it; returns its size.
async fn write_synced(mut chunks: BoxStream<'static, Result<Bytes>>, path: &FsPath) -> Result<u64> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(local_io(path))?;
    let mut size = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        file.write_all(&chunk).await.map_err(local_io(path))?;
        size += chunk.len() as u64;
    }
    file.sync_all().await.map_err(local_io(path))?;
    Ok(size)
}

/// Reads and checks the header of a local LTX file.
async fn read_header(src: &FsPath) -> Result<Header> {
    let mut file = tokio::fs::File::open(src).await.map_err(local_io(src))?;
    let mut bytes = [0u8; HEADER_SIZE];
    file.read_exact(&mut bytes).await.map_err(local_io(src))?;
    Header::from_bytes(&bytes).map_err(|e| {
        local_io(src)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an LTX file: {e}"),
        ))
    })
}

/// Maps a local I/O failure to an error naming the file.
fn local_io(path: &FsPath) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs blocking file system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

fn timestamp_attributes(key: &'static str, created_at: SystemTime) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(key.into()),
        timestamp::format_rfc3339_nano(created_at).into(),
    );
    attributes
}
