//! The ingest endpoints: Vector's `http` sink, ClickHouse's HTTP insert (for Vector's
//! `clickhouse` sink), Loki push and Prometheus remote_write.
//!
//! Every endpoint runs the same steps: authenticate the credential, read the body within the
//! credential's size limit and the body timeout, decompress without passing the limit, decode,
//! attach tenancy, and hand the rows to the pipeline as one write-ahead log record. The answer
//! is 2xx only once that record is durable, and carries the count of events that can never be
//! accepted with their reasons (so shippers do not retry them). Nothing of a request is stored
//! when the answer is an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use schemas::{ErrorCode, Rows};
use serde_json::json;

use crate::decode::{self, json_events, loki, remote_write};
use crate::event::{BodyError, RejectReason};
use crate::metrics::IngestMetrics;
use crate::pipeline::{Pipeline, SubmitError};
use crate::tenancy::{Credential, Resolver, TenancyLabels};

/// What the handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub pipeline: Pipeline,
    pub credentials: Arc<Vec<Arc<Credential>>>,
    pub tenancy: Arc<TenancyLabels>,
    pub metrics: Arc<IngestMetrics>,
    pub body_timeout: Duration,
}

/// The routes on the main listener.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/ingest/v1/logs", post(vector_http))
        .route("/loki/api/v1/push", post(loki_push))
        .route("/api/v1/write", post(prometheus_remote_write))
        .route("/clickhouse", any(clickhouse))
        .route("/clickhouse/", any(clickhouse))
        .with_state(state)
}

/// ClickHouse's HTTP interface at `/`, for a listener of its own.
pub fn clickhouse_router(state: IngestState) -> Router {
    Router::new().route("/", any(clickhouse)).with_state(state)
}

pub use schemas::ApiError;

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        let code = match &e {
            BodyError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedContentType(_) => ErrorCode::UnsupportedMediaType,
            BodyError::Malformed(_) => ErrorCode::MalformedBody,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        let code = match e {
            SubmitError::Backpressure { .. } => ErrorCode::Backpressure,
            // One record too large for the log can never be accepted: retrying cannot help.
            SubmitError::Unavailable(crate::wal::WalError::TooLarge { .. }) => ErrorCode::PayloadTooLarge,
            SubmitError::Unavailable(_) | SubmitError::DiskCap { .. } | SubmitError::DiskFull { .. } => ErrorCode::Unavailable,
        };
        ApiError::new(code, format!("{e}; nothing of this request was stored, retry later"))
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Vector,
    ClickHouse,
    Loki,
    RemoteWrite,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Vector => "vector_http",
            Endpoint::ClickHouse => "clickhouse",
            Endpoint::Loki => "loki_push",
            Endpoint::RemoteWrite => "remote_write",
        }
    }
}

