//! Replicas: their settings (per replica, or top-level defaults), URLs and credentials, resolved
//! into one typed backend each.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::env::{expand_path, Env};
use super::error::ConfigError;
use super::fields::Fields;
use super::url::{self, Kind, Provider, ReplicaUrl, S3Host, S3Query};

/// How often a replica uploads new LTX files unless set (Litestream's default).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How many L0 files a replica uploads per pass unless set; 0 means all.
pub const DEFAULT_MAX_SYNC_LTX_FILES: usize = 256;

/// A credential: `Debug` and `Display` print `[redacted]`, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One live replica of a database.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaConfig {
    /// Unique within its database: `name:` if given, else the type, numbered when repeated.
    pub name: String,
    /// Where the replica lives.
    pub backend: Backend,
    /// How often new LTX files are uploaded.
    pub sync_interval: Duration,
    /// At most this many L0 files per upload pass; 0 means all.
    pub max_sync_ltx_files: usize,
    /// Whether to reset local state on missing or corrupt local LTX files.
    pub auto_recover: bool,
}

/// The storage a replica writes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// A directory on a local or mounted file system.
    File {
        /// The replica's root directory.
        path: PathBuf,
    },
    /// Amazon S3 or an S3-compatible store.
    S3(S3Config),
    /// Google Cloud Storage.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The object name prefix; may be empty.
        path: String,
    },
    /// Azure Blob Storage.
    Abs(AbsConfig),
}

impl Backend {
    /// Litestream's type name for this backend: file, s3, gs or abs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Backend::File { .. } => "file",
            Backend::S3(_) => "s3",
            Backend::Gcs { .. } => "gs",
            Backend::Abs(_) => "abs",
        }
    }
}

/// An S3 or S3-compatible replica.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    /// The bucket (or access point ARN).
    pub bucket: String,
    /// The key prefix; never empty.
    pub path: String,
    /// The region; unset means look it up (AWS) or us-east-1 (other endpoints).
    pub region: Option<String>,
    /// The endpoint URL of an S3-compatible service, with its scheme; unset for AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual-hosted.
    pub force_path_style: bool,
    /// The access key id: config, else `LITESTREAM_ACCESS_KEY_ID`, else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<Secret>,
    /// The secret key: config, else `LITESTREAM_SECRET_ACCESS_KEY`, else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Secret>,
    /// Skip TLS certificate verification.
    pub skip_verify: bool,
    /// Sign request payloads (rather than UNSIGNED-PAYLOAD).
    pub sign_payload: bool,
    /// Send Content-MD5 where S3 requires it.
    pub require_content_md5: bool,
    /// The storage class of uploaded objects.
    pub storage_class: Option<String>,
    /// The multipart upload part size in bytes.
    pub part_size: Option<u64>,
    /// How many parts upload at once.
    pub concurrency: Option<usize>,
    /// Server-side encryption.
    pub sse: Option<ServerSideEncryption>,
}

/// S3 server-side encryption.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerSideEncryption {
    /// SSE-C with the customer's own AES256 key.
    Customer(CustomerKey),
    /// SSE-KMS with this key id.
    Kms {
        /// The KMS key id or ARN.
        key_id: String,
    },
}

/// Where an SSE-C key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerKey {
    /// The base64 key itself.
    Inline(Secret),
    /// A file holding the base64 key, read when the replica starts.
    File(PathBuf),
}

/// An Azure Blob Storage replica.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsConfig {
    /// The storage account; from `account-name:` or the URL's user part.
    pub account_name: Option<String>,
    /// The account key: config, else `LITESTREAM_AZURE_ACCOUNT_KEY`.
    pub account_key: Option<Secret>,
    /// A SAS token: config, else `LITESTREAM_AZURE_SAS_TOKEN`.
    pub sas_token: Option<Secret>,
    /// The container (Litestream's `bucket:`).
    pub container: String,
    /// The blob name prefix; may be empty.
    pub path: String,
    /// A non-default service endpoint.
    pub endpoint: Option<String>,
}

