//! The line parsers of a pipeline: `json` (with path extractions), `logfmt` (Loki 3's lenient
//! reading, `--strict`, `--keep-empty`, key extractions), `unpack` and `pattern`. Each sets
//! labels on an [`Entry`], named as Loki names them (`…_extracted` where a stream label's
//! name is taken), and marks the entry with Loki's error label where the line does not parse.

use super::PatternPart;
use super::labels::{extracted_name, sanitize};
use super::pipeline::Entry;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathPart {
    Key(String),
    Index(usize),
}

/// `a.b[0]["c d"]` into its parts.
pub(super) fn json_path(path: &str) -> Result<Vec<PathPart>, String> {
    let mut out = Vec::new();
    let mut rest = path.trim();
    let bad = || format!("json: `{path}` is not a path like a.b[0] or a[\"b\"]");
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(bad)?;
            let inner = r[..close].trim();
            if let Some(q) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                out.push(PathPart::Key(q.to_owned()));
            } else {
                out.push(PathPart::Index(inner.parse().map_err(|_| bad())?));
            }
            rest = &r[close + 1..];
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(bad());
            }
            out.push(PathPart::Key(r[..end].to_owned()));
            rest = &r[end..];
        }
    }
    if out.is_empty() { Err(bad()) } else { Ok(out) }
}

/// The pattern of a `|>` or `!>` line filter: literals and `<_>`; a named capture (it would
/// capture nothing) and two captures side by side are refused, as Loki refuses them.
pub(super) fn line_pattern(src: &str) -> Result<Vec<PatternPart>, String> {
    let parts = super::templates::pattern_parts(src)?;
    if let Some(PatternPart::Capture(Some(name))) = parts.iter().find(|p| matches!(p, PatternPart::Capture(Some(_)))) {
        return Err(format!("pattern filter `{src}`: named captures are not allowed (`<{name}>`); use <_>"));
    }
    Ok(parts)
}

/// Whether `line` matches a line filter's pattern, by Loki's test: each literal is looked for
/// after the previous one (the first one anywhere); a literal found right where a `<_>` should
/// have held something fails the line; a pattern ending in a literal must end the line, one
/// ending in `<_>` must leave something for it. An empty pattern matches the empty line only.
pub(super) fn pattern_test(p: &[PatternPart], line: &str) -> bool {
    if line.is_empty() || p.is_empty() {
        return line.is_empty() && p.is_empty();
    }
    let mut off = 0;
    for (i, part) in p.iter().enumerate() {
        let PatternPart::Literal(l) = part else { continue };
        match line[off..].find(l.as_str()) {
            None => return false,
            Some(0) if i != 0 => return false,
            Some(j) => off += j + l.len(),
        }
    }
    matches!(p.last(), Some(PatternPart::Capture(_))) == (off != line.len())
}

/// What a `pattern` captures in `line`, by Loki's matcher: a leading literal must open the
/// line; each capture runs to its next literal, or to the end of the line when that literal
/// is not found (the remaining captures then stay unset).
pub(super) fn pattern_match(p: &[PatternPart], line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    let mut parts = p;
    if let Some(PatternPart::Literal(l)) = parts.first() {
        if !rest.starts_with(l.as_str()) {
            return out;
        }
        rest = &rest[l.len()..];
        parts = &parts[1..];
    }
    while let Some(PatternPart::Capture(name)) = parts.first() {
        let Some(PatternPart::Literal(l)) = parts.get(1) else {
            // Ending on a capture: the rest of the line.
            if let Some(n) = name {
                out.push((n.clone(), rest.to_owned()));
            }
            return out;
        };
        match rest.find(l.as_str()) {
            None => {
                if let Some(n) = name {
                    out.push((n.clone(), rest.to_owned()));
                }
                return out;
            }
            Some(i) => {
                if let Some(n) = name {
                    out.push((n.clone(), rest[..i].to_owned()));
                }
                rest = &rest[i + l.len()..];
                parts = &parts[2..];
            }
        }
    }
    out
}

/// Sets an extracted label. An empty value is no label (Loki drops empty labels).
pub(super) fn set(e: &mut Entry, key: &str, value: String) {
    let name = extracted_name(&sanitize(key));
    e.metadata.remove(&name);
    if value.is_empty() {
        e.labels.remove(&name);
    } else {
        e.labels.insert(name, value);
    }
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn flatten(e: &mut Entry, prefix: &str, v: &serde_json::Map<String, serde_json::Value>) {
    for (k, v) in v {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}_{k}") };
        match v {
            serde_json::Value::Object(o) => flatten(e, &key, o),
            // Loki skips arrays unless a path asks for an element.
            serde_json::Value::Array(_) => {}
            other => {
                if let Some(s) = scalar(other) {
                    set(e, &key, s);
                }
            }
        }
    }
}