/// Finds the credential for a request: `Authorization: Bearer`, `Authorization: Basic` (the
/// password is the token; the user must be the credential's name or `default`), or ClickHouse's
/// `X-ClickHouse-User`/`X-ClickHouse-Key` headers. Tokens are compared in constant time.
fn authenticate(state: &IngestState, headers: &HeaderMap, query_user: Option<(&str, &str)>) -> Result<Arc<Credential>, ApiError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (user, token): (Option<String>, String) = if let Some(t) = auth.strip_prefix("Bearer ") {
        (None, t.trim().to_owned())
    } else if let Some(b) = auth.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).ok().and_then(|d| String::from_utf8(d).ok()).unwrap_or_default();
        match decoded.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), p.to_owned()),
            None => (None, String::new()),
        }
    } else if let Some(key) = headers.get("x-clickhouse-key").and_then(|v| v.to_str().ok()) {
        (headers.get("x-clickhouse-user").and_then(|v| v.to_str().ok()).map(str::to_owned), key.to_owned())
    } else if let Some((u, p)) = query_user {
        (Some(u.to_owned()), p.to_owned())
    } else {
        (None, String::new())
    };
    if token.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "no ingest credential: send `Authorization: Bearer <token>` (or basic auth with the token as password)",
        ));
    }
    let found = state.credentials.iter().fold(None, |found, c| if constant_time_eq(c.token.as_bytes(), token.as_bytes()) { Some(c.clone()) } else { found });
    match (found, user.as_deref()) {
        (Some(c), None | Some("default")) => Ok(c),
        (Some(c), Some(u)) if u == c.name => Ok(c),
        _ => Err(ApiError::new(ErrorCode::Unauthenticated, "unknown ingest credential")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the body, refusing more than `limit` bytes and clients slower than the body timeout.
async fn read_body(state: &IngestState, headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {limit} bytes; send smaller batches"));
    if headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(state.body_timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(ErrorCode::Timeout, "request body was not received in time")),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(ErrorCode::MalformedBody, format!("could not read request body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn content_encoding(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// What a successful request did.
struct Outcome {
    accepted: usize,
    reasons: BTreeMap<&'static str, usize>,
}

impl Outcome {
    fn rejected(&self) -> usize {
        self.reasons.values().sum()
    }

    fn json(&self) -> Response {
        axum::Json(json!({ "accepted": self.accepted, "rejected": self.rejected(), "reasons": self.reasons })).into_response()
    }

    /// Loki and Prometheus answer a push with 204; keep a body only when events were rejected,
    /// which their clients log.
    fn no_content_unless_rejected(&self) -> Response {
        if self.rejected() == 0 { StatusCode::NO_CONTENT.into_response() } else { self.json() }
    }
}

/// Submits the accepted rows; `Ok` once they are durable.
async fn finish(state: &IngestState, endpoint: Endpoint, rows: Rows, mut rejected: Vec<RejectReason>, started: Instant) -> Result<Outcome, ApiError> {
    let m = &state.metrics;
    let accepted = rows.len();
    rejected.sort();
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in &rejected {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    for (reason, n) in &reasons {
        m.rejected.get_or_create(&vec![("reason", *reason)]).inc_by(*n as u64);
    }
    m.events.get_or_create(&vec![("endpoint", endpoint.label()), ("outcome", "rejected")]).inc_by(rejected.len() as u64);
    if accepted == 0 && !rejected.is_empty() {
        let detail = reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>().join(", ");
        return Err(ApiError::new(ErrorCode::NothingAccepted, format!("no event of this request can be accepted ({detail}); retrying will not help")));
    }
    if accepted > 0 {
        state.pipeline.submit(rows).await?;
        m.ack_seconds.observe(started.elapsed().as_secs_f64());
    }
    m.events.get_or_create(&vec![("endpoint", endpoint.label()), ("outcome", "accepted")]).inc_by(accepted as u64);
    Ok(Outcome { accepted, reasons })
}

fn record(state: &IngestState, endpoint: Endpoint, result: Result<Response, ApiError>) -> Response {
    let response = result.unwrap_or_else(|e| {
        if e.code == ErrorCode::Internal {
            tracing::error!(endpoint = endpoint.label(), message = %e.message, "ingest request failed");
        } else {
            tracing::debug!(endpoint = endpoint.label(), code = %e.code, message = %e.message, "ingest request refused");
        }
        e.into_response()
    });
    let status: &'static str = match response.status().as_u16() {
        200..=299 => "2xx",
        400 => "400",
        401 => "401",
        408 => "408",
        413 => "413",
        415 => "415",
        429 => "429",
        503 => "503",
        402..=499 => "4xx",
        _ => "5xx",
    };
    state.metrics.requests.get_or_create(&vec![("endpoint", endpoint.label()), ("status", status)]).inc();
    response
}

/// Decodes JSON log events (Vector `http` sink body or ClickHouse `JSONEachRow` data) and
/// resolves their tenancy.
async fn ingest_json_logs(
    state: &IngestState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    cred: Arc<Credential>,
    raw: Bytes,
    started: Instant,
) -> Result<Outcome, ApiError> {
    state.metrics.bytes.get_or_create(&vec![("endpoint", endpoint.label())]).inc_by(raw.len() as u64);
    let limits = &cred.limits;
    let body = decode::decompress(content_encoding(headers), &raw, limits.max_body_bytes)?;
    let decoded = json_events::decode_json_events(&body, limits)?;
    resolve_logs(state, endpoint, &cred, decoded.events, decoded.rejected, started).await
}

async fn resolve_logs(
    state: &IngestState,
    endpoint: Endpoint,
    cred: &Arc<Credential>,
    events: Vec<crate::event::RawLog>,
    mut rejected: Vec<RejectReason>,
    started: Instant,
) -> Result<Outcome, ApiError> {
    let resolver = Resolver { credential: cred, labels: &state.tenancy, now_ns: now_ns() };
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        match resolver.log(e) {
            Ok(r) => rows.push(r),
            Err(reason) => rejected.push(reason),
        }
    }
    finish(state, endpoint, Rows::Logs(rows), rejected, started).await
}

async fn vector_http(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let cred = authenticate(&state, &headers, None)?;
        let raw = read_body(&state, &headers, body, cred.limits.max_body_bytes).await?;
        Ok(ingest_json_logs(&state, Endpoint::Vector, &headers, cred, raw, Instant::now()).await?.json())
    }
    .await;
    record(&state, Endpoint::Vector, result)
}

async fn loki_push(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let cred = authenticate(&state, &headers, None)?;
        let raw = read_body(&state, &headers, body, cred.limits.max_body_bytes).await?;
        let started = Instant::now();
        state.metrics.bytes.get_or_create(&vec![("endpoint", Endpoint::Loki.label())]).inc_by(raw.len() as u64);
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/x-protobuf");
        let decoded = if content_type.starts_with("application/json") {
            let body = decode::decompress(content_encoding(&headers), &raw, cred.limits.max_body_bytes)?;
            loki::decode_loki_json(&body, &cred.limits)?
        } else if content_type.starts_with("application/x-protobuf") || content_type.starts_with("application/octet-stream") {
            loki::decode_loki_protobuf(&raw, &cred.limits)?
        } else {
            return Err(BodyError::UnsupportedContentType(content_type.chars().take(100).collect()).into());
        };
        Ok(resolve_logs(&state, Endpoint::Loki, &cred, decoded.events, decoded.rejected, started).await?.no_content_unless_rejected())
    }
    .await;
    record(&state, Endpoint::Loki, result)
}

async fn prometheus_remote_write(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let cred = authenticate(&state, &headers, None)?;
        let raw = read_body(&state, &headers, body, cred.limits.max_body_bytes).await?;
        let started = Instant::now();
        state.metrics.bytes.get_or_create(&vec![("endpoint", Endpoint::RemoteWrite.label())]).inc_by(raw.len() as u64);
        let decoded = remote_write::decode_remote_write(&raw, &cred.limits)?;
        // Each sample becomes a row carrying its series' labels: bound what that expands to, as
        // the decoders bound their own output, before any of it is built.
        let budget = cred.limits.max_body_bytes.saturating_mul(16).max(1 << 20);
        let expanded = decoded.events.iter().fold(0usize, |acc, s| {
            let labels: usize = s.labels.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
            acc.saturating_add(s.samples.len().saturating_mul(labels + 48))
        });
        if expanded > budget {
            return Err(BodyError::TooLarge { limit: cred.limits.max_body_bytes }.into());
        }
        let resolver = Resolver { credential: &cred, labels: &state.tenancy, now_ns: now_ns() };
        let (mut samples, mut rejected) = (Vec::new(), decoded.rejected);
        for series in decoded.events {
            resolver.series(series, &mut samples, &mut rejected);
        }
        Ok(finish(&state, Endpoint::RemoteWrite, Rows::Metrics(samples), rejected, started).await?.no_content_unless_rejected())
    }
    .await;
    record(&state, Endpoint::RemoteWrite, result)
}

/// What a ClickHouse HTTP request asks for.
#[derive(Debug, PartialEq)]
enum Statement {
    /// `SELECT 1`, Vector's health check.
    SelectOne,
    /// `INSERT INTO [db.]logs FORMAT JSONEachRow`.
    InsertLogs,
}

/// Parses the only statements this endpoint serves. Identifiers may be written as ClickHouse
/// query parameters (`{table:Identifier}`, resolved from `param_table`), as Vector does.
fn parse_statement(query: &str, params: &BTreeMap<String, String>) -> Result<Statement, ApiError> {
    let words: Vec<&str> = query.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["SELECT", "1"] | ["SELECT", "1", "FORMAT", _] => return Ok(Statement::SelectOne),
        ["INSERT", "INTO", _, "FORMAT", format] | ["INSERT", "INTO", _, _, "FORMAT", format] => {
            if !matches!(*format, "JSONEACHROW" | "JSONLINES" | "NDJSON") {
                return Err(ApiError::new(ErrorCode::BadRequest, format!("format {} is not supported; use JSONEachRow", words[words.len() - 1])));
            }
        }
        _ => return Err(ApiError::new(ErrorCode::BadRequest, "only `INSERT INTO <db>.logs FORMAT JSONEachRow` and `SELECT 1` are served here")),
    }
    let resolve = |part: &str| -> Result<String, ApiError> {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(inner) => {
                let (name, kind) = inner.split_once(':').unwrap_or((inner, ""));
                if kind.trim() != "Identifier" {
                    return Err(ApiError::new(ErrorCode::BadRequest, "table parameters must have type Identifier"));
                }
                params.get(name.trim()).cloned().ok_or_else(|| ApiError::new(ErrorCode::BadRequest, format!("missing param_{}", name.trim())))
            }
            None => Ok(part.trim_matches('`').trim_matches('"').to_owned()),
        }
    };
    // `db.table`, where either part may be a parameter.
    let target = words[2];
    let table = match target.rsplit_once('.') {
        Some((_, t)) if !t.is_empty() => resolve(t)?,
        _ => resolve(target)?,
    };
    if table != "logs" {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("table `{}` is not writable here; insert into `logs`", table.chars().take(64).collect::<String>()),
        ));
    }
    Ok(Statement::InsertLogs)
}

