//! The text-level parts of LogQL: `pattern` expressions and `line_format`/`label_format`
//! templates.
//!
//! Templates are Go's `text/template` as Loki uses them, the part people write: text with
//! `{{.label}}`, `{{__line__}}`, `{{__timestamp__}}`, string and number literals, pipelines
//! (`{{ .msg | ToUpper | trunc 20 }}`, the value going in as the last argument), parentheses,
//! `{{ if … }}…{{ else if … }}…{{ else }}…{{ end }}`, `{{- -}}` trimming, comments, and Loki's
//! common functions (see [`FUNCTIONS`]). A template never loops and never calls another; every
//! value it builds is bounded ([`MAX_VALUE_BYTES`]), so a query cannot make one run long or
//! large. What fails while rendering (a bad comparison, a value too large) is Loki's
//! `TemplateFormatErr`.

use regex::Regex;

use super::{PatternPart, TemplatePart};

/// A `pattern` expression: literal text and `<name>` captures (`<_>` captures nothing); at
/// least one named capture, and never two captures side by side (Loki's rules).
pub(super) fn pattern(src: &str) -> Result<Vec<PatternPart>, String> {
    let mut out: Vec<PatternPart> = Vec::new();
    let mut literal = String::new();
    let mut rest = src;
    while !rest.is_empty() {
        let capture = rest.strip_prefix('<').and_then(|r| {
            let end = r.find('>')?;
            let name = &r[..end];
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with(|c: char| c.is_ascii_digit());
            valid.then_some((name, end + 2))
        });
        match capture {
            Some((name, len)) => {
                if !literal.is_empty() {
                    out.push(PatternPart::Literal(std::mem::take(&mut literal)));
                }
                if matches!(out.last(), Some(PatternPart::Capture(_))) {
                    return Err(format!("pattern `{src}`: two captures side by side (`<{name}>` follows another) cannot be told apart"));
                }
                out.push(PatternPart::Capture((name != "_").then(|| name.to_owned())));
                rest = &rest[len..];
            }
            None => {
                let ch = rest.chars().next().unwrap_or_default();
                literal.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        out.push(PatternPart::Literal(literal));
    }
    if !out.iter().any(|p| matches!(p, PatternPart::Capture(Some(_)))) {
        return Err(format!("pattern `{src}`: at least one named capture like <name> is needed"));
    }
    Ok(out)
}

/// The largest value a template may build (Loki's line limit is of this order); past it the
/// template fails rather than grow.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

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

/// A pipeline: commands joined by `|`, each one's value the last argument of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipe(Vec<Cmd>);

#[derive(Debug, Clone, PartialEq)]
enum Cmd {
    Value(Arg),
    Call(String, Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Label(String),
    Line,
    Timestamp,
    Str(String),
    Num(f64),
    Bool(bool),
    Pipe(Box<Pipe>),
    /// The pattern of a `regexReplaceAll…`, compiled once.
    Re(Pattern),
}

/// A compiled regex, equal to another with the same pattern.
#[derive(Debug, Clone)]
struct Pattern(Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A value while rendering.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    S(String),
    N(f64),
    B(bool),
    /// A time (`__timestamp__`, `unixToTime`), Unix nanoseconds, UTC.
    T(i64),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::S(s) => s.clone(),
            Val::N(n) => super::eval::format_value(*n),
            Val::B(b) => b.to_string(),
            // As Go prints a time.Time.
            Val::T(ns) => go_time(*ns, "2006-01-02 15:04:05.999999999 -0700 MST"),
        }
    }
    fn truthy(&self) -> bool {
        match self {
            Val::S(s) => !s.is_empty(),
            Val::N(n) => *n != 0.0,
            Val::B(b) => *b,
            Val::T(ns) => *ns != i64::MIN,
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

/// What a template reads: a line's labels, text and time.
pub struct Scope<'a> {
    pub labels: &'a super::labels::Labels,
    pub line: &'a str,
    pub timestamp_ns: i64,
}

/// A `line_format`/`label_format` template.
pub(super) fn template(src: &str) -> Result<Vec<TemplatePart>, String> {
    let items = split(src)?;
    let mut at = 0;
    let (parts, end) = block(&items, &mut at, 0)?;
    match end {
        None => Ok(parts),
        Some(word) => Err(format!("template: `{{{{{word}}}}}` without its `{{{{if}}}}`")),
    }
}

/// Text and actions, with `{{-`/`-}}` trimming applied and comments dropped.
enum Item {
    Text(String),
    Action(String),
}

fn split(src: &str) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let inner_start = open + 2;
        let close = rest[inner_start..].find("}}").ok_or("template: `{{` without `}}`")? + inner_start;
        let mut inner = &rest[inner_start..close];
        if let Some(r) = inner.strip_prefix("- ").or_else(|| (inner == "-").then_some("")) {
            text = text.trim_end();
            inner = r;
        }
        trim_next = false;
        if let Some(r) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = r;
        }
        if !text.is_empty() {
            out.push(Item::Text(text.to_owned()));
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            out.push(Item::Action(inner.to_owned()));
        }
        rest = &rest[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Item::Text(text.to_owned()));
    }
    Ok(out)
}