/// `unpack`: a line Promtail's `pack` wrote (a JSON object with a string `_entry`) gives its
/// string fields back as labels (renamed `…_extracted` when they would shadow a stream label)
/// and `_entry` as the line. Other fields are left out, and a JSON object without `_entry` is
/// left as it is, with no labels, as Loki leaves it. An empty line is left alone.
pub(super) fn unpack(e: &mut Entry) {
    if e.line.is_empty() {
        return;
    }
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(&e.line) else {
        e.labels.insert("__error__".into(), "JSONParserErr".into());
        e.labels.insert("__error_details__".into(), "the line is not a JSON object".into());
        return;
    };
    let mut entry = None;
    let mut fields = Vec::new();
    for (k, v) in obj {
        match v {
            serde_json::Value::String(s) if k == "_entry" => entry = Some(s),
            serde_json::Value::String(s) if !s.is_empty() => fields.push((k, s)),
            _ => {}
        }
    }
    let Some(line) = entry else { return };
    e.line = line;
    for (k, s) in fields {
        set(e, &k, s);
    }
}

pub(super) fn json(e: &mut Entry, params: &[(String, Vec<PathPart>)]) {
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&e.line);
    let Ok(serde_json::Value::Object(obj)) = parsed else {
        e.labels.insert("__error__".into(), "JSONParserErr".into());
        e.labels.insert("__error_details__".into(), "the line is not a JSON object".into());
        return;
    };
    if params.is_empty() {
        flatten(e, "", &obj);
        return;
    }
    let root = serde_json::Value::Object(obj);
    for (label, path) in params {
        let mut cur = Some(&root);
        for part in path {
            cur = match (cur, part) {
                (Some(serde_json::Value::Object(o)), PathPart::Key(k)) => o.get(k),
                (Some(serde_json::Value::Array(a)), PathPart::Index(i)) => a.get(*i),
                _ => None,
            };
        }
        let value = match cur {
            Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => v.to_string(),
            Some(v) => scalar(v).unwrap_or_default(),
            None => String::new(),
        };
        set(e, label, value);
    }
}

/// How `logfmt` reads a line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogfmtOptions {
    /// `label="key"` extractions; every key when empty.
    pub params: Vec<(String, String)>,
    /// `--strict`: stop at the first malformed pair and mark the line `LogfmtParserErr`.
    /// Otherwise (Loki 3's default) a malformed pair is skipped and the rest read.
    pub strict: bool,
    /// `--keep-empty`: a bare `key` or `key=` sets the label to the empty value.
    pub keep_empty: bool,
}

/// logfmt: `key=value`, `key="quoted \" value"`, bare `key` (an empty value); every pair
/// becomes a label, or, with extractions, only the keys named, under their labels.
pub(super) fn logfmt(e: &mut Entry, o: &LogfmtOptions) {
    let line = std::mem::take(&mut e.line);
    let b = line.as_bytes();
    let mut i = 0;
    let mut failed = false;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ks = i;
        let mut ok = true;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            if b[i] == b'"' {
                ok = false;
            }
            i += 1;
        }
        let key = &line[ks..i];
        if key.is_empty() && i < b.len() {
            // A stray `=`: no key to give it to.
            ok = false;
            i += 1;
        }
        let mut value = String::new();
        if !key.is_empty() && i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < b.len() => {
                            // The escaped character whole, however many bytes it takes.
                            let ch = line[i + 1..].chars().next().unwrap_or('\\');
                            value.push(match ch {
                                'n' => '\n',
                                't' => '\t',
                                c => c,
                            });
                            i += 1 + ch.len_utf8();
                        }
                        _ => {
                            let ch = line[i..].chars().next().unwrap_or(' ');
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                ok &= closed;
            } else {
                let vs = i;
                while i < b.len() && b[i] != b' ' {
                    i += 1;
                }
                value.push_str(&line[vs..i]);
            }
        }
        if !ok {
            failed = true;
            if o.strict {
                break;
            }
            continue;
        }
        if key.is_empty() || (value.is_empty() && !o.keep_empty) {
            continue;
        }
        if o.params.is_empty() {
            set_kept(e, key, value, o.keep_empty);
        } else {
            for (label, _) in o.params.iter().filter(|(_, k)| k == key) {
                set_kept(e, label, value.clone(), o.keep_empty);
            }
        }
    }
    e.line = line;
    if failed && o.strict {
        e.labels.insert("__error__".into(), "LogfmtParserErr".into());
        e.labels.insert("__error_details__".into(), "the line is not valid logfmt".into());
    }
}

/// [`set`], but an empty value is kept as one when asked.
fn set_kept(e: &mut Entry, key: &str, value: String, keep_empty: bool) {
    if value.is_empty() && keep_empty {
        let name = extracted_name(&sanitize(key));
        e.metadata.remove(&name);
        e.labels.insert(name, value);
    } else {
        set(e, key, value);
    }
}
