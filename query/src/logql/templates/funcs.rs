//! What a template's values are and what its functions do: [`FUNCTIONS`], each bounded by
//! [`MAX_VALUE_BYTES`], Go's `printf` and sprig's arithmetic; times are read and written in
//! [`super::gotime`].

use regex::Regex;

use super::MAX_VALUE_BYTES;
use super::gotime::{GO_ZERO_TIME, go_parse, go_time};

/// Functions, with the fewest and most arguments each takes (`None`: no most). Loki's set:
/// Go's and sprig's functions Loki registers, with their semantics.
pub const FUNCTIONS: [(&str, usize, Option<usize>); 75] = [
    ("ToUpper", 1, Some(1)),
    ("upper", 1, Some(1)),
    ("ToLower", 1, Some(1)),
    ("lower", 1, Some(1)),
    ("title", 1, Some(1)),
    ("TrimSpace", 1, Some(1)),
    ("trim", 1, Some(1)),
    ("Trim", 2, Some(2)),
    ("TrimLeft", 2, Some(2)),
    ("TrimRight", 2, Some(2)),
    ("TrimPrefix", 2, Some(2)),
    ("TrimSuffix", 2, Some(2)),
    ("trimAll", 2, Some(2)),
    ("trimPrefix", 2, Some(2)),
    ("trimSuffix", 2, Some(2)),
    ("Replace", 4, Some(4)),
    ("replace", 3, Some(3)),
    ("contains", 2, Some(2)),
    ("hasPrefix", 2, Some(2)),
    ("hasSuffix", 2, Some(2)),
    ("trunc", 2, Some(2)),
    ("substr", 3, Some(3)),
    ("default", 2, Some(2)),
    ("alignLeft", 2, Some(2)),
    ("alignRight", 2, Some(2)),
    ("regexReplaceAll", 3, Some(3)),
    ("regexReplaceAllLiteral", 3, Some(3)),
    ("count", 2, Some(2)),
    ("repeat", 2, Some(2)),
    ("indent", 2, Some(2)),
    ("nindent", 2, Some(2)),
    ("b64enc", 1, Some(1)),
    ("b64dec", 1, Some(1)),
    ("urlencode", 1, Some(1)),
    ("urldecode", 1, Some(1)),
    ("printf", 1, None),
    ("len", 1, Some(1)),
    ("eq", 1, None),
    ("ne", 2, Some(2)),
    ("lt", 2, Some(2)),
    ("le", 2, Some(2)),
    ("gt", 2, Some(2)),
    ("ge", 2, Some(2)),
    ("and", 1, None),
    ("or", 1, None),
    ("not", 1, Some(1)),
    ("int", 1, Some(1)),
    ("float64", 1, Some(1)),
    ("add", 1, None),
    ("sub", 2, Some(2)),
    ("mul", 1, None),
    ("div", 2, Some(2)),
    ("mod", 2, Some(2)),
    ("max", 1, None),
    ("min", 1, None),
    ("addf", 1, None),
    ("subf", 1, None),
    ("mulf", 1, None),
    ("divf", 1, None),
    ("maxf", 1, None),
    ("minf", 1, None),
    ("ceil", 1, Some(1)),
    ("floor", 1, Some(1)),
    ("round", 2, Some(3)),
    ("bytes", 1, Some(1)),
    ("duration", 1, Some(1)),
    ("duration_seconds", 1, Some(1)),
    ("date", 2, Some(2)),
    ("now", 0, Some(0)),
    ("toDate", 2, Some(2)),
    ("toDateInZone", 3, Some(3)),
    ("unixEpoch", 1, Some(1)),
    ("unixEpochMillis", 1, Some(1)),
    ("unixEpochNanos", 1, Some(1)),
    ("unixToTime", 1, Some(1)),
];

/// A value while rendering.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    S(String),
    N(f64),
    B(bool),
    /// A time (`__timestamp__`, `unixToTime`, `toDate`), Unix nanoseconds, UTC; wide enough
    /// for Go's zero time (year 1), which `toDate` gives for text it cannot read.
    T(i128),
}

