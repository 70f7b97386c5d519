//! Replica URLs as Litestream 0.5 reads them: `file:///dir` or a plain path, `s3://bucket/prefix`
//! with its query parameters, `gs://bucket/path`, `abs://[account@]container/path`.

use percent_encoding::percent_decode_str;

use super::keys::{nearest, SUPPORTED_TYPES};
use super::values::parse_bool;

/// The backends walship supports, by Litestream's type name (which is also the URL scheme).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    File,
    S3,
    Gs,
    Abs,
}

impl Kind {
    /// The kind named by a `type:` value or URL scheme; Litestream's other backends are refused.
    pub(super) fn parse(name: &str) -> Result<Kind, String> {
        Ok(match name {
            "file" => Kind::File,
            "s3" => Kind::S3,
            "gs" => Kind::Gs,
            "abs" => Kind::Abs,
            "sftp" | "webdav" | "webdavs" | "nats" | "oss" => {
                return Err(format!(
                    "walship does not support {name} replicas; {SUPPORTED_TYPES}"
                ))
            }
            _ => {
                let guess = nearest(name, &["file", "s3", "gs", "abs"])
                    .map(|near| format!(" (did you mean {near:?}?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown replica type {name:?}{guess}; {SUPPORTED_TYPES}"
                ));
            }
        })
    }

    /// The type name, which is also the default replica name.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::S3 => "s3",
            Kind::Gs => "gs",
            Kind::Abs => "abs",
        }
    }
}

/// A replica URL split into the parts the backends use.
#[derive(Debug, PartialEq)]
pub(super) struct ReplicaUrl {
    pub(super) kind: Kind,
    /// Bucket or container, with any `:port`; empty for files.
    pub(super) host: String,
    /// The account name before `@` (Azure).
    pub(super) user: Option<String>,
    /// For files the directory; otherwise the key prefix, cleaned, without a leading slash.
    pub(super) path: String,
    /// Decoded query parameters in order.
    pub(super) query: Vec<(String, String)>,
}

/// Whether `text` has a URL scheme (`word://`); anything else is a file path.
pub(super) fn is_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Splits a replica URL; a plain path stands for a file replica in that directory.
pub(super) fn parse(text: &str) -> Result<ReplicaUrl, String> {
    if !is_url(text) {
        return Ok(ReplicaUrl {
            kind: Kind::File,
            host: String::new(),
            user: None,
            path: text.to_owned(),
            query: Vec::new(),
        });
    }
    // Compared as bytes: the 9th byte may fall inside a multi-byte character.
    let prefix = b"s3://arn:";
    if text.len() > prefix.len() && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return parse_access_point(&text[5..]);
    }
    let url = url::Url::parse(text).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    let kind = Kind::parse(url.scheme())?;
    let path = decode(url.path());
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if kind == Kind::File {
        if !matches!(url.host_str(), None | Some("" | "localhost")) {
            return Err(format!(
                "file URL {text:?} names a host; write file:///absolute/dir or a plain path"
            ));
        }
        if !query.is_empty() {
            return Err(format!("file URL {text:?} takes no query parameters"));
        }
        return Ok(ReplicaUrl {
            kind,
            host: String::new(),
            user: None,
            path,
            query,
        });
    }
    let host = url.host_str().unwrap_or_default();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let user = Some(decode(url.username())).filter(|u| !u.is_empty());
    Ok(ReplicaUrl {
        kind,
        host,
        user,
        path: clean(&path),
        query,
    })
}

/// `s3://arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME/prefix`: the ARN up to the access point's
/// name is the bucket, which the standard URL syntax cannot hold.
fn parse_access_point(text: &str) -> Result<ReplicaUrl, String> {
    let (arn_and_path, query) = match text.split_once('?') {
        Some((before, query)) => (
            before,
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ),
        None => (text, Vec::new()),
    };
    let marker = ":accesspoint/";
    let name_start = arn_and_path
        .to_ascii_lowercase()
        .find(marker)
        .map(|i| i + marker.len())
        .filter(|start| *start < arn_and_path.len())
        .ok_or_else(|| format!("invalid S3 access point ARN {arn_and_path:?}"))?;
    let (bucket, path) = match arn_and_path[name_start..].split_once('/') {
        Some((name, path)) => (&arn_and_path[..name_start + name.len()], path),
        None => (arn_and_path, ""),
    };
    Ok(ReplicaUrl {
        kind: Kind::S3,
        host: bucket.to_owned(),
        user: None,
        path: clean(&decode(path)),
        query,
    })
}

