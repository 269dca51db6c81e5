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
//!
//! Syntax and rendering are here; what values are and what the functions do, in `funcs`.

use regex::Regex;

use super::{PatternPart, TemplatePart};

mod funcs;
mod gotime;

use funcs::{FUNCTIONS, Val, call};
pub use gotime::go_time;

/// A `pattern` expression: literal text and `<name>` captures (`<_>` captures nothing); at
/// least one named capture, and never two captures side by side (Loki's rules).
pub(super) fn pattern(src: &str) -> Result<Vec<PatternPart>, String> {
    let out = pattern_parts(src)?;
    if !out.iter().any(|p| matches!(p, PatternPart::Capture(Some(_)))) {
        return Err(format!("pattern `{src}`: at least one named capture like <name> is needed"));
    }
    Ok(out)
}

/// The literals and captures of a pattern; two captures side by side are refused.
pub(in crate::logql) fn pattern_parts(src: &str) -> Result<Vec<PatternPart>, String> {
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
    Ok(out)
}

/// The largest value a template may build (Loki's line limit is of this order); past it the
/// template fails rather than grow.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

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
    if let Some((least, most)) = arity(name) {
        match most {
            Some(most) if least == most && n != most => return Err(format!("template: `{name}` takes {most} argument(s), given {n}")),
            Some(most) if n < least || n > most => return Err(format!("template: `{name}` takes {least} to {most} arguments, given {n}")),
            None if n < least => return Err(format!("template: `{name}` needs at least {least} argument(s)")),
            _ => {}
        }
    }
    // A regex is compiled once, here, with the same bounds as the query's own regexes.
    if name.starts_with("regexReplaceAll") || name == "count" {
        match args.first() {
            Some(Arg::Str(p)) => args[0] = Arg::Re(Pattern(super::pipeline::regex_unanchored(p)?)),
            _ => return Err(format!("template: `{name}` takes its regex as a quoted string")),
        }
    }
    Ok(Cmd::Call(name.clone(), args))
}

/// The fewest and most arguments of function `name` (None: not a function).
fn arity(name: &str) -> Option<(usize, Option<usize>)> {
    FUNCTIONS.iter().find(|(n, ..)| *n == name).map(|(_, least, most)| (*least, *most))
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
            TemplatePart::Timestamp => out.push_str(&Val::T(s.timestamp_ns.into()).text()),
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
        Arg::Timestamp => Val::T(s.timestamp_ns.into()),
        Arg::Str(t) => Val::S(t.clone()),
        Arg::Num(n) => Val::N(*n),
        Arg::Bool(b) => Val::B(*b),
        Arg::Pipe(p) => run(p, s)?,
        Arg::Re(r) => Val::S(r.0.as_str().to_owned()),
    })
}

#[cfg(test)]
mod tests;
