//! Google Cloud Storage replicas, spoken to through GCS's JSON API.
//!
//! object_store's own GCS store uses the XML API. The JSON API is the one Litestream's Go client
//! (cloud.google.com/go/storage) lists, uploads and deletes with, and the only one the test
//! harness's emulator (gcp-storage-emulator) implements beyond plain PUT and GET, so walship
//! speaks it too: one code path for GCS, the emulator and Litestream's view of the bucket. The
//! store here implements [`ObjectStore`] so that the replica client, and the tests' fault
//! injection, treat it like any other store.
//!
//! Keys follow Litestream's non-S3 layout (`<path>/ltx/<level>/<min>-<max>.ltx`) and the creation
//! time goes into the custom metadata `litestream-timestamp`, as Litestream's gs client does.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequestBody, HttpResponse, ReqwestConnector,
};
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, CopyOptions, GetOptions, GetRange,
    GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use tokio::sync::{watch, Mutex};

use super::client::DEFAULT_PART_SIZE;
use super::failure::invalid_config;
use super::layout::{KeyScheme, Layout};
use super::{http, timestamp};
use crate::Result;

/// Where GCS's JSON API lives.
pub const GCS_BASE_URL: &str = "https://storage.googleapis.com";

/// Resumable upload chunks other than the last must be multiples of this (GCS's rule).
const CHUNK_ALIGN: usize = 256 * 1024;

/// Characters kept as they are in a URL path segment or query value; everything else,
/// `/` included, is percent-encoded, as object names in the JSON API must be.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How to reach a GCS replica. Every setting is explicit: nothing is read from the environment
/// here (object_store reads the well-known gcloud credentials file when no file is given, as
/// Google's own libraries do).
#[derive(Debug, Clone)]
pub struct GcsOptions {
    /// The bucket.
    pub bucket: String,
    /// The object name prefix of this replica (Litestream's `path`); may be empty.
    pub prefix: String,
    /// An emulator's `host:port` or URL (Litestream honours `STORAGE_EMULATOR_HOST`): requests
    /// go there over plain HTTP unless a scheme says otherwise, without credentials.
    pub emulator_host: Option<String>,
    /// A service account key or other application default credentials file
    /// (`GOOGLE_APPLICATION_CREDENTIALS`); without one, the gcloud well-known file or the
    /// metadata server of the machine.
    pub credentials_file: Option<PathBuf>,
    /// A PEM bundle of root certificates trusted in addition to the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Chunk size of resumable uploads; files no larger go up in one request. Rounded down to
    /// a multiple of 256 KiB.
    pub part_size: usize,
}

impl GcsOptions {
    /// Options for `bucket` and `prefix`, reaching GCS itself with default credentials.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        GcsOptions {
            bucket: bucket.into(),
            prefix: prefix.into(),
            emulator_host: None,
            credentials_file: None,
            ca_bundle: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// The base URL requests go to.
    pub(crate) fn base_url(&self) -> String {
        match &self.emulator_host {
            Some(host) if host.contains("://") => host.trim_end_matches('/').to_string(),
            Some(host) => format!("http://{}", host.trim_end_matches('/')),
            None => GCS_BASE_URL.to_string(),
        }
    }

    /// The chunk size actually used: at least one aligned unit.
    pub(crate) fn chunk_size(&self) -> usize {
        (self.part_size / CHUNK_ALIGN).max(1) * CHUNK_ALIGN
    }
}

