//! The [`ObjectStore`] over GCS's JSON API: puts, gets (metadata or media), deletes and listings.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http::{header, HeaderMap, Method};
use object_store::client::HttpRequestBody;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload,
    ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};

use super::api::{get, request, Api};
use super::error::{GcsError, Target};
use super::resource::{json_body, ObjectResource};
use super::upload::ResumableUpload;
use crate::replica::http::parse_http_date;

/// A GCS bucket over the JSON API.
#[derive(Debug)]
pub(crate) struct GcsStore {
    api: Arc<Api>,
}

impl GcsStore {
    /// The store that reaches its bucket through `api`.
    pub(super) fn new(api: Api) -> Self {
        GcsStore { api: Arc::new(api) }
    }
}

impl fmt::Display for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GCS(gs://{})", self.api.bucket)
    }
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
        self.api
            .put_whole(location.as_ref(), payload, &opts.attributes)
            .await
    }

    async fn start_upload(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let session = self
            .api
            .start_resumable(location.as_ref(), &opts.attributes)
            .await?;
        Ok(Box::new(ResumableUpload::new(
            self.api.clone(),
            session,
            location.to_string(),
        )))
    }

    async fn fetch(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let name = location.as_ref();
        let url = self.api.object_url(name);
        if options.head {
            let response = self
                .api
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
            .api
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
            let page = self.api.list_page(&prefix, true, token.as_deref()).await?;
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
        let api = self.api.clone();
        locations
            .map(move |location| {
                let api = api.clone();
                async move {
                    let location = location?;
                    let url = api.object_url(location.as_ref());
                    api.send(true, location.as_ref(), Target::Object, || {
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
        let api = self.api.clone();
        let prefix = dir_prefix(prefix);
        // State: the next page token, or `None` once the last page was read.
        stream::try_unfold(Some(None::<String>), move |token| {
            let (api, prefix) = (api.clone(), prefix.clone());
            async move {
                let Some(token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = api.list_page(&prefix, false, token.as_deref()).await?;
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

/// The `Range` header of a ranged get.
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
        .and_then(parse_http_date)
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

/// The start, end (inclusive) and total size of a `Content-Range: bytes START-END/TOTAL`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (span, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
