//! A log query compiled: the stream selector, the pipeline stages with their regexes built
//! (size-limited), and what of it storage can apply itself (pushdown).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use regex::{Regex, RegexBuilder};
use storage::search::REGEX_SIZE_LIMIT;
use storage::{LogFilters, Term};

use super::ip::IpRange;
use super::labels::{DETECTED_LEVEL, Labels, STREAM_LABELS};
use super::parsers::{LogfmtOptions, PathPart, json, json_path, logfmt, pattern_match, set, unpack};
use super::{CmpOp, Conversion, Grouping, LabelPred, LabelValue, LineOp, LogExpr, MatchOp, Matcher, PatternPart, Stage, TemplatePart, Unwrap};

fn regex(pattern: &str, anchored: bool) -> Result<Regex, String> {
    let p = if anchored { format!("^(?:{pattern})$") } else { pattern.to_owned() };
    RegexBuilder::new(&p).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| format!("regex `{pattern}`: {e}"))
}

/// ANSI escape sequences (colours, cursor moves, titles), as terminal-colour strippers match
/// them.
static ANSI: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"[\x{1b}\x{9b}][\[\]()#;?]*(?:(?:(?:[a-zA-Z\d]*(?:;[a-zA-Z\d]*)*)?\x{07})|(?:(?:\d{1,4}(?:;\d{0,4})*)?[\dA-PRZcf-ntqry=><~]))")
        .expect("a fixed, valid pattern")
});

/// A regex matching whole values, with the query's size bounds (`label_replace`).
pub(crate) fn regex_anchored(pattern: &str) -> Result<Regex, String> {
    regex(pattern, true)
}

/// An unanchored regex with the query's size bounds (a template's `regexReplaceAll`).
pub(crate) fn regex_unanchored(pattern: &str) -> Result<Regex, String> {
    regex(pattern, false)
}

/// A label matcher ready to test values (an absent label has the value "").
pub struct LabelMatch {
    pub name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl LabelMatch {
    pub fn new(m: &Matcher) -> Result<LabelMatch, String> {
        let re = matches!(m.op, MatchOp::Re | MatchOp::Nre).then(|| regex(&m.value, true)).transpose()?;
        Ok(LabelMatch { name: m.name.clone(), op: m.op, value: m.value.clone(), re })
    }

    pub fn is_eq(&self) -> bool {
        self.op == MatchOp::Eq
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(r)) => r.is_match(v),
            (MatchOp::Nre, Some(r)) => !r.is_match(v),
            _ => false,
        }
    }
}

enum Pred {
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Str(LabelMatch),
    Num { name: String, op: CmpOp, value: f64, conversion: Conversion },
    Ip { name: String, keep: bool, range: IpRange },
}

impl Pred {
    fn new(p: &LabelPred) -> Result<Pred, String> {
        Ok(match p {
            LabelPred::And(a, b) => Pred::And(Box::new(Pred::new(a)?), Box::new(Pred::new(b)?)),
            LabelPred::Or(a, b) => Pred::Or(Box::new(Pred::new(a)?), Box::new(Pred::new(b)?)),
            LabelPred::Str(m) => Pred::Str(LabelMatch::new(m)?),
            LabelPred::Num { name, op, value, conversion } => Pred::Num { name: name.clone(), op: *op, value: *value, conversion: *conversion },
            LabelPred::Ip { name, keep, range } => Pred::Ip { name: name.clone(), keep: *keep, range: range.clone() },
        })
    }

    /// The levels a filter on `level` or `detected_level` alone lets through (equality, `or`,
    /// `and`); `None` for any other filter. Before any parser both labels are the row's stored
    /// severity (an attribute or field with either name is renamed `…_extracted`), so storage
    /// can apply the filter itself.
    fn levels(&self) -> Option<BTreeSet<String>> {
        match self {
            Pred::Str(m) if m.is_eq() && (m.name == "level" || m.name == DETECTED_LEVEL) => Some(BTreeSet::from([m.value.clone()])),
            Pred::Or(a, b) => Some(a.levels()?.union(&b.levels()?).cloned().collect()),
            Pred::And(a, b) => Some(a.levels()?.intersection(&b.levels()?).cloned().collect()),
            _ => None,
        }
    }

