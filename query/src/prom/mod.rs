//! Grafana's Prometheus datasource: the Prometheus HTTP API under `/prometheus/api/v1/`, each
//! query scoped to the caller before it reaches the upstream server (Prometheus, Thanos,
//! VictoriaMetrics).
//!
//! The caller is known from the bearer token only; [`auth::Gate::metrics`] says which
//! workspaces (and projects) they may read, and [`scope`] writes that into every selector of the
//! parsed query, the `match[]` selectors, or a `match[]` of its own where the request has none.
//! Answers are relayed as the upstream sent them (bounded in size, series counted against
//! `query.max_series`); `metadata` is filtered to the metric names the caller has series of.
//! Every request is audited and counts against the user's concurrent queries.

mod eval;
mod math;
mod native;
pub mod scope;
pub mod upstream;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use auth::{Identity, TenantScope};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemas::{ApiError, ErrorCode};
use serde_json::{Value, json};

use crate::audit::Pending;
use crate::params::Params;
use crate::state::QueryState;
pub use scope::TenantLabels;
pub use upstream::{PrometheusConfig, Upstream};

/// The Prometheus version the native evaluator follows (`status/buildinfo` without an upstream).
const NATIVE_VERSION: &str = "2.42.0";
/// Most bytes of one upstream answer relayed (a 1,000-series day at one-minute steps is ~45 MB).
const MAX_ANSWER_BYTES: usize = 256 << 20;