/// The region field of an ARN (`arn:aws:s3:REGION:...`).
pub(super) fn arn_region(arn: &str) -> Option<String> {
    arn.split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// A path cleaned as Go's `path.Clean` does, made relative: no `.`, `..`, empty segments or
/// leading slash; the root becomes the empty string.
fn clean(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.join("/")
}

/// What an `s3://` host says, as Litestream's `s3.ParseHost` reads provider host names.
#[derive(Debug, Default, PartialEq)]
pub(super) struct S3Host {
    pub(super) bucket: String,
    pub(super) region: Option<String>,
    pub(super) endpoint: Option<String>,
    /// Set when the host implies an addressing style.
    pub(super) force_path_style: Option<bool>,
}

/// Reads bucket, region and endpoint from an S3 URL host such as `bucket.s3.REGION.amazonaws.com`
/// or MinIO's `bucket.host:port`; a plain host is the bucket.
pub(super) fn parse_s3_host(host: &str) -> S3Host {
    let some = |s: &str| Some(s.to_owned());
    if host.contains(':') && !host.contains(".com") {
        return match host.split_once('.') {
            Some((bucket, rest)) => S3Host {
                bucket: bucket.to_owned(),
                region: some("us-east-1"),
                endpoint: Some(format!("http://{rest}")),
                force_path_style: Some(true),
            },
            None => S3Host {
                endpoint: Some(format!("http://{host}")),
                force_path_style: Some(true),
                ..S3Host::default()
            },
        };
    }
    if let Some(stem) = host.strip_suffix(".amazonaws.com") {
        let regional = stem
            .rsplit_once('.')
            .and_then(|(left, region)| Some((left.strip_suffix(".s3")?, region)));
        if let Some((bucket, region)) = regional.filter(|(b, _)| !b.is_empty()) {
            return S3Host {
                bucket: bucket.to_owned(),
                region: some(region),
                ..S3Host::default()
            };
        }
        if let Some(bucket) = stem.strip_suffix(".s3").filter(|b| !b.is_empty()) {
            return S3Host {
                bucket: bucket.to_owned(),
                ..S3Host::default()
            };
        }
    }
    if let Some(stem) = host.strip_suffix(".digitaloceanspaces.com") {
        let (bucket, region) = stem.rsplit_once('.').unwrap_or(("", stem));
        return S3Host {
            bucket: bucket.to_owned(),
            region: some(region),
            endpoint: Some(format!("https://{region}.digitaloceanspaces.com")),
            force_path_style: Some(false),
        };
    }
    let provider = |suffix: &str| {
        let (left, region) = host.strip_suffix(suffix)?.rsplit_once('.')?;
        let bucket = if left == "s3" {
            ""
        } else {
            left.strip_suffix(".s3")?
        };
        Some((bucket.to_owned(), region.to_owned()))
    };
    if let Some((bucket, region)) = provider(".backblazeb2.com") {
        let endpoint = Some(format!("https://s3.{region}.backblazeb2.com"));
        return S3Host {
            bucket,
            region: Some(region),
            endpoint,
            force_path_style: Some(true),
        };
    }
    if let Some((bucket, region)) = provider(".scw.cloud") {
        let endpoint = Some(format!("s3.{region}.scw.cloud"));
        return S3Host {
            bucket,
            region: Some(region),
            endpoint,
            force_path_style: Some(false),
        };
    }
    if host == "s3.filebase.com" || host.ends_with(".s3.filebase.com") {
        return S3Host {
            bucket: host
                .strip_suffix(".s3.filebase.com")
                .unwrap_or("")
                .to_owned(),
            endpoint: some("s3.filebase.com"),
            force_path_style: Some(false),
            ..S3Host::default()
        };
    }
    S3Host {
        bucket: host.to_owned(),
        ..S3Host::default()
    }
}

/// The settings an `s3://` URL's query may carry (Litestream's names, camelCase or kebab-case).
#[derive(Debug, Default, PartialEq)]
pub(super) struct S3Query {
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) force_path_style: Option<bool>,
    pub(super) skip_verify: Option<bool>,
    pub(super) sign_payload: Option<bool>,
    pub(super) require_content_md5: Option<bool>,
    pub(super) storage_class: Option<String>,
    pub(super) part_size: Option<u64>,
    pub(super) concurrency: Option<usize>,
    pub(super) sse_customer_algorithm: Option<String>,
    pub(super) sse_customer_key: Option<String>,
    pub(super) sse_kms_key_id: Option<String>,
}