    /// `Err` names a label whose value is not a number (Loki's `LabelFilterErr`).
    fn eval(&self, l: &Labels) -> Result<bool, String> {
        Ok(match self {
            Pred::And(a, b) => a.eval(l)? && b.eval(l)?,
            Pred::Or(a, b) => a.eval(l)? || b.eval(l)?,
            Pred::Str(m) => m.matches(l.get(&m.name).map_or("", String::as_str)),
            Pred::Ip { name, keep, range } => range.matches_value(l.get(name).map_or("", String::as_str)) == *keep,
            Pred::Num { name, op, value, conversion } => {
                let Some(v) = l.get(name) else { return Ok(false) };
                let Some(x) = convert(*conversion, v) else { return Err(name.clone()) };
                match op {
                    CmpOp::Eq => x == *value,
                    CmpOp::Ne => x != *value,
                    CmpOp::Gt => x > *value,
                    CmpOp::Ge => x >= *value,
                    CmpOp::Lt => x < *value,
                    CmpOp::Le => x <= *value,
                }
            }
        })
    }
}

enum Step {
    Line {
        op: LineOp,
        values: Vec<String>,
        regexes: Vec<Regex>,
        patterns: Vec<Vec<PatternPart>>,
    },
    Json(Vec<(String, Vec<PathPart>)>),
    Logfmt(LogfmtOptions),
    /// The regex and its named groups.
    Regexp(Regex),
    Pattern(Vec<PatternPart>),
    Labels(Pred),
    LineFormat(Vec<TemplatePart>),
    LabelFormat(Vec<(String, LabelValue)>),
    Drop(Vec<LabelMatch>),
    Keep(Vec<LabelMatch>),
    Decolorize,
    IpLine {
        keep: bool,
        range: IpRange,
    },
    Unpack,
    /// The values already seen of each label, in the labels' order.
    Distinct {
        labels: Vec<String>,
        seen: Mutex<Vec<HashSet<String>>>,
    },
}

/// One entry going through the pipeline.
pub struct Entry {
    pub timestamp_ns: i64,
    pub line: String,
    pub labels: Labels,
    /// Labels that are structured metadata (attributes), not stream or extracted labels.
    pub metadata: BTreeSet<String>,
}

impl Entry {
    /// The labels a metric series is keyed by: stream and extracted labels, without
    /// structured metadata but `detected_level`, which stands for the stream's level (storage
    /// counts per stream carry it too, so both ways of counting give the same series).
    pub fn series_labels(mut self) -> Labels {
        for k in &self.metadata {
            if k != DETECTED_LEVEL {
                self.labels.remove(k);
            }
        }
        self.labels
    }
}

/// A compiled log query.
pub struct Pipeline {
    selector: Vec<LabelMatch>,
    steps: Vec<Step>,
    /// How many leading steps storage applies exactly (line filters, level filters).
    pushed: usize,
    /// The levels the selector and the pushed level filters keep.
    levels: Option<BTreeSet<String>>,
    unwrap: Option<Sampler>,
}

/// What `| unwrap` makes of an entry: the label, its conversion, the filters after it, and the
/// range function's grouping.
struct Sampler {
    label: String,
    conversion: Conversion,
    post: Vec<Pred>,
    grouping: Option<Grouping>,
}

