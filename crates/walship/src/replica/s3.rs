//! S3 (and S3-compatible) replicas: options, and the object_store client built from them.
//!
//! Every option is set explicitly; `AmazonS3Builder::from_env` is never used, so nothing is
//! read from the environment behind the caller's back.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;

use super::client::{DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE};
use super::failure::invalid_config;
use super::http;
use super::layout::{KeyScheme, Layout};
use crate::Result;

/// How to reach an S3 (or S3-compatible) replica. Every setting is explicit: nothing is read
/// from the environment, so the caller decides where credentials and CA bundles come from.
#[derive(Clone)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The key prefix of this replica (Litestream's `path`); slashes at either end are ignored.
    pub prefix: String,
    /// The bucket's region; `us-east-1` when empty.
    pub region: String,
    /// A custom endpoint URL (MinIO, R2, a test server); AWS itself when `None`.
    pub endpoint: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`) instead of the host name.
    pub force_path_style: bool,
    /// The access key ID; without one, object_store asks the EC2/ECS metadata service.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
    /// Accept any TLS certificate (Litestream's `skip-verify`).
    pub skip_verify: bool,
    /// A PEM bundle of root certificates trusted in addition to the system's (`AWS_CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    /// Sign request payloads; some S3-compatible stores need unsigned payloads.
    pub sign_payload: bool,
    /// Size of multipart upload parts; files no larger go up in one PUT.
    pub part_size: usize,
    /// Parts in flight per upload; an upload holds about `(concurrency + 1) * part_size` bytes.
    pub concurrency: usize,
}

impl S3Options {
    /// Options for `bucket` and `prefix`, with Litestream's defaults for everything else.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            endpoint: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            skip_verify: false,
            ca_bundle: None,
            sign_payload: true,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// The endpoint URL requests go to, for messages.
    pub(crate) fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region()),
        }
    }

    fn region(&self) -> &str {
        match self.region.as_str() {
            "" => "us-east-1",
            region => region,
        }
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials never reach logs: only whether they are set.
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("skip_verify", &self.skip_verify)
            .field("ca_bundle", &self.ca_bundle)
            .field("sign_payload", &self.sign_payload)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// The store and key layout of an S3 replica; errors name `replica` and what to fix.
pub(super) fn open(replica: &str, opts: &S3Options) -> Result<(Arc<dyn ObjectStore>, Layout)> {
    let bucket_url = format!("s3://{}", opts.bucket);
    let layout = Layout::new(KeyScheme::S3, &opts.prefix).map_err(|e| {
        let hint = "fix the replica's `path`: no empty, `.` or `..` segments";
        let location = format!("{bucket_url}/{}", opts.prefix);
        invalid_config(replica, location, e.to_string(), hint)
    })?;
    let client = http::client_options(replica, &opts.endpoint_url(), opts.ca_bundle.as_deref())?
        .with_allow_invalid_certificates(opts.skip_verify);
    let store = builder(opts)
        .with_client_options(client)
        .with_retry(http::retry_config())
        .build()
        .map_err(|e| invalid_config(replica, bucket_url, e.to_string(), "fix the S3 settings"))?;
    Ok((Arc::new(store), layout))
}

/// The S3 builder with every option set explicitly (never `from_env`).
fn builder(opts: &S3Options) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&opts.bucket)
        .with_region(opts.region())
        .with_virtual_hosted_style_request(!opts.force_path_style)
        .with_unsigned_payload(!opts.sign_payload);
    if let Some(endpoint) = &opts.endpoint {
        let endpoint = endpoint.trim_end_matches('/');
        builder = builder.with_endpoint(if opts.force_path_style {
            endpoint.to_string()
        } else {
            virtual_hosted_endpoint(endpoint, &opts.bucket)
        });
    }
    if let Some(id) = &opts.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &opts.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &opts.session_token {
        builder = builder.with_token(token);
    }
    builder
}

/// object_store expects a virtual-hosted endpoint to name the bucket already; Litestream (the
/// AWS SDK) puts the bucket in front of the endpoint's host itself.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, host)) => format!("{scheme}://{bucket}.{host}"),
        None => format!("https://{bucket}.{endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::client::ReplicaClient;

    #[test]
    fn virtual_hosted_endpoints_name_the_bucket() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.filebase.com", "b"),
            "https://b.s3.filebase.com"
        );
        assert_eq!(
            virtual_hosted_endpoint("minio:9000", "b"),
            "https://b.minio:9000"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut opts = S3Options::new("bucket", "db");
        opts.access_key_id = Some("AKIDEXAMPLE".into());
        opts.secret_access_key = Some("hunter2".into());
        opts.session_token = Some("tok".into());
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("AKIDEXAMPLE")
                && !shown.contains("hunter2")
                && !shown.contains("tok\""),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_bad_ca_bundle_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, "not a certificate").unwrap();
        let mut opts = S3Options::new("bucket", "db");
        opts.ca_bundle = Some(bundle.clone());
        let err = ReplicaClient::s3("main", &opts).unwrap_err().to_string();
        assert!(err.contains("replica \"main\""), "{err}");
        assert!(err.contains(&bundle.display().to_string()), "{err}");
        assert!(err.contains("AWS_CA_BUNDLE"), "{err}");
    }

    #[test]
    fn the_system_ca_bundle_loads() {
        // These machines point AWS_CA_BUNDLE at the system bundle; any PEM bundle will do.
        let bundle = std::env::var_os("AWS_CA_BUNDLE").map_or_else(
            || "/etc/ssl/certs/ca-certificates.crt".into(),
            PathBuf::from,
        );
        let mut opts = S3Options::new("bucket", "db");
        opts.ca_bundle = Some(bundle);
        ReplicaClient::s3("main", &opts).unwrap();
    }

    #[test]
    fn bad_prefixes_are_rejected_at_construction() {
        let err = ReplicaClient::s3("main", &S3Options::new("bucket", "a//b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3://bucket/a//b"), "{err}");
    }
}
