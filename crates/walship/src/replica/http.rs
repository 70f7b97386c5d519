//! HTTP settings shared by the s3, gs and abs stores: connect and read timeouts, retries of
//! transient failures, and a CA bundle added to the system's roots.

use std::path::Path as FsPath;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::{BackoffConfig, Certificate, ClientOptions, RetryConfig};

use super::failure::invalid_config;
use crate::Result;

/// Time allowed to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Time a connection may go without delivering data before it counts as stalled; a whole
/// request has no limit, since a large snapshot may rightly take many minutes.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries of a transient failure (5xx, 429, connection errors) of an idempotent request.
pub(crate) const MAX_RETRIES: u32 = 3;

/// The wait before the first retry; each further retry waits twice as long as the one before.
const INIT_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Client options for `endpoint_url`, trusting `ca_bundle` in addition to the system's roots.
pub(crate) fn client_options(
    replica: &str,
    endpoint_url: &str,
    ca_bundle: Option<&FsPath>,
) -> Result<ClientOptions> {
    let mut options = ClientOptions::new()
        .with_allow_http(endpoint_url.starts_with("http://"))
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_read_timeout(READ_TIMEOUT)
        .with_timeout_disabled();
    if let Some(bundle) = ca_bundle {
        let certificates = load_ca_bundle(bundle).map_err(|cause| {
            let hint = "point AWS_CA_BUNDLE at a PEM file of CA certificates, or unset it";
            invalid_config(replica, bundle.display().to_string(), cause, hint)
        })?;
        // Added to the system's roots, not instead of them.
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    Ok(options)
}

/// object_store's retries: at most [`MAX_RETRIES`], backing off from 100 ms doubling up to 1 s,
/// none started after 10 s. With the 3 s connect timeout an unreachable endpoint fails within
/// about 13 s (a refused connection within a second) instead of object_store's default of 10
/// retries over 3 minutes.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: INIT_BACKOFF,
            max_backoff: MAX_BACKOFF,
            base: 2.0,
        },
        max_retries: MAX_RETRIES as usize,
        retry_timeout: Duration::from_secs(10),
    }
}

/// The wait before retry number `attempt` (from 1) of a client that retries by itself, with
/// [`retry_config`]'s backoff: 100 ms, doubling, at most 1 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(4);
    (INIT_BACKOFF * (1 << doublings)).min(MAX_BACKOFF)
}

/// The certificates of a PEM bundle.
fn load_ca_bundle(path: &FsPath) -> std::result::Result<Vec<Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA bundle: {e}"))?;
    let certificates =
        Certificate::from_pem_bundle(&pem).map_err(|e| format!("the CA bundle is not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err("the CA bundle holds no certificates".into());
    }
    Ok(certificates)
}

/// An HTTP date (`Thu, 26 Nov 2026 17:53:22 GMT`, RFC 9110's preferred form).
pub(crate) fn parse_http_date(text: &str) -> Option<SystemTime> {
    let mut parts = text.split_whitespace().skip(1);
    let day: i64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|n| n.parse::<i64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|&name| name == month)? as i64 + 1;
    let seconds = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 CET"), None);
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let waits: Vec<u128> = (1..=6).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }
}
