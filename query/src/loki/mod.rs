//! Grafana's Loki datasource and Logs Drilldown: the Loki HTTP API over the stored logs.
//!
//! Every endpoint takes GET parameters or a POST form body, with Loki's conventions (times as
//! Unix seconds, milliseconds or nanoseconds, or RFC 3339; `since`; `step` as a duration or
//! seconds; `direction`; `limit`), and answers Loki's JSON. Errors carry a top-level
//! `message` (what Grafana shows) beside the stable `error.code`.
//!
//! Tenancy: identity comes from the bearer token only (`X-Scope-OrgID` is ignored). A query's
//! matchers on `workspace` choose among the token's workspaces, those on `project` among the
//! namespaces the caller may read; they can only narrow what [`auth::Gate`] allowed, and
//! storage applies the scope again itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use auth::{Identity, TenantScope};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemas::{ApiError, ErrorCode, LogRecord};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Value, json};
use storage::{LogSearch, StreamColumns, StreamCount, StreamsBy};

use crate::api::AsText;
use crate::logql::eval::{self, Buckets, Steps};
use crate::logql::labels::{self, Labels, STREAM_LABELS};
use crate::logql::pipeline::{Entry, Pipeline};
use crate::logql::{AggOp, Expr, Grouping, LogExpr, MetricExpr, RangeFn, Unwrap};
use crate::params::{Params, parse_duration_ns};
use crate::params::{next_cursor, now_ns};
use crate::patterns;
use crate::state::{QueryState, store_error};

/// The Loki version Grafana's feature detection is told (`status/buildinfo`).
pub const COMPATIBLE_LOKI_VERSION: &str = "3.4.0";
/// Rows read from storage per page while a pipeline filters them.
const PAGE: usize = 10_000;
/// Most points per series in a range query (Loki's limit).
const MAX_POINTS: i64 = 11_000;
/// Lines sampled for `detected_fields` and `patterns` when the request does not say.
const SAMPLE_LINES: usize = 1_000;

mod index;

pub fn routes() -> Router<QueryState> {
    let r = Router::new();
    let r = r.route("/loki/api/v1/query_range", get(query_range).post(query_range));
    let r = r.route("/loki/api/v1/query", get(query).post(query));
    let r = r.route("/loki/api/v1/labels", get(index::label_names).post(index::label_names));
    let r = r.route("/loki/api/v1/label/{name}/values", get(index::label_values).post(index::label_values));
    let r = r.route("/loki/api/v1/series", get(index::series).post(index::series));
    let r = r.route("/loki/api/v1/index/stats", get(index::index_stats).post(index::index_stats));
    let r = r.route("/loki/api/v1/index/volume", get(index::volume).post(index::volume));
    let r = r.route("/loki/api/v1/index/volume_range", get(index::volume_range).post(index::volume_range));
    let r = r.route("/loki/api/v1/detected_labels", get(index::detected_labels).post(index::detected_labels));
    let r = r.route("/loki/api/v1/detected_fields", get(index::detected_fields).post(index::detected_fields));
    let r = r.route("/loki/api/v1/detected_field/{name}/values", get(index::detected_field_values).post(index::detected_field_values));
    let r = r.route("/loki/api/v1/patterns", get(index::patterns_handler).post(index::patterns_handler));
    let r = r.route("/loki/api/v1/drilldown-limits", get(index::drilldown_limits));
    r.route("/loki/api/v1/status/buildinfo", get(index::buildinfo))
}

/// An [`ApiError`] in the shape Grafana's Loki client reads (`message`), code kept.
pub struct LokiError(pub ApiError);

impl From<ApiError> for LokiError {
    fn from(e: ApiError) -> LokiError {
        LokiError(e)
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = json!({ "status": "error", "message": e.message, "error": { "code": e.code.as_str(), "message": e.message } });
        crate::state::error_response(&e, body)
    }
}

type Reply = Result<axum::Json<Value>, LokiError>;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, m)
}

