//! Times as Go writes and reads them: [`go_time`] formats by a Go layout (the reference time
//! `Mon Jan 2 15:04:05 MST 2006`) and [`go_parse`] reads one, for the templates' `date`,
//! `toDate` and `__timestamp__`. Times are Unix nanoseconds in an `i128`, wide enough for Go's
//! zero time (year 1).

/// Go's month and weekday names (weeks from Monday, as chrono counts them).
const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// `t` formatted by a Go layout (the reference time `Mon Jan 2 15:04:05 MST 2006`), in UTC.
pub fn go_time(ns: i128, layout: &str) -> String {
    use chrono::{Datelike, Timelike};
    let secs = i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    let Some(t) = chrono::DateTime::from_timestamp(secs, ns.rem_euclid(1_000_000_000) as u32) else {
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

/// Go's zero time, `0001-01-01 00:00:00 UTC`, in Unix nanoseconds.
pub(super) const GO_ZERO_TIME: i128 = -62_135_596_800 * 1_000_000_000;

/// `value` read by a Go layout (the reference time `Mon Jan 2 15:04:05 MST 2006`), as Go's
/// `time.Parse` reads it: numbers, month and day names, AM/PM, fractional seconds (also after
/// the seconds when the layout has none), and zones as `Z`, `±hh:mm`, `±hhmm`, `±hh` or a
/// name (read as UTC). None when the text does not fit the layout.
pub fn go_parse(layout: &str, value: &str) -> Option<i128> {
    const WORDS: [&str; 27] = [
        "January", "Jan", "Monday", "Mon", "MST", "2006", "01", "02", "_2", "03", "04", "05", "06", "15", "1", "2", "3", "4", "5", "PM", "pm", "Z07:00",
        "Z0700", "Z07", "-07:00", "-0700", "-07",
    ];
    // A fraction in the layout: `.` or `,` then zeros (that many digits) or nines (up to that
    // many), not followed by a digit.
    fn layout_fraction(l: &str) -> Option<(usize, bool)> {
        let rest = l.strip_prefix(['.', ','])?;
        let d = *rest.as_bytes().first()?;
        if d != b'0' && d != b'9' {
            return None;
        }
        let n = rest.bytes().take_while(|b| *b == d).count();
        (!rest.as_bytes().get(n).is_some_and(u8::is_ascii_digit)).then_some((1 + n, d == b'9'))
    }
    let (mut year, mut month, mut day, mut hour, mut min, mut sec, mut nanos, mut pm, mut offset) =
        (1i32, 1u32, 1u32, 0u32, 0u32, 0u32, 0u32, None::<bool>, 0i64);
    let mut v = value;
    let mut l = layout;
    // `digits(min, max)`: a number of that many digits from the front of `v`.
    fn digits(v: &mut &str, min: usize, max: usize) -> Option<u32> {
        let n = v.bytes().take(max).take_while(u8::is_ascii_digit).count();
        if n < min {
            return None;
        }
        let out = v[..n].parse().ok()?;
        *v = &v[n..];
        Some(out)
    }
    fn name(v: &mut &str, names: &[&str], short: bool) -> Option<usize> {
        let i = names.iter().position(|n| {
            let n = if short { &n[..3] } else { n };
            v.get(..n.len()).is_some_and(|p| p.eq_ignore_ascii_case(n))
        })?;
        *v = &v[if short { 3 } else { names[i].len() }..];
        Some(i)
    }
    fn fraction(v: &mut &str) -> Option<u32> {
        let rest = v.strip_prefix(['.', ','])?;
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let f = format!("{:0<9}", &rest[..n.min(9)]).parse().ok()?;
        *v = &rest[n..];
        Some(f)
    }
    while !l.is_empty() {
        if let Some((len, optional)) = layout_fraction(l) {
            l = &l[len..];
            match fraction(&mut v) {
                Some(f) => nanos = f,
                None if optional => {}
                None => return None,
            }
            continue;
        }
        let Some(w) = WORDS.iter().find(|w| l.starts_with(**w)).copied() else {
            let c = l.chars().next()?;
            v = v.strip_prefix(c)?;
            l = &l[c.len_utf8()..];
            continue;
        };
        l = &l[w.len()..];
        match w {
            "January" => month = name(&mut v, &MONTHS, false)? as u32 + 1,
            "Jan" => month = name(&mut v, &MONTHS, true)? as u32 + 1,
            "Monday" => drop(name(&mut v, &DAYS, false)?),
            "Mon" => drop(name(&mut v, &DAYS, true)?),
            "MST" => {
                let n = v.bytes().take_while(u8::is_ascii_uppercase).count();
                if n < 3 {
                    return None;
                }
                v = &v[n..];
            }
            "2006" => year = digits(&mut v, 4, 4)? as i32,
            "06" => {
                let y = digits(&mut v, 2, 2)? as i32;
                year = if y >= 69 { 1900 + y } else { 2000 + y };
            }
            "01" => month = digits(&mut v, 2, 2)?,
            "1" => month = digits(&mut v, 1, 2)?,
            "02" => day = digits(&mut v, 2, 2)?,
            "_2" => {
                v = v.strip_prefix(' ').unwrap_or(v);
                day = digits(&mut v, 1, 2)?;
            }
            "2" => day = digits(&mut v, 1, 2)?,
            "15" => hour = digits(&mut v, 1, 2)?,
            "03" => hour = digits(&mut v, 2, 2)?,
            "3" => hour = digits(&mut v, 1, 2)?,
            "04" => min = digits(&mut v, 2, 2)?,
            "4" => min = digits(&mut v, 1, 2)?,
            // A fraction the layout does not show may follow the seconds.
            "05" | "5" => {
                sec = if w == "05" { digits(&mut v, 2, 2)? } else { digits(&mut v, 1, 2)? };
                if layout_fraction(l).is_none()
                    && let Some(f) = fraction(&mut v)
                {
                    nanos = f;
                }
            }
            "PM" | "pm" => {
                let p = v.get(..2)?.to_ascii_uppercase();
                pm = Some(match p.as_str() {
                    "AM" => false,
                    "PM" => true,
                    _ => return None,
                });
                v = &v[2..];
            }
            zone => {
                if zone.starts_with('Z') && v.starts_with('Z') {
                    v = &v[1..];
                    continue;
                }
                let sign = match v.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                v = &v[1..];
                let h = digits(&mut v, 2, 2)? as i64;
                let m = if zone.ends_with("07") {
                    0
                } else {
                    if zone.contains(':') {
                        v = v.strip_prefix(':')?;
                    }
                    digits(&mut v, 2, 2)? as i64
                };
                offset = sign * (h * 3600 + m * 60);
            }
        }
    }
    if !v.is_empty() {
        return None;
    }
    match pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let t = date.and_hms_nano_opt(hour, min, sec, nanos)?.and_utc();
    Some(i128::from(t.timestamp() - offset) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos()))
}
