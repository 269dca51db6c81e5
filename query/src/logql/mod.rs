//! LogQL, the subset people write (and Grafana's Loki datasource and Logs Drilldown send):
//!
//! - stream selectors `{label="v", other!="w", re=~"a|b", nre!~"c.*"}` over the stream labels
//!   ([`labels::STREAM_LABELS`]);
//! - line filters `|= "text"`, `!= "text"`, `|~ "re"`, `!~ "re"`, with `or` alternatives, and
//!   `|= ip("…")`/`!= ip("…")` (an address, range or CIDR block; also as a label filter);
//! - the parsers `json` (with optional `label="path"` extractions), `logfmt` (likewise with
//!   `label="key"`; `--strict`, `--keep-empty`), `unpack`, `regexp "…"`
//!   (named groups) and `pattern "<_> <name> …"`;
//! - label filters: strings (`= != =~ !~`), numbers, durations and byte sizes (`== != > >= < <=`;
//!   `took > 1.5s`, `size >= 20MB`), `and`, `or`, commas,
//!   parentheses;
//! - `line_format "{{.label}} …"` (Go templates: fields, `__line__`, pipelines, `if`, Loki's
//!   functions; see [`templates`]), `label_format` (renames
//!   `dst=src` and templates `dst="{{.a}}…"`; never of the tenancy labels), `drop`, `keep`,
//!   `decolorize`;
//! - metric queries: `count_over_time`, `rate`, `bytes_over_time`, `bytes_rate` over
//!   `[range]` (with `offset`), `sum`/`avg`/`min`/`max`/`count`/`stddev`/`stdvar`/`topk`/`bottomk` `by`/`without`,
//!   over `| unwrap` (`duration(…)`, `bytes(…)`) the `*_over_time` functions,
//!   `quantile_over_time` and `rate_counter`, arithmetic between them and with numbers, comparisons (`== != > >= < <=`, filtering, or
//!   1/0 with `bool`), vector matching (`on`/`ignoring`, `group_left`/`group_right`), the set
//!   operators `and`, `or`, `unless`, `label_replace`, `sort`/`sort_desc`, `approx_topk` (exact
//!   here), and `vector(n)` (Grafana's health check).
//!
//! Anything else is a parse error naming what is not supported: a clear 400, never a query
//! that silently means something else. Semantics follow Loki's documentation: label matchers'
//! regexes are anchored, line filters' are not; extracted labels that collide with a stream
//! label get an `_extracted` suffix; a failed parse sets `__error__`.
//!
//! Tenancy is not expressed here at all: the caller's scope travels beside the query (see
//! [`crate::loki`]), and a matcher on `workspace` or `project` can only narrow it.

pub use crate::vector_match::{Card, LabelMatch, Matching, SetOp};

pub mod eval;
pub mod ip;
pub mod labels;
mod lex;
pub mod parse;
pub mod parsers;
pub mod pipeline;
pub mod templates;

pub use parse::parse;

/// A label matcher in a stream selector or a `drop`/`keep` stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    Nre,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOp {
    Contains,
    NotContains,
    Regex,
    NotRegex,
    /// `|>`: the line matches a pattern of literals and `<_>` (Loki 3's pattern match filter).
    Pattern,
    /// `!>`: the line does not.
    NotPattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A label filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelPred {
    And(Box<LabelPred>, Box<LabelPred>),
    Or(Box<LabelPred>, Box<LabelPred>),
    Str(Matcher),
    /// A comparison with a number; the label's value is read as `conversion` says (a duration
    /// or byte size literal compares the value as one), the literal given in seconds or bytes.
    Num {
        name: String,
        op: CmpOp,
        value: f64,
        conversion: Conversion,
    },
    /// `addr = ip("…")` (`keep`) or `addr != ip("…")`.
    Ip {
        name: String,
        keep: bool,
        range: ip::IpRange,
    },
}

/// One piece of a `line_format` or `label_format` template (Go's template syntax, the subset
/// [`templates`] reads).
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Text(String),
    /// `{{.name}}`
    Label(String),
    /// `{{__line__}}`
    Line,
    /// `{{__timestamp__}}`, as Go prints a time (`2023-11-14 22:13:20.12 +0000 UTC`)
    Timestamp,
    /// `{{ … | f … }}`: anything else that prints a value.
    Pipe(templates::Pipe),
    /// `{{ if … }}…{{ else }}…{{ end }}` (`else if` nests another).
    If {
        cond: templates::Pipe,
        then: Vec<TemplatePart>,
        otherwise: Vec<TemplatePart>,
    },
}

/// One piece of a `pattern` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternPart {
    Literal(String),
    /// `<name>`, or `<_>` (None): text up to the next literal.
    Capture(Option<String>),
}

/// What `label_format` sets a label to.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    /// `dst=src`: the value of `src`, which is removed.
    Rename(String),
    /// `dst="template"`.
    Template(Vec<TemplatePart>),
}