/// The query string and, for a form POST, the body: Grafana sends either.
fn params(raw: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Params, ApiError> {
    Params::from_request(raw, headers, body)
}

/// `start`/`end` (or `since`), checked against the range limit. Defaults: the last hour.
fn time_range(state: &QueryState, p: &Params) -> Result<(i64, i64), ApiError> {
    let (start, end) = p.range("start", "end", 3_600_000_000_000, true)?;
    let max = i64::try_from(state.limits.max_range_secs).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
    if end - start > max {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("the query covers more than {} hours; narrow `start`/`end`", state.limits.max_range_secs / 3600),
        ));
    }
    Ok((start, end))
}

fn parse_logql(p: &Params, key: &str) -> Result<Expr, ApiError> {
    let q = p.one(key).ok_or_else(|| invalid(format!("`{key}` (a LogQL query) is required")))?;
    crate::logql::parse(q).map_err(|m| invalid(format!("parse error: {m}")))
}

/// A log query (a selector with its pipeline), or a clear error for a metric query.
fn log_query(p: &Params, key: &str) -> Result<Option<LogExpr>, ApiError> {
    if p.one(key).is_none() {
        return Ok(None);
    }
    match parse_logql(p, key)? {
        Expr::Log(l) => Ok(Some(l)),
        Expr::Metric(_) => Err(invalid(format!("`{key}` must be a log stream selector like {{project=\"shop\"}}, not a metric query"))),
    }
}

fn compile(l: &LogExpr) -> Result<Pipeline, ApiError> {
    Pipeline::new(l).map_err(invalid)
}

/// The scope one pipeline's selector asks for, authorised: the token's workspaces its
/// `workspace` matchers accept, and the namespaces its `project` equality names.
async fn scope_for(state: &QueryState, id: &Identity, pl: Option<&Pipeline>) -> Result<TenantScope, ApiError> {
    let ws: Vec<_> = pl.map(|p| p.matchers_on("workspace")).unwrap_or_default();
    let projects: Option<BTreeSet<String>> =
        pl.and_then(|p| p.matchers_on("project").into_iter().find(|m| m.is_eq()).map(|m| BTreeSet::from([m.value().to_owned()])));
    let scope = state.gate.logs_matching(id, |w| ws.iter().all(|m| m.matches(w)), projects.as_ref()).await.map_err(ApiError::from)?;
    crate::audit::covered(&scope);
    Ok(scope)
}

fn search(scope: TenantScope, from_ns: i64, to_ns: i64, pl: Option<&Pipeline>, oldest_first: bool) -> LogSearch {
    LogSearch {
        scope,
        from_ns,
        to_ns,
        filters: pl.map(Pipeline::filters).unwrap_or_default(),
        terms: pl.map(Pipeline::terms).unwrap_or_default(),
        limit: PAGE,
        cursor: None,
        oldest_first,
    }
}

/// What a scan read, for `stats`.
#[derive(Default)]
struct Scanned {
    lines: u64,
    bytes: u64,
}

/// Reads `q` page by page, calling `each` for every row until it returns `false` or storage
/// has no more. Past `max_scan_lines` the query is refused rather than answered in part.
async fn scan(state: &QueryState, mut q: LogSearch, mut each: impl FnMut(LogRecord) -> bool) -> Result<Scanned, ApiError> {
    let mut seen = Scanned::default();
    loop {
        let page = state.store.search(&q).await.map_err(store_error)?;
        let (n, next) = (page.len(), next_cursor(q.cursor, &page));
        for r in page {
            seen.lines += 1;
            seen.bytes += r.message.len() as u64;
            if !each(r) {
                return Ok(seen);
            }
        }
        if n < q.limit {
            return Ok(seen);
        }
        if seen.lines as usize >= state.limits.max_scan_lines {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "the query's pipeline had to read more than {} lines; narrow the time range or the selector, or move line filters (|= \"…\") before parsers",
                    state.limits.max_scan_lines
                ),
            ));
        }
        q.cursor = next;
    }
}

/// The entries (or series) an answer's stats say it returned.
fn entries_returned(v: &Value) -> u64 {
    v["stats"]["summary"]["totalEntriesReturned"].as_u64().unwrap_or(0)
}

fn secs(ns: i64) -> Value {
    let s = ns as f64 / 1e9;
    if ns % 1_000_000_000 == 0 { json!(ns / 1_000_000_000) } else { json!(s) }
}

