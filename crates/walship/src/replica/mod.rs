//! A replica: the storage a database's LTX files are shipped to, and the client that reaches it.

mod azure;
pub mod client;
mod durable;
mod failure;
mod gcs;
mod http;
mod layout;
mod s3;
pub mod timestamp;
pub mod uploader;

use std::path::PathBuf;

use crate::config::{AbsConfig, Backend, Env, ReplicaConfig};
use crate::Result;
use client::{AbsOptions, GcsOptions, ReplicaClient, S3Options, ServicePrincipal};

/// Builds the client for a configured replica. `env` supplies what the config leaves to the
/// environment: the S3 session token, the CA bundle (`AWS_CA_BUNDLE`), and for GCS the emulator
/// (`STORAGE_EMULATOR_HOST`) and credentials file (`GOOGLE_APPLICATION_CREDENTIALS`), for Azure
/// a service principal (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), as the
/// Google and Azure libraries Litestream uses read them.
pub fn client_for(cfg: &ReplicaConfig, env: &dyn Env) -> Result<ReplicaClient> {
    match &cfg.backend {
        Backend::File { path } => ReplicaClient::file(&cfg.name, path),
        Backend::S3(s3) => {
            let mut opts = S3Options::new(&s3.bucket, &s3.path);
            if let Some(region) = &s3.region {
                opts.region = region.clone();
            }
            opts.endpoint = s3.endpoint.clone();
            opts.force_path_style = s3.force_path_style;
            opts.access_key_id = s3.access_key_id.as_ref().map(|s| s.expose().to_string());
            opts.secret_access_key = s3
                .secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string());
            opts.session_token = env.non_empty("AWS_SESSION_TOKEN");
            opts.skip_verify = s3.skip_verify;
            opts.ca_bundle = env.non_empty("AWS_CA_BUNDLE").map(PathBuf::from);
            opts.sign_payload = s3.sign_payload;
            if let Some(size) = s3.part_size {
                opts.part_size = size as usize;
            }
            if let Some(n) = s3.concurrency {
                opts.concurrency = n;
            }
            ReplicaClient::s3(&cfg.name, &opts)
        }
        Backend::Gcs { bucket, path } => {
            let mut opts = GcsOptions::new(bucket, path);
            opts.emulator_host = env.non_empty("STORAGE_EMULATOR_HOST");
            opts.credentials_file = env
                .non_empty("GOOGLE_APPLICATION_CREDENTIALS")
                .map(PathBuf::from);
            opts.ca_bundle = env.non_empty("AWS_CA_BUNDLE").map(PathBuf::from);
            ReplicaClient::gcs(&cfg.name, &opts)
        }
        Backend::Abs(abs) => ReplicaClient::abs(&cfg.name, &abs_options(abs, env)),
    }
}

fn abs_options(abs: &AbsConfig, env: &dyn Env) -> AbsOptions {
    let mut opts = AbsOptions::new(&abs.container, &abs.path);
    opts.account_name = abs.account_name.clone();
    opts.endpoint = abs.endpoint.clone();
    opts.account_key = abs.account_key.as_ref().map(|s| s.expose().to_string());
    opts.sas_token = abs.sas_token.as_ref().map(|s| s.expose().to_string());
    let var = |name: &str| env.non_empty(name);
    if let (Some(client_id), Some(client_secret), Some(tenant_id)) = (
        var("AZURE_CLIENT_ID"),
        var("AZURE_CLIENT_SECRET"),
        var("AZURE_TENANT_ID"),
    ) {
        opts.service_principal = Some(ServicePrincipal {
            client_id,
            client_secret,
            tenant_id,
        });
    }
    opts.ca_bundle = env.non_empty("AWS_CA_BUNDLE").map(PathBuf::from);
    opts
}
