//! The gate every tool call passes: the caller is bound (the identity comes from the turn,
//! never from the model), write tools are refused unless approved, budgets are counted, the call
//! runs under a timeout, its output is redacted, bounded and framed as data, and an audit record
//! says the agent made it on the user's behalf.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Identity;
use schemas::{AuditRecord, AuditSink};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel;
use crate::redact::Redactor;

/// Whether a tool only reads, or changes something (which needs the user's approval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolClass {
    Read,
    Write,
}

/// `[assistant.budgets]`: what one turn may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budgets {
    /// Model steps (each may call tools) before the loop must answer without tools.
    pub max_steps: u32,
    pub max_calls: u32,
    pub max_calls_per_tool: u32,
    /// Bytes of one tool result handed to the model; beyond it the result is cut and the model
    /// told to narrow its query.
    pub max_output_bytes: usize,
    pub call_timeout_ms: u64,
    pub turn_timeout_ms: u64,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets { max_steps: 24, max_calls: 40, max_calls_per_tool: 12, max_output_bytes: 256 * 1024, call_timeout_ms: 30_000, turn_timeout_ms: 180_000 }
    }
}

/// One user turn: who it is for and what it has spent.
pub struct Turn {
    pub identity: Arc<Identity>,
    pub budgets: Budgets,
    started: Instant,
    calls: BTreeMap<String, u32>,
    total: u32,
    seen: HashSet<String>,
}

impl Turn {
    pub fn new(identity: Arc<Identity>, budgets: Budgets) -> Turn {
        Turn { identity, budgets, started: Instant::now(), calls: BTreeMap::new(), total: 0, seen: HashSet::new() }
    }

    pub fn calls(&self) -> u32 {
        self.total
    }

    /// Time left of the turn's budget.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.budgets.turn_timeout_ms).saturating_sub(self.started.elapsed())
    }
}

/// How a call went, as the model and the user see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallOutcome {
    /// What the model gets: the framed, redacted, bounded result or the refusal.
    #[serde(skip)]
    pub for_model: String,
    /// `ok`, `error`, `refused`, `truncated`.
    pub status: &'static str,
    /// A line for the user (rows, bytes, what was cut or refused).
    pub summary: String,
    pub redactions: usize,
    pub duration_ms: u64,
}

/// Whether a call may run.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Go { timeout: Duration },
    Refused(String),
}

/// What became of an admitted (or refused) call.
#[derive(Debug)]
pub enum Ran {
    Done(Result<Value, ToolError>),
    /// A write action put to the user for approval instead of being run.
    Proposed(Value),
    TimedOut(Duration),
    Refused(String),
}

/// A tool failed in a way the model may be told about (permission denied, bad arguments).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

pub struct ToolGate {
    redactor: Redactor,
    audit: Option<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for ToolGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolGate").field("redactor", &self.redactor).finish_non_exhaustive()
    }
}