fn stats(started: Instant, s: &Scanned, returned: usize) -> Value {
    let t = started.elapsed().as_secs_f64();
    json!({ "summary": {
        "bytesProcessedPerSecond": (s.bytes as f64 / t.max(1e-9)) as u64,
        "linesProcessedPerSecond": (s.lines as f64 / t.max(1e-9)) as u64,
        "totalBytesProcessed": s.bytes,
        "totalLinesProcessed": s.lines,
        "execTime": t,
        "queueTime": 0,
        "subqueries": 0,
        "totalEntriesReturned": returned,
        "totalPostFilterLines": returned,
    }})
}

/// A stored row through `pl`: `None` when the selector or a stage leaves it out.
fn entry_of(pl: &Pipeline, r: LogRecord) -> Option<Entry> {
    let (labels, metadata) = labels::of_record(&r);
    if !pl.selects(&labels) {
        return None;
    }
    let mut e = Entry { timestamp_ns: r.timestamp_ns, line: r.message, labels, metadata };
    pl.process(&mut e).then_some(e)
}

/// Rows through `pl`, as (labels, timestamp, line), in their order.
pub(crate) fn run_pipeline(pl: &Pipeline, rows: Vec<LogRecord>) -> Vec<(Labels, i64, String)> {
    rows.into_iter().filter_map(|r| entry_of(pl, r)).map(|e| (e.labels, e.timestamp_ns, e.line)).collect()
}

/// The search a live tail of `pl` follows, from `start`, in scope now.
pub(crate) async fn tail_search(state: &QueryState, id: &Identity, pl: &Pipeline, start: i64) -> Result<LogSearch, ApiError> {
    let scope = scope_for(state, id, Some(pl)).await?;
    Ok(search(scope, start, now_ns(), Some(pl), false))
}

/// A log query's entries by stream labels, in read order.
type Streams = BTreeMap<Labels, Vec<(i64, String)>>;

/// A log query's answer, `{"status": "success", "data": {"resultType": "streams", ...}}`,
/// written straight out: a page of lines is not built as a tree of JSON values first.
struct StreamsAnswer {
    result: Streams,
    stats: Value,
}

impl Serialize for StreamsAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Data<'a>(&'a StreamsAnswer);
        impl Serialize for Data<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut o = s.serialize_struct("Data", 3)?;
                o.serialize_field("resultType", "streams")?;
                o.serialize_field("result", &Entries(&self.0.result))?;
                o.serialize_field("stats", &self.0.stats)?;
                o.end()
            }
        }
        struct Entries<'a>(&'a Streams);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(labels, values)| Stream(labels, values)))
            }
        }
        /// `{"stream": labels, "values": [["<ns>", "<line>"], ...]}`
        struct Stream<'a>(&'a Labels, &'a [(i64, String)]);
        impl Serialize for Stream<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut o = s.serialize_struct("Stream", 2)?;
                o.serialize_field("stream", self.0)?;
                o.serialize_field("values", &Values(self.1))?;
                o.end()
            }
        }
        struct Values<'a>(&'a [(i64, String)]);
        impl Serialize for Values<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(ts, line)| (AsText(ts), line)))
            }
        }
        let mut o = s.serialize_struct("StreamsAnswer", 2)?;
        o.serialize_field("status", "success")?;
        o.serialize_field("data", &Data(self))?;
        o.end()
    }
}

/// A log query's entries: at most `limit`, newest first (`backward`) or oldest first.
async fn streams(
    state: &QueryState,
    id: &Identity,
    l: &LogExpr,
    from: i64,
    to: i64,
    limit: usize,
    forward: bool,
) -> Result<(Streams, Scanned, usize), ApiError> {
    let pl = compile(l)?;
    let scope = scope_for(state, id, Some(&pl)).await?;
    let mut out = Streams::new();
    let mut taken = 0;
    let scanned = scan(state, search(scope, from, to, Some(&pl), forward), |r| {
        if let Some(e) = entry_of(&pl, r) {
            out.entry(e.labels).or_default().push((e.timestamp_ns, e.line));
            taken += 1;
        }
        taken < limit
    })
    .await?;
    Ok((out, scanned, taken))
}

