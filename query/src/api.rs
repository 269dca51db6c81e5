//! The dashboard's JSON API: `GET /api/v1/logs/search` and `GET /api/v1/logs/histogram`.
//!
//! Every handler runs the same steps: verify the bearer token (identity comes from it only;
//! `X-Scope-OrgID`, `Impersonate-*` and tenant labels in the request grant nothing), ask the
//! [`Gate`] for a scope over the workspaces and projects the request names, then hand storage
//! a [`LogSearch`] carrying that scope.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth::{Gate, Identity, TokenVerifier};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Json, Router};
use schemas::LogRecord;
use schemas::{ApiError, ErrorCode};
use serde_json::{Value, json};
use storage::search::Matcher;
use storage::{Cursor, LogFilters, LogSearch, Store, StoreError};

use crate::audit::AuditSink;
use crate::params::{Params, decode_cursor, encode_cursor};
use crate::syntax;

/// Per-user and per-query bounds. Each breach is a clear 4xx (429 for concurrency).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// Longest time range one query may cover.
    pub max_range_secs: u64,
    /// Most lines one page may return.
    pub max_lines: usize,
    /// Lines per page when the request does not say.
    pub default_lines: usize,
    /// Queries one user may have running at once.
    pub max_concurrent_per_user: usize,
    /// A query running longer is cancelled (the backend query with it).
    pub timeout_secs: u64,
    /// Most histogram buckets.
    pub max_buckets: usize,
    /// Most stored lines one LogQL query may read through its pipeline (lines storage could
    /// not filter itself); past it the query is refused with advice to narrow it.
    pub max_scan_lines: usize,
    /// Most series a LogQL metric query, `series` or `index/volume` may return.
    pub max_series: usize,
    /// A live tail ends after this long (the client reconnects to go on).
    pub max_tail_secs: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_range_secs: 31 * 86_400,
            max_lines: 5_000,
            default_lines: 100,
            max_concurrent_per_user: 8,
            timeout_secs: 30,
            max_buckets: 2_000,
            max_scan_lines: 1_000_000,
            max_series: 1_000,
            max_tail_secs: 3_600,
        }
    }
}

#[derive(Clone)]
pub struct QueryState {
    pub verifier: TokenVerifier,
    pub gate: Gate,
    pub store: Arc<dyn Store>,
    pub limits: QueryLimits,
    /// Where every query's audit record goes (none: not recorded).
    pub audit: Option<Arc<dyn AuditSink>>,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl QueryState {
    pub fn new(verifier: TokenVerifier, gate: Gate, store: Arc<dyn Store>, limits: QueryLimits) -> QueryState {
        QueryState { verifier, gate, store, limits, audit: None, running: Arc::new(Mutex::new(HashMap::new())) }
    }

    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> QueryState {
        self.audit = Some(sink);
        self
    }

    /// Runs `f` as `id`'s request `action` for `query`, and writes its audit record.
    pub(crate) async fn audited<T>(
        &self,
        id: &Identity,
        action: &str,
        query: &str,
        f: impl Future<Output = Result<T, ApiError>>,
        rows: impl Fn(&T) -> u64,
    ) -> Result<T, ApiError> {
        crate::audit::run(self.audit.as_ref(), crate::audit::Request { id, initiated_by: "user", action, query }, f, rows).await
    }

    /// The identity of the request's bearer token.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .unwrap_or("");
        let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        self.verifier.verify(token, cookies).await.map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::from(e)
        })
    }

    /// A slot among the user's concurrent queries, released when dropped.
    pub(crate) fn slot(&self, user: &str) -> Result<Slot, ApiError> {
        let mut running = self.running.lock().map_err(|_| ApiError::new(ErrorCode::Internal, "query slots poisoned"))?;
        let n = running.entry(user.to_owned()).or_default();
        if *n >= self.limits.max_concurrent_per_user {
            return Err(ApiError::new(
                ErrorCode::TooManyQueries,
                format!("at most {} queries at once per user; retry shortly", self.limits.max_concurrent_per_user),
            ));
        }
        *n += 1;
        Ok(Slot { running: self.running.clone(), user: user.to_owned() })
    }
}

pub(crate) struct Slot {
    running: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock()
            && let Some(n) = r.get_mut(&self.user)
        {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.user);
            }
        }
    }
}

pub fn router(state: QueryState) -> Router {
    Router::new()
        .merge(crate::loki::routes())
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .route("/api/v1/logs/context", get(context))
        .route("/api/v1/logs/tail", get(crate::tail::dashboard))
        .route("/api/v1/audit/search", get(crate::audit::search))
        .with_state(state)
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
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
    let matcher = Matcher::new(&terms).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
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

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Rejected(m) => {
            tracing::info!(error = %m, "storage refused a query");
            ApiError::new(ErrorCode::InvalidQuery, "the query could not be run; check the search text and filters")
        }
        other => {
            tracing::warn!(error = %other, "query failed in storage");
            ApiError::new(ErrorCode::Unavailable, "storage is unavailable; retry shortly")
        }
    }
}

