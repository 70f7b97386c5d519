//! Getting a plan's files to the applier, in plan order, with a bounded number of downloads
//! running ahead of it.
//!
//! A `file` replica's files are read where they are. Other files are downloaded by their own
//! tasks, so that downloads go on while the applier works: into memory while the files held
//! there stay within a budget, else into a scratch file. Scratch files are never fsynced: the
//! same process reads them back and removes them, and only the database must be durable.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::Either;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::apply::blocking;
use super::{describe, Progress, RestoreError};
use crate::replica::client::{LtxFileInfo, LtxKey, ReplicaClient};
use crate::{Error, Result};

/// Bytes of downloaded files held in memory at once, at most.
pub(super) const MEMORY_BUDGET: usize = 16 << 20;

/// Bytes gathered before each write to a scratch file.
const WRITE_CHUNK: usize = 1 << 20;

/// One file of a plan, ready to be read.
#[derive(Debug)]
pub(super) enum Fetched {
    /// Downloaded into memory.
    Memory {
        data: Bytes,
        /// Its share of the memory budget, given back when the file is dropped.
        _budget: OwnedSemaphorePermit,
    },
    /// Downloaded into this scratch file.
    Scratch(PathBuf),
    /// A `file` replica's file, opened to be read in place.
    InPlace(File),
}

/// How a download is kept.
enum Keep {
    Memory(OwnedSemaphorePermit),
    Scratch(File, PathBuf),
}

/// The plan's `files`, in order, each with how to read it; at most `parallelism` downloads run
/// ahead of the caller, into memory within `budget` bytes or into scratch files in `dir`.
/// Downloads tell `progress` as bytes arrive; files read in place are the reader's to report.
/// Downloads still running when the stream is dropped are aborted.
pub(super) fn fetch_all<'a>(
    client: &'a ReplicaClient,
    files: &'a [LtxFileInfo],
    dir: &'a Path,
    parallelism: usize,
    budget: usize,
    progress: Arc<dyn Progress>,
) -> impl Stream<Item = Result<(LtxFileInfo, Fetched)>> + 'a {
    let memory = Arc::new(Semaphore::new(budget));
    stream::iter(files.iter().enumerate())
        .map(move |(i, f)| {
            let f = *f;
            // Opened as the plan gets to it: once open, retention deleting it does not matter.
            if let Some(opened) = client.open_local(f.key) {
                let fetched = opened.map(|file| (f, Fetched::InPlace(file)));
                let fetched = fetched.map_err(|e| {
                    Error::from(RestoreError::File {
                        file: describe(f.key),
                        cause: Box::new(e),
                    })
                });
                return Either::Left(std::future::ready(fetched));
            }
            // Decided, and the scratch file created, before the task starts: a task aborted
            // on another's failure keeps running until its next await, and must then not add
            // a file to the work directory being removed.
            let permit = u32::try_from(f.size)
                .ok()
                .and_then(|n| memory.clone().try_acquire_many_owned(n).ok());
            let into = match permit {
                Some(permit) => Ok(Keep::Memory(permit)),
                None => {
                    let path = dir.join(format!("{i:08}.ltx"));
                    File::create(&path)
                        .map(|file| Keep::Scratch(file, path.clone()))
                        .map_err(local_error(&path))
                }
            };
            let (client, progress) = (client.clone(), progress.clone());
            let task = AbortOnDrop(tokio::spawn(async move {
                let fetched = download(&client, f, into?, &*progress).await;
                fetched.map_err(|e| {
                    Error::from(RestoreError::File {
                        file: describe(f.key),
                        cause: Box::new(e),
                    })
                })
            }));
            Either::Right(async move {
                let fetched = task
                    .await
                    .unwrap_or_else(|e| Err(local_error(dir)(io::Error::other(e))))?;
                Ok((f, fetched))
            })
        })
        .buffered(parallelism.max(1))
}