/// Replica settings as one mapping writes them: a replica's own, or the top level's defaults.
#[derive(Default)]
pub(super) struct Settings {
    sync_interval: Option<Duration>,
    max_sync_ltx_files: Option<usize>,
    auto_recover: Option<bool>,
    access_key_id: Option<Secret>,
    secret_access_key: Option<Secret>,
    region: Option<String>,
    bucket: Option<String>,
    endpoint: Option<String>,
    force_path_style: Option<bool>,
    sign_payload: Option<bool>,
    require_content_md5: Option<bool>,
    skip_verify: Option<bool>,
    storage_class: Option<String>,
    part_size: Option<u64>,
    concurrency: Option<usize>,
    sse_customer_algorithm: Option<String>,
    sse_customer_key: Option<Secret>,
    sse_customer_key_path: Option<PathBuf>,
    sse_kms_key_id: Option<String>,
    account_name: Option<String>,
    account_key: Option<Secret>,
    sas_token: Option<Secret>,
}

impl Settings {
    /// Reads the replica settings of `fields`; `age:` is refused.
    pub(super) fn read(fields: &Fields, env: &dyn Env) -> Result<Self, ConfigError> {
        if fields.has("age") {
            let why = "age encryption was removed in Litestream 0.5 and walship does not have it";
            return Err(fields.key_error("age", why).hint(
                "remove age:, and encrypt at rest with the store's own encryption (sse-* settings \
                 on S3)",
            ));
        }
        let f = fields;
        Ok(Self {
            sync_interval: f.interval("sync-interval")?,
            max_sync_ltx_files: f.number("max-sync-ltx-files")?,
            auto_recover: f.boolean("auto-recover")?,
            access_key_id: f.secret("access-key-id")?,
            secret_access_key: f.secret("secret-access-key")?,
            region: f.string("region")?,
            bucket: f.string("bucket")?,
            endpoint: f.string("endpoint")?,
            force_path_style: f.boolean("force-path-style")?,
            sign_payload: f.boolean("sign-payload")?,
            require_content_md5: f.boolean("require-content-md5")?,
            skip_verify: f.boolean("skip-verify")?,
            storage_class: f.string("storage-class")?,
            part_size: f.size("part-size")?,
            concurrency: f.number("concurrency")?,
            sse_customer_algorithm: f.string("sse-customer-algorithm")?,
            sse_customer_key: f.secret("sse-customer-key")?,
            sse_customer_key_path: f.path("sse-customer-key-path", env)?,
            sse_kms_key_id: f.string("sse-kms-key-id")?,
            account_name: f.string("account-name")?,
            account_key: f.secret("account-key")?,
            sas_token: f.secret("sas-token")?,
        })
    }
}

/// The replica's own value if set, else the top-level default.
fn either<T: Clone>(own: &Option<T>, default: &Option<T>) -> Option<T> {
    own.clone().or_else(|| default.clone())
}

/// Keys that only some backends take, with the backends that take them.
fn backends_of(key: &str) -> Option<&'static [Kind]> {
    const S3: &[Kind] = &[Kind::S3];
    Some(match key {
        "bucket" => &[Kind::S3, Kind::Gs, Kind::Abs],
        "endpoint" => &[Kind::S3, Kind::Abs],
        "account-name" | "account-key" | "sas-token" => &[Kind::Abs],
        k if k.starts_with("sse-") => S3,
        "region"
        | "force-path-style"
        | "access-key-id"
        | "secret-access-key"
        | "sign-payload"
        | "require-content-md5"
        | "skip-verify"
        | "storage-class"
        | "part-size"
        | "concurrency" => S3,
        _ => return None,
    })
}

/// A replica read from its mapping, before it gets its final name.
pub(super) struct Draft {
    /// The `name:` given, if any.
    pub(super) name: Option<String>,
    pub(super) replica: ReplicaConfig,
}

/// Reads one replica mapping; `defaults` are the top level's replica settings, and `under_dir`
/// says whether it serves a directory of databases.
pub(super) fn read(
    fields: &Fields,
    defaults: &Settings,
    under_dir: bool,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Draft, ConfigError> {
    let own = Settings::read(fields, env)?;
    if let Some(text) = fields.string("path")?.filter(|p| url::is_url(p)) {
        return Err(fields
            .error("path", format!("{text:?} is a URL, not a path"))
            .hint("put it in url: instead"));
    }
    let url = match fields.string("url")? {
        Some(text) => Some(url::parse(&text).map_err(|e| fields.error("url", e))?),
        None => None,
    };
    let kind = kind(fields, url.as_ref(), warnings)?;
    check_applicable(fields, kind, url.is_some())?;
    let backend = match kind {
        Kind::File => file(fields, url.as_ref(), env)?,
        Kind::S3 => Backend::S3(s3(fields, url.as_ref(), &own, defaults, under_dir, env)?),
        Kind::Gs => gcs(fields, url.as_ref(), &own, defaults)?,
        Kind::Abs => Backend::Abs(abs(fields, url.as_ref(), &own, defaults, env)?),
    };
    let name = fields.string("name")?;
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(fields.error("name", "must not be empty"));
    }
    Ok(Draft {
        name,
        replica: ReplicaConfig {
            name: kind.name().to_owned(),
            backend,
            sync_interval: either(&own.sync_interval, &defaults.sync_interval)
                .unwrap_or(DEFAULT_SYNC_INTERVAL),
            max_sync_ltx_files: either(&own.max_sync_ltx_files, &defaults.max_sync_ltx_files)
                .unwrap_or(DEFAULT_MAX_SYNC_LTX_FILES),
            auto_recover: either(&own.auto_recover, &defaults.auto_recover).unwrap_or(false),
        },
    })
}

