//! The Prometheus API over the stored `metrics` table, when no upstream is configured: the
//! caller's samples are read through [`storage::Store::metric_series`] with their metrics scope
//! (storage applies it again to every row) and evaluated by [`super::eval`].

use std::collections::BTreeSet;

use auth::{Identity, TenantScope};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use schemas::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};
use storage::MetricRead;

use super::eval::{self, Eval, Stored, Value as V};
use super::{check_range, required_time, time};
use crate::params::{Params, parse_duration_ns};
use crate::state::QueryState;

/// Most samples one query may read (Prometheus's `--query.max-samples` default).
const MAX_SAMPLES: usize = 50_000_000;
/// Most points per series in a range query (Prometheus's limit).
const MAX_POINTS: i64 = 11_000;

struct Native {
    id: std::sync::Arc<Identity>,
    params: Params,
    scope: TenantScope,
}

async fn begin(state: &QueryState, headers: &HeaderMap, raw: Option<&str>, body: &[u8]) -> Result<Native, ApiError> {
    let params = Params::from_request(raw, headers, body)?;
    let id = state.identify(headers).await?;
    Native::new(state, id, params).await
}

impl Native {
    async fn new(state: &QueryState, id: std::sync::Arc<Identity>, params: Params) -> Result<Native, ApiError> {
        let scope = state.gate.metrics(&id).await?;
        Ok(Native { id, params, scope })
    }
}

fn now_ms() -> i64 {
    crate::params::now_ns() / 1_000_000
}

/// The caller's series in `[from, to]`, as PromQL sees them.
async fn load(state: &QueryState, scope: &TenantScope, from: i64, to: i64, names: Option<BTreeSet<String>>) -> Result<Vec<Stored>, ApiError> {
    crate::audit::covered(scope);
    let read = MetricRead { scope: scope.clone(), from_ms: from, to_ms: to, metrics: names };
    let series = crate::state::with_timeout(state, state.store.metric_series(&read)).await?;
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    if samples > MAX_SAMPLES {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("the query would read more than {MAX_SAMPLES} samples; narrow the selectors or the time range"),
        ));
    }
    Ok(series.into_iter().map(Stored::from_series).collect())
}

fn secs(ms: i64) -> Value {
    if ms % 1000 == 0 { json!(ms / 1000) } else { json!(ms as f64 / 1e3) }
}

fn metric_json(labels: &eval::Labels) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>())
}

fn success(data: Value) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

/// Prometheus refuses results with two series of the same labels (after a function dropped
/// the names that told them apart).
fn check_unique(v: &[eval::Series]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for s in v {
        if !seen.insert(&s.labels) {
            return Err(ApiError::new(ErrorCode::InvalidQuery, "vector cannot contain metrics with the same labelset"));
        }
    }
    Ok(())
}

async fn evaluate(state: &QueryState, n: &Native, steps: eval::Steps) -> Result<(V, usize), ApiError> {
    let text = n.params.one("query").ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "`query` (a PromQL query) is required"))?;
    let expr = super::scope::parse(text)?;
    let (before, after) = eval::reach(&expr)?;
    // A query without selectors (`1+1`, Grafana's health check) reads nothing.
    let data = match eval::metric_names(&expr) {
        Some(names) if names.is_empty() => Vec::new(),
        names => load(state, &n.scope, steps.start.saturating_sub(before), steps.end.saturating_add(after), names).await?,
    };
    let value = Eval { steps, data: &data }.eval(&expr)?;
    let rows = match &value {
        V::Vector(v) => {
            check_unique(v)?;
            if v.len() > state.limits.max_series {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("the answer has more than {} series; narrow the selectors or aggregate", state.limits.max_series),
                ));
            }
            v.len()
        }
        _ => 1,
    };
    Ok((value, rows))
}

pub(super) async fn query(state: &QueryState, id: std::sync::Arc<Identity>, params: Params) -> Result<Response, ApiError> {
    let n = Native::new(state, id, params).await?;
    let t = time(&n.params, "time")?.map_or_else(now_ms, |ns| ns / 1_000_000);
    let steps = eval::Steps { start: t, end: t, step: 1 };
    let text = n.params.one("query").unwrap_or_default().to_owned();
    let (value, _) = state.bounded(&n.id, "prometheus.query", &text, evaluate(state, &n, steps), |r| r.1 as u64).await?;
    Ok(success(match value {
        V::Scalar(v) => json!({ "resultType": "scalar", "result": [secs(t), eval::format_value(v[0])] }),
        V::String(s) => json!({ "resultType": "string", "result": [secs(t), s] }),
        V::Vector(v) => {
            let result: Vec<Value> =
                v.iter().filter_map(|s| s.points[0].map(|x| json!({ "metric": metric_json(&s.labels), "value": [secs(t), eval::format_value(x)] }))).collect();
            json!({ "resultType": "vector", "result": result })
        }
    }))
}

