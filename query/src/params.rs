//! Request parameters shared by the dashboard endpoints: repeated or comma-separated lists,
//! times as RFC 3339 or Unix nanoseconds, durations like `5m`, and the opaque page cursor.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use schemas::LogRecord;
use schemas::{ApiError, ErrorCode};
use storage::Cursor;

/// The query string as (key, value) pairs, in order.
pub struct Params(Vec<(String, String)>);

const MAX_LIST_ITEMS: usize = 256;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| invalid(format!("query string: {e}")))?;
        Ok(Params(pairs))
    }

    /// The query string and, for a form POST, the body too (Grafana's datasources send either).
    pub fn from_request(raw: Option<&str>, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<Params, ApiError> {
        let form =
            headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if body.is_empty() || !form {
            return Params::parse(raw);
        }
        let body = std::str::from_utf8(body).map_err(|_| invalid("the form body is not UTF-8"))?;
        Params::parse(Some(&match raw {
            Some(q) if !q.is_empty() => format!("{q}&{body}"),
            _ => body.to_owned(),
        }))
    }

    /// Every key, in order (repeats included).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn one(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// Every non-empty value of a repeated `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()).collect()
    }

    /// Every value of `key` (repeated keys and comma-separated values), `None` when absent.
    pub fn list(&self, key: &str) -> Result<Option<BTreeSet<String>>, ApiError> {
        let values: BTreeSet<String> =
            self.0.iter().filter(|(k, _)| k == key).flat_map(|(_, v)| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect();
        if values.len() > MAX_LIST_ITEMS {
            return Err(invalid(format!("`{key}`: at most {MAX_LIST_ITEMS} values")));
        }
        Ok((!values.is_empty()).then_some(values))
    }

    /// A time: RFC 3339, or an integer of Unix nanoseconds (Loki's convention; integers of
    /// up to 10 digits are read as seconds, 13 as milliseconds).
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.one(key) else { return Ok(None) };
        parse_time(v).map(Some).ok_or_else(|| invalid(format!("`{key}`: `{v}` is not a time (use RFC 3339 like 2026-11-23T09:00:00Z, or Unix nanoseconds)")))
    }

    /// A time range from `from_key`/`to_key`, or `since` before the end; the end defaults to
    /// now and the start to `default_ns` before it. Ends before its start are refused (equal
    /// ends too, unless `allow_empty`).
    pub fn range(&self, from_key: &str, to_key: &str, default_ns: i64, allow_empty: bool) -> Result<(i64, i64), ApiError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
        let to = self.time(to_key)?.unwrap_or(now);
        let from = match (self.time(from_key)?, self.duration_ns("since")?) {
            (Some(f), _) => f,
            (None, Some(since)) => to.saturating_sub(since),
            (None, None) => to.saturating_sub(default_ns),
        };
        if from > to || (from == to && !allow_empty) {
            return Err(invalid(format!("`{from_key}` must be before `{to_key}`")));
        }
        Ok((from, to))
    }

    pub fn duration_ns(&self, key: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.one(key) else { return Ok(None) };
        parse_duration_ns(v).map(Some).ok_or_else(|| invalid(format!("`{key}`: `{v}` is not a duration (like 30s, 5m, 1h)")))
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>, ApiError> {
        let Some(v) = self.one(key) else { return Ok(None) };
        v.parse().map(Some).map_err(|_| invalid(format!("`{key}`: `{v}` is not a whole number")))
    }
}

pub fn parse_time(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(match v.trim_start_matches('-').len() {
            0..=10 => n.checked_mul(1_000_000_000)?,
            11..=13 => n.checked_mul(1_000_000)?,
            14..=16 => n.checked_mul(1_000)?,
            _ => n,
        });
    }
    if let Ok(f) = v.parse::<f64>() {
        return (f.is_finite() && f.abs() < 1e10).then_some((f * 1e9) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v).ok().and_then(|t| t.timestamp_nanos_opt())
}

/// `300ms`, `30s`, `5m`, `1h`, `2d`, `1w`, combinations like `1h30m`, or plain seconds.
pub fn parse_duration_ns(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0 && secs < 1e9).then_some((secs * 1e9) as i64);
    }
    let (mut total, mut num) = (0i64, String::new());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'n' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'u' | 'µ' if chars.peek() == Some(&'s') => {
                chars.next();
                1_000
            }
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1_000_000
            }
            's' => 1_000_000_000,
            'm' => 60_000_000_000,
            'h' => 3_600_000_000_000,
            'd' => 86_400_000_000_000,
            'w' => 604_800_000_000_000,
            'y' => 31_536_000_000_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (num.is_empty() && total > 0).then_some(total)
}

pub fn encode_cursor(c: Cursor) -> String {
    B64.encode(format!("{}:{}", c.timestamp_ns, c.skip))
}

pub fn decode_cursor(s: &str) -> Result<Cursor, ApiError> {
    let bad = || invalid("`cursor`: not a cursor this service returned");
    let text = String::from_utf8(B64.decode(s).map_err(|_| bad())?).map_err(|_| bad())?;
    let (ts, skip) = text.split_once(':').ok_or_else(bad)?;
    Ok(Cursor { timestamp_ns: ts.parse().map_err(|_| bad())?, skip: skip.parse().map_err(|_| bad())? })
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default()
}

/// The cursor after `lines`: the oldest timestamp returned, and how many rows at it the
/// caller has now seen (counting those an earlier page already skipped).
pub fn next_cursor(prev: Option<Cursor>, lines: &[LogRecord]) -> Option<Cursor> {
    let last = lines.last()?.timestamp_ns;
    let here = lines.iter().filter(|l| l.timestamp_ns == last).count() as u32;
    let before = prev.filter(|c| c.timestamp_ns == last).map_or(0, |c| c.skip);
    Some(Cursor { timestamp_ns: last, skip: before + here })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339(1_700_000_000_000_000_005), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(1_700_000_000_120_000_000), "2023-11-14T22:13:20.120000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn times_durations_and_cursors() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000000000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_duration_ns("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration_ns("250ms"), Some(250_000_000));
        assert_eq!(parse_duration_ns("15"), Some(15_000_000_000));
        assert_eq!(parse_duration_ns("5x"), None);
        assert_eq!(parse_duration_ns("99999999999999999999d"), None);
        let c = Cursor { timestamp_ns: 42, skip: 3 };
        assert_eq!(decode_cursor(&encode_cursor(c)).unwrap(), c);
        assert!(decode_cursor("!!").is_err());
    }
}

/// The evaluation times of a metric query (LogQL's in nanoseconds, PromQL's in milliseconds):
/// `start`, `start + step`, … up to and including `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step.max(1) + 1).max(0) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
    pub fn at(&self, k: usize) -> i64 {
        self.start + k as i64 * self.step
    }
}