/// The backend kind: the URL's scheme wins over `type:`, which defaults to file.
fn kind(
    fields: &Fields,
    url: Option<&ReplicaUrl>,
    warnings: &mut Vec<String>,
) -> Result<Kind, ConfigError> {
    let typed = fields.string("type")?;
    match (url, typed) {
        (Some(url), Some(typed)) => {
            if typed != url.kind.name() {
                warnings.push(format!(
                    "{}: type {typed:?} ignored: the url's scheme makes this a {} replica",
                    fields.place().key("type"),
                    url.kind.name()
                ));
            }
            Ok(url.kind)
        }
        (Some(url), None) => Ok(url.kind),
        (None, Some(typed)) => Kind::parse(&typed).map_err(|e| fields.error("type", e)),
        (None, None) => Ok(Kind::File),
    }
}

/// Fails on a key of the replica's own that its backend does not use (`bucket:` on a file
/// replica, say), and on `url:` given together with the `path:` or `bucket:` it already holds.
fn check_applicable(fields: &Fields, kind: Kind, has_url: bool) -> Result<(), ConfigError> {
    for key in fields.keys() {
        if has_url && (key == "path" || (key == "bucket" && kind != Kind::File)) {
            return Err(fields
                .key_error(&key, format!("url: and {key}: cannot both be set"))
                .hint(format!(
                    "the URL already holds the {key}: remove {key}: or put it in the URL"
                )));
        }
        if backends_of(&key).is_some_and(|kinds| !kinds.contains(&kind)) {
            let err = fields.key_error(&key, format!("not a setting of {} replicas", kind.name()));
            return Err(if kind == Kind::File && !fields.has("type") && !has_url {
                err.hint("a replica without type: or url: is a file replica; set type: or url:")
            } else {
                err
            });
        }
    }
    Ok(())
}

fn file(fields: &Fields, url: Option<&ReplicaUrl>, env: &dyn Env) -> Result<Backend, ConfigError> {
    let path = match url {
        Some(url) => Some(expand_path(&url.path, env).map_err(|e| fields.error("url", e))?),
        None => fields.path("path", env)?,
    };
    match path.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Ok(Backend::File { path }),
        None => Err(fields
            .whole_error("a file replica needs a directory")
            .hint("set path: to a directory, or url: to file:///absolute/dir")),
    }
}

/// Why and how to give an S3 replica a key prefix.
const EMPTY_PREFIX_HINT: &str = "give a prefix such as s3://bucket/db or path: db; walship does \
    not write at the bucket root, where Litestream's key layout is not well defined";

