//! Every query is written to the audit log: who asked (user, organisation), where (the
//! workspaces its scope covered), how (`initiated_by`), what (endpoint and query text), what
//! came back (rows, outcome) and how long it took.
//!
//! Records go to an [`AuditSink`] (the binary hands them to the ingest pipeline, so they are
//! made durable in the write-ahead log like any other row) without holding up the answer.
//! The workspaces are gathered while the request runs: [`covered`] is called wherever a scope
//! is made, inside the task-local that [`run`] sets up.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use auth::{Identity, TenantScope};
use schemas::{ApiError, AuditRecord};

/// Where audit records go. `record` must not block.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: AuditRecord);
}

/// Keeps records in memory (tests, and servers with no pipeline).
#[derive(Default)]
pub struct MemoryAudit(pub std::sync::Mutex<Vec<AuditRecord>>);

impl AuditSink for MemoryAudit {
    fn record(&self, record: AuditRecord) {
        if let Ok(mut v) = self.0.lock() {
            v.push(record);
        }
    }
}

tokio::task_local! {
    static COVERED: RefCell<BTreeSet<String>>;
}

/// Notes the workspaces a scope covers, for the request's audit record.
pub fn covered(scope: &TenantScope) {
    let _ = COVERED.try_with(|c| {
        if let Some(ws) = scope.workspaces() {
            c.borrow_mut().extend(ws.into_iter().map(str::to_owned));
        }
    });
}

/// Queries longer than this are cut in the audit record.
const MAX_QUERY_CHARS: usize = 4_096;

/// What one audited request is.
pub struct Request<'a> {
    pub id: &'a Identity,
    /// `user` for requests over HTTP; `agent` for the assistant's tool calls.
    pub initiated_by: &'a str,
    /// The endpoint or tool, like `loki.query_range`.
    pub action: &'a str,
    /// What was asked (the query text, or the request's parameters).
    pub query: &'a str,
}

/// Runs `f` and records it; `rows` counts what it returned (lines, series, labels).
pub async fn run<T>(
    sink: Option<&Arc<dyn AuditSink>>,
    req: Request<'_>,
    f: impl Future<Output = Result<T, ApiError>>,
    rows: impl Fn(&T) -> u64,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let (result, workspaces) = COVERED
        .scope(RefCell::new(BTreeSet::new()), async {
            let r = f.await;
            (r, COVERED.with(|c| c.take()))
        })
        .await;
    if let Some(sink) = sink {
        let (outcome, rows) = match &result {
            Ok(v) => ("ok".to_owned(), rows(v)),
            Err(e) => (e.code.as_str().to_owned(), 0),
        };
        let workspace = match workspaces.len() {
            1 => workspaces.iter().next().cloned().unwrap_or_default(),
            0 => String::new(),
            _ => "*".to_owned(),
        };
        let mut query = req.query.to_owned();
        if query.len() > MAX_QUERY_CHARS {
            let mut end = MAX_QUERY_CHARS;
            while !query.is_char_boundary(end) {
                end -= 1;
            }
            query.truncate(end);
        }
        let mut attributes = vec![("duration_ms".to_owned(), format!("{:.3}", started.elapsed().as_secs_f64() * 1e3)), ("rows".to_owned(), rows.to_string())];
        if workspaces.len() > 1 {
            attributes.push(("workspaces".to_owned(), workspaces.into_iter().collect::<Vec<_>>().join(",")));
        }
        attributes.sort();
        sink.record(AuditRecord {
            timestamp_ns: crate::api::now_ns(),
            org_id: req.id.org_id().to_owned(),
            workspace,
            actor: req.id.user().to_owned(),
            initiated_by: req.initiated_by.to_owned(),
            action: req.action.to_owned(),
            resource: "logs".to_owned(),
            outcome,
            message: query,
            attributes,
        });
    }
    result
}

/// `GET /api/v1/audit/search`: the caller's organisation's audit log, for the roles allowed to
/// read it, newest first. Filters: `actor`, `action`, `initiated_by`, `workspace`, `outcome`
/// (equality), `q` (words in the query text), `from`/`to`/`since`, `limit`.
pub async fn search(
    axum::extract::State(state): axum::extract::State<crate::QueryState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let p = crate::params::Params::parse(raw.as_deref())?;
    let id = state.identify(&headers).await?;
    let body = state
        .audited(&id, "audit.search", raw.as_deref().unwrap_or(""), search_body(&state, &id, &p), |v| v["records"].as_array().map_or(0, |a| a.len() as u64))
        .await?;
    Ok(axum::Json(body))
}

async fn search_body(state: &crate::QueryState, id: &Identity, p: &crate::params::Params) -> Result<serde_json::Value, ApiError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampNanosecondType;
    use schemas::ErrorCode;

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
    let batches = crate::api::with_timeout(state, state.store.scan(&request)).await?;
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
                    "timestamp": crate::api::rfc3339(t),
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