pub(crate) async fn with_timeout<T>(state: &QueryState, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, ApiError> {
    // Dropping the storage future on timeout cancels the backend query.
    match tokio::time::timeout(Duration::from_secs(state.limits.timeout_secs.max(1)), f).await {
        Ok(r) => r.map_err(store_error),
        Err(_) => Err(ApiError::new(ErrorCode::QueryTimeout, format!("the query ran past {} s and was cancelled; narrow it", state.limits.timeout_secs))),
    }
}

pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default()
}

pub(crate) fn line_json(l: &LogRecord, m: &Matcher) -> Value {
    let attributes: serde_json::Map<String, Value> = l.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "timestamp": rfc3339(l.timestamp_ns),
        "timestamp_ns": l.timestamp_ns.to_string(),
        "workspace": l.workspace,
        "project": l.project,
        "application": l.application,
        "pod": l.pod,
        "container": l.container,
        "node": l.node,
        "stream": l.stream,
        "level": l.severity.as_str(),
        "message": l.message,
        "trace_id": l.trace_id,
        "attributes": attributes,
        "highlights": m.highlights(&l.message),
    })
}

async fn search(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let (state, raw) = (&state, raw.as_deref());
    let started = Instant::now();
    let p = Params::parse(raw)?;
    let id = state.identify(&headers).await?;
    let body = state
        .audited(
            &id,
            "logs.search",
            raw.unwrap_or(""),
            async {
                let limit = p.usize("limit")?.unwrap_or(state.limits.default_lines);
                if limit == 0 || limit > state.limits.max_lines {
                    return Err(ApiError::new(ErrorCode::LimitExceeded, format!("`limit` must be 1..={}", state.limits.max_lines)));
                }
                let (q, matcher) = log_search(state, &id, &p, limit).await?;
                let _slot = state.slot(id.user())?;
                let lines = with_timeout(state, state.store.search(&q)).await?;
                let next = (lines.len() == limit).then(|| next_cursor(q.cursor, &lines)).flatten();
                Ok(json!({
                    "lines": lines.iter().map(|l| line_json(l, &matcher)).collect::<Vec<_>>(),
                    "next_cursor": next.map(encode_cursor),
                    "from": rfc3339(q.from_ns),
                    "to": rfc3339(q.to_ns),
                    "workspaces": q.scope.workspaces(),
                    "stats": { "lines": lines.len(), "duration_ms": started.elapsed().as_secs_f64() * 1e3 },
                }))
            },
            |v| v["lines"].as_array().map_or(0, |a| a.len() as u64),
        )
        .await?;
    Ok(Json(body))
}

/// The cursor after `lines`: the oldest timestamp returned, and how many rows at it the
/// caller has now seen (counting those an earlier page already skipped).
pub(crate) fn next_cursor(prev: Option<Cursor>, lines: &[LogRecord]) -> Option<Cursor> {
    let last = lines.last()?.timestamp_ns;
    let here = lines.iter().filter(|l| l.timestamp_ns == last).count() as u32;
    let before = prev.filter(|c| c.timestamp_ns == last).map_or(0, |c| c.skip);
    Some(Cursor { timestamp_ns: last, skip: before + here })
}

async fn histogram(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let id = state.identify(&headers).await?;
    let body = state
        .audited(&id, "logs.histogram", raw.as_deref().unwrap_or(""), histogram_body(&state, &id, &p), |v| {
            v["totals"].as_object().map_or(0, |t| t.values().filter_map(Value::as_u64).sum())
        })
        .await?;
    Ok(Json(body))
}

async fn histogram_body(state: &QueryState, id: &Identity, p: &Params) -> Result<Value, ApiError> {
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
    let mut by_start: Vec<(i64, serde_json::Map<String, Value>)> = Vec::new();
    let mut totals: serde_json::Map<String, Value> = serde_json::Map::new();
    for b in buckets {
        if by_start.last().is_none_or(|(s, _)| *s != b.start_ns) {
            by_start.push((b.start_ns, serde_json::Map::new()));
        }
        if let Some((_, m)) = by_start.last_mut() {
            m.insert(b.severity.clone(), json!(b.count));
        }
        let t = totals.get(&b.severity).and_then(Value::as_u64).unwrap_or(0) + b.count;
        totals.insert(b.severity, json!(t));
    }
    Ok(json!({
        "step_seconds": step as f64 / 1e9,
        "buckets": by_start.into_iter().map(|(s, counts)| json!({ "start": rfc3339(s), "start_ns": s.to_string(), "counts": counts })).collect::<Vec<_>>(),
        "totals": totals,
    }))
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
        "before": b.iter().map(|l| line_json(l, &none)).collect::<Vec<_>>(),
        "after": a.iter().map(|l| line_json(l, &none)).collect::<Vec<_>>(),
    }))
}
