//! Turning storage and I/O failures into a kind, a short cause and a hint for [`ReplicaError`].
//!
//! [`ReplicaError`]: crate::error::ReplicaError

use std::error::Error as StdError;
use std::io;

use object_store::client::{HttpError, HttpErrorKind};

use super::gcs::GcsError;
use crate::error::{ReplicaError, ReplicaErrorKind, ReplicaOp};
use crate::Error;

/// S3 and Azure error codes that mean the credentials are wrong or lack a permission.
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    // Azure's.
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "InsufficientAccountPermissions",
    "InvalidAuthenticationInfo",
    "NoAuthenticationInformation",
];

/// S3 and Azure error codes that mean the bucket (container) does not exist.
const BUCKET_MISSING_CODES: &[&str] = &["NoSuchBucket", "ContainerNotFound"];

/// What to tell the user for the common failures of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Hints {
    bucket_missing: Option<String>,
    access_denied: String,
    unreachable: Option<String>,
}

impl Hints {
    /// Hints for an S3 bucket behind `endpoint`.
    pub(crate) fn s3(endpoint: &str) -> Self {
        Hints {
            bucket_missing: Some("create the bucket or fix `bucket`".into()),
            access_denied: "check access-key-id/secret-access-key or \
                            LITESTREAM_ACCESS_KEY_ID/LITESTREAM_SECRET_ACCESS_KEY \
                            (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                .into(),
            unreachable: Some(format!("is the endpoint {endpoint} reachable?")),
        }
    }

    /// Hints for a GCS bucket behind `base_url`, an emulator's if `emulator`.
    pub(crate) fn gcs(base_url: &str, emulator: bool) -> Self {
        let unreachable = if emulator {
            format!("is the emulator at {base_url} (STORAGE_EMULATOR_HOST) running?")
        } else {
            format!("is {base_url} reachable from this machine?")
        };
        Hints {
            bucket_missing: Some("create the bucket or fix the bucket in the replica URL".into()),
            access_denied: "check GOOGLE_APPLICATION_CREDENTIALS (a service account key file) or \
                            the machine's service account: it needs to create, read, list and \
                            delete objects in the bucket (roles/storage.objectAdmin)"
                .into(),
            unreachable: Some(unreachable),
        }
    }

    /// Hints for an Azure Blob Storage container behind `endpoint`.
    pub(crate) fn abs(endpoint: &str) -> Self {
        Hints {
            bucket_missing: Some(
                "create the container or fix `bucket` (the container name in abs://ACCOUNT@CONTAINER/PATH)"
                    .into(),
            ),
            access_denied: "check account-name and account-key (or LITESTREAM_AZURE_ACCOUNT_KEY), \
                            or sas-token (LITESTREAM_AZURE_SAS_TOKEN)"
                .into(),
            unreachable: Some(format!("is the endpoint {endpoint} reachable?")),
        }
    }

    /// Hints for a replica directory on the local file system.
    pub(crate) fn dir(root: &std::path::Path) -> Self {
        Hints {
            bucket_missing: None,
            access_denied: format!(
                "check that walship may write to {} and its subdirectories",
                root.display()
            ),
            unreachable: None,
        }
    }

    /// Hints for a store handed in ready-made.
    pub(crate) fn store() -> Self {
        Hints {
            bucket_missing: Some("create the bucket or fix `bucket`".into()),
            access_denied: "check the replica's credentials".into(),
            unreachable: Some("is the endpoint reachable?".into()),
        }
    }

    /// The hint for a kind of failure, if there is a useful one.
    pub(crate) fn for_kind(&self, kind: ReplicaErrorKind) -> Option<String> {
        match kind {
            ReplicaErrorKind::BucketMissing => self.bucket_missing.clone(),
            ReplicaErrorKind::AccessDenied => Some(self.access_denied.clone()),
            ReplicaErrorKind::Unreachable => self.unreachable.clone(),
            _ => None,
        }
    }
}

/// An error for options that cannot work, found while opening a replica.
pub(crate) fn invalid_config(replica: &str, location: String, cause: String, hint: &str) -> Error {
    Error::from(ReplicaError {
        replica: replica.to_string(),
        op: ReplicaOp::Open,
        location,
        kind: ReplicaErrorKind::InvalidConfig,
        cause,
        hint: Some(hint.to_string()),
    })
}

/// The kind and a short cause of an object store failure.
pub(crate) fn classify_store(e: &object_store::Error) -> (ReplicaErrorKind, String) {
    let text = e.to_string();
    let code = xml_element(&text, "Code");
    let gcs = sources(e).find_map(|s| s.downcast_ref::<GcsError>());
    let kind = match (e, code) {
        (_, Some(code)) if BUCKET_MISSING_CODES.contains(&code) => ReplicaErrorKind::BucketMissing,
        _ if gcs.is_some_and(GcsError::bucket_missing) => ReplicaErrorKind::BucketMissing,
        (_, Some(code)) if ACCESS_CODES.contains(&code) => ReplicaErrorKind::AccessDenied,
        (object_store::Error::NotFound { .. }, _) => ReplicaErrorKind::NotFound,
        (
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
            _,
        ) => ReplicaErrorKind::AccessDenied,
        _ if is_unreachable(e) => ReplicaErrorKind::Unreachable,
        _ => ReplicaErrorKind::Other,
    };
    let cause = match gcs {
        // GCS's own message says it best; the transport failures read as the others do.
        Some(gcs @ GcsError::Status { .. }) => gcs.to_string(),
        _ => summary(e, &text, code),
    };
    (kind, cause)
}