/// The store and key layout of a GCS replica; errors name `replica` and what to fix.
pub(super) fn open(replica: &str, opts: &GcsOptions) -> Result<(Arc<dyn ObjectStore>, Layout)> {
    let bucket_url = format!("gs://{}", opts.bucket);
    let layout = Layout::new(KeyScheme::File, &opts.prefix).map_err(|e| {
        let hint = "fix the replica's `path`: no empty, `.` or `..` segments";
        invalid_config(
            replica,
            format!("{bucket_url}/{}", opts.prefix),
            e.to_string(),
            hint,
        )
    })?;
    let base_url = opts.base_url();
    let client_options = http::client_options(replica, &base_url, opts.ca_bundle.as_deref())?;
    let http = ReqwestConnector::default()
        .connect(&client_options)
        .map_err(|e| {
            invalid_config(replica, base_url.clone(), e.to_string(), "fix the settings")
        })?;
    // An emulator takes no credentials, like Google's libraries with STORAGE_EMULATOR_HOST.
    let credentials = match &opts.emulator_host {
        Some(_) => None,
        None => Some(credentials(opts, client_options).map_err(|e| {
            let hint = "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or \
                        run on a machine with a service account";
            invalid_config(replica, bucket_url.clone(), e.to_string(), hint)
        })?),
    };
    let store = GcsStore {
        inner: Arc::new(Inner {
            http,
            base_url,
            bucket: opts.bucket.clone(),
            credentials,
            chunk_size: opts.chunk_size(),
        }),
    };
    Ok((Arc::new(store), layout))
}

/// object_store's resolution of Google credentials (a key file, the gcloud well-known file, or
/// the metadata server); tokens are fetched lazily and refreshed by it.
fn credentials(
    opts: &GcsOptions,
    client_options: ClientOptions,
) -> object_store::Result<GcpCredentialProvider> {
    let mut builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&opts.bucket)
        .with_client_options(client_options)
        .with_retry(http::retry_config());
    if let Some(path) = &opts.credentials_file {
        builder = builder.with_application_credentials(path.display().to_string());
    }
    Ok(builder.build()?.credentials().clone())
}

/// A GCS bucket over the JSON API.
#[derive(Debug, Clone)]
pub(crate) struct GcsStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    base_url: String,
    bucket: String,
    /// `None` for an emulator.
    credentials: Option<GcpCredentialProvider>,
    chunk_size: usize,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("base_url", &self.base_url)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GCS(gs://{})", self.inner.bucket)
    }
}

/// A GCS failure: an HTTP status with GCS's message, or a request that got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GcsError {
    /// GCS answered with an error status.
    #[error("{message} (HTTP {status})")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// GCS's message, or the status's reason phrase when the body has none.
        message: String,
        /// Whether the bucket itself is what is missing.
        bucket_missing: bool,
    },
    /// The request failed before an answer came.
    #[error("{method} {url}: {source}")]
    Transport {
        /// The request's method.
        method: Method,
        /// The request's URL.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: HttpError,
    },
    /// GCS's answer could not be read.
    #[error("unexpected answer from GCS: {0}")]
    Decode(String),
}

impl GcsError {
    /// Whether this error means the bucket does not exist.
    pub(crate) fn bucket_missing(&self) -> bool {
        matches!(
            self,
            GcsError::Status {
                bucket_missing: true,
                ..
            }
        )
    }
}

/// What a request is about, for mapping its failure onto object_store's errors.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// One object: a 404 means the object is missing.
    Object,
    /// The bucket (listings, uploads): a 404 means the bucket is missing.
    Bucket,
}

/// Retries of transient failures of idempotent requests, as for the other stores.
const MAX_RETRIES: u32 = http::MAX_RETRIES;