/// Parts up to an `else`/`end` at this depth (returned as the word that ended the block).
fn block(items: &[Item], at: &mut usize, depth: usize) -> Result<(Vec<TemplatePart>, Option<String>), String> {
    if depth > 16 {
        return Err("template: `if` nests deeper than 16".into());
    }
    let mut out = Vec::new();
    while let Some(item) = items.get(*at) {
        *at += 1;
        let action = match item {
            Item::Text(t) => {
                out.push(TemplatePart::Text(t.clone()));
                continue;
            }
            Item::Action(a) => a.as_str(),
        };
        let word = action.split_whitespace().next().unwrap_or("");
        match word {
            "end" | "else" => return Ok((out, Some(action.to_owned()))),
            "if" => out.push(if_block(&action[2..], items, at, depth)?),
            "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
                return Err(format!("template: `{word}` is not supported (use if/else, pipelines and functions)"));
            }
            _ => out.push(match action {
                "__line__" => TemplatePart::Line,
                "__timestamp__" => TemplatePart::Timestamp,
                a if a.starts_with('.') && a.len() > 1 && a[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    TemplatePart::Label(a[1..].to_owned())
                }
                a => TemplatePart::Pipe(pipe(a)?),
            }),
        }
    }
    Ok((out, None))
}

/// An `if` with its `else if` chain (read in a loop: a long chain is not a deep nesting) and
/// its `else`, up to its `end`.
fn if_block(cond: &str, items: &[Item], at: &mut usize, depth: usize) -> Result<TemplatePart, String> {
    let mut branches = vec![];
    let mut cond = pipe(cond.trim())?;
    let otherwise = loop {
        let (then, end) = block(items, at, depth + 1)?;
        branches.push((cond, then));
        match end.as_deref().map(str::trim) {
            Some("end") => break Vec::new(),
            Some("else") => match block(items, at, depth + 1)? {
                (parts, Some(e)) if e == "end" => break parts,
                _ => return Err("template: `{{else}}` without its `{{end}}`".into()),
            },
            Some(e) if e.starts_with("else ") && e[5..].trim_start().starts_with("if ") => {
                if branches.len() >= MAX_BRANCHES {
                    return Err(format!("template: an `if` has more than {MAX_BRANCHES} `else if` branches"));
                }
                cond = pipe(e[5..].trim_start()[2..].trim())?;
            }
            _ => return Err("template: `{{if}}` without its `{{end}}`".into()),
        }
    };
    let mut part = otherwise;
    for (cond, then) in branches.into_iter().rev() {
        part = vec![TemplatePart::If { cond, then, otherwise: part }];
    }
    part.pop().ok_or_else(|| "internal: an `if` without a branch".to_owned())
}

