//! The dashboard's JSON API: log search, histogram, context around a hit, and the audit log.
//!
//! Every handler runs the same steps: verify the bearer token (identity comes from it only;
//! `X-Scope-OrgID`, `Impersonate-*` and tenant labels in the request grant nothing), ask the
//! [`Gate`] for a scope over the workspaces and projects the request names, then hand storage
//! a [`LogSearch`] carrying that scope.

use std::collections::BTreeSet;
use std::time::Instant;

use auth::Identity;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use schemas::LogRecord;
use schemas::{ApiError, ErrorCode};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Value, json};
use storage::search::HistogramBucket;
use storage::search::Matcher;
use storage::{LogFilters, LogSearch};

use crate::params::{Params, decode_cursor, encode_cursor, next_cursor, rfc3339};
use crate::state::{QueryState, with_timeout};
use crate::syntax;

/// The dashboard's routes.
pub fn routes() -> Router<QueryState> {
    Router::new()
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .route("/api/v1/logs/context", get(context))
        .route("/api/v1/audit/search", get(audit_search))
}

/// The parts of a request every log endpoint shares, checked, with the authorised scope.
/// Also returns the compiled terms (for highlights), so the search text is compiled once here.
async fn log_search(state: &QueryState, id: &Identity, p: &Params, limit: usize) -> Result<(LogSearch, Matcher), ApiError> {
    let (from_ns, to_ns) = p.range("from", "to", 3_600_000_000_000, false)?;
    let max_range = i64::try_from(state.limits.max_range_secs).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
    if to_ns.saturating_sub(from_ns) > max_range {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("the time range may cover at most {} hours; narrow `from`/`to`", state.limits.max_range_secs / 3600),
        ));
    }
    let terms = syntax::parse(p.one("q").unwrap_or("")).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    // For highlights only: the store finds the lines.
    let matcher = Matcher::without_searchers(&terms).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    let workspaces = p.list("workspace")?;
    let projects = p.list("project")?;
    let scope = state.gate.logs(id, workspaces.as_ref(), projects.as_ref()).await.map_err(ApiError::from)?;
    crate::audit::covered(&scope);
    let filters = filters(p, projects)?;
    let cursor = p.one("cursor").map(decode_cursor).transpose()?;
    Ok((LogSearch { scope, from_ns, to_ns, filters, terms, limit, cursor, oldest_first: false }, matcher))
}

/// The search a live tail follows (its time range is the follower's).
pub(crate) async fn tail_search(state: &QueryState, id: &Identity, p: &Params) -> Result<(LogSearch, Matcher), ApiError> {
    log_search(state, id, p, 1).await
}

/// The equality filters of a request.
fn filters(p: &Params, projects: Option<BTreeSet<String>>) -> Result<LogFilters, ApiError> {
    let list = |k: &str| -> Result<Vec<String>, ApiError> { Ok(p.list(k)?.map(|s| s.into_iter().collect()).unwrap_or_default()) };
    Ok(LogFilters {
        projects: projects.map(|s| s.into_iter().collect()).unwrap_or_default(),
        applications: list("application")?,
        pods: list("pod")?,
        containers: list("container")?,
        severities: list("level")?,
    })
}

/// Found lines as every answer shows them (search, context, tail), serialised straight into
/// the answer's text: no tree of JSON values is built for a page of lines first.
pub(crate) struct Lines<'a>(pub(crate) &'a [LogRecord], pub(crate) &'a Matcher);

impl Serialize for Lines<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|l| Line(l, self.1)))
    }
}

/// One found line: its time (RFC 3339 and nanoseconds as text), where it came from, its
/// level, text, trace id and attributes, and where the search's terms matched it.
struct Line<'a>(&'a LogRecord, &'a Matcher);

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (l, m) = (self.0, self.1);
        let mut o = s.serialize_struct("Line", 14)?;
        o.serialize_field("timestamp", &rfc3339(l.timestamp_ns))?;
        o.serialize_field("timestamp_ns", &AsText(l.timestamp_ns))?;
        o.serialize_field("workspace", &l.workspace)?;
        o.serialize_field("project", &l.project)?;
        o.serialize_field("application", &l.application)?;
        o.serialize_field("pod", &l.pod)?;
        o.serialize_field("container", &l.container)?;
        o.serialize_field("node", &l.node)?;
        o.serialize_field("stream", &l.stream)?;
        o.serialize_field("level", l.severity.as_str())?;
        o.serialize_field("message", &l.message)?;
        o.serialize_field("trace_id", &l.trace_id)?;
        o.serialize_field("attributes", &Attributes(&l.attributes))?;
        o.serialize_field("highlights", &m.highlights(&l.message))?;
        o.end()
    }
}