impl Val {
    pub(super) fn text(&self) -> String {
        match self {
            Val::S(s) => s.clone(),
            Val::N(n) => crate::logql::eval::format_value(*n),
            Val::B(b) => b.to_string(),
            // As Go prints a time.Time.
            Val::T(ns) => go_time(*ns, "2006-01-02 15:04:05.999999999 -0700 MST"),
        }
    }
    pub(super) fn truthy(&self) -> bool {
        match self {
            Val::S(s) => !s.is_empty(),
            Val::N(n) => *n != 0.0,
            Val::B(b) => *b,
            // A time is a struct in Go, and structs are always true.
            Val::T(_) => true,
        }
    }
}

/// A time from a value: a time, or Unix seconds (a number, or digits whose count says
/// seconds, milliseconds, microseconds or nanoseconds, as Loki's `unixToTime` reads them).
fn time_of(v: &Val) -> Result<i128, String> {
    match v {
        Val::T(ns) => Ok(*ns),
        Val::N(s) => Ok((s * 1e9) as i128),
        Val::S(s) => {
            let n: i128 = s.trim().parse::<i64>().map_err(|_| format!("`{s}` is not a Unix time"))?.into();
            Ok(match s.trim().trim_start_matches('-').len() {
                0..=10 => n.saturating_mul(1_000_000_000),
                11..=13 => n.saturating_mul(1_000_000),
                14..=16 => n.saturating_mul(1_000),
                _ => n,
            })
        }
        Val::B(_) => Err("a boolean is not a time".into()),
    }
}

fn int(v: &Val) -> Result<i64, String> {
    match v {
        Val::N(n) if n.fract() == 0.0 => Ok(*n as i64),
        Val::S(s) => s.trim().parse().map_err(|_| format!("`{s}` is not an integer")),
        other => Err(format!("{other:?} is not an integer")),
    }
}

fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Val::N(x), Val::N(y)) => x.partial_cmp(y).ok_or_else(|| "NaN does not compare".to_owned()),
        (Val::S(x), Val::S(y)) => Ok(x.cmp(y)),
        (Val::B(x), Val::B(y)) => Ok(x.cmp(y)),
        (Val::T(x), Val::T(y)) => Ok(x.cmp(y)),
        _ => Err(format!("incompatible types for comparison: {a:?} and {b:?}")),
    }
}

/// The first `n` characters (the last `-n` when negative), as sprig's `trunc`.
fn chars(s: &str, from: usize, to: usize) -> String {
    s.chars().skip(from).take(to.saturating_sub(from)).collect()
}

/// sprig's `toInt64` (by spf13/cast): a number truncated, text read as Go reads an integer
/// literal (`0x`, `0o`, `0b`, a leading `0` for octal; a zero fraction like `12.0` allowed),
/// a boolean 1 or 0; anything else 0.
fn to_i64(v: &Val) -> i64 {
    match v {
        Val::N(n) if n.is_finite() => *n as i64,
        Val::B(b) => i64::from(*b),
        Val::S(s) => go_int(trim_zero_decimal(s)).unwrap_or(0),
        _ => 0,
    }
}

/// cast's `trimZeroDecimal`: `12.0` and `12.00` become `12`.
fn trim_zero_decimal(s: &str) -> &str {
    let mut zero = false;
    for (i, b) in s.bytes().enumerate().rev() {
        match b {
            b'.' if zero => return &s[..i],
            b'.' => {}
            b'0' => zero = true,
            _ => return s,
        }
    }
    s
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn go_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h.to_owned())
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o.to_owned())
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b.to_owned())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned())
    } else {
        (10, lower)
    };
    if body.is_empty() || !body.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    let n = i128::from_str_radix(&body, radix).ok()?;
    i64::try_from(if neg { -n } else { n }).ok()
}

