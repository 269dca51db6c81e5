//! The query service as the assistant's tools call it: the same handlers, scopes, limits and
//! audit records as the dashboard's own requests, on the identity of the user the assistant
//! serves (never its own), with `initiated_by = agent`. The tools pass the dashboard's
//! parameters (`workspace`, `project`, `level`, `q`, `since`, `limit`, …), so every tenant the
//! model names is checked by the same `Gate`.

use auth::Identity;
use schemas::ApiError;
use serde_json::{Value, json};

use crate::audit::as_agent;
use crate::state::QueryState;

/// Bytes of one metrics answer read at most.
const MAX_METRICS_BYTES: usize = 8 << 20;

#[derive(Clone)]
pub struct AgentQueries {
    state: QueryState,
}

impl AgentQueries {
    pub fn new(state: QueryState) -> AgentQueries {
        AgentQueries { state }
    }

    fn raw(params: &[(&str, String)]) -> String {
        serde_urlencoded::to_string(params).unwrap_or_default()
    }

    /// `GET /api/v1/logs/search` with `params`.
    pub async fn search(&self, id: &Identity, params: &[(&str, String)]) -> Result<Value, ApiError> {
        let raw = Self::raw(params);
        as_agent(async {
            let answer = crate::api::search_as(&self.state, id, Some(&raw)).await?;
            serde_json::to_value(answer).map_err(|e| ApiError::new(schemas::ErrorCode::Internal, format!("the search answer: {e}")))
        })
        .await
    }

    /// `GET /api/v1/logs/histogram` with `params`.
    pub async fn histogram(&self, id: &Identity, params: &[(&str, String)]) -> Result<Value, ApiError> {
        let raw = Self::raw(params);
        as_agent(async {
            let answer = crate::api::histogram_as(&self.state, id, Some(&raw)).await?;
            serde_json::to_value(answer).map_err(|e| ApiError::new(schemas::ErrorCode::Internal, format!("the histogram: {e}")))
        })
        .await
    }

    /// A PromQL query as `id` over the Prometheus API's own path (scoped to what `id` may read,
    /// limited, audited): instant with `params` `query` (and `time`), a range with `start`,
    /// `end` and `step` too. The answer's `data` (`resultType`, `result`).
    pub async fn metrics(&self, id: &Identity, params: &[(&str, String)]) -> Result<Value, ApiError> {
        let p = crate::params::Params::parse(Some(&Self::raw(params)))?;
        let range = p.one("step").is_some();
        let id = std::sync::Arc::new(id.clone());
        as_agent(async {
            let resp = if range { crate::prom::query_range_as(&self.state, id, p).await? } else { crate::prom::query_as(&self.state, id, p).await? };
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), MAX_METRICS_BYTES).await.map_err(|_| {
                ApiError::new(schemas::ErrorCode::LimitExceeded, "the answer is larger than 8 MiB; aggregate (sum by, topk) or narrow the selectors")
            })?;
            let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::new(schemas::ErrorCode::Internal, format!("the metrics answer: {e}")))?;
            if !status.is_success() || v["status"] != "success" {
                let msg = v["error"].as_str().unwrap_or("the metrics query failed").to_owned();
                let code = if status.is_client_error() { schemas::ErrorCode::InvalidQuery } else { schemas::ErrorCode::Unavailable };
                return Err(ApiError::new(code, msg));
            }
            Ok(v["data"].clone())
        })
        .await
    }

    /// The search's lines grouped into templates with counts, most frequent first (at most
    /// `top`), each with one example line.
    pub async fn patterns(&self, id: &Identity, params: &[(&str, String)], top: usize) -> Result<Value, ApiError> {
        let found = self.search(id, params).await?;
        let lines: Vec<&str> = found["lines"].as_array().map(|a| a.iter().filter_map(|l| l["message"].as_str()).collect()).unwrap_or_default();
        let mut groups: std::collections::HashMap<String, (u64, &str)> = std::collections::HashMap::new();
        for l in &lines {
            let e = groups.entry(crate::patterns::template(l)).or_insert((0, l));
            e.0 += 1;
        }
        let mut out: Vec<(String, (u64, &str))> = groups.into_iter().collect();
        out.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        out.truncate(top);
        Ok(json!({
            "lines_read": lines.len(),
            "patterns": out.iter().map(|(p, (n, ex))| json!({ "pattern": p, "count": n, "example": ex })).collect::<Vec<_>>(),
            "from": found["from"], "to": found["to"], "workspaces": found["workspaces"],
        }))
    }
}