async fn clickhouse(State(state): State<IngestState>, Query(params): Query<BTreeMap<String, String>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let query_user = params.get("user").map(|u| (u.as_str(), params.get("password").map(String::as_str).unwrap_or("")));
        let cred = authenticate(&state, &headers, query_user)?;
        let raw = read_body(&state, &headers, body, cred.limits.max_body_bytes).await?;
        let started = Instant::now();
        let bind: BTreeMap<String, String> = params.iter().filter_map(|(k, v)| k.strip_prefix("param_").map(|k| (k.to_owned(), v.clone()))).collect();
        let (query, data) = match params.get("query") {
            Some(q) => (q.clone(), raw),
            // Without `query` in the URL, the statement is the body's first line.
            None => {
                let end = raw.iter().position(|b| *b == b'\n').unwrap_or(raw.len());
                let q = String::from_utf8_lossy(&raw[..end]).into_owned();
                (q, raw.slice((end + 1).min(raw.len())..))
            }
        };
        match parse_statement(&query, &bind)? {
            Statement::SelectOne => Ok("1\n".into_response()),
            // ClickHouse answers an insert with an empty 200.
            Statement::InsertLogs => {
                ingest_json_logs(&state, Endpoint::ClickHouse, &headers, cred, data, started).await.map(|_| StatusCode::OK.into_response())
            }
        }
    }
    .await;
    record(&state, Endpoint::ClickHouse, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn statements_vector_sends_are_understood() {
        let p = params(&[("database", "hexabase"), ("table", "logs")]);
        assert_eq!(parse_statement("INSERT INTO {database:Identifier}.{table:Identifier} FORMAT JSONEachRow", &p).unwrap(), Statement::InsertLogs);
        assert_eq!(parse_statement("insert into hexabase.logs format JSONEachRow", &p).unwrap(), Statement::InsertLogs);
        assert_eq!(parse_statement("SELECT 1", &p).unwrap(), Statement::SelectOne);
    }

    #[test]
    fn other_statements_and_tables_are_refused() {
        let p = params(&[("table", "audit_logs")]);
        for q in [
            "DROP TABLE logs",
            "INSERT INTO db.{table:Identifier} FORMAT JSONEachRow",
            "INSERT INTO db.logs FORMAT RowBinary",
            "SELECT * FROM logs",
            "INSERT INTO db.logs; DROP TABLE x FORMAT JSONEachRow",
        ] {
            assert_eq!(parse_statement(q, &p).unwrap_err().code, ErrorCode::BadRequest, "{q}");
        }
    }
}