/// A value written as a JSON string of its `Display` text.
pub(crate) struct AsText<T>(pub(crate) T);

impl<T: std::fmt::Display> Serialize for AsText<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A line's attributes as one JSON object (names are unique: ingest sorts and de-duplicates
/// them).
struct Attributes<'a>(&'a [(String, String)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A page of a log search, as `GET /api/v1/logs/search` answers it.
pub(crate) struct SearchAnswer {
    lines: Vec<LogRecord>,
    matcher: Matcher,
    next_cursor: Option<String>,
    from: String,
    to: String,
    workspaces: Option<Vec<String>>,
    duration_ms: f64,
}

impl Serialize for SearchAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Stats {
            lines: usize,
            duration_ms: f64,
        }
        let mut o = s.serialize_struct("SearchAnswer", 6)?;
        o.serialize_field("lines", &Lines(&self.lines, &self.matcher))?;
        o.serialize_field("next_cursor", &self.next_cursor)?;
        o.serialize_field("from", &self.from)?;
        o.serialize_field("to", &self.to)?;
        o.serialize_field("workspaces", &self.workspaces)?;
        o.serialize_field("stats", &Stats { lines: self.lines.len(), duration_ms: self.duration_ms })?;
        o.end()
    }
}

async fn search(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Json<SearchAnswer>, ApiError> {
    let id = state.identify(&headers).await?;
    Ok(Json(search_as(&state, &id, raw.as_deref()).await?))
}

/// The log search of `raw` (the dashboard's parameters) as `id`, audited.
pub(crate) async fn search_as(state: &QueryState, id: &Identity, raw: Option<&str>) -> Result<SearchAnswer, ApiError> {
    let started = Instant::now();
    let p = Params::parse(raw)?;
    state
        .audited(
            id,
            "logs.search",
            raw.unwrap_or(""),
            async {
                let limit = p.usize("limit")?.unwrap_or(state.limits.default_lines);
                if limit == 0 || limit > state.limits.max_lines {
                    return Err(ApiError::new(ErrorCode::LimitExceeded, format!("`limit` must be 1..={}", state.limits.max_lines)));
                }
                let (q, matcher) = log_search(state, id, &p, limit).await?;
                let _slot = state.slot(id.user())?;
                let lines = with_timeout(state, state.store.search(&q)).await?;
                let next = (lines.len() == limit).then(|| next_cursor(q.cursor, &lines)).flatten();
                Ok(SearchAnswer {
                    next_cursor: next.map(encode_cursor),
                    from: rfc3339(q.from_ns),
                    to: rfc3339(q.to_ns),
                    workspaces: q.scope.workspaces().map(|w| w.into_iter().map(str::to_owned).collect()),
                    lines,
                    matcher,
                    duration_ms: started.elapsed().as_secs_f64() * 1e3,
                })
            },
            |a| a.lines.len() as u64,
        )
        .await
}

async fn histogram(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Json<HistogramAnswer>, ApiError> {
    let id = state.identify(&headers).await?;
    Ok(Json(histogram_as(&state, &id, raw.as_deref()).await?))
}

/// The histogram of `raw` as `id`, audited.
pub(crate) async fn histogram_as(state: &QueryState, id: &Identity, raw: Option<&str>) -> Result<HistogramAnswer, ApiError> {
    let p = Params::parse(raw)?;
    state.audited(id, "logs.histogram", raw.unwrap_or(""), histogram_body(state, id, &p), |a| a.totals().iter().map(|(_, n)| n).sum()).await
}

async fn histogram_body(state: &QueryState, id: &Identity, p: &Params) -> Result<HistogramAnswer, ApiError> {
    let (q, _) = log_search(state, id, p, 1).await?;
    let range = q.to_ns - q.from_ns;
    let step = match p.duration_ns("step")? {
        Some(s) => s,
        // About 60 buckets, at least a second each.
        None => (range / 60).max(1_000_000_000),
    };
    if range / step > state.limits.max_buckets as i64 {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("at most {} buckets; use a larger `step`", state.limits.max_buckets)));
    }
    let _slot = state.slot(id.user())?;
    let buckets = with_timeout(state, state.store.histogram(&q, step)).await?;
    Ok(HistogramAnswer { step_ns: step, buckets })
}