/// sprig's `toFloat64`: a number, text read as a float (else 0), a boolean 1 or 0.
fn to_f64(v: &Val) -> f64 {
    match v {
        Val::N(n) => *n,
        Val::B(b) => f64::from(u8::from(*b)),
        Val::S(s) => s.trim().parse().ok().filter(|f: &f64| !f.is_nan() || s.trim().eq_ignore_ascii_case("nan")).unwrap_or(0.0),
        Val::T(_) => 0.0,
    }
}

/// sprig's decimal arithmetic (`addf`, `subf`, `mulf`): each number as the shortest decimal
/// that reads back as it (so `addf 0.1 0.2` is 0.3, not 0.30000000000000004), computed
/// exactly, then read as a float. Falls back to floats when the exact value would not fit.
fn decimal_op(a: f64, b: f64, op: char) -> f64 {
    fn dec(x: f64) -> Option<(i128, i32)> {
        if !x.is_finite() {
            return None;
        }
        let text = format!("{x:e}");
        let (m, e) = text.split_once('e')?;
        let (int, frac) = m.split_once('.').unwrap_or((m, ""));
        let mantissa: i128 = format!("{int}{frac}").parse().ok()?;
        Some((mantissa, e.parse::<i32>().ok()? - frac.len() as i32))
    }
    let exact = || -> Option<f64> {
        let ((ma, ea), (mb, eb)) = (dec(a)?, dec(b)?);
        let (m, e) = if op == '*' {
            (ma.checked_mul(mb)?, ea + eb)
        } else {
            let e = ea.min(eb);
            let scale = |m: i128, from: i32| m.checked_mul(10i128.checked_pow(u32::try_from(from - e).ok()?)?);
            let (x, y) = (scale(ma, ea)?, scale(mb, eb)?);
            (if op == '+' { x.checked_add(y)? } else { x.checked_sub(y)? }, e)
        };
        format!("{m}e{e}").parse().ok()
    };
    exact().unwrap_or(match op {
        '+' => a + b,
        '-' => a - b,
        _ => a * b,
    })
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(v) = hex else { return Err(format!("invalid URL escape {:?}", String::from_utf8_lossy(&b[i..b.len().min(i + 3)]))) };
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A value that must not pass [`MAX_VALUE_BYTES`], refused before it is built.
fn within(bytes: usize) -> Result<(), String> {
    if bytes > MAX_VALUE_BYTES { Err(too_large()) } else { Ok(()) }
}

pub(super) fn call(name: &str, mut v: Vec<Val>, re: Option<&Regex>) -> Result<Val, String> {
    use std::cmp::Ordering;
    let s = |i: usize| v[i].text();
    Ok(match name {
        "ToUpper" | "upper" => Val::S(s(0).to_uppercase()),
        "ToLower" | "lower" => Val::S(s(0).to_lowercase()),
        "title" => {
            let mut up = true;
            Val::S(
                s(0).chars()
                    .map(|c| {
                        let o = if up { c.to_uppercase().next().unwrap_or(c) } else { c };
                        up = c.is_whitespace();
                        o
                    })
                    .collect(),
            )
        }
        "TrimSpace" | "trim" => Val::S(s(0).trim().to_owned()),
        "Trim" | "TrimLeft" | "TrimRight" | "trimAll" => {
            let (text, cut) = if name == "trimAll" { (s(1), s(0)) } else { (s(0), s(1)) };
            let set = |c: char| cut.contains(c);
            Val::S(
                match name {
                    "TrimLeft" => text.trim_start_matches(set),
                    "TrimRight" => text.trim_end_matches(set),
                    _ => text.trim_matches(set),
                }
                .to_owned(),
            )
        }
        "TrimPrefix" => Val::S(s(0).strip_prefix(s(1).as_str()).map_or(s(0), str::to_owned)),
        "TrimSuffix" => Val::S(s(0).strip_suffix(s(1).as_str()).map_or(s(0), str::to_owned)),
        "trimPrefix" => Val::S(s(1).strip_prefix(s(0).as_str()).map_or(s(1), str::to_owned)),
        "trimSuffix" => Val::S(s(1).strip_suffix(s(0).as_str()).map_or(s(1), str::to_owned)),
        "Replace" => {
            let n = int(&v[3])?;
            Val::S(bounded_replace(&s(0), &s(1), &s(2), usize::try_from(n).ok())?)
        }
        "replace" => Val::S(bounded_replace(&s(2), &s(0), &s(1), None)?),
        "contains" => Val::B(s(1).contains(&s(0))),
        "hasPrefix" => Val::B(s(1).starts_with(&s(0))),
        "hasSuffix" => Val::B(s(1).ends_with(&s(0))),
        "trunc" => {
            let (n, text) = (int(&v[0])?, s(1));
            let len = text.chars().count();
            let n = n.unsigned_abs().min(len as u64) as usize;
            Val::S(if int(&v[0])? >= 0 { chars(&text, 0, n) } else { chars(&text, len - n, len) })
        }
        "substr" => {
            let (from, to, text) = (int(&v[0])?, int(&v[1])?, s(2));
            let len = text.chars().count() as i64;
            let from = from.clamp(0, len) as usize;
            let to = if to < 0 { len } else { to.clamp(0, len) } as usize;
            Val::S(chars(&text, from, to))
        }
        "default" => {
            if v[1].truthy() {
                v.swap_remove(1)
            } else {
                v.swap_remove(0)
            }
        }
        "alignLeft" | "alignRight" => {
            let (n, text) = (int(&v[0])?.clamp(0, MAX_VALUE_BYTES as i64) as usize, s(1));
            let len = text.chars().count();
            Val::S(if len >= n {
                chars(&text, 0, n)
            } else if name == "alignLeft" {
                format!("{text}{}", " ".repeat(n - len))
            } else {
                format!("{}{text}", " ".repeat(n - len))
            })
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            let re = re.ok_or("internal: a regex function without its regex")?;
            let (text, with) = (s(1), s(2));
            let mut out = String::new();
            let mut last = 0;
            for caps in re.captures_iter(&text) {
                let Some(m) = caps.get(0) else { continue };
                out.push_str(&text[last..m.start()]);
                if name == "regexReplaceAll" {
                    caps.expand(&with, &mut out);
                } else {
                    out.push_str(&with);
                }
                last = m.end();
                if out.len() > MAX_VALUE_BYTES {
                    return Err(too_large());
                }
            }
            out.push_str(&text[last..]);
            Val::S(out)
        }
        "count" => {
            let re = re.ok_or("internal: a regex function without its regex")?;
            Val::N(re.find_iter(&s(1)).count() as f64)
        }
        "repeat" => {
            let (n, text) = (to_i64(&v[0]), s(1));
            let n = usize::try_from(n).map_err(|_| "repeat: negative count".to_owned())?;
            within(text.len().saturating_mul(n))?;
            Val::S(text.repeat(n))
        }
        "indent" | "nindent" => {
            let (n, text) = (usize::try_from(to_i64(&v[0])).unwrap_or(0), s(1));
            within(n.saturating_mul(text.matches('\n').count() + 1).saturating_add(text.len()))?;
            let pad = " ".repeat(n);
            let indented = format!("{pad}{}", text.replace('\n', &format!("\n{pad}")));
            Val::S(if name == "nindent" { format!("\n{indented}") } else { indented })
        }
        "b64enc" => {
            use base64::Engine;
            Val::S(base64::engine::general_purpose::STANDARD.encode(s(0)))
        }
        "b64dec" => {
            use base64::Engine;
            // sprig answers an error's text rather than failing.
            Val::S(match base64::engine::general_purpose::STANDARD.decode(s(0)) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => e.to_string(),
            })
        }
        "urlencode" => Val::S(query_escape(&s(0))),
        "urldecode" => Val::S(query_unescape(&s(0))?),
        "int" => Val::N(to_i64(&v[0]) as f64),
        "float64" => Val::N(to_f64(&v[0])),
        "add" => Val::N(v.iter().fold(0i64, |a, x| a.wrapping_add(to_i64(x))) as f64),
        "mul" => Val::N(v[1..].iter().fold(to_i64(&v[0]), |a, x| a.wrapping_mul(to_i64(x))) as f64),
        "sub" => Val::N(to_i64(&v[0]).wrapping_sub(to_i64(&v[1])) as f64),
        "div" | "mod" => {
            let (a, b) = (to_i64(&v[0]), to_i64(&v[1]));
            if b == 0 {
                return Err("integer divide by zero".into());
            }
            Val::N(if name == "div" { a.wrapping_div(b) } else { a.wrapping_rem(b) } as f64)
        }
        "max" => Val::N(v.iter().map(to_i64).max().unwrap_or(0) as f64),
        "min" => Val::N(v.iter().map(to_i64).min().unwrap_or(0) as f64),
        "addf" => Val::N(v.iter().fold(0.0, |a, x| decimal_op(a, to_f64(x), '+'))),
        "subf" => Val::N(v[1..].iter().fold(to_f64(&v[0]), |a, x| decimal_op(a, to_f64(x), '-'))),
        "mulf" => Val::N(v[1..].iter().fold(to_f64(&v[0]), |a, x| decimal_op(a, to_f64(x), '*'))),
        "divf" => {
            let mut a = to_f64(&v[0]);
            for x in &v[1..] {
                let d = to_f64(x);
                if d == 0.0 {
                    return Err("decimal division by 0".into());
                }
                a /= d;
            }
            Val::N(a)
        }
        "maxf" => Val::N(v[1..].iter().fold(to_f64(&v[0]), |a, x| a.max(to_f64(x)))),
        "minf" => Val::N(v[1..].iter().fold(to_f64(&v[0]), |a, x| a.min(to_f64(x)))),
        "ceil" => Val::N(to_f64(&v[0]).ceil()),
        "floor" => Val::N(to_f64(&v[0]).floor()),
        // sprig's `round`: to `places` decimals, up from `round_on` (.5 unless given).
        "round" => {
            let (x, places) = (to_f64(&v[0]), to_i64(&v[1]).clamp(-400, 400));
            let round_on = v.get(2).map_or(0.5, to_f64);
            let pow = 10f64.powi(places as i32);
            let digit = pow * x;
            Val::N(if digit.fract() >= round_on { digit.ceil() } else { digit.floor() } / pow)
        }
        "bytes" => Val::N(crate::logql::pipeline::bytes(&s(0)).ok_or_else(|| format!("`{}` is not a byte size", s(0)))?),
        "duration" | "duration_seconds" => {
            Val::N(crate::logql::pipeline::duration_seconds(&s(0)).ok_or_else(|| format!("`{}` is not a duration like 1.5s", s(0)))?)
        }
        "now" => Val::T(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX).into()),
        // sprig's `toDate` (and Loki's `toDateInZone`): text read by a Go layout; Go's zero
        // time when it does not fit. Zones: UTC, or the offset the text gives.
        "toDate" => Val::T(go_parse(&s(0), &s(1)).unwrap_or(GO_ZERO_TIME)),
        "toDateInZone" => {
            let zone = s(1);
            if !matches!(zone.as_str(), "UTC" | "Etc/UTC" | "" | "Local") {
                return Err(format!("toDateInZone: only UTC is known here, not `{zone}`"));
            }
            Val::T(go_parse(&s(0), &s(2)).unwrap_or(GO_ZERO_TIME))
        }
        "printf" => Val::S(printf(&s(0), &v[1..])?),
        // Go's `len` of a string: its bytes.
        "len" => Val::N(s(0).len() as f64),
        "eq" => {
            if v.len() < 2 {
                return Err("`eq` compares two values or more".into());
            }
            let mut any = false;
            for other in &v[1..] {
                any |= compare(&v[0], other)? == Ordering::Equal;
            }
            Val::B(any)
        }
        "ne" => Val::B(compare(&v[0], &v[1])? != Ordering::Equal),
        "lt" => Val::B(compare(&v[0], &v[1])? == Ordering::Less),
        "le" => Val::B(compare(&v[0], &v[1])? != Ordering::Greater),
        "gt" => Val::B(compare(&v[0], &v[1])? == Ordering::Greater),
        "ge" => Val::B(compare(&v[0], &v[1])? != Ordering::Less),
        // Go's `and`/`or`: the first falsy (truthy) argument, else the last.
        "and" => {
            let i = v.iter().position(|x| !x.truthy()).unwrap_or(v.len() - 1);
            v.swap_remove(i)
        }
        "or" => {
            let i = v.iter().position(Val::truthy).unwrap_or(v.len() - 1);
            v.swap_remove(i)
        }
        "not" => Val::B(!v[0].truthy()),
        "date" => Val::S(go_time(time_of(&v[1])?, &s(0))),
        "unixEpoch" => Val::N(time_of(&v[0])?.div_euclid(1_000_000_000) as f64),
        // As integers' text: a float would round nanoseconds.
        "unixEpochMillis" => Val::S(time_of(&v[0])?.div_euclid(1_000_000).to_string()),
        "unixEpochNanos" => Val::S(time_of(&v[0])?.to_string()),
        "unixToTime" => Val::T(time_of(&v[0])?),
        other => return Err(format!("internal: no function `{other}`")),
    })
}