/// The kind and cause of a local file system failure.
pub(crate) fn classify_io(e: &io::Error) -> (ReplicaErrorKind, String) {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ReplicaErrorKind::NotFound,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            ReplicaErrorKind::AccessDenied
        }
        _ => ReplicaErrorKind::Other,
    };
    (kind, e.to_string())
}

/// S3 answers with an XML body whose code and message say it best; a missing object needs no
/// more words; a transport failure is best told by its innermost cause plus what object_store
/// says about retries.
fn summary(e: &object_store::Error, text: &str, code: Option<&str>) -> String {
    if let Some(code) = code {
        // Azure's messages go on with `RequestId:` and `Time:` lines that help nobody here.
        return match xml_element(text, "Message").and_then(|m| m.lines().next()) {
            Some(message) => format!("{code}: {message}"),
            None => code.to_string(),
        };
    }
    if let object_store::Error::NotFound { .. } = e {
        // object_store's text repeats the key and, for the file system, says it twice more.
        return "no such object".into();
    }
    match http_error(e) {
        Some(http) => format!("{} ({})", innermost(http), retry_context(text)),
        None => text.to_string(),
    }
}

/// The text of the first `<name>…</name>` element, as S3 error bodies carry them.
fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&format!("</{name}>"))?;
    Some(&text[start..start + len])
}

/// object_store's own account of the request ("Error performing PUT … in 1.2s, after 3
/// retries …"), without the repeated cause.
fn retry_context(text: &str) -> &str {
    let start = text.find("Error performing").unwrap_or(0);
    let end = text[start..].find(" - ").map_or(text.len(), |i| start + i);
    text[start..end].trim_end()
}

fn sources(e: &object_store::Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    std::iter::successors(e.source(), |e| (*e).source())
}

fn http_error(e: &object_store::Error) -> Option<&HttpError> {
    sources(e).find_map(|s| s.downcast_ref::<HttpError>())
}

fn innermost(e: &(dyn StdError + 'static)) -> String {
    std::iter::successors(Some(e), |e| (*e).source())
        .last()
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn is_unreachable(e: &object_store::Error) -> bool {
    let http = http_error(e)
        .is_some_and(|h| matches!(h.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout));
    http || sources(e).any(|s| {
        s.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(body: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Error performing PUT http://127.0.0.1:9/b/k in 2ms - Server returned non-2xx \
                 status code: 404 Not Found: {body}"
            )
            .into(),
        }
    }

    #[test]
    fn s3_error_codes_decide_the_kind() {
        let (kind, cause) = classify_store(&generic(
            "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
             <Message>The specified bucket does not exist</Message></Error>",
        ));
        assert_eq!(kind, ReplicaErrorKind::BucketMissing);
        assert_eq!(cause, "NoSuchBucket: The specified bucket does not exist");

        let (kind, _) = classify_store(&generic(
            "<Error><Code>InvalidAccessKeyId</Code><Message>no</Message></Error>",
        ));
        assert_eq!(kind, ReplicaErrorKind::AccessDenied);
    }

    #[test]
    fn azure_error_codes_decide_the_kind() {
        let (kind, cause) = classify_store(&generic(
            "<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code>\
             <Message>The specified container does not exist.</Message></Error>",
        ));
        assert_eq!(kind, ReplicaErrorKind::BucketMissing);
        assert_eq!(
            cause,
            "ContainerNotFound: The specified container does not exist."
        );
        let (kind, _) = classify_store(&generic(
            "<Error><Code>AuthenticationFailed</Code><Message>no</Message></Error>",
        ));
        assert_eq!(kind, ReplicaErrorKind::AccessDenied);
    }

    #[test]
    fn gcs_errors_tell_a_missing_bucket() {
        let missing = object_store::Error::Generic {
            store: "GCS",
            source: Box::new(GcsError::Status {
                status: 404,
                message: "The specified bucket does not exist.".into(),
                bucket_missing: true,
            }),
        };
        assert_eq!(
            classify_store(&missing),
            (
                ReplicaErrorKind::BucketMissing,
                "The specified bucket does not exist. (HTTP 404)".into()
            )
        );
    }

    #[test]
    fn object_store_variants_decide_otherwise() {
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        };
        assert_eq!(classify_store(&denied).0, ReplicaErrorKind::AccessDenied);
        let missing = object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        };
        assert_eq!(
            classify_store(&missing),
            (ReplicaErrorKind::NotFound, "no such object".into())
        );
        let (kind, cause) = classify_store(&generic("oops"));
        assert_eq!(kind, ReplicaErrorKind::Other);
        assert!(cause.contains("oops"), "{cause}");
    }

    #[test]
    fn connection_failures_are_unreachable() {
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(classify_store(&refused).0, ReplicaErrorKind::Unreachable);
    }

    #[test]
    fn hints_follow_the_kind() {
        let hints = Hints::s3("http://127.0.0.1:9");
        assert_eq!(
            hints.for_kind(ReplicaErrorKind::BucketMissing).as_deref(),
            Some("create the bucket or fix `bucket`")
        );
        assert!(hints
            .for_kind(ReplicaErrorKind::AccessDenied)
            .unwrap()
            .contains("LITESTREAM_ACCESS_KEY_ID"));
        assert_eq!(
            hints.for_kind(ReplicaErrorKind::Unreachable).as_deref(),
            Some("is the endpoint http://127.0.0.1:9 reachable?")
        );
        assert_eq!(hints.for_kind(ReplicaErrorKind::Other), None);
    }
}