pub(super) async fn query_range(state: &QueryState, id: std::sync::Arc<Identity>, params: Params) -> Result<Response, ApiError> {
    let n = Native::new(state, id, params).await?;
    let (start, end) = (required_time(&n.params, "start")? / 1_000_000, required_time(&n.params, "end")? / 1_000_000);
    check_range(state, start * 1_000_000, end * 1_000_000)?;
    let step = n.params.one("step").and_then(parse_duration_ns).map(|ns| ns / 1_000_000).filter(|s| *s > 0);
    let step = step.ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "`step` (a positive duration like 30s, or seconds) is required"))?;
    if (end - start) / step >= MAX_POINTS {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let steps = eval::Steps { start, end, step };
    let text = n.params.one("query").unwrap_or_default().to_owned();
    let (value, _) = state.bounded(&n.id, "prometheus.query_range", &text, evaluate(state, &n, steps), |r| r.1 as u64).await?;
    let series = match value {
        V::Scalar(v) => vec![eval::Series { labels: Vec::new(), points: v.into_iter().map(Some).collect() }],
        V::Vector(v) => v,
        V::String(_) => return Err(ApiError::new(ErrorCode::InvalidQuery, "a range query must return a vector or a scalar")),
    };
    Ok(matrix_response(series, &steps))
}

/// A `matrix` answer, written straight into one buffer (a day of 1,000 series is ~40 MB of
/// JSON; building it as a tree first costs more than the evaluation).
fn matrix_response(mut series: Vec<eval::Series>, steps: &eval::Steps) -> Response {
    use std::fmt::Write;
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let points: usize = series.iter().map(|s| s.points.iter().flatten().count()).sum();
    let mut out = String::with_capacity(64 + points * 28 + series.len() * 128);
    out.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    let mut first = true;
    for s in series.iter().filter(|s| s.points.iter().any(Option::is_some)) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(r#"{"metric":"#);
        out.push_str(&metric_json(&s.labels).to_string());
        out.push_str(r#","values":["#);
        let mut first_point = true;
        for (i, p) in s.points.iter().enumerate() {
            let Some(x) = p else { continue };
            if !first_point {
                out.push(',');
            }
            first_point = false;
            let t = steps.at(i);
            let _ = if t % 1000 == 0 { write!(out, "[{}", t / 1000) } else { write!(out, "[{}", t as f64 / 1e3) };
            out.push_str(",\"");
            eval::write_value(&mut out, *x);
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push_str("]}}");
    ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// `series`, `labels` and `label/<name>/values` from the stored series matching `match[]`.
pub(super) async fn index(state: &QueryState, headers: &HeaderMap, raw: Option<&str>, body: &[u8], what: Index<'_>) -> Result<Response, ApiError> {
    let n = begin(state, headers, raw, body).await?;
    let end = time(&n.params, "end")?.map_or_else(now_ms, |ns| ns / 1_000_000);
    let max = i64::try_from(state.limits.max_range_secs).unwrap_or(i64::MAX).saturating_mul(1000);
    let start = time(&n.params, "start")?.map_or(end - max.min(86_400_000), |ns| ns / 1_000_000);
    check_range(state, start * 1_000_000, end * 1_000_000)?;
    let texts = n.params.all("match[]");
    if texts.is_empty() && matches!(what, Index::Series) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "at least one `match[]` series selector is required"));
    }
    let mut selectors = Vec::new();
    for t in &texts {
        match super::scope::parse(t)? {
            promql_parser::parser::Expr::VectorSelector(vs) => selectors.push(vs),
            _ => return Err(ApiError::new(ErrorCode::InvalidQuery, format!("`match[]` must be a series selector such as up{{job=\"x\"}}, not `{t}`"))),
        }
    }
    let action = match what {
        Index::Series => "prometheus.series",
        Index::Labels => "prometheus.labels",
        Index::Values(_) => "prometheus.label_values",
    };
    let fetch = async {
        let data = load(state, &n.scope, start, end, None).await?;
        let matching: Vec<&Stored> = data.iter().filter(|s| selectors.is_empty() || selectors.iter().any(|vs| s.matches(vs))).collect();
        Ok::<_, ApiError>(match what {
            Index::Series => {
                if matching.len() > state.limits.max_series {
                    return Err(ApiError::new(ErrorCode::LimitExceeded, format!("more than {} series match; narrow `match[]`", state.limits.max_series)));
                }
                Value::Array(matching.iter().map(|s| metric_json(&s.labels)).collect())
            }
            Index::Labels => json!(matching.iter().flat_map(|s| s.labels.iter().map(|(k, _)| k.as_str())).collect::<BTreeSet<_>>()),
            Index::Values(name) => {
                json!(matching.iter().flat_map(|s| s.labels.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str())).collect::<BTreeSet<_>>())
            }
        })
    };
    let rows = |v: &Value| v.as_array().map_or(0, |a| a.len() as u64);
    let data = state.bounded(&n.id, action, &texts.join(" "), fetch, rows).await?;
    Ok(success(data))
}

pub(super) enum Index<'a> {
    Series,
    Labels,
    Values(&'a str),
}

/// Stored samples carry no exemplars or metadata.
pub(super) fn empty(kind: &str) -> Response {
    success(if kind == "metadata" { json!({}) } else { json!([]) })
}