/// Counts by interval and level, as `GET /api/v1/logs/histogram` answers them: the store's
/// buckets (ordered by start, then level) written straight out, grouped by start.
pub(crate) struct HistogramAnswer {
    step_ns: i64,
    buckets: Vec<HistogramBucket>,
}

impl HistogramAnswer {
    /// Every level's count over the whole range, levels in the order first seen.
    fn totals(&self) -> Vec<(&str, u64)> {
        let mut totals: Vec<(&str, u64)> = Vec::new();
        for b in &self.buckets {
            match totals.iter_mut().find(|(s, _)| *s == b.severity) {
                Some((_, n)) => *n += b.count,
                None => totals.push((&b.severity, b.count)),
            }
        }
        totals
    }
}

impl Serialize for HistogramAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The buckets of one start: `{"start", "start_ns", "counts": {level: n}}`.
        struct Bucket<'a>(&'a [HistogramBucket]);
        impl Serialize for Bucket<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let start = self.0.first().map_or(0, |b| b.start_ns);
                let mut o = s.serialize_struct("Bucket", 3)?;
                o.serialize_field("start", &rfc3339(start))?;
                o.serialize_field("start_ns", &AsText(start))?;
                o.serialize_field("counts", &Counts(self.0.iter().map(|b| (b.severity.as_str(), b.count))))?;
                o.end()
            }
        }
        /// The buckets grouped by start.
        struct Buckets<'a>(&'a [HistogramBucket]);
        impl Serialize for Buckets<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.chunk_by(|a, b| a.start_ns == b.start_ns).map(Bucket))
            }
        }
        /// `{level: n}` of the pairs.
        struct Counts<I>(I);
        impl<'a, I: Iterator<Item = (&'a str, u64)> + Clone> Serialize for Counts<I> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.clone())
            }
        }
        let mut o = s.serialize_struct("HistogramAnswer", 3)?;
        o.serialize_field("step_seconds", &(self.step_ns as f64 / 1e9))?;
        o.serialize_field("buckets", &Buckets(&self.buckets))?;
        o.serialize_field("totals", &Counts(self.totals().into_iter()))?;
        o.end()
    }
}

/// Most lines on either side of a hit.
pub const MAX_CONTEXT_LINES: usize = 500;
/// How far from the hit context looks.
const CONTEXT_WINDOW_NS: i64 = 3_600_000_000_000;

/// The lines just before `timestamp` and from it on (the hit first), both in time order, with
/// the request's filters (usually the hit's `pod` and `container`) and scope.
async fn context(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let id = state.identify(&headers).await?;
    let body = state
        .audited(&id, "logs.context", raw.as_deref().unwrap_or(""), context_body(&state, &id, &p), |v| {
            (v["before"].as_array().map_or(0, Vec::len) + v["after"].as_array().map_or(0, Vec::len)) as u64
        })
        .await?;
    Ok(Json(body))
}

async fn context_body(state: &QueryState, id: &Identity, p: &Params) -> Result<Value, ApiError> {
    let ts = p.time("timestamp")?.ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "`timestamp` (the hit's `timestamp_ns`) is required"))?;
    let (before, after) = (p.usize("before")?.unwrap_or(20), p.usize("after")?.unwrap_or(20));
    if before > MAX_CONTEXT_LINES || after > MAX_CONTEXT_LINES {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("`before` and `after` may be at most {MAX_CONTEXT_LINES}")));
    }
    let workspaces = p.list("workspace")?;
    let projects = p.list("project")?;
    let scope = state.gate.logs(id, workspaces.as_ref(), projects.as_ref()).await.map_err(ApiError::from)?;
    crate::audit::covered(&scope);
    let filters = filters(p, projects)?;
    let _slot = state.slot(id.user())?;
    let earlier = LogSearch {
        scope: scope.clone(),
        from_ns: ts.saturating_sub(CONTEXT_WINDOW_NS),
        to_ns: ts,
        filters: filters.clone(),
        terms: Vec::new(),
        limit: before.max(1),
        cursor: None,
        oldest_first: false,
    };
    let later = LogSearch { from_ns: ts, to_ns: ts.saturating_add(CONTEXT_WINDOW_NS), limit: after.max(1), oldest_first: true, ..earlier.clone() };
    let mut b = if before == 0 { Vec::new() } else { with_timeout(state, state.store.search(&earlier)).await? };
    let a = if after == 0 { Vec::new() } else { with_timeout(state, state.store.search(&later)).await? };
    b.reverse();
    let none = Matcher::new(&[]).map_err(|m| ApiError::new(ErrorCode::Internal, m))?;
    Ok(json!({
        "before": Lines(&b, &none),
        "after": Lines(&a, &none),
    }))
}

