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
//!
//! This file holds the options and the construction of the store; the rest is split by layer:
//! `api` sends requests, `error` maps GCS's error answers, `resource` holds the JSON resources,
//! `store` implements [`ObjectStore`] and `upload` the resumable upload behind `put_multipart`.

mod api;
mod error;
mod resource;
mod store;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use object_store::{ClientOptions, ObjectStore};

use self::api::Api;
pub(crate) use self::error::GcsError;
use self::store::GcsStore;
use super::client::DEFAULT_PART_SIZE;
use super::failure::invalid_config;
use super::http::{client_options, retry_config};
use super::layout::{KeyScheme, Layout};
use crate::Result;

/// Where GCS's JSON API lives.
pub const GCS_BASE_URL: &str = "https://storage.googleapis.com";

/// Resumable upload chunks other than the last must be multiples of this (GCS's rule).
const CHUNK_ALIGN: usize = 256 * 1024;

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
    let options = client_options(replica, &base_url, opts.ca_bundle.as_deref())?;
    let http = ReqwestConnector::default().connect(&options).map_err(|e| {
        invalid_config(replica, base_url.clone(), e.to_string(), "fix the settings")
    })?;
    // An emulator takes no credentials, like Google's libraries with STORAGE_EMULATOR_HOST.
    let credentials = match &opts.emulator_host {
        Some(_) => None,
        None => Some(credentials(opts, options).map_err(|e| {
            let hint = "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or \
                        run on a machine with a service account";
            invalid_config(replica, bucket_url.clone(), e.to_string(), hint)
        })?),
    };
    let store = GcsStore::new(Api {
        http,
        base_url,
        bucket: opts.bucket.clone(),
        credentials,
        chunk_size: opts.chunk_size(),
    });
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
        .with_retry(retry_config());
    if let Some(path) = &opts.credentials_file {
        builder = builder.with_application_credentials(path.display().to_string());
    }
    Ok(builder.build()?.credentials().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
