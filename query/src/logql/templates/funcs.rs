//! What a template's values are and what its functions do: [`FUNCTIONS`], each bounded by
//! [`MAX_VALUE_BYTES`], Go's `printf`, and times in Go layouts.

use regex::Regex;

use super::MAX_VALUE_BYTES;

/// Functions, with the arguments each takes (`None`: any number from one).
pub const FUNCTIONS: [(&str, Option<usize>); 43] = [
    ("ToUpper", Some(1)),
    ("upper", Some(1)),
    ("ToLower", Some(1)),
    ("lower", Some(1)),
    ("title", Some(1)),
    ("TrimSpace", Some(1)),
    ("trim", Some(1)),
    ("Trim", Some(2)),
    ("TrimLeft", Some(2)),
    ("TrimRight", Some(2)),
    ("TrimPrefix", Some(2)),
    ("TrimSuffix", Some(2)),
    ("trimAll", Some(2)),
    ("trimPrefix", Some(2)),
    ("trimSuffix", Some(2)),
    ("Replace", Some(4)),
    ("replace", Some(3)),
    ("contains", Some(2)),
    ("hasPrefix", Some(2)),
    ("hasSuffix", Some(2)),
    ("trunc", Some(2)),
    ("substr", Some(3)),
    ("default", Some(2)),
    ("alignLeft", Some(2)),
    ("alignRight", Some(2)),
    ("regexReplaceAll", Some(3)),
    ("regexReplaceAllLiteral", Some(3)),
    ("printf", None),
    ("len", Some(1)),
    ("eq", None),
    ("ne", Some(2)),
    ("lt", Some(2)),
    ("le", Some(2)),
    ("gt", Some(2)),
    ("ge", Some(2)),
    ("and", None),
    ("or", None),
    ("not", Some(1)),
    ("date", Some(2)),
    ("unixEpoch", Some(1)),
    ("unixEpochMillis", Some(1)),
    ("unixEpochNanos", Some(1)),
    ("unixToTime", Some(1)),
];

/// A value while rendering.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    S(String),
    N(f64),
    B(bool),
    /// A time (`__timestamp__`, `unixToTime`), Unix nanoseconds, UTC.
    T(i64),
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

/// `t` formatted by a Go layout (the reference time `Mon Jan 2 15:04:05 MST 2006`), in UTC.
pub fn go_time(ns: i64, layout: &str) -> String {
    use chrono::{Datelike, Timelike};
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let Some(t) = chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32) else {
        return String::new();
    };
    let (month, weekday) = (MONTHS[t.month0() as usize], DAYS[t.weekday().num_days_from_monday() as usize]);
    let hour12 = if t.hour() % 12 == 0 { 12 } else { t.hour() % 12 };
    // Go's layout words, longer before shorter where one begins another.
    const WORDS: [&str; 31] = [
        "January",
        "Jan",
        "Monday",
        "Mon",
        "MST",
        "2006",
        "002",
        "__2",
        "_2",
        "01",
        "02",
        "03",
        "04",
        "05",
        "06",
        "15",
        "1",
        "2",
        "3",
        "4",
        "5",
        "PM",
        "pm",
        "Z07:00:00",
        "Z07:00",
        "Z0700",
        "Z07",
        "-07:00:00",
        "-07:00",
        "-0700",
        "-07",
    ];
    let word = |w: &str| -> String {
        match w {
            "January" => month.to_owned(),
            "Jan" => month[..3].to_owned(),
            "Monday" => weekday.to_owned(),
            "Mon" => weekday[..3].to_owned(),
            "MST" => "UTC".to_owned(),
            "2006" => format!("{:04}", t.year()),
            "002" => format!("{:03}", t.ordinal()),
            "__2" => format!("{:>3}", t.ordinal()),
            "_2" => format!("{:>2}", t.day()),
            "01" => format!("{:02}", t.month()),
            "02" => format!("{:02}", t.day()),
            "03" => format!("{:02}", hour12),
            "04" => format!("{:02}", t.minute()),
            "05" => format!("{:02}", t.second()),
            "06" => format!("{:02}", t.year().rem_euclid(100)),
            "15" => format!("{:02}", t.hour()),
            "1" => t.month().to_string(),
            "2" => t.day().to_string(),
            "3" => hour12.to_string(),
            "4" => t.minute().to_string(),
            "5" => t.second().to_string(),
            "PM" => (if t.hour() < 12 { "AM" } else { "PM" }).to_owned(),
            "pm" => (if t.hour() < 12 { "am" } else { "pm" }).to_owned(),
            w if w.starts_with('Z') => "Z".to_owned(),
            w => ["+00:00:00", "+00:00", "+0000", "+00"][["-07:00:00", "-07:00", "-0700", "-07"].iter().position(|x| *x == w).unwrap_or(3)].to_owned(),
        }
    };
    let mut out = String::new();
    let mut rest = layout;
    while let Some(c) = rest.chars().next() {
        let token: Option<(usize, String)> = WORDS.iter().find(|w| rest.starts_with(**w)).map(|w| (w.len(), word(w))).or_else(|| {
            // Fractional seconds: `.000` (that many digits) or `.999` (trailing zeros dropped,
            // nothing at all when zero), after a `.` or `,`.
            if c != '.' && c != ',' {
                return None;
            }
            let digits = rest[1..].bytes().take_while(|b| *b == b'0' || *b == b'9').count();
            let same = digits > 0 && rest[1..=digits].bytes().all(|b| b == rest.as_bytes()[1]);
            let ends = !rest.as_bytes().get(1 + digits).is_some_and(u8::is_ascii_digit);
            (same && ends).then(|| {
                let full = format!("{:09}", t.nanosecond() % 1_000_000_000);
                let mut f = full[..digits.min(9)].to_owned();
                if rest.as_bytes()[1] == b'9' {
                    f = f.trim_end_matches('0').to_owned();
                }
                (1 + digits, if f.is_empty() { String::new() } else { format!("{c}{f}") })
            })
        });
        match token {
            Some((len, text)) => {
                out.push_str(&text);
                rest = &rest[len..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// A time from a value: a time, or Unix seconds (a number, or digits whose count says
/// seconds, milliseconds, microseconds or nanoseconds, as Loki's `unixToTime` reads them).
fn time_of(v: &Val) -> Result<i64, String> {
    match v {
        Val::T(ns) => Ok(*ns),
        Val::N(s) => Ok((s * 1e9) as i64),
        Val::S(s) => {
            let n: i64 = s.trim().parse().map_err(|_| format!("`{s}` is not a Unix time"))?;
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