/// The buckets of one range function's log query.
async fn range_input(
    state: &QueryState,
    id: &Identity,
    l: &LogExpr,
    layout: &eval::Layout,
    (columns, bytes, sampled): (StreamColumns, bool, Option<(&Unwrap, Option<&Grouping>)>),
    scanned: &mut Scanned,
) -> Result<Buckets, ApiError> {
    let mut pl = compile(l)?;
    if let Some((u, g)) = sampled {
        pl = pl.unwrapping(u, g).map_err(invalid)?;
    }
    let scope = scope_for(state, id, Some(&pl)).await?;
    let mut q = search(scope, layout.origin, layout.to_ns(), Some(&pl), false);
    let mut b = Buckets::new(layout, state.limits.max_series);
    if pl.only_pushed() {
        // Storage counts entries and bytes per stream and bucket itself. A stream has a row per
        // bucket: its labels are built and checked against the selector once, and its counts
        // gathered here, so the series are looked up once per stream rather than once per row.
        let rows = state.store.streams(&q, StreamsBy { step_ns: Some(layout.width), columns, bytes }).await.map_err(store_error)?;
        let mut streams: foldhash::HashMap<labels::StreamKey, Option<usize>> = foldhash::HashMap::default();
        let mut found: Vec<(Labels, Vec<(u64, u64)>)> = Vec::new();
        let room = b.room();
        for s in &rows {
            scanned.lines += s.entries;
            scanned.bytes += s.bytes;
            let slot = *streams.entry(labels::stream_key(s)).or_insert_with(|| {
                let labels = labels::of_counted_stream(s);
                pl.selects_in_scope(&labels).then(|| {
                    found.push((labels, vec![(0, 0); layout.count]));
                    found.len() - 1
                })
            });
            if found.len() > room {
                // More series than the answer may hold: no need to count the rest.
                b.overflow = true;
                break;
            }
            if let (Some(i), Some(j)) = (slot, layout.bucket(s.start_ns)) {
                let cell = &mut found[i].1[j];
                cell.0 += s.entries;
                cell.1 += s.bytes;
            }
        }
        for (labels, cells) in found {
            b.add_series(labels, cells);
        }
    } else {
        q.limit = PAGE;
        let s = scan(state, q, |r| {
            if let Some(e) = entry_of(&pl, r) {
                let (ts, bytes) = (e.timestamp_ns, e.line.len() as u64);
                if sampled.is_some() {
                    if let Some((labels, v)) = pl.sample(e) {
                        b.add_sample(labels, ts, v);
                    }
                } else {
                    b.add(layout, e.series_labels(), ts, bytes);
                }
            }
            true
        })
        .await?;
        scanned.lines += s.lines;
        scanned.bytes += s.bytes;
    }
    if let Some(err) = b.labels().find_map(|l| l.get("__error__")) {
        return Err(invalid(format!("pipeline error: `{err}` on some lines; add | __error__=\"\" to leave out lines that fail to parse")));
    }
    if b.overflow {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("the query has more than {} series at this resolution; aggregate it (sum by …), narrow the selector or use a larger step", b.series.len()),
        ));
    }
    Ok(b)
}

/// Evaluates a metric query at `steps`.
async fn metric(state: &QueryState, id: &Identity, m: &MetricExpr, steps: &Steps) -> Result<(eval::Value, Scanned), ApiError> {
    let mut inputs = Vec::new();
    let mut scanned = Scanned::default();
    collect_inputs(state, id, m, steps, &mut inputs, &mut scanned).await?;
    let v = eval::eval(m, steps, &mut inputs.into_iter(), state.limits.max_series)?;
    Ok((v, scanned))
}

async fn collect_inputs(
    state: &QueryState,
    id: &Identity,
    m: &MetricExpr,
    steps: &Steps,
    out: &mut Vec<Buckets>,
    scanned: &mut Scanned,
) -> Result<(), ApiError> {
    let mut ordered = Vec::new();
    plan(m, None, &mut ordered);
    for (log, range_ns, offset_ns, columns, bytes, sampled) in ordered {
        let layout = eval::layout(steps, range_ns, offset_ns);
        if layout.count > 200_000 {
            return Err(ApiError::new(ErrorCode::LimitExceeded, "the range and step give too many points; make the range a multiple of the step"));
        }
        out.push(range_input(state, id, log, &layout, (columns, bytes, sampled), scanned).await?);
    }
    Ok(())
}

