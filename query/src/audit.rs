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
            timestamp_ns: crate::params::now_ns(),
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