/// Every query parameter an S3 URL accepts.
const S3_QUERY_KEYS: &[&str] = &[
    "endpoint",
    "region",
    "forcePathStyle",
    "force-path-style",
    "skipVerify",
    "skip-verify",
    "signPayload",
    "sign-payload",
    "requireContentMD5",
    "require-content-md5",
    "storageClass",
    "storage-class",
    "partSize",
    "part-size",
    "concurrency",
    "sseCustomerAlgorithm",
    "sse-customer-algorithm",
    "sseCustomerKey",
    "sse-customer-key",
    "sseKmsKeyId",
    "sse-kms-key-id",
];

/// Reads an S3 URL's query parameters; unknown names and bad values are errors.
pub(super) fn parse_s3_query(pairs: &[(String, String)]) -> Result<S3Query, String> {
    let mut q = S3Query::default();
    for (name, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
        let text = || Some(value.clone());
        match name.as_str() {
            "endpoint" => q.endpoint = text(),
            "region" => q.region = text(),
            "forcePathStyle" | "force-path-style" => q.force_path_style = Some(flag(name, value)?),
            "skipVerify" | "skip-verify" => q.skip_verify = Some(flag(name, value)?),
            "signPayload" | "sign-payload" => q.sign_payload = Some(flag(name, value)?),
            "requireContentMD5" | "require-content-md5" => {
                q.require_content_md5 = Some(flag(name, value)?)
            }
            "storageClass" | "storage-class" => q.storage_class = text(),
            "partSize" | "part-size" => q.part_size = Some(positive(name, value)?),
            "concurrency" => q.concurrency = Some(positive(name, value)?),
            "sseCustomerAlgorithm" | "sse-customer-algorithm" => q.sse_customer_algorithm = text(),
            "sseCustomerKey" | "sse-customer-key" => q.sse_customer_key = text(),
            "sseKmsKeyId" | "sse-kms-key-id" => q.sse_kms_key_id = text(),
            _ => {
                let guess = nearest(name, S3_QUERY_KEYS)
                    .map(|near| format!("; did you mean {near:?}?"))
                    .unwrap_or_default();
                return Err(format!("unknown query parameter {name:?}{guess}"));
            }
        }
    }
    Ok(q)
}

/// A boolean query value: Litestream's true/1/t/yes and false/0/f/no, or YAML's words.
fn flag(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" => Ok(true),
        "0" | "f" => Ok(false),
        lower => parse_bool(lower)
            .ok_or_else(|| format!("query parameter {name}={value:?}: expected true or false")),
    }
}

/// A positive whole number in a query value.
fn positive<T: TryFrom<u64>>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            format!("query parameter {name}={value:?}: expected a positive whole number")
        })
}