/// The stream columns `log`'s selector is checked against. Not `workspace` for its matchers:
/// the scope already holds only the workspaces they accept (grouping by it cost a lookup per
/// row).
fn selector_columns(log: &LogExpr) -> StreamColumns {
    log.selector.iter().filter(|m| m.name != "workspace").fold(StreamColumns::NONE, |c, m| label_columns(c, &m.name))
}

/// The stream columns a label needs.
fn label_columns(c: StreamColumns, label: &str) -> StreamColumns {
    match label {
        "level" | labels::DETECTED_LEVEL => c.with("severity"),
        "service_name" => c.with("application").with("container"),
        other => c.with(other),
    }
}

/// What [`plan`] gives for one range function: its log query, range, offset, the columns to
/// group by and whether it needs message bytes.
type Planned<'a> = (&'a LogExpr, i64, i64, StreamColumns, bool, Option<(&'a Unwrap, Option<&'a Grouping>)>);

/// The range functions of `e`, depth-first and left to right (the order `eval` reads them),
/// each with the stream columns storage must group by. A sum (by stream labels) straight over
/// a range function needs only the selector's and the grouping's columns, since summing
/// before or after grouping is the same; anything else needs every stream.
fn plan<'a>(e: &'a MetricExpr, parent: Option<&'a MetricExpr>, out: &mut Vec<Planned<'a>>) {
    match e {
        MetricExpr::Range { func, log, range_ns, offset_ns, unwrap: None, .. } => {
            // Whether a window holds any line needs no stream apart, only the selector's columns
            // (to check the selector against); `absent` is a sum with no grouping in that sense.
            let absent = *func == RangeFn::AbsentOverTime;
            let columns = match parent {
                _ if absent => selector_columns(log),
                Some(MetricExpr::Agg { op: AggOp::Sum, grouping, .. }) if grouping.as_ref().is_none_or(|g| !g.without) => {
                    let mut c = selector_columns(log);
                    for l in grouping.iter().flat_map(|g| &g.labels) {
                        c = label_columns(c, l);
                    }
                    c
                }
                _ => StreamColumns::ALL,
            };
            out.push((log, *range_ns, *offset_ns, columns, matches!(func, RangeFn::BytesOverTime | RangeFn::BytesRate), None));
        }
        MetricExpr::Range { log, range_ns, offset_ns, unwrap: Some(u), grouping, .. } => {
            out.push((log, *range_ns, *offset_ns, StreamColumns::ALL, false, Some((u, grouping.as_ref()))));
        }
        // Only a sum straight over a range function narrows its columns (see above); relabelling
        // and sorting keep every stream apart.
        MetricExpr::Agg { inner, .. } | MetricExpr::LabelReplace { inner, .. } | MetricExpr::Sort { inner, .. } => plan(inner, Some(e), out),
        MetricExpr::Binary { lhs, rhs, .. } | MetricExpr::Compare { lhs, rhs, .. } | MetricExpr::Set { lhs, rhs, .. } => {
            plan(lhs, Some(e), out);
            plan(rhs, Some(e), out);
        }
        MetricExpr::Number(_) | MetricExpr::Vector(_) => {}
    }
}

/// `step` (a duration or seconds; default the range ÷ 250, at least 1 s), within Loki's
/// resolution limit.
fn step_of(p: &Params, start: i64, end: i64) -> Result<i64, ApiError> {
    let step = match p.one("step") {
        Some(s) => parse_duration_ns(s).ok_or_else(|| invalid(format!("`step`: `{s}` is not a duration or a number of seconds")))?,
        None => ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000,
    };
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("exceeded maximum resolution of {MAX_POINTS} points per series; increase `step`")));
    }
    Ok(step)
}

fn direction_forward(p: &Params) -> Result<bool, ApiError> {
    match p.one("direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("backward") => Ok(false),
        Some("forward") => Ok(true),
        Some(other) => Err(invalid(format!("`direction` must be forward or backward, not `{other}`"))),
    }
}

fn limit(state: &QueryState, p: &Params) -> Result<usize, ApiError> {
    let l = p.usize("limit")?.unwrap_or(100);
    if l == 0 || l > state.limits.max_lines {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("`limit` must be 1..={}", state.limits.max_lines)));
    }
    Ok(l)
}