impl ToolGate {
    pub fn new(redactor: Redactor, audit: Option<Arc<dyn AuditSink>>) -> ToolGate {
        ToolGate { redactor, audit }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Runs call `id` of tool `name` with `args` through every check; `exec` does the work as
    /// the turn's user and is not started when a check refuses.
    pub async fn call<F>(&self, turn: &mut Turn, name: &str, class: ToolClass, id: &str, args: &Value, exec: F) -> CallOutcome
    where
        F: Future<Output = Result<Value, ToolError>>,
    {
        let started = Instant::now();
        let ran = match self.admit(turn, name, class, args) {
            Admission::Refused(why) => Ran::Refused(why),
            Admission::Go { timeout } => match tokio::time::timeout(timeout, exec).await {
                Err(_) => Ran::TimedOut(timeout),
                Ok(r) => Ran::Done(r),
            },
        };
        self.complete(turn, name, id, args, ran, started)
    }

    /// The checks before a call: counts it against the turn's budgets when it may run, and
    /// says how long it may take.
    pub fn admit(&self, turn: &mut Turn, name: &str, class: ToolClass, args: &Value) -> Admission {
        let key = format!("{name}\u{0}{args}");
        let refusal = if class == ToolClass::Write {
            Some("this tool changes the cluster and needs the user's approval, which this conversation has not given; describe the change instead".to_owned())
        } else if turn.total >= turn.budgets.max_calls {
            Some(format!("the budget of {} tool calls for this turn is spent; answer with what you have", turn.budgets.max_calls))
        } else if turn.calls.get(name).copied().unwrap_or(0) >= turn.budgets.max_calls_per_tool {
            Some(format!("`{name}` was called {} times this turn, the most allowed; answer with what you have", turn.budgets.max_calls_per_tool))
        } else if turn.seen.contains(&key) {
            Some("this exact call was made already this turn; use its result".to_owned())
        } else if turn.remaining().is_zero() {
            Some("the turn's time is up; answer with what you have".to_owned())
        } else {
            None
        };
        if let Some(why) = refusal {
            return Admission::Refused(why);
        }
        turn.total += 1;
        *turn.calls.entry(name.to_owned()).or_default() += 1;
        turn.seen.insert(key);
        Admission::Go { timeout: Duration::from_millis(turn.budgets.call_timeout_ms).min(turn.remaining()) }
    }

    /// After a call (or its refusal): the result bounded, redacted and framed for the model,
    /// and the audit record written.
    pub fn complete(&self, turn: &Turn, name: &str, id: &str, args: &Value, ran: Ran, started: Instant) -> CallOutcome {
        let (status, body, summary) = match ran {
            Ran::Refused(why) => ("refused", why.clone(), format!("refused: {why}")),
            Ran::Proposed(v) => ("awaiting_approval", v.to_string(), format!("awaiting the user's approval: {}", v["action"].as_str().unwrap_or(""))),
            Ran::TimedOut(limit) => ("error", format!("the call ran past {} ms and was stopped; narrow it", limit.as_millis()), "timed out".to_owned()),
            Ran::Done(Err(e)) => ("error", e.0.clone(), format!("error: {}", e.0)),
            Ran::Done(Ok(value)) => {
                let text = value.to_string();
                let max = turn.budgets.max_output_bytes;
                if text.len() > max {
                    let mut cut = max;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    let more = text.len() - cut;
                    (
                        "truncated",
                        format!(
                            "{}\n[truncated: {more} bytes more than the {max}-byte limit; narrow the query (a shorter time range, a filter, a lower limit)]",
                            &text[..cut]
                        ),
                        format!("{} bytes, cut at {max}", text.len()),
                    )
                } else {
                    ("ok", text.clone(), format!("{} bytes", text.len()))
                }
            }
        };
        let (redacted, redactions) = self.redactor.redact(&body);
        let for_model = channel::frame(name, id, &redacted);
        let duration_ms = started.elapsed().as_millis() as u64;
        self.record(turn, name, args, status, redactions, duration_ms);
        CallOutcome { for_model, status, summary, redactions, duration_ms }
    }

    fn record(&self, turn: &Turn, name: &str, args: &Value, status: &str, redactions: usize, duration_ms: u64) {
        let Some(sink) = &self.audit else { return };
        let mut args = args.clone();
        self.redactor.redact_json(&mut args);
        let id = &turn.identity;
        let workspace = args.get("workspace").and_then(Value::as_str).unwrap_or("").to_owned();
        sink.record(AuditRecord {
            timestamp_ns: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0),
            org_id: id.org_id().to_owned(),
            workspace,
            actor: id.user().to_owned(),
            initiated_by: "agent".into(),
            action: format!("tool.{name}"),
            resource: "assistant".into(),
            outcome: status.to_owned(),
            message: args.to_string(),
            attributes: vec![("duration_ms".into(), duration_ms.to_string()), ("redactions".into(), redactions.to_string())],
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::redact::RedactionConfig;

    #[derive(Default)]
    struct Sink(Mutex<Vec<AuditRecord>>);
    impl AuditSink for Sink {
        fn record(&self, r: AuditRecord) {
            if let Ok(mut v) = self.0.lock() {
                v.push(r);
            }
        }
    }

    async fn identity() -> Arc<Identity> {
        // A development issuer of its own per test (tests run at once).
        let tmp = tempfile::tempdir().expect("tempdir");
        let settings = auth::AuthConfig::default().validate(tmp.path()).expect("settings");
        let auth::IssuerMode::Development { secret_file } = &settings.mode else { panic!("development issuer") };
        let issuer = auth::DevIssuer::load_or_create(secret_file, &settings.audience).expect("issuer");
        let claims = auth::DevClaims {
            user: "alice".into(),
            org: "acme".into(),
            workspaces: vec!["shop".into()],
            groups: vec![],
            roles: vec![],
            ttl_secs: 600,
            binding: None,
        };
        let token = issuer.mint(&claims).expect("mint");
        auth::TokenVerifier::new(settings).expect("verifier").verify(&token, None).await.expect("verify")
    }

    fn gate(sink: &Arc<Sink>) -> ToolGate {
        ToolGate::new(Redactor::new(RedactionConfig::standard()), Some(sink.clone() as Arc<dyn AuditSink>))
    }

    #[tokio::test]
    async fn results_are_redacted_framed_and_audited_as_the_agent() {
        let sink = Arc::new(Sink::default());
        let g = gate(&sink);
        let mut turn = Turn::new(identity().await, Budgets::default());
        let args = json!({ "workspace": "shop", "q": "password=hunter2" });
        let out =
            g.call(&mut turn, "logs.search", ToolClass::Read, "c1", &args, async { Ok(json!({ "lines": ["login bob@example.com token=abcdef123"] })) }).await;
        assert_eq!(out.status, "ok");
        assert!(out.for_model.starts_with("<tool_output tool=\"logs.search\""));
        assert!(!out.for_model.contains("bob@example.com") && !out.for_model.contains("abcdef123"), "{}", out.for_model);
        assert_eq!(out.redactions, 2);
        let records = sink.0.lock().expect("lock");
        let r = &records[0];
        assert_eq!((r.actor.as_str(), r.initiated_by.as_str(), r.action.as_str(), r.workspace.as_str()), ("alice", "agent", "tool.logs.search", "shop"));
        assert!(!r.message.contains("hunter2"), "{}", r.message);
    }

    #[tokio::test]
    async fn budgets_writes_and_repeats_are_refused_without_running_the_tool() {
        let sink = Arc::new(Sink::default());
        let g = gate(&sink);
        let budgets = Budgets { max_calls: 3, max_calls_per_tool: 2, max_output_bytes: 64, ..Budgets::default() };
        let mut turn = Turn::new(identity().await, budgets);
        let ran = std::sync::atomic::AtomicU32::new(0);
        let run = |n: u32| {
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(json!({ "n": n })) }
        };
        assert_eq!(g.call(&mut turn, "k8s.scale", ToolClass::Write, "w", &json!({}), async { Ok(json!({})) }).await.status, "refused");
        assert_eq!(g.call(&mut turn, "a", ToolClass::Read, "1", &json!({ "x": 1 }), run(1)).await.status, "ok");
        let again = g.call(&mut turn, "a", ToolClass::Read, "2", &json!({ "x": 1 }), async { Ok(json!({})) }).await;
        assert!(again.status == "refused" && again.for_model.contains("exact call"), "{}", again.for_model);
        assert_eq!(g.call(&mut turn, "a", ToolClass::Read, "3", &json!({ "x": 2 }), run(2)).await.status, "ok");
        let per_tool = g.call(&mut turn, "a", ToolClass::Read, "4", &json!({ "x": 3 }), async { Ok(json!({})) }).await;
        assert!(per_tool.status == "refused" && per_tool.for_model.contains("most allowed"), "{}", per_tool.for_model);
        let big = g.call(&mut turn, "b", ToolClass::Read, "5", &json!({}), async { Ok(json!({ "s": "x".repeat(500) })) }).await;
        assert!(big.status == "truncated" && big.for_model.contains("narrow the query"), "{}", big.for_model);
        let spent = g.call(&mut turn, "c", ToolClass::Read, "6", &json!({}), async { Ok(json!({})) }).await;
        assert!(spent.status == "refused" && spent.for_model.contains("budget"), "{}", spent.for_model);
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(turn.calls(), 3);
        assert_eq!(sink.0.lock().expect("lock").len(), 7, "refusals are audited too");
    }

    #[tokio::test]
    async fn a_call_that_hangs_is_stopped() {
        let g = ToolGate::new(Redactor::new(RedactionConfig::standard()), None);
        let mut turn = Turn::new(identity().await, Budgets { call_timeout_ms: 50, ..Budgets::default() });
        let out = g
            .call(&mut turn, "slow", ToolClass::Read, "1", &json!({}), async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(json!({}))
            })
            .await;
        assert_eq!(out.status, "error");
        assert!(out.for_model.contains("narrow it"));
    }
}
