//! Reading event timestamps the way shippers write them, into Unix nanoseconds.
//!
//! Vector writes RFC 3339 with up to nine fractional digits; ClickHouse-bound rows may use a
//! space instead of `T` and no zone (`best_effort` accepts that, meaning UTC); people remap
//! to epoch numbers in seconds, milliseconds, microseconds or nanoseconds. A hand-written
//! parser is used because this runs once per event on the hot path and general date parsers
//! cost several times more. Anything outside what an `i64` of nanoseconds can hold (years
//! 1677–2262) is `None`; whether a readable time is too old or in the future is decided later.

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Magnitude thresholds that tell an epoch's unit: below 10^11 it is seconds (up to year
/// 5138), below 10^14 milliseconds, below 10^17 microseconds, else nanoseconds.
const SECONDS_BELOW: u64 = 100_000_000_000;
const MILLIS_BELOW: u64 = 100_000_000_000_000;
const MICROS_BELOW: u64 = 100_000_000_000_000_000;

/// An integer epoch in the unit its magnitude suggests.
pub(crate) fn from_epoch_int(v: i128) -> Option<i64> {
    let abs = v.unsigned_abs();
    let scale: i128 = if abs < u128::from(SECONDS_BELOW) {
        1_000_000_000
    } else if abs < u128::from(MILLIS_BELOW) {
        1_000_000
    } else if abs < u128::from(MICROS_BELOW) {
        1_000
    } else {
        1
    };
    i64::try_from(v.checked_mul(scale)?).ok()
}

/// A fractional epoch (`1714644930.123`), unit by magnitude like [`from_epoch_int`].
pub(crate) fn from_epoch_float(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let abs = v.abs();
    let scale = if abs < SECONDS_BELOW as f64 {
        1e9
    } else if abs < MILLIS_BELOW as f64 {
        1e6
    } else if abs < MICROS_BELOW as f64 {
        1e3
    } else {
        1.0
    };
    // Whole and fractional parts are scaled apart so the fraction keeps its precision. An
    // f64 of seconds near today resolves about a quarter microsecond, so its fraction is
    // rounded to whole microseconds: `.123` must read as 123 ms, not 122.999907 ms.
    // The whole part is scaled in integers: f64 cannot hold today's nanoseconds exactly.
    let whole = v.trunc();
    let frac = if scale == 1e9 { ((v - whole) * 1e6).round() * 1e3 } else { ((v - whole) * scale).round() };
    if whole.abs() >= i64::MAX as f64 {
        return None;
    }
    (whole as i64).checked_mul(scale as i64)?.checked_add(frac as i64)
}

/// A timestamp given as text: RFC 3339 (also with a space or lower-case `t`, and without a
/// zone, meaning UTC) or an epoch number written as a string.
pub(crate) fn parse_text(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    let numeric = !b.is_empty() && b.iter().enumerate().all(|(i, c)| c.is_ascii_digit() || *c == b'.' || (i == 0 && *c == b'-'));
    if numeric {
        return if s.contains('.') { s.parse::<f64>().ok().and_then(from_epoch_float) } else { s.parse::<i128>().ok().and_then(from_epoch_int) };
    }
    parse_rfc3339(b)
}

fn parse_rfc3339(b: &[u8]) -> Option<i64> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            // Digits past the ninth are below a nanosecond: read and dropped.
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let rest = &b[i + 1..];
            let (h, m) = match rest.len() {
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                2 => (digits(rest, 0, 2)?, 0),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// `len` ASCII digits at `at` as a number, or `None` if any is not a digit.
fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let slice = b.get(at..at + len)?;
    slice.iter().try_fold(0i64, |acc, c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
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
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use super::*;

    fn chrono_ns(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap()
    }

    #[test]
    fn rfc3339_matches_chrono() {
        for s in [
            "2024-05-02T10:15:30.123456789Z",
            "2024-05-02T10:15:30Z",
            "2024-05-02T10:15:30.1+02:00",
            "2024-02-29T23:59:59.999999999-07:30",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.5Z",
            "2000-03-01T00:00:00+00:00",
            "2262-04-11T23:47:16.854775807Z",
        ] {
            assert_eq!(parse_text(s), Some(chrono_ns(s)), "{s}");
        }
    }

    #[test]
    fn lenient_forms() {
        let want = chrono_ns("2024-05-02T10:15:30.123Z");
        assert_eq!(parse_text("2024-05-02 10:15:30.123"), Some(want));
        assert_eq!(parse_text("2024-05-02t10:15:30.123z"), Some(want));
        assert_eq!(parse_text("2024-05-02T12:15:30.123+0200"), Some(want));
        assert_eq!(parse_text("2024-05-02T12:15:30.123+02"), Some(want));
        assert_eq!(parse_text("2024-05-02T10:15:30.1230000009999Z"), Some(want));
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "2024-05",
            "2024-13-02T10:15:30Z",
            "2024-02-30T10:15:30Z",
            "2023-02-29T00:00:00Z",
            "2024-05-02T24:00:00Z",
            "2024-05-02T10:15:30.Z",
            "2024-05-02T10:15:30Zjunk",
            "2024-05-02T10:15:30+2",
            "2024-05-02X10:15:30Z",
            "2024-05-02T10:15:30+24:00",
            "9999-12-31T23:59:59Z",
            "١٢٣٤-05-02T10:15:30Z",
            "--",
            "-",
            ".",
        ] {
            assert_eq!(parse_text(s), None, "{s}");
        }
    }

    #[test]
    fn epochs_by_magnitude() {
        let ns = 1_714_644_930_123_000_000i64;
        assert_eq!(from_epoch_int(1_714_644_930), Some(1_714_644_930_000_000_000));
        assert_eq!(from_epoch_int(1_714_644_930_123), Some(ns));
        assert_eq!(from_epoch_int(1_714_644_930_123_000), Some(ns));
        assert_eq!(from_epoch_int(i128::from(ns)), Some(ns));
        assert_eq!(from_epoch_int(i128::from(u64::MAX)), None);
        assert_eq!(from_epoch_int(50_000_000_000), None, "seconds past year 2262");
        assert_eq!(from_epoch_float(1_714_644_930.123), Some(ns));
        assert_eq!(from_epoch_float(1e300), None);
        assert_eq!(parse_text("1714644930123"), Some(ns));
        assert_eq!(parse_text("1714644930.123"), Some(ns));
        assert_eq!(parse_text("1.2.3"), None);
    }
}