/// Most `else if` branches one `if` may have.
const MAX_BRANCHES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(String),
    Ident(String),
    Str(String),
    Num(f64),
    Bar,
    Open,
    Close,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'|' => {
                out.push(Tok::Bar);
                i += 1;
            }
            b'(' => {
                out.push(Tok::Open);
                i += 1;
            }
            b')' => {
                out.push(Tok::Close);
                i += 1;
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(format!("template: unterminated string in `{src}`")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            s.push(match b.get(i + 1) {
                                Some(b'n') => '\n',
                                Some(b't') => '\t',
                                Some(b'\\') => '\\',
                                Some(b'"') => '"',
                                _ => return Err(format!("template: unknown escape in `{src}`")),
                            });
                            i += 2;
                        }
                        Some(_) => {
                            let ch = src[i..].chars().next().unwrap_or_default();
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                i += 1;
                out.push(Tok::Str(s));
            }
            b'`' => {
                let end = src[i + 1..].find('`').ok_or_else(|| format!("template: unterminated raw string in `{src}`"))?;
                out.push(Tok::Str(src[i + 1..i + 1 + end].to_owned()));
                i += end + 2;
            }
            b'.' | b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &src[start..i];
                out.push(if let Some(f) = word.strip_prefix('.') { Tok::Field(f.to_owned()) } else { Tok::Ident(word.to_owned()) });
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E') {
                    i += 1;
                }
                let n = src[start..i].parse().map_err(|_| format!("template: `{}` is not a number", &src[start..i]))?;
                out.push(Tok::Num(n));
            }
            _ => return Err(format!("template: unexpected `{}` in `{src}`", src[i..].chars().next().unwrap_or('?'))),
        }
    }
    Ok(out)
}

fn pipe(src: &str) -> Result<Pipe, String> {
    let toks = lex(src)?;
    let mut at = 0;
    let p = pipeline(&toks, &mut at, 0)?;
    if at != toks.len() {
        return Err(format!("template: unexpected `)` in `{src}`"));
    }
    Ok(p)
}

fn pipeline(toks: &[Tok], at: &mut usize, depth: usize) -> Result<Pipe, String> {
    if depth > 16 {
        return Err("template: parentheses nest deeper than 16".into());
    }
    let mut cmds = Vec::new();
    loop {
        let first = cmds.is_empty();
        cmds.push(command(toks, at, depth, first)?);
        if toks.get(*at) == Some(&Tok::Bar) {
            *at += 1;
        } else {
            break;
        }
    }
    Ok(Pipe(cmds))
}

fn command(toks: &[Tok], at: &mut usize, depth: usize, first: bool) -> Result<Cmd, String> {
    let Some(Tok::Ident(name)) = toks.get(*at).filter(|t| matches!(t, Tok::Ident(n) if arity(n).is_some())) else {
        if !first {
            return Err("template: after `|` comes a function".into());
        }
        let a = arg(toks, at, depth)?;
        return Ok(Cmd::Value(a));
    };
    *at += 1;
    let mut args = Vec::new();
    while !matches!(toks.get(*at), None | Some(Tok::Bar) | Some(Tok::Close)) {
        args.push(arg(toks, at, depth)?);
    }
    let piped = usize::from(!first);
    let n = args.len() + piped;
    match arity(name).flatten() {
        Some(want) if want != n => return Err(format!("template: `{name}` takes {want} argument(s), given {n}")),
        None if n == 0 => return Err(format!("template: `{name}` needs an argument")),
        _ => {}
    }
    // A regex is compiled once, here, with the same bounds as the query's own regexes.
    if name.starts_with("regexReplaceAll") {
        match args.first() {
            Some(Arg::Str(p)) => args[0] = Arg::Re(Pattern(super::pipeline::regex_unanchored(p)?)),
            _ => return Err(format!("template: `{name}` takes its regex as a quoted string")),
        }
    }
    Ok(Cmd::Call(name.clone(), args))
}