fn s3(
    fields: &Fields,
    url: Option<&ReplicaUrl>,
    own: &Settings,
    defaults: &Settings,
    under_dir: bool,
    env: &dyn Env,
) -> Result<S3Config, ConfigError> {
    let host = match url {
        Some(u) if u.host.starts_with("arn:") => S3Host {
            bucket: u.host.clone(),
            region: url::arn_region(&u.host),
            ..S3Host::default()
        },
        Some(u) => url::parse_s3_host(&u.host),
        None => S3Host::default(),
    };
    let query = match url {
        Some(u) => url::parse_s3_query(&u.query).map_err(|e| fields.error("url", e))?,
        None => S3Query::default(),
    };
    let bucket = own
        .bucket
        .clone()
        .or(Some(host.bucket).filter(|b| !b.is_empty()))
        .or_else(|| defaults.bucket.clone())
        .ok_or_else(|| {
            fields
                .whole_error("no bucket for this s3 replica")
                .hint("set url: s3://BUCKET/PATH, or bucket: and path:")
        })?;
    let path = match url {
        Some(u) => u.path.clone(),
        None => fields.string("path")?.unwrap_or_default(),
    };
    // Under a directory each database's relative path is appended, so the root is never used.
    if path.is_empty() && !under_dir {
        let at = fields
            .place()
            .key(if url.is_some() { "url" } else { "path" });
        let err = ConfigError::about(&at, "the s3 path (key prefix) is empty");
        return Err(err.hint(EMPTY_PREFIX_HINT));
    }
    let sse = sse(fields, own, defaults, &query)?;
    let endpoint = own
        .endpoint
        .clone()
        .or(query.endpoint)
        .or(host.endpoint)
        .or_else(|| defaults.endpoint.clone())
        .or_else(|| env.non_empty("LITESTREAM_S3_ENDPOINT"))
        .map(|e| url::with_scheme(&e));
    let provider = endpoint.as_deref().map_or(Provider::Other, url::provider);
    let force_path_style = own
        .force_path_style
        .or(query.force_path_style)
        .or(defaults.force_path_style)
        .or((provider == Provider::PathStyle).then_some(true))
        .or(host.force_path_style)
        .unwrap_or(endpoint.is_some());
    let credential = |own: &Option<Secret>, default: &Option<Secret>, vars: [&str; 2]| {
        either(own, default).or_else(|| vars.iter().find_map(|v| env.non_empty(v)).map(Secret::new))
    };
    Ok(S3Config {
        bucket,
        path,
        region: own
            .region
            .clone()
            .or(query.region)
            .or(host.region)
            .or_else(|| defaults.region.clone()),
        force_path_style,
        access_key_id: credential(
            &own.access_key_id,
            &defaults.access_key_id,
            ["LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"],
        ),
        secret_access_key: credential(
            &own.secret_access_key,
            &defaults.secret_access_key,
            ["LITESTREAM_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"],
        ),
        skip_verify: own
            .skip_verify
            .or(query.skip_verify)
            .or(defaults.skip_verify)
            .unwrap_or(false),
        sign_payload: own
            .sign_payload
            .or(query.sign_payload)
            .or(defaults.sign_payload)
            .unwrap_or(true),
        require_content_md5: own
            .require_content_md5
            .or(query.require_content_md5)
            .or(defaults.require_content_md5)
            .unwrap_or(provider != Provider::Tigris),
        storage_class: own
            .storage_class
            .clone()
            .or(query.storage_class)
            .or_else(|| defaults.storage_class.clone()),
        part_size: own.part_size.or(query.part_size).or(defaults.part_size),
        concurrency: own
            .concurrency
            .or(query.concurrency)
            .or(defaults.concurrency)
            .or((provider == Provider::R2).then_some(2)),
        endpoint,
        sse,
    })
}

/// Server-side encryption from the settings and URL: SSE-C (AES256 only) or SSE-KMS, not both.
fn sse(
    fields: &Fields,
    own: &Settings,
    defaults: &Settings,
    query: &S3Query,
) -> Result<Option<ServerSideEncryption>, ConfigError> {
    let algorithm = own
        .sse_customer_algorithm
        .clone()
        .or(query.sse_customer_algorithm.clone())
        .or_else(|| defaults.sse_customer_algorithm.clone());
    let inline = either(&own.sse_customer_key, &defaults.sse_customer_key)
        .or(query.sse_customer_key.clone().map(Secret::new));
    let file = either(&own.sse_customer_key_path, &defaults.sse_customer_key_path);
    let kms = own
        .sse_kms_key_id
        .clone()
        .or(query.sse_kms_key_id.clone())
        .or_else(|| defaults.sse_kms_key_id.clone());
    let customer = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(
                fields.whole_error("set sse-customer-key or sse-customer-key-path, not both")
            )
        }
        (Some(key), None) => Some(CustomerKey::Inline(key)),
        (None, Some(path)) => Some(CustomerKey::File(path)),
        (None, None) => None,
    };
    if let Some(algorithm) = algorithm.filter(|a| a != "AES256") {
        return Err(fields.whole_error(format!(
            "sse-customer-algorithm {algorithm:?} is not supported: S3 takes only AES256"
        )));
    }
    match (customer, kms) {
        (Some(_), Some(_)) => Err(fields.whole_error(
            "sse-customer-key and sse-kms-key-id exclude each other: choose SSE-C or SSE-KMS",
        )),
        (Some(key), None) => Ok(Some(ServerSideEncryption::Customer(key))),
        (None, Some(key_id)) => Ok(Some(ServerSideEncryption::Kms { key_id })),
        (None, None) => Ok(None),
    }
}