/// `GET /api/v1/audit/search`: the caller's organisation's audit log, for the roles allowed to
/// read it, newest first. Filters: `actor`, `action`, `initiated_by`, `workspace`, `outcome`
/// (equality), `q` (words in the query text), `from`/`to`/`since`, `limit`.
async fn audit_search(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let id = state.identify(&headers).await?;
    let body = state
        .audited(&id, "audit.search", raw.as_deref().unwrap_or(""), audit_body(&state, &id, &p), |v| v["records"].as_array().map_or(0, |a| a.len() as u64))
        .await?;
    Ok(axum::Json(body))
}

async fn audit_body(state: &QueryState, id: &Identity, p: &Params) -> Result<Value, ApiError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampNanosecondType;

    let scope = state.gate.audit(id).map_err(ApiError::from)?;
    let (from_ns, to_ns) = p.range("from", "to", 86_400_000_000_000, false)?;
    let limit = p.usize("limit")?.unwrap_or(state.limits.default_lines);
    if limit == 0 || limit > state.limits.max_lines {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("`limit` must be 1..={}", state.limits.max_lines)));
    }
    let terms = crate::syntax::parse(p.one("q").unwrap_or("")).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    let matcher = storage::search::Matcher::new(&terms).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    let request = storage::ScanRequest { table: scope.table(), org_id: scope.org_id().map(str::to_owned), workspaces: None, from_ns, to_ns };
    let _slot = state.slot(id.user())?;
    let batches = with_timeout(state, state.store.scan(&request)).await?;
    let eq: Vec<(&str, String)> =
        ["actor", "action", "initiated_by", "workspace", "outcome"].into_iter().filter_map(|k| p.one(k).map(|v| (k, v.to_owned()))).collect();
    let mut out: Vec<(i64, serde_json::Value)> = Vec::new();
    for b in &batches {
        let col = |name: &str| b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>().cloned());
        let Some(ts) = b.column_by_name("timestamp").and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>().cloned()) else { continue };
        let names = ["org_id", "workspace", "actor", "initiated_by", "action", "resource", "outcome", "message"];
        let cols: Vec<Option<arrow::array::StringArray>> = names.iter().map(|n| col(n)).collect();
        let attrs = b.column_by_name("attributes").and_then(|c| c.as_map_opt().cloned());
        for i in 0..b.num_rows() {
            let v =
                |k: &str| -> &str { names.iter().position(|n| *n == k).and_then(|j| cols[j].as_ref()).filter(|a| a.is_valid(i)).map_or("", |a| a.value(i)) };
            // The second wall: only the scope's organisation, whatever storage returned.
            if Some(v("org_id")) != scope.org_id() || !eq.iter().all(|(k, want)| v(k) == want) || !matcher.is_match(v("message")) {
                continue;
            }
            let mut attributes = serde_json::Map::new();
            if let Some(m) = &attrs
                && m.is_valid(i)
            {
                let e = m.value(i);
                let (ks, vs) = (e.column(0).as_string::<i32>(), e.column(1).as_string::<i32>());
                for j in 0..e.len() {
                    attributes.insert(ks.value(j).to_owned(), serde_json::Value::String(vs.value(j).to_owned()));
                }
            }
            let t = ts.value(i);
            out.push((
                t,
                serde_json::json!({
                    "timestamp": rfc3339(t),
                    "timestamp_ns": t.to_string(),
                    "workspace": v("workspace"),
                    "actor": v("actor"),
                    "initiated_by": v("initiated_by"),
                    "action": v("action"),
                    "resource": v("resource"),
                    "outcome": v("outcome"),
                    "query": v("message"),
                    "attributes": attributes,
                }),
            ));
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.0));
    out.truncate(limit);
    Ok(serde_json::json!({ "records": out.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }))
}