/// Labels `label_format` never renames or sets: the tenancy a row was stored under.
pub const TENANCY_LABELS: [&str; 2] = ["workspace", "project"];

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Alternatives joined by `or`: the line passes if any of them holds (for the negative
    /// operators, if none of them is found).
    Line {
        op: LineOp,
        values: Vec<String>,
    },
    /// `|= ip("…")` (`keep`) or `!= ip("…")`: lines holding an address in the range, or not.
    IpLine {
        keep: bool,
        range: ip::IpRange,
    },
    /// `json`, with `label="path"` extractions (all top-level and nested fields when empty).
    Json(Vec<(String, String)>),
    /// `logfmt [--strict] [--keep-empty] [label="key", …]`.
    Logfmt(parsers::LogfmtOptions),
    /// `regexp "…"`: named groups become labels.
    Regexp(String),
    Pattern(Vec<PatternPart>),
    Labels(LabelPred),
    LineFormat(Vec<TemplatePart>),
    LabelFormat(Vec<(String, LabelValue)>),
    /// Names alone, or matchers (drop only the labels whose value matches).
    Drop(Vec<Matcher>),
    Keep(Vec<Matcher>),
    /// `decolorize`: ANSI colour and cursor sequences taken out of the line.
    Decolorize,
    /// `unpack`: a line Promtail's `pack` stage wrote (a JSON object): its string fields become
    /// labels and `_entry` the line.
    Unpack,
    /// `distinct a, b` (Loki's, experimental): a line whose value of any of the labels was
    /// seen before, in the query's order, is dropped; a line without one of them is kept.
    Distinct(Vec<String>),
}

/// A log query: a stream selector and its pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct LogExpr {
    pub selector: Vec<Matcher>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFn {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
    /// 1 at each step whose window holds no line at all (Loki's alerting on silence).
    AbsentOverTime,
    // Over unwrapped values only:
    SumOverTime,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    FirstOverTime,
    LastOverTime,
    StddevOverTime,
    StdvarOverTime,
    /// With its φ.
    QuantileOverTime,
    /// The per-second increase of the values taken as a counter (a drop is a reset).
    RateCounter,
}

/// How an unwrapped label's value becomes a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    Number,
    /// `duration(…)`/`duration_seconds(…)`: Go durations (`1.5s`, `2m3s`, `250ms`) in seconds.
    Duration,
    /// `bytes(…)`: `5 MiB`, `3k`, `1G` in bytes.
    Bytes,
}

/// `| unwrap [conv(]label[)] [| label filters…]`: the label whose value is the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    pub label: String,
    pub conversion: Conversion,
    /// Label filters after the unwrap (typically `__error__=""`).
    pub post: Vec<LabelPred>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Topk,
    Bottomk,
    /// Population standard deviation and variance, as Prometheus's.
    Stddev,
    Stdvar,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    Range {
        func: RangeFn,
        log: LogExpr,
        range_ns: i64,
        offset_ns: i64,
        /// The values when the log query ends in `| unwrap`.
        unwrap: Option<Unwrap>,
        /// `quantile_over_time`'s φ.
        param: Option<f64>,
        /// `… by (…)`/`without (…)` on an unwrapped range function.
        grouping: Option<Grouping>,
    },
    Agg {
        op: AggOp,
        grouping: Option<Grouping>,
        param: Option<f64>,
        inner: Box<MetricExpr>,
    },
    /// Arithmetic; between two vectors, series pair up as `matching` says.
    Binary {
        op: BinOp,
        matching: Matching,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    /// A comparison: keeps the points where it holds, or with `bool` gives 1 or 0.
    Compare {
        op: CmpOp,
        bool_mod: bool,
        matching: Matching,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    /// `and`, `or`, `unless` between two vectors (`matching` has no group modifier).
    Set {
        op: SetOp,
        matching: Matching,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    /// `label_replace(v, "dst", "replacement", "src", "regex")`, as Prometheus's (never onto a
    /// tenancy label).
    LabelReplace {
        inner: Box<MetricExpr>,
        dst: String,
        replacement: String,
        src: String,
        regex: String,
    },
    /// `sort`/`sort_desc`: the series in order of their value (at the last step; an instant
    /// query has one), those without one last.
    Sort {
        desc: bool,
        inner: Box<MetricExpr>,
    },
    /// A bare number (a scalar).
    Number(f64),
    /// `vector(n)`: one series with no labels.
    Vector(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Log(LogExpr),
    Metric(MetricExpr),
}

impl MetricExpr {
    /// Every log query the metric query reads, in order.
    pub fn logs(&self) -> Vec<&LogExpr> {
        match self {
            MetricExpr::Range { log, .. } => vec![log],
            MetricExpr::Agg { inner, .. } | MetricExpr::LabelReplace { inner, .. } | MetricExpr::Sort { inner, .. } => inner.logs(),
            MetricExpr::Binary { lhs, rhs, .. } | MetricExpr::Compare { lhs, rhs, .. } | MetricExpr::Set { lhs, rhs, .. } => {
                let mut v = lhs.logs();
                v.extend(rhs.logs());
                v
            }
            MetricExpr::Number(_) | MetricExpr::Vector(_) => Vec::new(),
        }
    }
}