/// A `matrix` answer, written straight into one buffer: a day of many series is megabytes of
/// JSON, and building it as a tree of `Value`s first cost more than the evaluation.
fn matrix_answer(m: eval::Matrix, steps: &Steps, stats: &Value) -> String {
    use std::fmt::Write;
    let points: usize = m.iter().map(|(_, v)| v.iter().flatten().count()).sum();
    let mut out = String::with_capacity(128 + points * 24 + m.len() * 128);
    out.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, (labels, values)) in m.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        out.push_str(&json!(labels).to_string());
        out.push_str(r#","values":["#);
        let mut first = true;
        for (k, v) in values.into_iter().enumerate() {
            let Some(v) = v else { continue };
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "[{},\"", secs(steps.at(k)));
            eval::write_value(&mut out, v);
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push_str(r#"],"stats":"#);
    out.push_str(&stats.to_string());
    out.push_str("}}");
    out
}

/// What `query_range` answers, with the number of entries (streams) or series (matrix) in it.
enum RangeAnswer {
    Streams(StreamsAnswer, u64),
    Matrix(String, u64),
}

async fn query_range(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Result<Response, LokiError> {
    let started = Instant::now();
    let p = params(raw.as_deref(), &headers, &body)?;
    let id = state.identify(&headers).await?;
    let (start, end) = time_range(&state, &p)?;
    let expr = parse_logql(&p, "query")?;
    let text = p.one("query").unwrap_or_default();
    let data = state
        .bounded(
            &id,
            "loki.query_range",
            text,
            async {
                match expr {
                    Expr::Log(l) => {
                        let (result, scanned, n) = streams(&state, &id, &l, start, end, limit(&state, &p)?, direction_forward(&p)?).await?;
                        Ok(RangeAnswer::Streams(StreamsAnswer { result, stats: stats(started, &scanned, n) }, n as u64))
                    }
                    Expr::Metric(m) => {
                        let steps = Steps { start, end, step: step_of(&p, start, end)? };
                        let (v, scanned) = metric(&state, &id, &m, &steps).await?;
                        let m = match v {
                            eval::Value::Vector(m) => m,
                            eval::Value::Scalar(x) => vec![(Labels::new(), vec![Some(x); steps.len()])],
                        };
                        let n = m.len();
                        let stats = stats(started, &scanned, n);
                        Ok(RangeAnswer::Matrix(matrix_answer(m, &steps, &stats), n as u64))
                    }
                }
            },
            |a| match a {
                RangeAnswer::Streams(_, n) => *n,
                RangeAnswer::Matrix(_, n) => *n,
            },
        )
        .await?;
    Ok(match data {
        RangeAnswer::Streams(answer, _) => axum::Json(answer).into_response(),
        RangeAnswer::Matrix(body, _) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
    })
}

async fn query(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let started = Instant::now();
    let p = params(raw.as_deref(), &headers, &body)?;
    let id = state.identify(&headers).await?;
    let time = p.time("time")?.unwrap_or_else(now_ns);
    let expr = parse_logql(&p, "query")?;
    let text = p.one("query").unwrap_or_default();
    let data = state
        .bounded(
            &id,
            "loki.query",
            text,
            async {
                match expr {
                    Expr::Log(_) => Err(invalid("log queries are not supported as an instant query; use query_range")),
                    Expr::Metric(m) => {
                        let steps = Steps { start: time, end: time, step: 1 };
                        let (v, scanned) = metric(&state, &id, &m, &steps).await?;
                        Ok(match v {
                            eval::Value::Scalar(x) => {
                                json!({ "resultType": "scalar", "result": [secs(time), eval::format_value(x)], "stats": stats(started, &scanned, 1) })
                            }
                            eval::Value::Vector(m) => {
                                let n = m.len();
                                let result: Vec<Value> = m
                                    .into_iter()
                                    .filter_map(|(labels, v)| {
                                        v.first().copied().flatten().map(|x| json!({ "metric": labels, "value": [secs(time), eval::format_value(x)] }))
                                    })
                                    .collect();
                                json!({ "resultType": "vector", "result": result, "stats": stats(started, &scanned, n) })
                            }
                        })
                    }
                }
            },
            entries_returned,
        )
        .await?;
    Ok(axum::Json(json!({ "status": "success", "data": data })))
}