pub fn routes() -> Router<QueryState> {
    let r = Router::new();
    let r = r.route("/prometheus/api/v1/query", get(query).post(query));
    let r = r.route("/prometheus/api/v1/query_range", get(query_range).post(query_range));
    let r = r.route("/prometheus/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars));
    let r = r.route("/prometheus/api/v1/series", get(series).post(series));
    let r = r.route("/prometheus/api/v1/labels", get(labels).post(labels));
    let r = r.route("/prometheus/api/v1/label/{name}/values", get(label_values));
    let r = r.route("/prometheus/api/v1/metadata", get(metadata));
    let r = r.route("/prometheus/api/v1/rules", get(no_rules));
    let r = r.route("/prometheus/api/v1/alerts", get(no_alerts));
    r.route("/prometheus/api/v1/status/buildinfo", get(buildinfo))
}

/// An [`ApiError`] in Prometheus's error shape (`status`, `errorType`, `error`: what Grafana
/// shows), with the stable `code` beside it.
pub struct PromError(pub ApiError);

impl From<ApiError> for PromError {
    fn from(e: ApiError) -> PromError {
        PromError(e)
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let e = self.0;
        let kind = match e.code {
            ErrorCode::InvalidQuery | ErrorCode::LimitExceeded | ErrorCode::BadRequest => "bad_data",
            ErrorCode::QueryTimeout => "timeout",
            ErrorCode::Unavailable | ErrorCode::TooManyQueries => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
            _ => "execution",
        };
        let body = json!({ "status": "error", "errorType": kind, "error": e.message, "code": e.code.as_str() });
        crate::state::error_response(&e, body)
    }
}

type Reply = Result<Response, PromError>;

/// A whole upstream answer.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// What every handler starts with: the upstream, the caller, the parameters, the caller's scope.
struct Request {
    upstream: Arc<Upstream>,
    id: Arc<Identity>,
    params: Params,
    scope: TenantScope,
}

async fn begin(state: &QueryState, headers: &HeaderMap, raw: Option<&str>, body: &[u8]) -> Result<Request, ApiError> {
    let params = Params::from_request(raw, headers, body)?;
    let id = state.identify(headers).await?;
    begin_as(state, id, params).await
}

async fn begin_as(state: &QueryState, id: Arc<Identity>, params: Params) -> Result<Request, ApiError> {
    let upstream = state.prometheus.clone().ok_or_else(|| {
        ApiError::new(ErrorCode::Unavailable, "no Prometheus upstream is configured; set prometheus.upstream to a Prometheus-compatible server's URL")
    })?;
    let scope = state.gate.metrics(&id).await?;
    Ok(Request { upstream, id, params, scope })
}

impl Request {
    /// `key`, parsed and scoped, printed for the upstream.
    fn scoped_query(&self, key: &str) -> Result<String, ApiError> {
        let text = self.params.one(key).ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, format!("`{key}` (a PromQL query) is required")))?;
        let mut expr = scope::parse(text)?;
        scope::scope_expr(&mut expr, &self.scope, &self.upstream.labels)?;
        Ok(expr.to_string())
    }

    /// Every `match[]`, scoped; the scope's own selector when there is none.
    fn scoped_matches(&self, required: bool) -> Result<Vec<String>, ApiError> {
        let given = self.params.all("match[]");
        if given.is_empty() {
            if required {
                return Err(ApiError::new(ErrorCode::InvalidQuery, "at least one `match[]` series selector is required"));
            }
            return Ok(vec![scope::scope_only(&self.scope, &self.upstream.labels)?]);
        }
        if given.len() > 64 {
            return Err(ApiError::new(ErrorCode::LimitExceeded, "at most 64 `match[]` selectors"));
        }
        given.iter().map(|m| scope::scope_selector_text(m, &self.scope, &self.upstream.labels)).collect()
    }

    /// The parameters passed on unchanged, when present.
    fn passed(&self, keys: &[&'static str]) -> Vec<(&'static str, String)> {
        keys.iter().filter_map(|k| self.params.one(k).map(|v| (*k, v.to_owned()))).collect()
    }

    /// Sends `form` to the upstream's `api/v1/<path>`, as one of the caller's audited queries,
    /// and relays the answer as it arrives (a large answer is never held whole). The query's
    /// slot, timeout and audit record last until the last byte is sent.
    async fn run(&self, state: &QueryState, action: &str, audit_text: &str, path: &str, mut form: Vec<(&'static str, String)>) -> Result<Response, ApiError> {
        let limit = state.limits.timeout_secs.max(1);
        // The upstream gives up when we do: its own `timeout` is ours (or the caller's, if shorter).
        let asked = self.params.one("timeout").and_then(crate::params::parse_duration_ns).map(|ns| (ns / 1_000_000_000).max(1) as u64);
        form.push(("timeout", format!("{}s", asked.unwrap_or(limit).min(limit))));
        let pending = Pending::start(state.audit.as_ref(), &crate::audit::Request { id: &self.id, initiated_by: "user", action, query: audit_text });
        let workspaces: BTreeSet<String> = self.scope.workspaces().unwrap_or_default().into_iter().map(str::to_owned).collect();
        let relay = Relay {
            pending: Some(pending),
            workspaces,
            counter: SeriesCounter::default(),
            max_series: match path {
                "query" | "query_range" | "series" => state.limits.max_series as u64,
                _ => u64::MAX,
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(limit),
            timeout_secs: limit,
            _slot: None,
        };
        relay.start(state, &self.id, &self.upstream, path, &form).await
    }
}

/// One relayed answer: counts series as they pass, holds the user's query slot, and writes the
/// audit record when the answer ends (or is cut off).
struct Relay {
    pending: Option<Pending>,
    workspaces: BTreeSet<String>,
    counter: SeriesCounter,
    max_series: u64,
    deadline: tokio::time::Instant,
    timeout_secs: u64,
    _slot: Option<crate::state::Slot>,
}

/// Bytes read before the answer's head is sent: an answer that ends within them is checked
/// whole (a clear error when over the series limit); a longer one streams.
const PREFIX_BYTES: usize = 1 << 20;

impl Relay {
    fn finish(&mut self, outcome: &str) {
        if let Some(p) = self.pending.take() {
            p.finish(outcome, self.counter.series, std::mem::take(&mut self.workspaces));
        }
    }

    fn fail(mut self, e: ApiError) -> Result<Response, ApiError> {
        self.finish(e.code.as_str());
        Err(e)
    }

    fn over_limit(&self) -> Option<ApiError> {
        (self.counter.series > self.max_series)
            .then(|| ApiError::new(ErrorCode::LimitExceeded, format!("the answer has more than {} series; narrow the selectors or aggregate", self.max_series)))
    }

    async fn chunk(&self, resp: &mut reqwest::Response) -> Result<Option<Bytes>, ApiError> {
        match tokio::time::timeout_at(self.deadline, resp.chunk()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Prometheus upstream failed mid-answer");
                Err(ApiError::new(ErrorCode::Unavailable, "the Prometheus upstream is unavailable; retry shortly"))
            }
            Err(_) => Err(ApiError::new(ErrorCode::QueryTimeout, format!("the query ran past {} s and was cancelled; narrow it", self.timeout_secs))),
        }
    }

    async fn start(
        mut self,
        state: &QueryState,
        id: &Identity,
        upstream: &Upstream,
        path: &str,
        form: &[(&'static str, String)],
    ) -> Result<Response, ApiError> {
        match state.slot(id.user()) {
            Ok(slot) => self._slot = Some(slot),
            Err(e) => return self.fail(e),
        }
        let opened = match tokio::time::timeout_at(self.deadline, open(upstream, path, form)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::new(ErrorCode::QueryTimeout, format!("the query ran past {} s and was cancelled; narrow it", self.timeout_secs))),
        };
        let mut resp = match opened {
            Ok(r) => r,
            Err(e) => return self.fail(e),
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/json"));
        let mut prefix = Vec::new();
        let mut ended = false;
        while prefix.len() < PREFIX_BYTES {
            match self.chunk(&mut resp).await {
                Ok(Some(c)) => prefix.extend_from_slice(&c),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => return self.fail(e),
            }
        }
        if status.is_success() {
            self.counter.feed(&prefix);
            if let Some(e) = self.over_limit() {
                return self.fail(e);
            }
        }
        let body = if ended {
            self.finish("ok");
            Body::from(prefix)
        } else {
            let first = futures_util::stream::once(std::future::ready(Ok::<Bytes, std::io::Error>(Bytes::from(prefix))));
            let rest = futures_util::stream::unfold(Some((self, resp, status.is_success())), |state| async move {
                let (mut relay, mut resp, counting) = state?;
                match relay.chunk(&mut resp).await {
                    Ok(Some(c)) => {
                        if counting {
                            relay.counter.feed(&c);
                            if let Some(e) = relay.over_limit() {
                                // The head is sent: cutting the connection is the only way to refuse.
                                tracing::info!(error = %e.message, "Prometheus answer cut off");
                                relay.finish(e.code.as_str());
                                return Some((Err(std::io::Error::other(e.message)), None));
                            }
                        }
                        Some((Ok(c), Some((relay, resp, counting))))
                    }
                    Ok(None) => {
                        relay.finish("ok");
                        None
                    }
                    Err(e) => {
                        relay.finish(e.code.as_str());
                        Some((Err(std::io::Error::other(e.message)), None))
                    }
                }
            });
            Body::from_stream(futures_util::StreamExt::chain(first, rest))
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        Ok(r)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client went away before the answer ended.
        self.finish("cancelled");
    }
}

/// Counts `"metric":` (query results, series) and `"seriesLabels":` (exemplars) across chunks.
#[derive(Default)]
struct SeriesCounter {
    series: u64,
    tail: Vec<u8>,
}

impl SeriesCounter {
    const PATTERNS: [&'static [u8]; 2] = [br#""metric":"#, br#""seriesLabels":"#];

    fn feed(&mut self, chunk: &[u8]) {
        const KEEP: usize = 14; // the longest pattern, less one byte
        let mut seam = std::mem::take(&mut self.tail);
        let seen = seam.len();
        seam.extend_from_slice(&chunk[..chunk.len().min(KEEP)]);
        for p in Self::PATTERNS {
            // Starting in what came before and ending in this chunk…
            self.series += memchr::memmem::find_iter(&seam, p).filter(|&i| i < seen && i + p.len() > seen).count() as u64;
            // …and wholly inside it.
            self.series += memchr::memmem::find_iter(chunk, p).count() as u64;
        }
        self.tail = match chunk.len() >= KEEP {
            true => chunk[chunk.len() - KEEP..].to_vec(),
            false => seam[seam.len().saturating_sub(KEEP)..].to_vec(),
        };
    }
}

/// Sends the request; an upstream that cannot be reached, or fails without a JSON answer, is
/// `Unavailable`. Prometheus's own errors (JSON, 4xx or 5xx) are relayed.
async fn open(upstream: &Upstream, path: &str, form: &[(&'static str, String)]) -> Result<reqwest::Response, ApiError> {
    let body = serde_urlencoded::to_string(form).map_err(|_| ApiError::new(ErrorCode::Internal, "the upstream request could not be encoded"))?;
    let url = format!("{}/api/v1/{path}", upstream.base);
    // Label values and metadata are GET only in Prometheus; the rest take a form (long queries fit).
    let req = match path.starts_with("label/") || path == "metadata" {
        true => upstream.client.get(format!("{url}?{body}")),
        false => upstream.client.post(url).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body),
    };
    let resp = req.send().await.map_err(|e| {
        tracing::warn!(error = %e, upstream = %upstream.base, "Prometheus upstream failed");
        ApiError::new(ErrorCode::Unavailable, "the Prometheus upstream is unavailable; retry shortly")
    })?;
    let status = resp.status();
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE && !is_json(resp.headers()) {
        return Err(ApiError::new(ErrorCode::Unavailable, format!("the Prometheus upstream answered {status}; retry shortly")));
    }
    Ok(resp)
}

/// A whole answer (metadata and the names it is filtered by), bounded in size.
async fn post(upstream: &Upstream, path: &str, form: &[(&'static str, String)]) -> Result<Answer, ApiError> {
    let mut resp = open(upstream, path, form).await?;
    let status = resp.status();
    if resp.content_length().is_some_and(|n| n as usize > MAX_ANSWER_BYTES) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| ApiError::new(ErrorCode::Unavailable, "the Prometheus upstream is unavailable; retry shortly"))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body: Bytes::from(body) })
}

fn is_json(h: &reqwest::header::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

fn too_big() -> ApiError {
    ApiError::new(ErrorCode::LimitExceeded, format!("the answer is larger than {} MiB; narrow the query or raise the step", MAX_ANSWER_BYTES >> 20))
}

async fn query(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let params = Params::from_request(raw.as_deref(), &headers, &body)?;
    let id = state.identify(&headers).await?;
    Ok(query_as(&state, id, params).await?)
}

/// `query` (an instant PromQL query) as `id`: scoped, limited and audited like the HTTP API.
pub(crate) async fn query_as(state: &QueryState, id: Arc<Identity>, params: Params) -> Result<Response, ApiError> {
    if state.prometheus.is_none() {
        return native::query(state, id, params).await;
    }
    let r = begin_as(state, id, params).await?;
    let mut form = vec![("query", r.scoped_query("query")?)];
    form.extend(r.passed(&["time", "limit"]));
    let text = r.params.one("query").unwrap_or_default();
    r.run(state, "prometheus.query", text, "query", form).await
}

async fn query_range(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let params = Params::from_request(raw.as_deref(), &headers, &body)?;
    let id = state.identify(&headers).await?;
    Ok(query_range_as(&state, id, params).await?)
}

/// `query_range` as `id`: scoped, limited and audited like the HTTP API.
pub(crate) async fn query_range_as(state: &QueryState, id: Arc<Identity>, params: Params) -> Result<Response, ApiError> {
    if state.prometheus.is_none() {
        return native::query_range(state, id, params).await;
    }
    let r = begin_as(state, id, params).await?;
    let (start, end) = (required_time(&r.params, "start")?, required_time(&r.params, "end")?);
    check_range(state, start, end)?;
    if r.params.one("step").is_none() {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`step` (a duration like 30s, or seconds) is required"));
    }
    let mut form = vec![("query", r.scoped_query("query")?)];
    form.extend(r.passed(&["start", "end", "step", "limit"]));
    let text = r.params.one("query").unwrap_or_default();
    r.run(state, "prometheus.query_range", text, "query_range", form).await
}

async fn query_exemplars(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    if state.prometheus.is_none() {
        state.identify(&headers).await?;
        return Ok(native::empty("exemplars"));
    }
    let r = begin(&state, &headers, raw.as_deref(), &body).await?;
    let mut form = vec![("query", r.scoped_query("query")?)];
    form.extend(r.passed(&["start", "end"]));
    let text = r.params.one("query").unwrap_or_default();
    Ok(r.run(&state, "prometheus.query_exemplars", text, "query_exemplars", form).await?.into_response())
}

async fn series(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    if state.prometheus.is_none() {
        return Ok(native::index(&state, &headers, raw.as_deref(), &body, native::Index::Series).await?);
    }
    let r = begin(&state, &headers, raw.as_deref(), &body).await?;
    selector_request(&state, &r, "prometheus.series", "series", true).await
}

async fn labels(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    if state.prometheus.is_none() {
        return Ok(native::index(&state, &headers, raw.as_deref(), &body, native::Index::Labels).await?);
    }
    let r = begin(&state, &headers, raw.as_deref(), &body).await?;
    selector_request(&state, &r, "prometheus.labels", "labels", false).await
}

async fn label_values(State(state): State<QueryState>, Path(name): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Reply {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ApiError::new(ErrorCode::InvalidQuery, format!("`{name}` is not a label name")).into());
    }
    if state.prometheus.is_none() {
        return Ok(native::index(&state, &headers, raw.as_deref(), &[], native::Index::Values(&name)).await?);
    }
    let r = begin(&state, &headers, raw.as_deref(), &[]).await?;
    selector_request(&state, &r, "prometheus.label_values", &format!("label/{name}/values"), false).await
}

/// `series`, `labels`, `label/…/values`: scoped `match[]` selectors and the time range.
async fn selector_request(state: &QueryState, r: &Request, action: &str, path: &str, required: bool) -> Reply {
    let matches = r.scoped_matches(required)?;
    if let (Some(s), Some(e)) = (time(&r.params, "start")?, time(&r.params, "end")?) {
        check_range(state, s, e)?;
    }
    let text = r.params.all("match[]").join(" ");
    let mut form: Vec<(&'static str, String)> = matches.into_iter().map(|m| ("match[]", m)).collect();
    form.extend(r.passed(&["start", "end", "limit"]));
    Ok(r.run(state, action, &text, path, form).await?.into_response())
}

/// Metric metadata, only for the metric names the caller has series of.
async fn metadata(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Reply {
    if state.prometheus.is_none() {
        state.identify(&headers).await?;
        return Ok(native::empty("metadata"));
    }
    let r = begin(&state, &headers, raw.as_deref(), &[]).await?;
    let names_form = vec![("match[]", scope::scope_only(&r.scope, &r.upstream.labels)?)];
    let fetch = async {
        crate::audit::covered(&r.scope);
        let names = parse_success(&post(&r.upstream, "label/__name__/values", &names_form).await?)?;
        let visible: std::collections::HashSet<&str> = names["data"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut meta = parse_success(&post(&r.upstream, "metadata", &r.passed(&["metric", "limit", "limit_per_metric"])).await?)?;
        if let Some(map) = meta["data"].as_object_mut() {
            map.retain(|name, _| visible.contains(name.as_str()));
        }
        Ok(meta)
    };
    let rows = |m: &Value| m["data"].as_object().map_or(0, |o| o.len() as u64);
    let meta = state.bounded(&r.id, "prometheus.metadata", r.params.one("metric").unwrap_or_default(), fetch, rows).await?;
    Ok(axum::Json(meta).into_response())
}

fn parse_success(a: &Answer) -> Result<Value, ApiError> {
    let v: Value =
        serde_json::from_slice(&a.body).map_err(|_| ApiError::new(ErrorCode::Unavailable, "the Prometheus upstream sent an answer that is not JSON"))?;
    if !a.status.is_success() || v["status"] != "success" {
        let m = v["error"].as_str().unwrap_or("the Prometheus upstream refused the request");
        return Err(ApiError::new(ErrorCode::Unavailable, format!("Prometheus upstream: {m}")));
    }
    Ok(v)
}

/// Recording and alerting rules are the platform's, not a tenant's: none are listed.
async fn no_rules(State(state): State<QueryState>, headers: HeaderMap) -> Result<axum::Json<Value>, PromError> {
    state.identify(&headers).await?;
    Ok(axum::Json(json!({ "status": "success", "data": { "groups": [] } })))
}

async fn no_alerts(State(state): State<QueryState>, headers: HeaderMap) -> Result<axum::Json<Value>, PromError> {
    state.identify(&headers).await?;
    Ok(axum::Json(json!({ "status": "success", "data": { "alerts": [] } })))
}

/// The upstream's version (Grafana's feature detection); no tenant data in it.
async fn buildinfo(State(state): State<QueryState>, headers: HeaderMap) -> Reply {
    let _id = state.identify(&headers).await?;
    let Some(upstream) = state.prometheus.clone() else {
        // The stored samples answer: the Prometheus version whose semantics they follow.
        return Ok(axum::Json(json!({ "status": "success", "data": { "version": NATIVE_VERSION, "revision": "", "branch": "", "buildUser": "", "buildDate": "", "goVersion": "" } })).into_response());
    };
    let resp = upstream.client.get(format!("{}/api/v1/status/buildinfo", upstream.base)).send().await;
    let body = match resp {
        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
        _ => None,
    };
    let body = body.ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the Prometheus upstream is unavailable; retry shortly"))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// A time as Prometheus reads one: Unix seconds (with a fraction) or RFC 3339; in nanoseconds.
fn time(p: &Params, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = p.one(key) else { return Ok(None) };
    // Rounded to the millisecond, as Prometheus reads `1700000000.474`.
    let secs = v.parse::<f64>().ok().filter(|s| s.is_finite() && s.abs() < 9e9).map(|s| (s * 1e3).round() as i64 * 1_000_000);
    secs.or_else(|| chrono::DateTime::parse_from_rfc3339(v).ok().and_then(|t| t.timestamp_nanos_opt()))
        .map(Some)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, format!("`{key}`: `{v}` is not a time (Unix seconds or RFC 3339)")))
}

fn required_time(p: &Params, key: &str) -> Result<i64, ApiError> {
    time(p, key)?.ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, format!("`{key}` (Unix seconds or RFC 3339) is required")))
}

fn check_range(state: &QueryState, start: i64, end: i64) -> Result<(), ApiError> {
    if end < start {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`end` must not be before `start`"));
    }
    let max = i64::try_from(state.limits.max_range_secs).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
    if end - start > max {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("the query covers more than {} hours; narrow `start`/`end`", state.limits.max_range_secs / 3600),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SeriesCounter;

    #[test]
    fn series_are_counted_across_any_chunking() {
        let body =
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"\"metric\":"},"values":[]},{"metric":{}},{"seriesLabels":{}}]}}"#;
        for size in 1..body.len() {
            let mut c = SeriesCounter::default();
            body.chunks(size).for_each(|ch| c.feed(ch));
            assert_eq!(c.series, 3, "chunks of {size}");
        }
    }
}