fn arity(name: &str) -> Option<Option<usize>> {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

fn arg(toks: &[Tok], at: &mut usize, depth: usize) -> Result<Arg, String> {
    let t = toks.get(*at).ok_or("template: a value is missing")?;
    *at += 1;
    Ok(match t {
        Tok::Field(f) if !f.is_empty() => Arg::Label(f.clone()),
        Tok::Str(s) => Arg::Str(s.clone()),
        Tok::Num(n) => Arg::Num(*n),
        Tok::Ident(i) if i == "__line__" => Arg::Line,
        Tok::Ident(i) if i == "__timestamp__" => Arg::Timestamp,
        Tok::Ident(i) if i == "true" || i == "false" => Arg::Bool(i == "true"),
        Tok::Open => {
            let p = pipeline(toks, at, depth + 1)?;
            if toks.get(*at) != Some(&Tok::Close) {
                return Err("template: `(` without `)`".into());
            }
            *at += 1;
            Arg::Pipe(Box::new(p))
        }
        Tok::Ident(i) => return Err(format!("template: function `{i}` is not supported (supported: {})", FUNCTIONS.map(|f| f.0).join(", "))),
        other => return Err(format!("template: unexpected {other:?}")),
    })
}

/// Renders `parts`; `Err` is Loki's `TemplateFormatErr`, with its details.
pub fn render(parts: &[TemplatePart], s: &Scope) -> Result<String, String> {
    let mut out = String::new();
    render_into(parts, s, &mut out)?;
    Ok(out)
}

fn render_into(parts: &[TemplatePart], s: &Scope, out: &mut String) -> Result<(), String> {
    for part in parts {
        match part {
            TemplatePart::Text(t) => out.push_str(t),
            TemplatePart::Label(l) => out.push_str(s.labels.get(l).map_or("", String::as_str)),
            TemplatePart::Line => out.push_str(s.line),
            TemplatePart::Timestamp => out.push_str(&Val::T(s.timestamp_ns).text()),
            TemplatePart::Pipe(p) => out.push_str(&run(p, s)?.text()),
            TemplatePart::If { cond, then, otherwise } => render_into(if run(cond, s)?.truthy() { then } else { otherwise }, s, out)?,
        }
        if out.len() > MAX_VALUE_BYTES {
            return Err(format!("the template's output is larger than {MAX_VALUE_BYTES} bytes"));
        }
    }
    Ok(())
}

fn run(p: &Pipe, s: &Scope) -> Result<Val, String> {
    let mut last: Option<Val> = None;
    for cmd in &p.0 {
        let v = match cmd {
            Cmd::Value(a) => value(a, s)?,
            // Go's `and`/`or` stop at the first argument that decides (falsy for `and`, truthy
            // for `or`) without evaluating the rest; else the last argument (the piped value,
            // when there is one).
            Cmd::Call(name, args) if name == "and" || name == "or" => {
                let and = name == "and";
                let (mut decided, mut last_arg) = (None, None);
                for a in args {
                    let v = value(a, s)?;
                    if and != v.truthy() {
                        decided = Some(v);
                        break;
                    }
                    last_arg = Some(v);
                }
                match (decided, last.take()) {
                    (Some(v), _) | (None, Some(v)) => v,
                    (None, None) => last_arg.ok_or("`and`/`or` needs an argument")?,
                }
            }
            Cmd::Call(name, args) => {
                let mut vals = Vec::with_capacity(args.len() + 1);
                for a in args {
                    vals.push(match a {
                        // The compiled regex goes to `call` apart; its place is kept.
                        Arg::Re(_) => Val::B(false),
                        a => value(a, s)?,
                    });
                }
                vals.extend(last.take());
                let re = match args.first() {
                    Some(Arg::Re(r)) => Some(&r.0),
                    _ => None,
                };
                call(name, vals, re)?
            }
        };
        if let Val::S(t) = &v
            && t.len() > MAX_VALUE_BYTES
        {
            return Err(format!("a value in the template is larger than {MAX_VALUE_BYTES} bytes"));
        }
        last = Some(v);
    }
    last.ok_or_else(|| "an empty pipeline".to_owned())
}

fn value(a: &Arg, s: &Scope) -> Result<Val, String> {
    Ok(match a {
        Arg::Label(l) => Val::S(s.labels.get(l).cloned().unwrap_or_default()),
        Arg::Line => Val::S(s.line.to_owned()),
        Arg::Timestamp => Val::T(s.timestamp_ns),
        Arg::Str(t) => Val::S(t.clone()),
        Arg::Num(n) => Val::N(*n),
        Arg::Bool(b) => Val::B(*b),
        Arg::Pipe(p) => run(p, s)?,
        Arg::Re(r) => Val::S(r.0.as_str().to_owned()),
    })
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

fn call(name: &str, mut v: Vec<Val>, re: Option<&Regex>) -> Result<Val, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn out(src: &str) -> Result<String, String> {
        let labels: super::super::labels::Labels = [("msg", "Slow call to /api/users"), ("status", "500"), ("path", "/api/users"), ("empty", ""), ("n", "7")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        render(&template(src)?, &Scope { labels: &labels, line: "the line", timestamp_ns: 0 })
    }

    #[test]
    fn functions_pipelines_and_conditions_render_as_go_templates_do() {
        for (src, want) in [
            ("{{.status}} {{ .msg | ToUpper }}", "500 SLOW CALL TO /API/USERS"),
            ("{{ lower .msg | trunc 4 }}|{{ trunc -5 .msg }}", "slow|users"),
            ("{{ .path | TrimPrefix \"/api\" }}", "/api"),
            ("{{ TrimPrefix .path \"/api\" }}", "/users"),
            ("{{ .path | trimPrefix \"/api\" }}", "/users"),
            ("{{ Replace .msg \"/\" \"_\" -1 }} {{ .msg | replace \"call\" \"hop\" }}", "Slow call to _api_users Slow hop to /api/users"),
            ("{{ regexReplaceAll \"(\\\\w+)/(\\\\w+)$\" .path \"${2}@${1}\" }}", "/users@api"),
            ("{{ regexReplaceAllLiteral \"u.\" .path \"$1\" }}", "/api/$1ers"),
            ("{{ .empty | default \"-\" }}{{ default \"-\" .status }}", "-500"),
            ("[{{ alignLeft 6 .status }}][{{ alignRight 6 .status }}][{{ alignLeft 2 .status }}]", "[500   ][   500][50]"),
            ("{{ printf \"%s=%5.2f|%-4d|%q|%03d\" .status 3.14159 12 .n 7 }}", "500= 3.14|12  |\"7\"|007"),
            ("{{ printf \"%d\" .status }}", "%!d(string=500)"),
            ("{{ substr 5 9 .msg }}{{ len .msg }}", "call23"),
            ("{{ if eq .status \"500\" }}ERR{{ else if eq .status \"404\" }}MISS{{ else }}ok{{ end }}", "ERR"),
            ("{{ if and (hasPrefix \"/api\" .path) (not (contains \"fast\" .msg)) }}slow api{{ end }}", "slow api"),
            ("{{ if or .empty .missing }}x{{ else }}{{ or .empty .status }}{{ end }}", "500"),
            ("{{ if gt (len .msg) 10 }}long{{ end }}{{ if lt \"a\" \"b\" }}<{{ end }}", "long<"),
            ("a  {{- .status -}}  b {{/* a comment */}}c", "a500b c"),
            ("{{ title \"hello wide world\" }} {{ __line__ | upper }}", "Hello Wide World THE LINE"),
            ("{{ \"x\" }}{{ 2 }}{{ true }}", "x2true"),
        ] {
            assert_eq!(out(src).as_deref(), Ok(want), "{src}");
        }
        // Times: `__timestamp__` prints as Go prints a time; `date` takes Go layouts.
        let at = |src: &str, ns: i64| -> String {
            let labels = super::super::labels::Labels::from([("epoch".to_owned(), "1700000000123".to_owned())]);
            render(&template(src).unwrap(), &Scope { labels: &labels, line: "", timestamp_ns: ns }).unwrap()
        };
        let t = 1_700_000_000_120_000_000; // 2023-11-14 22:13:20.12 UTC, a Tuesday
        assert_eq!(at("{{__timestamp__}}", t), "2023-11-14 22:13:20.12 +0000 UTC");
        assert_eq!(at("{{__timestamp__}}", t - 120_000_000), "2023-11-14 22:13:20 +0000 UTC");
        for (layout, want) in [
            ("2006-01-02T15:04:05.000Z07:00", "2023-11-14T22:13:20.120Z"),
            ("Mon Jan _2 03:04:05 PM MST 2006", "Tue Nov 14 10:13:20 PM UTC 2023"),
            ("Monday, 2 January 06 15h04 -0700 ,999999", "Tuesday, 14 November 23 22h13 +0000 ,12"),
            ("002 é 1/2 3:4:5pm", "318 é 11/14 10:13:20pm"),
        ] {
            assert_eq!(at(&format!("{{{{ __timestamp__ | date \"{layout}\" }}}}"), t), want, "{layout}");
        }
        assert_eq!(
            at("{{ unixEpoch __timestamp__ }} {{ unixEpochMillis __timestamp__ }} {{ __timestamp__ | unixEpochNanos }}", t),
            "1700000000 1700000000120 1700000000120000000"
        );
        assert_eq!(at("{{ .epoch | unixToTime | date \"15:04:05.000\" }}", 0), "22:13:20.123");
        assert_eq!(out("{{ if lt (unixEpoch __timestamp__) 1800000000 }}before{{ end }}").as_deref(), Ok("before"));
    }

    #[test]
    fn what_cannot_run_is_refused_when_parsed_and_what_fails_is_an_error() {
        for (src, needle) in [
            ("{{ range .x }}{{ end }}", "not supported"),
            ("{{ template \"a\" }}", "not supported"),
            ("{{ define \"a\" }}{{ end }}", "not supported"),
            ("{{ exec .x }}", "function `exec` is not supported"),
            ("{{ .a | }}", "comes a function"),
            ("{{ Replace .a \"x\" }}", "takes 4 argument(s), given 2"),
            ("{{ if .a }}open", "without its `{{end}}`"),
            ("{{ end }}", "without its"),
            ("{{ regexReplaceAll .re .a \"x\" }}", "as a quoted string"),
            ("{{ regexReplaceAll \"(\" .a \"x\" }}", "regex"),
            ("{{ .a", "without `}}`"),
            (&format!("{}x{}", "{{ if .a }}".repeat(20), "{{ end }}".repeat(20)), "deeper than 16"),
        ] {
            assert!(template(src).is_err_and(|e| e.contains(needle)), "{src}: {:?}", template(src));
        }
        // `and`/`or` stop at the argument that decides, as Go's do; `len` counts bytes; a long
        // `else if` chain is not a deep nesting.
        assert_eq!(out("{{ and false (eq 1 \"a\") }}{{ or .status (eq 1 \"a\") }}{{ len \"é\" }}").as_deref(), Ok("false5002"));
        let chain = format!(
            "{{{{ if eq .n \"0\" }}}}0{}{{{{ else }}}}none{{{{ end }}}}",
            (1..40).map(|i| format!("{{{{ else if eq .n \"{i}\" }}}}{i}")).collect::<String>()
        );
        assert_eq!(out(&chain).as_deref(), Ok("7"));
        // A replacement that would grow past the bound fails as it grows, not after.
        assert!(out("{{ replace \" \" (alignLeft 65536 \"\") (alignLeft 65536 \"\") }}").unwrap_err().contains("larger than"));
        assert!(out("{{ regexReplaceAll \"\" (alignLeft 60000 \"\") \"xx\" }}").unwrap_err().contains("larger than"));
        // Failures while rendering: comparing a string with a number, a value grown too large.
        assert!(out("{{ if eq .status 500 }}x{{ end }}").unwrap_err().contains("incompatible types"));
        let grow = format!("{}.msg{}", "(replace \"\" \"xxxxxxxx\" ".repeat(6), ")".repeat(6));
        assert!(out(&format!("{{{{ {grow} }}}}")).unwrap_err().contains("larger than"));
        assert!(out("{{ printf \"%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s\" }}").is_ok(), "widths are capped at 1024, missing args are noted");
    }

    #[test]
    fn hostile_templates_never_panic() {
        // Random templates, structured (values, functions with any number of arguments,
        // pipelines, parentheses, conditions) and not, over multi-byte text and extreme
        // times: every one parses or is refused, renders or fails, and none panics.
        let values =
            [".a", ".msg", "__line__", "__timestamp__", "\"x\"", "`é日`", "\"\"", "-1", "3", "0.5", "1e300", "true", "\"%-9.3f%q%d%s%\"", "\"(a+)+$\""];
        let funcs: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let pipe = |next: &mut dyn FnMut(usize) -> usize| {
            let mut p = values[next(values.len())].to_owned();
            for _ in 0..next(4) {
                let args: Vec<&str> = (0..next(4)).map(|_| values[next(values.len())]).collect();
                p = format!("{p} | {} {}", funcs[next(funcs.len())], args.join(" "));
            }
            if next(3) == 0 { format!("({p})") } else { p }
        };
        let pieces = ["{{", "}}", "{{-", "-}}", "|", "(", ")", "if", "else", "end", "é", "/*", "*/"];
        let (mut piped, mut failed) = (0, 0);
        for i in 0..20_000 {
            let src = if i % 4 == 0 {
                (0..1 + next(12)).map(|_| pieces[next(pieces.len())]).collect::<Vec<_>>().join(" ")
            } else {
                let (a, b) = (pipe(&mut next), pipe(&mut next));
                match next(3) {
                    0 => format!("é{{{{ {a} }}}}日{{{{- {b} -}}}}"),
                    1 => format!("{{{{ if {a} }}}}{{{{ {b} }}}}{{{{ else if not {b} }}}}x{{{{ else }}}}{{{{ {a} }}}}{{{{ end }}}}"),
                    _ => format!("{{{{ printf \"%s|%5.1f|%-3d|%q\" {a} {b} }}}}"),
                }
            };
            let Ok(t) = template(&src) else { continue };
            let labels: super::super::labels::Labels = [("a", "é1日"), ("msg", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
            let ts = [i64::MIN, -1, 0, i64::MAX][next(4)];
            piped += usize::from(t.iter().any(|p| matches!(p, TemplatePart::Pipe(_) | TemplatePart::If { .. })));
            failed += usize::from(render(&t, &Scope { labels: &labels, line: "é日本 line", timestamp_ns: ts }).is_err());
        }
        // Enough of them ran functions and conditions, and some failed while running.
        assert!(piped > 1_000 && failed > 100, "{piped} with functions or conditions, {failed} failed");
        for layout in ["", ".", ",9", ".00é", "é.9", "Z07:0", "-07:0", "__", "_", "2006é01"] {
            let _ = go_time(i64::MAX, layout);
            let _ = go_time(i64::MIN, layout);
        }
    }
}