/// Downloads one file as `into` says, telling `progress`.
async fn download(
    client: &ReplicaClient,
    f: LtxFileInfo,
    into: Keep,
    progress: &dyn Progress,
) -> Result<Fetched> {
    let chunks = client.get(f.key).await?;
    let (fetched, size) = match into {
        Keep::Memory(permit) => {
            let data = to_memory(chunks, f.size, progress).await?;
            let size = data.len() as u64;
            let fetched = Fetched::Memory {
                data,
                _budget: permit,
            };
            (fetched, size)
        }
        Keep::Scratch(file, path) => {
            let size = to_file(chunks, file, &path, progress).await?;
            (Fetched::Scratch(path), size)
        }
    };
    progress.file_done(&describe(f.key), size);
    Ok(fetched)
}

/// Gathers a download in memory.
async fn to_memory(
    mut chunks: BoxStream<'static, Result<Bytes>>,
    size: u64,
    progress: &dyn Progress,
) -> Result<Bytes> {
    let mut data = BytesMut::with_capacity(size as usize);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        progress.advance(chunk.len() as u64);
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}

/// Writes a download into `file` (at `path`), unsynced, a chunk at a time off the async
/// threads; returns its size.
async fn to_file(
    mut chunks: BoxStream<'static, Result<Bytes>>,
    mut file: File,
    path: &Path,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut size = 0;
    let mut pending = BytesMut::with_capacity(WRITE_CHUNK);
    loop {
        let chunk = chunks.next().await.transpose()?;
        if let Some(chunk) = &chunk {
            progress.advance(chunk.len() as u64);
            size += chunk.len() as u64;
            pending.extend_from_slice(chunk);
        }
        if pending.len() >= WRITE_CHUNK || (chunk.is_none() && !pending.is_empty()) {
            let data = std::mem::replace(&mut pending, BytesMut::with_capacity(WRITE_CHUNK));
            let dest = path.to_path_buf();
            file = blocking(move || {
                file.write_all(&data).map_err(local_error(&dest))?;
                Ok(file)
            })
            .await?;
        }
        if chunk.is_none() {
            return Ok(size);
        }
    }
}

/// Downloads one file into a scratch file at `dest`, unsynced; returns its size.
pub(super) async fn to_scratch(client: &ReplicaClient, key: LtxKey, dest: &Path) -> Result<u64> {
    let file = File::create(dest).map_err(local_error(dest))?;
    let chunks = client.get(key).await?;
    to_file(chunks, file, dest, &super::NoProgress).await
}

impl Fetched {
    /// Opens the file for reading; a file read in place tells `progress` as it is read.
    pub(super) fn reader<'a>(&'a self, progress: &'a dyn Progress) -> Result<Reader<'a>> {
        Ok(match self {
            Fetched::Memory { data, .. } => Reader::Memory(&data[..]),
            Fetched::Scratch(path) => Reader::Scratch(File::open(path).map_err(local_error(path))?),
            Fetched::InPlace(file) => Reader::InPlace {
                file,
                progress,
                count: 0,
            },
        })
    }

    /// Removes a scratch file.
    pub(super) fn remove(self) {
        if let Fetched::Scratch(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fetched file being read.
pub(super) enum Reader<'a> {
    /// From memory.
    Memory(&'a [u8]),
    /// From a scratch file.
    Scratch(File),
    /// From the replica's own file, counting what is read for the progress.
    InPlace {
        file: &'a File,
        progress: &'a dyn Progress,
        count: u64,
    },
}

impl Reader<'_> {
    /// For a file read in place, the bytes read so far (which a download reports itself).
    pub(super) fn read_in_place(&self) -> Option<u64> {
        match self {
            Reader::InPlace { count, .. } => Some(*count),
            _ => None,
        }
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Memory(data) => data.read(buf),
            Reader::Scratch(file) => file.read(buf),
            Reader::InPlace {
                file,
                progress,
                count,
            } => {
                let mut file: &File = file;
                let n = file.read(buf)?;
                *count += n as u64;
                progress.advance(n as u64);
                Ok(n)
            }
        }
    }
}

/// Maps a failure of a local file to an error naming it.
pub(super) fn local_error(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A spawned task, aborted if it is dropped before it finishes.
pub(super) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
