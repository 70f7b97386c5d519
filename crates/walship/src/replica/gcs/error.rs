//! GCS's failures: error answers read into [`GcsError`], and mapped onto object_store's errors
//! so that the replica client and failure classification see them like any other store's.

use http::{Method, StatusCode};
use object_store::client::{HttpError, HttpResponse};
use serde::Deserialize;

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
pub(super) enum Target {
    /// One object: a 404 means the object is missing.
    Object,
    /// The bucket (listings, uploads): a 404 means the bucket is missing.
    Bucket,
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

/// The [`GcsError`] of an error answer, with GCS's message when its body has one.
pub(super) async fn status_error(response: HttpResponse, target: Target) -> GcsError {
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
pub(super) fn to_store_error(location: &str, target: Target, e: GcsError) -> object_store::Error {
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