fn gcs(
    fields: &Fields,
    url: Option<&ReplicaUrl>,
    own: &Settings,
    defaults: &Settings,
) -> Result<Backend, ConfigError> {
    let bucket = bucket_of(fields, url, own, defaults, "gs")?;
    no_query(fields, url, "gs")?;
    let path = match url {
        Some(u) => u.path.clone(),
        None => fields.string("path")?.unwrap_or_default(),
    };
    Ok(Backend::Gcs { bucket, path })
}

fn abs(
    fields: &Fields,
    url: Option<&ReplicaUrl>,
    own: &Settings,
    defaults: &Settings,
    env: &dyn Env,
) -> Result<AbsConfig, ConfigError> {
    let container = bucket_of(fields, url, own, defaults, "abs")?;
    no_query(fields, url, "abs")?;
    let path = match url {
        Some(u) => u.path.clone(),
        None => fields.string("path")?.unwrap_or_default(),
    };
    let from_env = |var: &str| env.non_empty(var).map(Secret::new);
    Ok(AbsConfig {
        account_name: own
            .account_name
            .clone()
            .or(url.and_then(|u| u.user.clone()))
            .or_else(|| defaults.account_name.clone()),
        account_key: either(&own.account_key, &defaults.account_key)
            .or_else(|| from_env("LITESTREAM_AZURE_ACCOUNT_KEY")),
        sas_token: either(&own.sas_token, &defaults.sas_token)
            .or_else(|| from_env("LITESTREAM_AZURE_SAS_TOKEN")),
        container,
        path,
        endpoint: either(&own.endpoint, &defaults.endpoint),
    })
}

/// Refuses query parameters on a gs or abs URL: Litestream reads none there (it would silently
/// drop an `?endpoint=`), so a setting put there would be lost.
fn no_query(fields: &Fields, url: Option<&ReplicaUrl>, kind: &str) -> Result<(), ConfigError> {
    match url.and_then(|u| u.query.first()) {
        Some((name, _)) => Err(fields
            .error(
                "url",
                format!("{kind} URLs take no query parameters, but this one has {name:?}"),
            )
            .hint("set it as a key of the replica next to url: (endpoint:, account-name: ...)")),
        None => Ok(()),
    }
}

/// The bucket of a gs or abs replica: its own `bucket:`, the URL's host, or the default.
fn bucket_of(
    fields: &Fields,
    url: Option<&ReplicaUrl>,
    own: &Settings,
    defaults: &Settings,
    kind: &str,
) -> Result<String, ConfigError> {
    own.bucket
        .clone()
        .or(url.map(|u| u.host.clone()).filter(|h| !h.is_empty()))
        .or_else(|| defaults.bucket.clone())
        .ok_or_else(|| {
            fields
                .whole_error(format!("no bucket for this {kind} replica"))
                .hint(format!(
                    "set url: {kind}://BUCKET/PATH, or bucket: and path:"
                ))
        })
}

#[cfg(test)]
mod tests {
    use crate::config::{Backend, Config};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn gs_and_abs_urls_take_no_query_parameters() {
        for url in ["gs://b/db?x=1", "abs://acct@c/db?endpoint=http%3A%2F%2Fh"] {
            let err = Config::from_args("/tmp/a.db", &[url], &no_env)
                .unwrap_err()
                .to_string();
            assert!(err.contains("URLs take no query parameters"), "{err}");
        }
    }

    #[test]
    fn gs_and_abs_urls_as_litestream_reads_them() {
        let config = Config::from_args("/tmp/a.db", &["gs://b"], &no_env).unwrap();
        let want = Backend::Gcs {
            bucket: "b".into(),
            path: String::new(),
        };
        assert_eq!(config.dbs[0].replicas[0].backend, want);
        let env = |name: &str| (name == "LITESTREAM_AZURE_ACCOUNT_KEY").then(|| "a2V5".to_string());
        let config = Config::from_args("/tmp/a.db", &["abs://acct@c/team/db"], &env).unwrap();
        let Backend::Abs(abs) = &config.dbs[0].replicas[0].backend else {
            panic!("not abs");
        };
        assert_eq!(abs.account_name.as_deref(), Some("acct"));
        assert_eq!(
            (abs.container.as_str(), abs.path.as_str()),
            ("c", "team/db")
        );
        assert_eq!(abs.account_key.as_ref().map(|k| k.expose()), Some("a2V5"));
    }
}
