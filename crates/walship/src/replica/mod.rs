//! A replica: the storage a database's LTX files are shipped to, and the client that reaches it.

pub mod client;
mod durable;
mod failure;
mod layout;
mod s3;
pub mod timestamp;
pub mod uploader;

use std::path::PathBuf;

use crate::config::{Backend, Env, ReplicaConfig};
use crate::Result;
use client::{ReplicaClient, S3Options};

/// Builds the client for a configured replica. `env` supplies what the config leaves to the
/// environment: the session token and the CA bundle (`AWS_CA_BUNDLE`).
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
        other => Err(failure::invalid_config(
            &cfg.name,
            other.type_name().to_string(),
            format!("{} replicas are not supported yet", other.type_name()),
            "use a file or s3 replica for now",
        )),
    }
}
