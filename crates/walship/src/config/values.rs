//! Scalar syntaxes shared with Litestream: Go durations, humanized byte sizes, YAML 1.1 booleans.

use std::time::Duration;

/// What a duration must look like, for error messages.
pub(super) const DURATION_SYNTAX: &str = "expected Go syntax like 1s or 500ms";

/// What a byte size must look like, for error messages.
pub(super) const SIZE_SYNTAX: &str = "expected bytes like 5242880, 5MB or 5MiB";

/// Parses a duration in Go's `time.ParseDuration` syntax ("1s", "500ms", "1m30s", "1.5h", "0").
///
/// Negative durations, which Go accepts, are refused: no setting of walship means anything with
/// them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: {DURATION_SYNTAX}");
    let unsigned = match text.strip_prefix('-') {
        Some(rest) if rest.trim_start_matches(['0', '.']).is_empty() => rest,
        Some(_) => return Err(format!("invalid duration {text:?}: must not be negative")),
        None => text.strip_prefix('+').unwrap_or(text),
    };
    if unsigned == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = unsigned;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let (amount, after) = split_number(rest).ok_or_else(invalid)?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit = unit_nanos(&after[..unit_len]).ok_or_else(invalid)?;
        nanos = nanos
            .checked_add(amount.scaled(unit).ok_or_else(invalid)?)
            .ok_or_else(invalid)?;
        rest = &after[unit_len..];
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Nanoseconds in one of Go's duration units.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// A decimal number as written: whole part and fraction digits, kept exact.
struct Decimal<'a> {
    whole: &'a str,
    fraction: &'a str,
}

impl Decimal<'_> {
    /// The number times `unit`, truncated to an integer; `None` on overflow.
    fn scaled(&self, unit: u128) -> Option<u128> {
        let whole: u128 = if self.whole.is_empty() {
            0
        } else {
            self.whole.parse().ok()?
        };
        // Digits past the 18th are worth less than a nanosecond, even in hours.
        let fraction = &self.fraction[..self.fraction.len().min(18)];
        let part = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().ok()? * unit / 10u128.pow(fraction.len() as u32)
        };
        whole.checked_mul(unit)?.checked_add(part)
    }

    /// The number as a float, for byte sizes such as "1.5GB".
    fn to_f64(&self) -> f64 {
        format!("0{}.{}0", self.whole, self.fraction)
            .parse()
            .unwrap_or(f64::NAN)
    }
}

/// Splits a leading decimal number ("12", "1.5", ".5") off `text`.
fn split_number(text: &str) -> Option<(Decimal<'_>, &str)> {
    let whole_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (whole, after) = text.split_at(whole_len);
    let (fraction, after) = match after.strip_prefix('.') {
        Some(tail) => tail.split_at(
            tail.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(tail.len()),
        ),
        None => ("", after),
    };
    (!whole.is_empty() || !fraction.is_empty()).then_some((Decimal { whole, fraction }, after))
}

/// Parses a byte size as Litestream's `part-size` does (go-humanize's `ParseBytes`): a number,
/// optionally with a decimal (kB, MB: powers of 1000) or binary (KiB, MiB: powers of 1024) unit.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?}: {SIZE_SYNTAX}");
    let digits: String = text.trim().chars().filter(|c| *c != ',').collect();
    let (amount, unit) = split_number(&digits).ok_or_else(invalid)?;
    let multiplier = size_unit(&unit.trim().to_ascii_lowercase()).ok_or_else(invalid)?;
    let bytes = amount.to_f64() * multiplier;
    if !(0.0..18_446_744_073_709_551_615.0).contains(&bytes) {
        return Err(format!("invalid size {text:?}: too large"));
    }
    Ok(bytes as u64)
}

/// The multiplier of a lower-cased go-humanize size unit.
fn size_unit(unit: &str) -> Option<f64> {
    let (prefix, binary) = match unit.strip_suffix("ib").or_else(|| unit.strip_suffix('i')) {
        Some(prefix) => (prefix, true),
        None => (unit.strip_suffix('b').unwrap_or(unit), false),
    };
    let power = match prefix {
        "" if !binary => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let base: f64 = if binary { 1024.0 } else { 1000.0 };
    Some(base.powi(power))
}

/// Parses a boolean written as text, accepting YAML 1.1's words as Litestream's YAML parser does.
pub(super) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On" | "ON" => {
            Some(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1s"), Ok(ms(1000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("24h"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("+2m"), Ok(ms(120_000)));
        assert_eq!(
            parse_duration("1h2m3s4ms5us6ns"),
            Ok(Duration::new(3723, 4_005_006))
        );
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("-0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_whose_parts_add_up_past_any_number_are_invalid() {
        let part = "90000000000000000000000000h";
        assert!(parse_duration(part).is_err(), "too long for a Duration");
        assert!(parse_duration(&part.repeat(2)).is_err());
    }

    #[test]
    fn bad_durations() {
        for bad in ["", "fast", "5", "1", "s", "1 s", "1sec", "1d", "1.s.", "."] {
            let err = parse_duration(bad).unwrap_err();
            assert_eq!(
                err,
                format!("invalid duration {bad:?}: {DURATION_SYNTAX}"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("-1s").unwrap_err(),
            "invalid duration \"-1s\": must not be negative"
        );
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn humanized_sizes() {
        assert_eq!(parse_size("5242880"), Ok(5_242_880));
        assert_eq!(parse_size("5MiB"), Ok(5 << 20));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("5 MB"), Ok(5_000_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("10k"), Ok(10_000));
        assert_eq!(parse_size(".5KB"), Ok(500));
        assert_eq!(parse_size("10Ki"), Ok(10_240));
        assert_eq!(parse_size("1,024 B"), Ok(1024));
        for bad in ["", "MB", "5XB", "five", "5 MiBs", "-5"] {
            assert_eq!(
                parse_size(bad).unwrap_err(),
                format!("invalid size {bad:?}: {SIZE_SYNTAX}")
            );
        }
    }

    #[test]
    fn yaml_11_booleans() {
        assert_eq!(parse_bool("yes"), Some(true));
        assert_eq!(parse_bool("OFF"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
