//! Requests to GCS's JSON API: URLs, authorization, sending with retries, and the calls that
//! list objects and start uploads.

use std::fmt;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request};
use object_store::client::{HttpClient, HttpRequestBody, HttpResponse};
use object_store::gcp::GcpCredentialProvider;
use object_store::{Attributes, PutPayload, PutResult};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::{status_error, to_store_error, GcsError, Target};
use super::resource::{json_body, resource, ListPage, ObjectResource};
use crate::replica::http::{backoff, MAX_RETRIES};

/// Characters kept as they are in a URL path segment or query value; everything else,
/// `/` included, is percent-encoded, as object names in the JSON API must be.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A bucket's JSON API: where it is, how to reach it, and the credentials to send.
pub(super) struct Api {
    /// The HTTP client, with the timeouts and CA bundle of the replica's settings.
    pub(super) http: HttpClient,
    /// GCS's or an emulator's base URL, without a trailing `/`.
    pub(super) base_url: String,
    /// The bucket.
    pub(super) bucket: String,
    /// `None` for an emulator.
    pub(super) credentials: Option<GcpCredentialProvider>,
    /// The size of a resumable upload's chunks: a multiple of 256 KiB.
    pub(super) chunk_size: usize,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("base_url", &self.base_url)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The URL of object `name`'s resource.
    pub(super) fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base_url,
            encode(&self.bucket),
            encode(name)
        )
    }

    /// The URL of the bucket's objects, which listings get.
    fn bucket_url(&self) -> String {
        format!("{}/storage/v1/b/{}/o", self.base_url, encode(&self.bucket))
    }

    /// The URL that starts an upload of `upload_type` (`multipart` or `resumable`).
    fn upload_url(&self, upload_type: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={upload_type}",
            self.base_url,
            encode(&self.bucket)
        )
    }

    /// The `Authorization` header's value; `None` for an emulator.
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
    pub(super) async fn send(
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
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// One page of a listing.
    pub(super) async fn list_page(
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
    pub(super) async fn put_whole(
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
    pub(super) async fn start_resumable(
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

/// A GET request without a body.
pub(super) fn get(url: &str) -> Request<HttpRequestBody> {
    request(Method::GET, url)
        .body(HttpRequestBody::empty())
        .expect("valid request")
}

/// A request to `url`, for the caller to add headers and a body to.
pub(super) fn request(method: Method, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// `text` as one URL path segment or query value.
fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_encoded_whole() {
        assert_eq!(encode("db/ltx/0/a b.ltx"), "db%2Fltx%2F0%2Fa%20b.ltx");
        assert_eq!(encode("x-y_z.~"), "x-y_z.~");
    }
}