impl Inner {
    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base_url,
            encode(&self.bucket),
            encode(name)
        )
    }

    fn bucket_url(&self) -> String {
        format!("{}/storage/v1/b/{}/o", self.base_url, encode(&self.bucket))
    }

    fn upload_url(&self, upload_type: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={upload_type}",
            self.base_url,
            encode(&self.bucket)
        )
    }

    async fn authorization(&self) -> object_store::Result<Option<String>> {
        match &self.credentials {
            Some(provider) => Ok(Some(format!(
                "Bearer {}",
                provider.get_credential().await?.bearer
            ))),
            None => Ok(None),
        }
    }

    /// Sends one request, retrying transient failures when `retry` allows, and turns error
    /// statuses into errors. `build` makes the request afresh for every attempt.
    async fn send(
        &self,
        retry: bool,
        location: &str,
        target: Target,
        build: impl Fn() -> Request<HttpRequestBody>,
    ) -> object_store::Result<HttpResponse> {
        let mut attempt = 0;
        loop {
            let mut request = build();
            if let Some(auth) = self.authorization().await? {
                let value = auth.parse().map_err(|_| {
                    to_store_error(location, target, GcsError::Decode("bad token".into()))
                })?;
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            let (method, url) = (request.method().clone(), request.uri().to_string());
            let error = match self.http.execute(request).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                // 308 is how a resumable upload acknowledges a chunk.
                Ok(response) if response.status().as_u16() == 308 => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let error = status_error(response, target).await;
                    if !(retry && (status.is_server_error() || status.as_u16() == 429)) {
                        return Err(to_store_error(location, target, error));
                    }
                    error
                }
                Err(source) => GcsError::Transport {
                    method,
                    url,
                    source,
                },
            };
            attempt += 1;
            if !retry || attempt > MAX_RETRIES {
                return Err(to_store_error(location, target, error));
            }
            let backoff = Duration::from_millis(100 << (attempt - 1).min(3));
            tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
        }
    }

    /// One page of a listing.
    async fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        page_token: Option<&str>,
    ) -> object_store::Result<ListPage> {
        let mut url = format!("{}?prefix={}", self.bucket_url(), encode(prefix));
        if delimiter {
            url.push_str("&delimiter=%2F");
        }
        if let Some(token) = page_token {
            url.push_str(&format!("&pageToken={}", encode(token)));
        }
        let response = self
            .send(true, prefix, Target::Bucket, || get(&url))
            .await?;
        json_body(response, prefix).await
    }

    /// Uploads a whole object in one `multipart/related` request: metadata, then content.
    async fn put_whole(
        &self,
        name: &str,
        payload: PutPayload,
        attributes: &Attributes,
    ) -> object_store::Result<PutResult> {
        let boundary = "walship-gcs-upload-boundary-7f3a9c";
        let mut body = BytesMut::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n\
                 --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n",
                resource(name, attributes)
            )
            .as_bytes(),
        );
        for chunk in payload.iter() {
            body.extend_from_slice(chunk);
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = body.freeze();
        let url = self.upload_url("multipart");
        let content_type = format!("multipart/related; boundary={boundary}");
        // A retried upload overwrites with the same content: safe to repeat.
        let response = self
            .send(true, name, Target::Bucket, || {
                request(Method::POST, &url)
                    .header(header::CONTENT_TYPE, &content_type)
                    .body(HttpRequestBody::from(body.clone()))
                    .expect("valid request")
            })
            .await?;
        let object: ObjectResource = json_body(response, name).await?;
        Ok(object.put_result())
    }

    /// Starts a resumable upload; returns its session URL.
    async fn start_resumable(
        &self,
        name: &str,
        attributes: &Attributes,
    ) -> object_store::Result<String> {
        let url = self.upload_url("resumable");
        let body = Bytes::from(resource(name, attributes).to_string());
        let response = self
            .send(true, name, Target::Bucket, || {
                request(Method::POST, &url)
                    .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
                    .body(HttpRequestBody::from(body.clone()))
                    .expect("valid request")
            })
            .await?;
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                let e = GcsError::Decode("no session URL for a resumable upload".into());
                to_store_error(name, Target::Bucket, e)
            })?;
        Ok(location.to_string())
    }
}

/// A request without a body.
fn get(url: &str) -> Request<HttpRequestBody> {
    request(Method::GET, url)
        .body(HttpRequestBody::empty())
        .expect("valid request")
}

