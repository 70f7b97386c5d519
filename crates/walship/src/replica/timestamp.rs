//! Creation times as Litestream stores them: milliseconds in the LTX header, and RFC 3339 text
//! exactly as Go's `time.RFC3339Nano` formats a UTC time in S3 metadata.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// The time an LTX header's millisecond timestamp stands for.
pub fn from_unix_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Formats `t` as Go's `t.UTC().Format(time.RFC3339Nano)` does: trailing zeros of the fraction
/// dropped, no fraction at all on a whole second, `Z` for UTC.
pub fn format_rfc3339_nano(t: SystemTime) -> String {
    let (secs, nanos) = split(t);
    let (y, mo, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let day_secs = secs.rem_euclid(SECS_PER_DAY);
    let (h, mi, s) = (day_secs / 3600, day_secs / 60 % 60, day_secs % 60);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses RFC 3339 text (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), as Go's `time.Parse` with
/// `time.RFC3339Nano` accepts it; `None` if it is anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20 || separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let date_ok = (1..=12).contains(&mo) && (1..=days_in_month(y, mo)).contains(&d);
    if !date_ok || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let (nanos, zone) = fraction(&b[19..])?;
    let offset = zone_offset(zone)?;
    let secs = days_from_civil(y, mo, d) * SECS_PER_DAY + h * 3600 + mi * 60 + sec - offset;
    join(secs, nanos)
}

/// Seconds since the epoch (floored) and the nanoseconds past them.
fn split(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, NANOS_PER_SEC - n),
            }
        }
    }
}

fn join(secs: i64, nanos: u32) -> Option<SystemTime> {
    let whole = Duration::from_secs(secs.unsigned_abs());
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Splits `[.fraction]zone` into nanoseconds and the zone text.
fn fraction(b: &[u8]) -> Option<(u32, &[u8])> {
    let Some(rest) = b.strip_prefix(b".") else {
        return Some((0, b));
    };
    let len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 || len > 9 {
        return None;
    }
    let nanos = digits(&rest[..len])? * 10i64.pow(9 - len as u32);
    Some((nanos as u32, &rest[len..]))
}

/// The zone's offset east of UTC, in seconds.
fn zone_offset(zone: &[u8]) -> Option<i64> {
    match zone {
        b"Z" => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            Some(if *sign == b'-' { -offset } else { offset })
        }
        _ => None,
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Howard Hinnant's `days_from_civil`: the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go_rfc3339_nano() {
        // Go's RFC3339Nano layout, "2006-01-02T15:04:05.999999999Z07:00", drops trailing zeros
        // of the fraction and the dot with them.
        for (ms, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (1_700_000_000_100, "2023-11-14T22:13:20.1Z"),
            (1_700_000_000_000, "2023-11-14T22:13:20Z"),
            (951_782_400_001, "2000-02-29T00:00:00.001Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(format_rfc3339_nano(from_unix_millis(ms)), text, "{ms}");
            assert_eq!(parse_rfc3339(text), Some(from_unix_millis(ms)), "{text}");
        }
    }

    #[test]
    fn nanoseconds_survive_a_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let text = format_rfc3339_nano(t);
        assert_eq!(text, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(t));
    }

    #[test]
    fn offsets_are_applied() {
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20.5+02:00"),
            parse_rfc3339("2023-11-14T22:13:20.5Z")
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T21:43:20-00:30"),
            parse_rfc3339("2023-11-14T22:13:20Z")
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567891Z",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20+2:00",
            "2023-11-14T22:13:20Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