/// The host of an endpoint URL or `host:port`, lower-cased.
fn endpoint_host(endpoint: &str) -> String {
    let lower = endpoint.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// The endpoint with a scheme: `http://` for local and private addresses, else `https://`.
pub(super) fn with_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_owned();
    }
    let host = endpoint_host(endpoint);
    let name = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(name, _)| name);
    let private_172 = name
        .strip_prefix("172.")
        .and_then(|rest| rest.split('.').next()?.parse::<u8>().ok())
        .is_some_and(|octet| (16..=31).contains(&octet));
    let local = name == "localhost"
        || name == "127.0.0.1"
        || name.starts_with("10.")
        || name.starts_with("192.168.")
        || private_172
        || name.ends_with(".local")
        || name.ends_with(".localhost");
    let scheme = if local { "http" } else { "https" };
    format!("{scheme}://{endpoint}")
}

/// S3-compatible services whose defaults differ from AWS's, recognised by endpoint as Litestream
/// does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Provider {
    /// Filebase, Backblaze B2, Supabase and MinIO-like `host:port` servers need path-style URLs.
    PathStyle,
    /// Tigris rejects Content-MD5 requirements.
    Tigris,
    /// Cloudflare R2 limits concurrent multipart uploads.
    R2,
    Other,
}

/// The kind of S3-compatible service at `endpoint`.
pub(super) fn provider(endpoint: &str) -> Provider {
    let host = endpoint_host(endpoint);
    let known_cloud = [
        ".amazonaws.com",
        ".digitaloceanspaces.com",
        ".backblazeb2.com",
        ".filebase.com",
        ".scw.cloud",
        ".r2.cloudflarestorage.com",
        "tigris.dev",
        "t3.storage.dev",
        ".supabase.co",
    ]
    .iter()
    .any(|cloud| host.contains(cloud));
    if host == "fly.storage.tigris.dev" || host == "t3.storage.dev" {
        Provider::Tigris
    } else if host.ends_with(".r2.cloudflarestorage.com") {
        Provider::R2
    } else if host == "s3.filebase.com"
        || host.ends_with(".backblazeb2.com")
        || host.ends_with(".supabase.co")
        || (host.contains(':') && !known_cloud)
    {
        Provider::PathStyle
    } else {
        Provider::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> ReplicaUrl {
        parse(text).unwrap()
    }

    #[test]
    fn urls_split_like_litestream() {
        let u = url("s3://my-bucket/a//b/./db/?region=eu-west-1&endpoint=http%3A%2F%2Fx%3A9000");
        assert_eq!(
            (u.kind, u.host.as_str(), u.path.as_str()),
            (Kind::S3, "my-bucket", "a/b/db")
        );
        assert_eq!(u.query[0], ("region".into(), "eu-west-1".into()));
        assert_eq!(u.query[1], ("endpoint".into(), "http://x:9000".into()));
        let u = url("abs://acct@container/some%20dir/db");
        assert_eq!((u.kind, u.user.as_deref()), (Kind::Abs, Some("acct")));
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("container", "some dir/db")
        );
        assert_eq!(url("gs://Bucket_1").path, "");
        assert_eq!(
            url("s3://bucket.localhost:9000/p").host,
            "bucket.localhost:9000"
        );
        let f = url("file:///var/backups/db");
        assert_eq!((f.kind, f.path.as_str()), (Kind::File, "/var/backups/db"));
        assert_eq!(url("file://localhost/x").path, "/x");
        assert_eq!(url("/plain/dir").path, "/plain/dir");
        assert_eq!(url("relative/dir").kind, Kind::File);
    }

    #[test]
    fn access_point_arns() {
        let u = url("s3://arn:aws:s3:us-west-2:123456789012:accesspoint/my-ap/pre/fix?region=x");
        assert_eq!(
            u.host,
            "arn:aws:s3:us-west-2:123456789012:accesspoint/my-ap"
        );
        assert_eq!((u.path.as_str(), u.query.len()), ("pre/fix", 1));
        assert_eq!(arn_region(&u.host).as_deref(), Some("us-west-2"));
        assert!(parse("s3://arn:aws:s3:us-west-2:1:bucket/x").is_err());
    }

    #[test]
    fn bad_urls() {
        assert_eq!(
            parse("ftp://host/x").unwrap_err(),
            "unknown replica type \"ftp\"; supported types: file, s3, gs, abs"
        );
        assert_eq!(
            parse("sftp://host/x").unwrap_err(),
            "walship does not support sftp replicas; supported types: file, s3, gs, abs"
        );
        assert!(parse("file://host/x").unwrap_err().contains("names a host"));
        assert!(parse("file:///x?a=b")
            .unwrap_err()
            .contains("no query parameters"));
        assert!(parse("s3://bu cket/x")
            .unwrap_err()
            .starts_with("invalid URL"));
    }

    #[test]
    fn provider_hosts() {
        let h = parse_s3_host("b.s3.eu-west-1.amazonaws.com");
        assert_eq!(
            (h.bucket.as_str(), h.region.as_deref()),
            ("b", Some("eu-west-1"))
        );
        assert_eq!(parse_s3_host("b.s3.amazonaws.com").bucket, "b");
        let h = parse_s3_host("b.nyc3.digitaloceanspaces.com");
        assert_eq!(
            h.endpoint.as_deref(),
            Some("https://nyc3.digitaloceanspaces.com")
        );
        let h = parse_s3_host("b.s3.us-west-004.backblazeb2.com");
        assert_eq!(
            h.endpoint.as_deref(),
            Some("https://s3.us-west-004.backblazeb2.com")
        );
        assert_eq!(h.force_path_style, Some(true));
        assert_eq!(
            parse_s3_host("b.s3.fr-par.scw.cloud").region.as_deref(),
            Some("fr-par")
        );
        assert_eq!(parse_s3_host("b.s3.filebase.com").bucket, "b");
        let h = parse_s3_host("b.minio:9000");
        assert_eq!(
            (h.bucket.as_str(), h.endpoint.as_deref()),
            ("b", Some("http://minio:9000"))
        );
        assert_eq!(parse_s3_host("plain").bucket, "plain");
    }

    #[test]
    fn query_parameters() {
        let pairs: Vec<(String, String)> = [
            ("forcePathStyle", "false"),
            ("skip-verify", "1"),
            ("signPayload", "no"),
            ("requireContentMD5", "f"),
            ("storageClass", "STANDARD_IA"),
            ("partSize", "10485760"),
            ("concurrency", "3"),
            ("sseKmsKeyId", "k1"),
            ("region", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let q = parse_s3_query(&pairs).unwrap();
        assert_eq!(q.force_path_style, Some(false));
        assert_eq!(q.skip_verify, Some(true));
        assert_eq!(
            (q.sign_payload, q.require_content_md5),
            (Some(false), Some(false))
        );
        assert_eq!((q.part_size, q.concurrency), (Some(10 << 20), Some(3)));
        assert_eq!(q.region, None);
        let bad = |k: &str, v: &str| parse_s3_query(&[(k.into(), v.into())]).unwrap_err();
        assert_eq!(
            bad("forcePathStyl", "x"),
            "unknown query parameter \"forcePathStyl\"; did you mean \"forcePathStyle\"?"
        );
        assert_eq!(
            bad("concurrency", "0"),
            "query parameter concurrency=\"0\": expected a positive whole number"
        );
        assert_eq!(
            bad("skipVerify", "maybe"),
            "query parameter skipVerify=\"maybe\": expected true or false"
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(with_scheme("localhost:9000"), "http://localhost:9000");
        assert_eq!(with_scheme("172.20.0.2:9000"), "http://172.20.0.2:9000");
        assert_eq!(with_scheme("s3.example.com"), "https://s3.example.com");
        assert_eq!(with_scheme("https://x"), "https://x");
        assert_eq!(provider("http://127.0.0.1:9000"), Provider::PathStyle);
        assert_eq!(provider("https://fly.storage.tigris.dev"), Provider::Tigris);
        assert_eq!(
            provider("https://acct.r2.cloudflarestorage.com"),
            Provider::R2
        );
        assert_eq!(
            provider("https://s3.eu-west-1.amazonaws.com"),
            Provider::Other
        );
    }
}
