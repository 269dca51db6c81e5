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

pub use schemas::AuditSink;

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
    static INITIATED_BY: &'static str;
}

/// Runs `f` with every audit record it writes saying `initiated_by = agent`: the assistant's
/// tool calls go through the same handlers as the user's own queries, on the user's identity.
pub async fn as_agent<F: Future>(f: F) -> F::Output {
    INITIATED_BY.scope("agent", f).await
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
    let pending = Pending::start(sink, &req);
    let (result, workspaces) = COVERED
        .scope(RefCell::new(BTreeSet::new()), async {
            let r = f.await;
            (r, COVERED.with(|c| c.take()))
        })
        .await;
    match &result {
        Ok(v) => pending.finish("ok", rows(v), workspaces),
        Err(e) => pending.finish(e.code.as_str(), 0, workspaces),
    }
    result
}

/// A record begun when the request started and written when it ends: for answers that
/// stream on after the handler returned.
pub struct Pending {
    sink: Option<Arc<dyn AuditSink>>,
    started: Instant,
    org_id: String,
    actor: String,
    initiated_by: String,
    action: String,
    query: String,
}

impl Pending {
    pub fn start(sink: Option<&Arc<dyn AuditSink>>, req: &Request<'_>) -> Pending {
        let initiated_by = INITIATED_BY.try_with(|i| *i).unwrap_or(req.initiated_by);
        let mut query = req.query.to_owned();
        if query.len() > MAX_QUERY_CHARS {
            let mut end = MAX_QUERY_CHARS;
            while !query.is_char_boundary(end) {
                end -= 1;
            }
            query.truncate(end);
        }
        Pending {
            sink: sink.cloned(),
            started: Instant::now(),
            org_id: req.id.org_id().to_owned(),
            actor: req.id.user().to_owned(),
            initiated_by: initiated_by.to_owned(),
            action: req.action.to_owned(),
            query,
        }
    }

    /// Writes the record: `outcome` is `ok` or an error code.
    pub fn finish(self, outcome: &str, rows: u64, workspaces: BTreeSet<String>) {
        let Some(sink) = self.sink else { return };
        let workspace = match workspaces.len() {
            1 => workspaces.iter().next().cloned().unwrap_or_default(),
            0 => String::new(),
            _ => "*".to_owned(),
        };
        let mut attributes =
            vec![("duration_ms".to_owned(), format!("{:.3}", self.started.elapsed().as_secs_f64() * 1e3)), ("rows".to_owned(), rows.to_string())];
        if workspaces.len() > 1 {
            attributes.push(("workspaces".to_owned(), workspaces.into_iter().collect::<Vec<_>>().join(",")));
        }
        attributes.sort();
        let resource = if self.action.starts_with("prometheus.") { "metrics" } else { "logs" }.to_owned();
        sink.record(AuditRecord {
            timestamp_ns: crate::params::now_ns(),
            org_id: self.org_id,
            workspace,
            actor: self.actor,
            initiated_by: self.initiated_by,
            action: self.action,
            resource,
            outcome: outcome.to_owned(),
            message: self.query,
            attributes,
        });
    }
}