fn too_large() -> String {
    format!("a value in the template is larger than {MAX_VALUE_BYTES} bytes")
}

/// `text` with `old` replaced by `new` (the first `n` times; every time when `None`), failing
/// as soon as the result grows past [`MAX_VALUE_BYTES`] rather than after building it.
fn bounded_replace(text: &str, old: &str, new: &str, n: Option<usize>) -> Result<String, String> {
    let mut out = String::new();
    let mut last = 0;
    for (i, (at, m)) in text.match_indices(old).enumerate() {
        if n.is_some_and(|n| i >= n) {
            break;
        }
        out.push_str(&text[last..at]);
        out.push_str(new);
        last = at + m.len();
        if out.len() > MAX_VALUE_BYTES {
            return Err(too_large());
        }
    }
    out.push_str(&text[last..]);
    if out.len() > MAX_VALUE_BYTES { Err(too_large()) } else { Ok(out) }
}

/// Go's `printf` for the verbs templates use: `%s %v %d %f %q %%`, with `-`, `0`, width and
/// precision. An argument of the wrong kind prints as Go prints it (`%!d(string=abc)`).
fn printf(format: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut next = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero, mut width, mut prec) = (false, false, None::<usize>, None::<usize>);
        while let Some(f @ ('-' | '0')) = chars.peek().copied() {
            left |= f == '-';
            zero |= f == '0';
            chars.next();
        }
        let digits = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            let mut n = None::<usize>;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize).min(1024));
                chars.next();
            }
            n
        };
        width = width.or(digits(&mut chars));
        if chars.peek() == Some(&'.') {
            chars.next();
            prec = Some(digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = next.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let text = match (verb, a) {
            ('s' | 'v', Val::S(s)) => prec.map_or(s.clone(), |p| s.chars().take(p).collect()),
            ('v', a) => a.text(),
            ('d', Val::N(n)) if n.fract() == 0.0 => format!("{}", *n as i64),
            ('f', Val::N(n)) => format!("{:.*}", prec.unwrap_or(6), n),
            ('q', Val::S(s)) => format!("{s:?}"),
            (v, Val::S(s)) => format!("%!{v}(string={s})"),
            (v, other) => format!("%!{v}({})", other.text()),
        };
        let pad = width.unwrap_or(0).saturating_sub(text.chars().count());
        if left {
            out.push_str(&text);
            out.push_str(&" ".repeat(pad));
        } else {
            out.push_str(&(if zero { "0" } else { " " }).repeat(pad));
            out.push_str(&text);
        }
        if out.len() > MAX_VALUE_BYTES {
            return Err(format!("a value in the template is larger than {MAX_VALUE_BYTES} bytes"));
        }
    }
    Ok(out)
}