impl Pipeline {
    pub fn new(e: &LogExpr) -> Result<Pipeline, String> {
        let selector = e.selector.iter().map(LabelMatch::new).collect::<Result<Vec<_>, _>>()?;
        let mut steps = Vec::new();
        for s in &e.stages {
            steps.push(match s {
                Stage::Line { op, values } => {
                    let regexes = if matches!(op, LineOp::Regex | LineOp::NotRegex) {
                        values.iter().map(|v| regex(v, false)).collect::<Result<_, _>>()?
                    } else {
                        Vec::new()
                    };
                    let patterns = if matches!(op, LineOp::Pattern | LineOp::NotPattern) {
                        values.iter().map(|v| super::parsers::line_pattern(v)).collect::<Result<_, _>>()?
                    } else {
                        Vec::new()
                    };
                    Step::Line { op: *op, values: values.clone(), regexes, patterns }
                }
                Stage::Json(params) => Step::Json(params.iter().map(|(l, p)| Ok((l.clone(), json_path(p)?))).collect::<Result<_, String>>()?),
                Stage::Logfmt(o) => Step::Logfmt(o.clone()),
                Stage::Regexp(re) => {
                    let r = regex(re, false)?;
                    if r.capture_names().flatten().next().is_none() {
                        return Err(format!("regexp `{re}`: at least one named group like (?P<name>…) is needed"));
                    }
                    Step::Regexp(r)
                }
                Stage::Pattern(p) => Step::Pattern(p.clone()),
                Stage::Labels(p) => Step::Labels(Pred::new(p)?),
                Stage::LineFormat(t) => Step::LineFormat(t.clone()),
                Stage::LabelFormat(f) => Step::LabelFormat(f.clone()),
                Stage::Drop(m) => Step::Drop(m.iter().map(LabelMatch::new).collect::<Result<_, _>>()?),
                Stage::Keep(m) => Step::Keep(m.iter().map(LabelMatch::new).collect::<Result<_, _>>()?),
                Stage::Decolorize => Step::Decolorize,
                Stage::Unpack => Step::Unpack,
                Stage::Distinct(labels) => Step::Distinct { labels: labels.clone(), seen: Mutex::new(vec![HashSet::new(); labels.len()]) },
                Stage::IpLine { keep, range } => Step::IpLine { keep: *keep, range: range.clone() },
            });
        }
        // Storage applies the leading line filters itself, and level filters (Logs Drilldown's)
        // among them. A `drop __error__` there (Drilldown ends every query with one) changes
        // nothing: only a parser or a conversion sets the error labels, and none has run yet.
        let mut levels: Option<BTreeSet<String>> = selector.iter().find(|m| m.name == "level" && m.is_eq()).map(|m| BTreeSet::from([m.value.clone()]));
        let mut pushed = 0;
        for step in &steps {
            let storage_applies = match step {
                // A pattern filter is Loki's own matching, done here.
                Step::Line { op, values, .. } => values.len() == 1 && !matches!(op, LineOp::Pattern | LineOp::NotPattern),
                Step::Drop(ms) => ms.iter().all(|m| matches!(m.name.as_str(), "__error__" | "__error_details__")),
                // A filter that would leave no level at all stays here: storage's filter is a
                // list of levels to keep, and an empty one keeps every level.
                Step::Labels(p) => match (p.levels(), &levels) {
                    (Some(v), None) if !v.is_empty() => {
                        levels = Some(v);
                        true
                    }
                    (Some(v), Some(l)) if v.intersection(l).next().is_some() => {
                        levels = Some(v.intersection(l).cloned().collect());
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if !storage_applies {
                break;
            }
            pushed += 1;
        }
        Ok(Pipeline { selector, steps, pushed, levels, unwrap: None })
    }

    /// The pipeline of an unwrapped range function: each entry becomes a sample.
    pub fn unwrapping(mut self, u: &Unwrap, grouping: Option<&Grouping>) -> Result<Pipeline, String> {
        let post = u.post.iter().map(Pred::new).collect::<Result<_, _>>()?;
        self.unwrap = Some(Sampler { label: u.label.clone(), conversion: u.conversion, post, grouping: grouping.cloned() });
        Ok(self)
    }

    /// An entry that went through [`Pipeline::process`] as a sample: its series (without the
    /// unwrapped label, grouped as the range function says) and value. A value that does not
    /// convert marks the series with `__error__="SampleExtractionErr"` unless a filter after
    /// the unwrap leaves it out. None when a filter after the unwrap drops it.
    pub fn sample(&self, e: Entry) -> Option<(Labels, f64)> {
        let s = self.unwrap.as_ref()?;
        let mut labels = e.series_labels();
        let raw = labels.remove(&s.label);
        let value = raw.as_deref().and_then(|r| convert(s.conversion, r));
        if value.is_none() {
            labels.insert("__error__".into(), "SampleExtractionErr".into());
            labels.insert("__error_details__".into(), format!("`{}`: {:?} is not a number of that kind", s.label, raw.unwrap_or_default()));
        }
        for p in &s.post {
            if !p.eval(&labels).unwrap_or(false) {
                return None;
            }
        }
        let labels = match &s.grouping {
            None => labels,
            Some(g) => labels.into_iter().filter(|(k, _)| k.starts_with("__error") || g.labels.contains(k) != g.without).collect(),
        };
        Some((labels, value.unwrap_or(f64::NAN)))
    }

    /// Whether every stage is a line filter storage applies itself (counts per stream then
    /// answer metric queries exactly).
    pub fn only_pushed(&self) -> bool {
        self.pushed == self.steps.len() && self.unwrap.is_none()
    }

    /// Search terms for storage: the line filters it applies exactly (the pushed ones), and
    /// what any line that passes must hold besides, up to the first stage that changes the
    /// line: single line filters after a parser or a label filter, and the literals of a
    /// single `|>` pattern (storage then reads far fewer lines; [`Pipeline::process`] still
    /// checks each one).
    pub fn terms(&self) -> Vec<Term> {
        let mut out = Vec::new();
        for s in &self.steps {
            match s {
                Step::Line { op, values, patterns, .. } if values.len() == 1 => {
                    let v = values[0].clone();
                    match op {
                        LineOp::Contains => out.push(Term::Exact(v)),
                        LineOp::NotContains => out.push(Term::Not(Box::new(Term::Exact(v)))),
                        LineOp::Regex => out.push(Term::Regex(v)),
                        LineOp::NotRegex => out.push(Term::Not(Box::new(Term::Regex(v)))),
                        LineOp::Pattern => out.extend(patterns[0].iter().filter_map(|p| match p {
                            PatternPart::Literal(l) => Some(Term::Exact(l.clone())),
                            PatternPart::Capture(_) => None,
                        })),
                        LineOp::NotPattern => {}
                    }
                }
                // `distinct` remembers every line that reaches it, so what follows it cannot
                // narrow what storage reads.
                Step::LineFormat(_) | Step::Decolorize | Step::Unpack | Step::Distinct { .. } => break,
                _ => {}
            }
        }
        out
    }

    /// Equality matchers on columns storage filters by.
    pub fn filters(&self) -> LogFilters {
        let mut f = LogFilters::default();
        for m in &self.selector {
            if m.op != MatchOp::Eq {
                continue;
            }
            let list = match m.name.as_str() {
                "project" => &mut f.projects,
                "application" => &mut f.applications,
                "pod" => &mut f.pods,
                "container" => &mut f.containers,
                // `level`: with the level filters, in `levels`.
                _ => continue,
            };
            // The first value only: a second, different one matches nothing, which the
            // selector check (`selects`) finds on every row anyway.
            if list.is_empty() {
                list.push(m.value.clone());
            }
        }
        f.severities = self.levels.iter().flatten().cloned().collect();
        f
    }

    /// The selector's matchers on `name` (the query's tenancy hints, which only narrow).
    pub fn matchers_on(&self, name: &str) -> Vec<&LabelMatch> {
        self.selector.iter().filter(|m| m.name == name).collect()
    }

    /// Whether a stream's labels pass the selector (labels other than stream labels are
    /// absent in a selector, as in Loki).
    pub fn selects(&self, stream: &Labels) -> bool {
        self.selects_with(stream, |_| true)
    }

    /// [`Pipeline::selects`] without the matchers on `workspace`, for streams grouped without
    /// that column: a query's scope holds only the workspaces every such matcher accepts (the
    /// Loki API's `scope_for`), so storage returns no row they would refuse.
    pub fn selects_in_scope(&self, stream: &Labels) -> bool {
        self.selects_with(stream, |name| name != "workspace")
    }

    fn selects_with(&self, stream: &Labels, checked: impl Fn(&str) -> bool) -> bool {
        self.selector.iter().filter(|m| checked(&m.name)).all(|m| {
            let v = if STREAM_LABELS.contains(&m.name.as_str()) { stream.get(&m.name).map_or("", String::as_str) } else { "" };
            m.matches(v)
        })
    }

    /// Runs the stages; `false` when the entry is filtered out. The selector is checked by
    /// the caller ([`Pipeline::selects`]) on the stream labels first.
    pub fn process(&self, e: &mut Entry) -> bool {
        for step in &self.steps {
            match step {
                Step::Line { op, values, regexes, patterns } => {
                    let hit = match op {
                        LineOp::Contains | LineOp::NotContains => values.iter().any(|v| e.line.contains(v.as_str())),
                        LineOp::Regex | LineOp::NotRegex => regexes.iter().any(|r| r.is_match(&e.line)),
                        LineOp::Pattern | LineOp::NotPattern => patterns.iter().any(|p| super::parsers::pattern_test(p, &e.line)),
                    };
                    if hit != matches!(op, LineOp::Contains | LineOp::Regex | LineOp::Pattern) {
                        return false;
                    }
                }
                Step::Json(params) => json(e, params),
                Step::Logfmt(o) => logfmt(e, o),
                Step::Labels(p) => match p.eval(&e.labels) {
                    Ok(true) => {}
                    Ok(false) => return false,
                    Err(name) => {
                        e.labels.insert("__error__".into(), "LabelFilterErr".into());
                        e.labels.insert("__error_details__".into(), format!("label `{name}` is not a number"));
                    }
                },
                Step::Regexp(r) => {
                    if let Some(c) = r.captures(&e.line) {
                        let found: Vec<(String, String)> =
                            r.capture_names().flatten().filter_map(|n| c.name(n).map(|m| (n.to_owned(), m.as_str().to_owned()))).collect();
                        for (k, v) in found {
                            set(e, &k, v);
                        }
                    }
                }
                Step::Pattern(p) => {
                    for (k, v) in pattern_match(p, &e.line) {
                        set(e, &k, v);
                    }
                }
                Step::LineFormat(t) => match render(t, e) {
                    Ok(line) => e.line = line,
                    Err(details) => template_failed(e, details),
                },
                Step::LabelFormat(f) => label_format(f, e),
                Step::Drop(ms) => e.labels.retain(|k, v| !ms.iter().any(|m| &m.name == k && m.matches(v))),
                Step::Keep(ms) => e.labels.retain(|k, v| ms.iter().any(|m| &m.name == k && m.matches(v))),
                Step::IpLine { keep, range } => {
                    if range.in_line(&e.line) != *keep {
                        return false;
                    }
                }
                Step::Unpack => unpack(e),
                Step::Distinct { labels, seen } => {
                    if !distinct(labels, seen, e) {
                        return false;
                    }
                }
                Step::Decolorize => {
                    if e.line.contains(['\u{1b}', '\u{9b}']) {
                        e.line = ANSI.replace_all(&e.line, "").into_owned();
                    }
                }
            }
        }
        true
    }
}

/// A label's value as a sample: a number, a Go duration in seconds (`1h2m`, `1.5s`, `250ms`),
/// or a byte size (`5 MiB`, `3k`, `1G`, `512`).
fn convert(c: Conversion, raw: &str) -> Option<f64> {
    let raw = raw.trim();
    match c {
        Conversion::Number => raw.parse().ok(),
        Conversion::Duration => duration_seconds(raw),
        Conversion::Bytes => bytes(raw),
    }
}

/// A Go duration (`1m30s`, `250ms`, `1.5h`) in seconds.
pub(crate) fn duration_seconds(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut any = false;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * scale;
        any = true;
    }
    any.then_some(if neg { -total } else { total })
}

/// A byte size (`5 MiB`, `3k`, `1G`, `20MB`) in bytes.
pub(crate) fn bytes(s: &str) -> Option<f64> {
    let n = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let value: f64 = s[..n].parse().ok()?;
    let scale = match s[n..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "p" | "pb" => 1e15,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024f64.powi(4),
        "pi" | "pib" => 1024f64.powi(5),
        _ => return None,
    };
    Some(value * scale)
}

fn render(t: &[TemplatePart], e: &Entry) -> Result<String, String> {
    super::templates::render(t, &super::templates::Scope { labels: &e.labels, line: &e.line, timestamp_ns: e.timestamp_ns })
}

/// A template that failed to render leaves the line (or label) as it was and marks the entry,
/// as Loki's `TemplateFormatErr` does.
fn template_failed(e: &mut Entry, details: String) {
    e.labels.insert("__error__".into(), "TemplateFormatErr".into());
    e.labels.insert("__error_details__".into(), details);
}

/// `label_format`, as Loki does it: renames move a value (the source goes); templates see the
/// labels as they were when the first template ran; an empty value removes the label.
fn label_format(f: &[(String, LabelValue)], e: &mut Entry) {
    let mut snapshot: Option<Entry> = None;
    for (dst, value) in f {
        let v = match value {
            LabelValue::Rename(src) => {
                let Some(v) = e.labels.remove(src) else { continue };
                if e.metadata.remove(src) {
                    e.metadata.insert(dst.clone());
                }
                v
            }
            LabelValue::Template(t) => {
                let seen = snapshot.get_or_insert_with(|| Entry {
                    timestamp_ns: e.timestamp_ns,
                    line: e.line.clone(),
                    labels: e.labels.clone(),
                    metadata: BTreeSet::new(),
                });
                e.metadata.remove(dst);
                match render(t, seen) {
                    Ok(v) => v,
                    Err(details) => {
                        template_failed(e, details);
                        continue;
                    }
                }
            }
        };
        if v.is_empty() {
            e.labels.remove(dst);
        } else {
            e.labels.insert(dst.clone(), v);
        }
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;

/// Loki's `distinct`: label by label, a line without the label is kept at once; one whose value
/// was seen is dropped; otherwise the value is remembered (even when a later label drops the
/// line, as in Loki).
fn distinct(labels: &[String], seen: &Mutex<Vec<HashSet<String>>>, e: &Entry) -> bool {
    let Ok(mut seen) = seen.lock() else { return true };
    for (l, values) in labels.iter().zip(seen.iter_mut()) {
        let Some(v) = e.labels.get(l) else { return true };
        if !values.insert(v.clone()) {
            return false;
        }
    }
    // (Loki keeps nothing for an empty list; the parser never makes one.)
    !labels.is_empty()
}
