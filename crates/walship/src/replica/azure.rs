//! Azure Blob Storage (`abs`) replicas: options, and the object_store client built from them.
//!
//! Keys follow Litestream's non-S3 layout (`<path>/ltx/<level>/<min>-<max>.ltx`) in the
//! container. Azure metadata names must be C# identifiers, so the creation time goes into
//! `litestreamtimestamp`, the name Litestream's abs client writes and reads.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::ObjectStore;

use super::client::{DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE};
use super::failure::invalid_config;
use super::http;
use super::layout::{KeyScheme, Layout};
use crate::Result;

/// The metadata name holding an LTX file's creation time on Azure (no hyphens allowed there).
pub const AZURE_TIMESTAMP_METADATA_KEY: &str = "litestreamtimestamp";

/// How to reach an Azure Blob Storage replica. Every setting is explicit: nothing is read from
/// the environment here.
#[derive(Clone)]
pub struct AbsOptions {
    /// The storage account; needed unless the endpoint names it.
    pub account_name: Option<String>,
    /// The container (Litestream's `bucket`).
    pub container: String,
    /// The blob name prefix of this replica (Litestream's `path`); may be empty.
    pub prefix: String,
    /// The service URL (Azurite's `http://127.0.0.1:10000/devstoreaccount1`, a sovereign
    /// cloud); `https://<account>.blob.core.windows.net` when `None`.
    pub endpoint: Option<String>,
    /// The account's shared key.
    pub account_key: Option<String>,
    /// A SAS token, which wins over the account key as in Litestream.
    pub sas_token: Option<String>,
    /// A service principal (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), used
    /// when neither key nor token is set; without one, the machine's managed identity.
    pub service_principal: Option<ServicePrincipal>,
    /// A PEM bundle of root certificates trusted in addition to the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Size of the blocks of a block upload; files no larger go up in one request.
    pub part_size: usize,
    /// Blocks in flight per upload.
    pub concurrency: usize,
}

/// An Azure AD application's credentials.
#[derive(Clone)]
pub struct ServicePrincipal {
    /// The application (client) ID.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// The directory (tenant) ID.
    pub tenant_id: String,
}

impl AbsOptions {
    /// Options for `container` and `prefix`, with defaults for everything else.
    pub fn new(container: impl Into<String>, prefix: impl Into<String>) -> Self {
        AbsOptions {
            account_name: None,
            container: container.into(),
            prefix: prefix.into(),
            endpoint: None,
            account_key: None,
            sas_token: None,
            service_principal: None,
            ca_bundle: None,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// The service URL requests go to.
    pub(crate) fn endpoint_url(&self) -> Option<String> {
        match (&self.endpoint, &self.account_name) {
            (Some(endpoint), _) => Some(endpoint.trim_end_matches('/').to_string()),
            (None, Some(account)) => Some(format!("https://{account}.blob.core.windows.net")),
            (None, None) => None,
        }
    }

    /// The account: as given, or read from the endpoint (`https://ACCOUNT.blob...` or a
    /// path-style `http://host:port/ACCOUNT`).
    fn account(&self) -> Option<String> {
        if let Some(account) = &self.account_name {
            return Some(account.clone());
        }
        let endpoint = self.endpoint.as_deref()?;
        let rest = endpoint
            .split_once("://")
            .map_or(endpoint, |(_, rest)| rest);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let from_path = path.split('/').next().filter(|s| !s.is_empty());
        let from_host = host
            .split_once(".blob.")
            .map(|(account, _)| account)
            .filter(|s| !s.is_empty());
        from_path.or(from_host).map(str::to_string)
    }

    /// How the replica is named in messages: `abs://[account@]container/`.
    pub(crate) fn location_base(&self) -> String {
        match &self.account_name {
            Some(account) => format!("abs://{account}@{}/", self.container),
            None => format!("abs://{}/", self.container),
        }
    }
}

impl fmt::Debug for AbsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials never reach logs: only whether they are set.
        let redacted = |v: bool| v.then_some("<redacted>");
        f.debug_struct("AbsOptions")
            .field("account_name", &self.account_name)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("account_key", &redacted(self.account_key.is_some()))
            .field("sas_token", &redacted(self.sas_token.is_some()))
            .field(
                "service_principal",
                &self.service_principal.as_ref().map(|p| &p.client_id),
            )
            .field("ca_bundle", &self.ca_bundle)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// The store and key layout of an abs replica; errors name `replica` and what to fix.
pub(super) fn open(replica: &str, opts: &AbsOptions) -> Result<(Arc<dyn ObjectStore>, Layout)> {
    let base = opts.location_base();
    let invalid = |cause: String, hint: &str| invalid_config(replica, base.clone(), cause, hint);
    let layout = Layout::new(KeyScheme::File, &opts.prefix).map_err(|e| {
        invalid(
            e.to_string(),
            "fix the replica's `path`: no empty, `.` or `..` segments",
        )
    })?;
    let (Some(account), Some(endpoint)) = (opts.account(), opts.endpoint_url()) else {
        return Err(invalid(
            "no storage account: it is needed to reach the container".into(),
            "set account-name, or write the URL as abs://ACCOUNT@CONTAINER/PATH",
        ));
    };
    let client_options = http::client_options(replica, &endpoint, opts.ca_bundle.as_deref())?;
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(&account)
        .with_container_name(&opts.container)
        .with_endpoint(endpoint)
        .with_client_options(client_options)
        .with_retry(http::retry_config());
    if let Some(sas) = &opts.sas_token {
        builder = builder.with_config(AzureConfigKey::SasKey, sas.trim_start_matches('?'));
    } else if let Some(key) = &opts.account_key {
        builder = builder.with_access_key(key);
    } else if let Some(principal) = &opts.service_principal {
        builder = builder
            .with_client_id(&principal.client_id)
            .with_client_secret(&principal.client_secret)
            .with_tenant_id(&principal.tenant_id);
    }
    let store = builder.build().map_err(|e| {
        invalid(
            e.to_string(),
            "check account-key (or LITESTREAM_AZURE_ACCOUNT_KEY): it is the base64 key of the \
             storage account; or sas-token (LITESTREAM_AZURE_SAS_TOKEN)",
        )
    })?;
    Ok((Arc::new(store), layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_come_from_the_options_or_the_endpoint() {
        let mut opts = AbsOptions::new("c", "db");
        assert_eq!(opts.account(), None);
        opts.endpoint = Some("http://127.0.0.1:10000/devstoreaccount1".into());
        assert_eq!(opts.account().as_deref(), Some("devstoreaccount1"));
        opts.endpoint = Some("https://acct.blob.core.usgovcloudapi.net".into());
        assert_eq!(opts.account().as_deref(), Some("acct"));
        opts.account_name = Some("named".into());
        assert_eq!(opts.account().as_deref(), Some("named"));
        opts.endpoint = None;
        assert_eq!(
            opts.endpoint_url().as_deref(),
            Some("https://named.blob.core.windows.net")
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut opts = AbsOptions::new("c", "db");
        opts.account_key = Some("c2VjcmV0LWtleQ==".into());
        opts.sas_token = Some("sv=2020&sig=abc".into());
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("sig=abc"),
            "{shown}"
        );
    }
}
