//! Resumable uploads, behind object_store's [`MultipartUpload`]: parts are queued in order and
//! sent to GCS in 256 KiB-aligned chunks, the last one when the upload completes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{header, Method};
use object_store::client::HttpRequestBody;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};
use tokio::sync::{watch, Mutex};

use super::api::{request, Api};
use super::error::{to_store_error, GcsError, Target};

/// A resumable upload: GCS takes its chunks one after another, in order, each but the last a
/// multiple of 256 KiB. Parts handed in by object_store's `WriteMultipart` are therefore queued
/// and sent in turn, and the last chunk is held back until `complete` says it is the last.
#[derive(Debug)]
pub(super) struct ResumableUpload {
    state: Arc<Mutex<Session>>,
    /// The number of the part whose turn it is to be queued.
    turn: Arc<watch::Sender<usize>>,
    /// Parts handed out so far.
    parts: usize,
}

/// A resumable upload session and what is queued for it.
#[derive(Debug)]
struct Session {
    api: Arc<Api>,
    /// The session URL chunks go to.
    url: String,
    /// The object's name, for errors.
    name: String,
    /// Bytes GCS has acknowledged.
    sent: u64,
    /// Bytes queued but not yet sent.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Set after a failed chunk: the session's state is unknown, so nothing more is sent.
    failed: bool,
}

impl Session {
    /// Sends whole chunks from the queue while more than a chunk is queued: the last chunk must
    /// carry the object's size, so it stays back until `complete`.
    async fn flush(&mut self) -> object_store::Result<()> {
        let chunk = self.api.chunk_size;
        while self.pending_len > chunk {
            let mut data = BytesMut::with_capacity(chunk);
            while data.len() < chunk {
                let mut head = self.pending.remove(0);
                let take = (chunk - data.len()).min(head.len());
                data.extend_from_slice(&head.split_to(take));
                if !head.is_empty() {
                    self.pending.insert(0, head);
                }
            }
            self.pending_len -= chunk;
            self.send_chunk(data.freeze(), None).await?;
        }
        Ok(())
    }

    /// Sends one chunk; `total` is the object's size when this is the last one.
    async fn send_chunk(&mut self, data: Bytes, total: Option<u64>) -> object_store::Result<()> {
        if self.failed {
            return Err(self.broken());
        }
        let start = self.sent;
        let range = match (data.len() as u64, total) {
            (0, Some(total)) => format!("bytes */{total}"),
            (len, Some(total)) => format!("bytes {start}-{}/{total}", start + len - 1),
            (len, None) => format!("bytes {start}-{}/*", start + len - 1),
        };
        let result = self
            .api
            .send(false, &self.name, Target::Bucket, || {
                request(Method::PUT, &self.url)
                    .header(header::CONTENT_RANGE, &range)
                    .body(HttpRequestBody::from(data.clone()))
                    .expect("valid request")
            })
            .await;
        match result {
            Ok(_) => {
                self.sent += data.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The error of a chunk sent after an earlier one failed.
    fn broken(&self) -> object_store::Error {
        let e = GcsError::Decode("an earlier chunk of this resumable upload failed".into());
        to_store_error(&self.name, Target::Bucket, e)
    }
}

impl ResumableUpload {
    /// The upload of object `name` in the session at `url`, with nothing sent yet.
    pub(super) fn new(api: Arc<Api>, url: String, name: String) -> Self {
        let (turn, _) = watch::channel(0);
        ResumableUpload {
            state: Arc::new(Mutex::new(Session {
                api,
                url,
                name,
                sent: 0,
                pending: Vec::new(),
                pending_len: 0,
                failed: false,
            })),
            turn: Arc::new(turn),
            parts: 0,
        }
    }

    /// Sends what is left as the last chunk, which tells GCS the object's size.
    async fn finish(&mut self) -> object_store::Result<PutResult> {
        let mut rx = self.turn.subscribe();
        let parts = self.parts;
        let _ = rx.wait_for(|current| *current == parts).await;
        let mut session = self.state.lock().await;
        session.flush().await?;
        let rest: Vec<Bytes> = std::mem::take(&mut session.pending);
        let mut last = BytesMut::with_capacity(session.pending_len);
        for chunk in rest {
            last.extend_from_slice(&chunk);
        }
        session.pending_len = 0;
        let total = session.sent + last.len() as u64;
        session.send_chunk(last.freeze(), Some(total)).await?;
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    /// Cancels the session. This is a courtesy: GCS discards unfinished sessions after a week
    /// anyway, and an unfinished session never becomes an object.
    async fn cancel(&mut self) -> object_store::Result<()> {
        let session = self.state.lock().await;
        let url = session.url.clone();
        let _ = session
            .api
            .send(false, &session.name, Target::Bucket, || {
                request(Method::DELETE, &url)
                    .body(HttpRequestBody::empty())
                    .expect("valid request")
            })
            .await;
        Ok(())
    }
}

impl MultipartUpload for ResumableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let ticket = self.parts;
        self.parts += 1;
        let (state, turn) = (self.state.clone(), self.turn.clone());
        Box::pin(async move {
            let mut rx = turn.subscribe();
            let _ = rx.wait_for(|current| *current == ticket).await;
            let mut session = state.lock().await;
            for chunk in data.iter() {
                session.pending_len += chunk.len();
                session.pending.push(chunk.clone());
            }
            // Let the next part queue up while this one is sent: its place is already fixed.
            turn.send_replace(ticket + 1);
            session.flush().await
        })
    }

    fn complete<'a, 'f>(&'a mut self) -> BoxFuture<'f, object_store::Result<PutResult>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.finish())
    }

    fn abort<'a, 'f>(&'a mut self) -> BoxFuture<'f, object_store::Result<()>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.cancel())
    }
}
