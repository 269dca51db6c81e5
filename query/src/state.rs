//! What every query endpoint shares: the limits, the state handlers run with (token
//! verifier, gate, store, audit sink, per-user query slots), and how storage errors and
//! timeouts become API errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::{Gate, Identity, TokenVerifier};
use axum::http::{HeaderMap, header};
use schemas::{ApiError, ErrorCode};
use storage::{Store, StoreError};

use crate::audit::AuditSink;

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
    /// The Prometheus-compatible server `/prometheus/api/v1/` is served from (none: not served).
    pub prometheus: Option<Arc<crate::prom::upstream::Upstream>>,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl QueryState {
    pub fn new(verifier: TokenVerifier, gate: Gate, store: Arc<dyn Store>, limits: QueryLimits) -> QueryState {
        QueryState { verifier, gate, store, limits, audit: None, prometheus: None, running: Arc::new(Mutex::new(HashMap::new())) }
    }

    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> QueryState {
        self.audit = Some(sink);
        self
    }

    pub fn with_prometheus(mut self, upstream: Option<Arc<crate::prom::upstream::Upstream>>) -> QueryState {
        self.prometheus = upstream;
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

    /// Runs `f` as one of `id`'s concurrent queries, cancelled at the timeout, audited.
    pub(crate) async fn bounded<T>(
        &self,
        id: &Identity,
        action: &str,
        query: &str,
        f: impl Future<Output = Result<T, ApiError>>,
        rows: impl Fn(&T) -> u64,
    ) -> Result<T, ApiError> {
        let run = async {
            let _slot = self.slot(id.user())?;
            match tokio::time::timeout(Duration::from_secs(self.limits.timeout_secs.max(1)), f).await {
                Ok(r) => r,
                Err(_) => Err(timed_out(self)),
            }
        };
        self.audited(id, action, query, run, rows).await
    }

    /// The identity of the request's bearer token.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
        self.verifier.verify_request(headers).await.map_err(|e| {
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
        Err(_) => Err(timed_out(state)),
    }
}

/// An error answer in a datasource's own shape (`body`): the code's status and, where a retry
/// can succeed, `Retry-After`.
pub(crate) fn error_response(e: &ApiError, body: serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = axum::http::StatusCode::from_u16(e.code.http_status()).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(body)).into_response();
    if let Some(v) = e.retry_after_secs().and_then(|s| header::HeaderValue::from_str(&s.to_string()).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub(crate) fn timed_out(state: &QueryState) -> ApiError {
    ApiError::new(ErrorCode::QueryTimeout, format!("the query ran past {} s and was cancelled; narrow it", state.limits.timeout_secs))
}