fn request(method: Method, url: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(url)
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The JSON object resource of an upload: its name and custom metadata.
fn resource(name: &str, attributes: &Attributes) -> serde_json::Value {
    let mut metadata = serde_json::Map::new();
    let mut resource = serde_json::Map::new();
    resource.insert("name".into(), name.into());
    for (key, value) in attributes {
        match key {
            Attribute::Metadata(key) => {
                metadata.insert(key.to_string(), value.as_ref().into());
            }
            Attribute::ContentType => {
                resource.insert("contentType".into(), value.as_ref().into());
            }
            Attribute::CacheControl => {
                resource.insert("cacheControl".into(), value.as_ref().into());
            }
            _ => {}
        }
    }
    if !metadata.is_empty() {
        resource.insert("metadata".into(), metadata.into());
    }
    resource.into()
}

/// GCS's error body: `{"error": {"code": 404, "message": "..."}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

async fn status_error(response: HttpResponse, target: Target) -> GcsError {
    let status = response.status();
    let body = response.into_body().bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error.message)
        .ok()
        .or_else(|| {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            (!text.is_empty() && text.len() < 300 && !text.starts_with('<')).then_some(text)
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let bucket_missing = status == StatusCode::NOT_FOUND
        && (target == Target::Bucket || message.to_ascii_lowercase().contains("bucket"));
    // An emulator may answer without a body; say what a 404 there means.
    let message = match (bucket_missing, status.canonical_reason()) {
        (true, Some(reason)) if message == reason => "the bucket does not exist".to_string(),
        _ => message,
    };
    GcsError::Status {
        status: status.as_u16(),
        message,
        bucket_missing,
    }
}

/// object_store's error for a GCS failure: NotFound for a missing object, PermissionDenied and
/// Unauthenticated for refused credentials, Generic otherwise (the GCS error is the source, so
/// that failure classification can tell a missing bucket).
fn to_store_error(location: &str, target: Target, e: GcsError) -> object_store::Error {
    let path = location.to_string();
    match &e {
        GcsError::Status { status: 404, .. } if target == Target::Object && !e.bucket_missing() => {
            object_store::Error::NotFound {
                path,
                source: Box::new(e),
            }
        }
        GcsError::Status { status: 403, .. } => object_store::Error::PermissionDenied {
            path,
            source: Box::new(e),
        },
        GcsError::Status { status: 401, .. } => object_store::Error::Unauthenticated {
            path,
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: "GCS",
            source: Box::new(e),
        },
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    response: HttpResponse,
    location: &str,
) -> object_store::Result<T> {
    let decode = |cause: String| to_store_error(location, Target::Object, GcsError::Decode(cause));
    let body = response
        .into_body()
        .bytes()
        .await
        .map_err(|e| decode(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| decode(e.to_string()))
}

/// An object as the JSON API describes it (the fields walship uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectResource {
    name: String,
    /// A decimal string, as the JSON API writes 64-bit numbers.
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    time_created: Option<String>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    content_type: Option<String>,
}

impl ObjectResource {
    fn meta(&self) -> object_store::Result<ObjectMeta> {
        let location = Path::parse(&self.name)?;
        let modified = self
            .updated
            .as_deref()
            .or(self.time_created.as_deref())
            .and_then(timestamp::parse_rfc3339)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(ObjectMeta {
            location,
            last_modified: modified.into(),
            size: self
                .size
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            e_tag: self.etag.clone(),
            version: self.generation.clone(),
        })
    }

    fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        for (key, value) in self.metadata.iter().flatten() {
            if let Some(value) = value.as_str() {
                attributes.insert(
                    Attribute::Metadata(key.clone().into()),
                    AttributeValue::from(value.to_string()),
                );
            }
        }
        if let Some(content_type) = &self.content_type {
            attributes.insert(Attribute::ContentType, content_type.clone().into());
        }
        attributes
    }

    fn put_result(&self) -> PutResult {
        PutResult {
            e_tag: self.etag.clone(),
            version: self.generation.clone(),
            extensions: Default::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// object_store lists "under" a prefix: `a/b` lists `a/b/...`.
fn dir_prefix(prefix: Option<&Path>) -> String {
    match prefix {
        Some(p) if !p.as_ref().is_empty() => format!("{}/", p.as_ref()),
        _ => String::new(),
    }
}

// The bodies of the trait's async methods. object_store declares its traits with
// `#[async_trait]`, which walship does not depend on, so the trait impls below box these
// futures by hand, with the lifetimes async_trait would give them.
impl GcsStore {
    async fn put(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner
            .put_whole(location.as_ref(), payload, &opts.attributes)
            .await
    }

    async fn start_upload(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let session = self
            .inner
            .start_resumable(location.as_ref(), &opts.attributes)
            .await?;
        let (turn, _) = watch::channel(0);
        Ok(Box::new(ResumableUpload {
            state: Arc::new(Mutex::new(Session {
                inner: self.inner.clone(),
                url: session,
                name: location.to_string(),
                sent: 0,
                pending: Vec::new(),
                pending_len: 0,
                failed: false,
            })),
            turn: Arc::new(turn),
            parts: 0,
        }))
    }

    async fn fetch(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let name = location.as_ref();
        let url = self.inner.object_url(name);
        if options.head {
            let response = self
                .inner
                .send(true, name, Target::Object, || get(&url))
                .await?;
            let object: ObjectResource = json_body(response, name).await?;
            let meta = object.meta()?;
            options.check_preconditions(&meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                attributes: object.attributes(),
                meta,
                extensions: Default::default(),
            });
        }
        let media = format!("{url}?alt=media");
        let range_header = options.range.as_ref().map(range_header);
        let response = self
            .inner
            .send(true, name, Target::Object, || {
                let mut builder = request(Method::GET, &media);
                if let Some(range) = &range_header {
                    builder = builder.header(header::RANGE, range);
                }
                builder
                    .body(HttpRequestBody::empty())
                    .expect("valid request")
            })
            .await?;
        let (meta, range, attributes) = media_meta(location, response.headers())?;
        options.check_preconditions(&meta)?;
        let path = location.to_string();
        let body = response
            .into_body()
            .bytes_stream()
            .map_err(move |source| object_store::Error::Generic {
                store: "GCS",
                source: Box::new(GcsError::Transport {
                    method: Method::GET,
                    url: path.clone(),
                    source,
                }),
            })
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(body),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        })
    }

    async fn list_dir(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = dir_prefix(prefix);
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut token: Option<String> = None;
        loop {
            let page = self
                .inner
                .list_page(&prefix, true, token.as_deref())
                .await?;
            for item in &page.items {
                result.objects.push(item.meta()?);
            }
            for dir in &page.prefixes {
                result
                    .common_prefixes
                    .push(Path::parse(dir.trim_end_matches('/'))?);
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(result),
            }
        }
    }
}

impl ObjectStore for GcsStore {
    fn put_opts<'a, 'b, 'f>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'f, object_store::Result<PutResult>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(self.put(location, payload, opts))
    }

    fn put_multipart_opts<'a, 'b, 'f>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'f, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(self.start_upload(location, opts))
    }

    fn get_opts<'a, 'b, 'f>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'f, object_store::Result<GetResult>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(self.fetch(location, options))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        locations
            .map(move |location| {
                let inner = inner.clone();
                async move {
                    let location = location?;
                    let url = inner.object_url(location.as_ref());
                    inner
                        .send(true, location.as_ref(), Target::Object, || {
                            request(Method::DELETE, &url)
                                .body(HttpRequestBody::empty())
                                .expect("valid request")
                        })
                        .await?;
                    Ok(location)
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = dir_prefix(prefix);
        // State: the next page token, or `None` once the last page was read.
        stream::try_unfold(Some(None::<String>), move |token| {
            let (inner, prefix) = (inner.clone(), prefix.clone());
            async move {
                let Some(token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = inner.list_page(&prefix, false, token.as_deref()).await?;
                let metas = page
                    .items
                    .iter()
                    .map(ObjectResource::meta)
                    .collect::<object_store::Result<Vec<_>>>()?;
                let next = page.next_page_token.map(Some);
                Ok(Some((stream::iter(metas.into_iter().map(Ok)), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    fn list_with_delimiter<'a, 'b, 'f>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'f, object_store::Result<ListResult>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(self.list_dir(prefix))
    }

    fn copy_opts<'a, 'b, 'c, 'f>(
        &'a self,
        _from: &'b Path,
        _to: &'c Path,
        _options: CopyOptions,
    ) -> BoxFuture<'f, object_store::Result<()>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        // The replica client never copies; nothing here needs GCS's rewrite API.
        Box::pin(async {
            Err(object_store::Error::NotImplemented {
                operation: "copy".into(),
                implementer: "walship's GCS store".into(),
            })
        })
    }
}

fn range_header(range: &GetRange) -> String {
    match range {
        GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
        GetRange::Offset(start) => format!("bytes={start}-"),
        GetRange::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// What a media download's headers say about the object.
fn media_meta(
    location: &Path,
    headers: &HeaderMap,
) -> object_store::Result<(ObjectMeta, std::ops::Range<u64>, Attributes)> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let length: u64 = text("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // `Content-Range: bytes START-END/TOTAL` on a ranged answer.
    let (range, size) = match text("content-range").and_then(parse_content_range) {
        Some((start, end, total)) => (start..end + 1, total),
        None => {
            let size = text("x-goog-stored-content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(length);
            (0..size, size)
        }
    };
    let modified = text("last-modified")
        .and_then(http::parse_http_date)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut attributes = Attributes::new();
    for (name, value) in headers {
        if let (Some(key), Ok(value)) = (name.as_str().strip_prefix("x-goog-meta-"), value.to_str())
        {
            attributes.insert(
                Attribute::Metadata(key.to_string().into()),
                value.to_string().into(),
            );
        }
    }
    let meta = ObjectMeta {
        location: location.clone(),
        last_modified: modified.into(),
        size,
        e_tag: text("etag").map(str::to_string),
        version: text("x-goog-generation").map(str::to_string),
    };
    Ok((meta, range, attributes))
}

fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (span, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

/// A resumable upload: GCS takes its chunks one after another, in order, each but the last a
/// multiple of 256 KiB. Parts handed in by object_store's `WriteMultipart` are therefore queued
/// and sent in turn, and the last chunk is held back until `complete` says it is the last.
#[derive(Debug)]
struct ResumableUpload {
    state: Arc<Mutex<Session>>,
    /// The number of the part whose turn it is to be queued.
    turn: Arc<watch::Sender<usize>>,
    /// Parts handed out so far.
    parts: usize,
}

#[derive(Debug)]
struct Session {
    inner: Arc<Inner>,
    url: String,
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
        let chunk = self.inner.chunk_size;
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
            .inner
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

    fn broken(&self) -> object_store::Error {
        let e = GcsError::Decode("an earlier chunk of this resumable upload failed".into());
        to_store_error(&self.name, Target::Bucket, e)
    }
}

impl ResumableUpload {
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
            .inner
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::client::TIMESTAMP_METADATA_KEY;

    #[test]
    fn object_names_are_encoded_whole() {
        assert_eq!(encode("db/ltx/0/a b.ltx"), "db%2Fltx%2F0%2Fa%20b.ltx");
        assert_eq!(encode("x-y_z.~"), "x-y_z.~");
    }

    #[test]
    fn emulator_hosts_become_base_urls() {
        let mut opts = GcsOptions::new("b", "p");
        assert_eq!(opts.base_url(), GCS_BASE_URL);
        opts.emulator_host = Some("127.0.0.1:9023".into());
        assert_eq!(opts.base_url(), "http://127.0.0.1:9023");
        opts.emulator_host = Some("https://gcs.test/".into());
        assert_eq!(opts.base_url(), "https://gcs.test");
    }

    #[test]
    fn chunks_are_aligned() {
        let mut opts = GcsOptions::new("b", "p");
        assert_eq!(opts.chunk_size() % CHUNK_ALIGN, 0);
        opts.part_size = 1;
        assert_eq!(opts.chunk_size(), CHUNK_ALIGN);
        opts.part_size = 3 * CHUNK_ALIGN + 5;
        assert_eq!(opts.chunk_size(), 3 * CHUNK_ALIGN);
    }

    #[test]
    fn upload_resources_carry_metadata() {
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(TIMESTAMP_METADATA_KEY.into()),
            "2023-11-14T22:13:20.123Z".into(),
        );
        let json = resource("db/ltx/0/x.ltx", &attributes);
        assert_eq!(
            json,
            serde_json::json!({"name": "db/ltx/0/x.ltx",
                "metadata": {"litestream-timestamp": "2023-11-14T22:13:20.123Z"}})
        );
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
