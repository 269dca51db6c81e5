//! The agent loop: the model is asked, the tools it calls run through the sandbox (several at
//! once when it asks for several), their framed results go back, until it answers without
//! calling a tool — or the step budget runs out, and it is asked once more with no tools to give
//! its best answer. Events stream out as they happen.

use std::sync::Arc;
use std::time::Duration;

use auth::Identity;
use futures_util::StreamExt;
use query::agent::AgentQueries;
use sandbox::{Budgets, ToolGate, Turn};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::fallback;
use crate::model::{ChatModel, ChatRequest, Delta, Message, ProviderError, ToolCall, Usage, estimate_tokens};
use crate::tools::{Registry, ToolContext};

/// What a turn streams to the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Text { delta: String },
    ToolCall { id: String, name: String, arguments: Value },
    ToolResult { id: String, name: String, status: String, summary: String },
    ApprovalRequest { id: String, tool: String, arguments: Value, action: String, expires_at: i64 },
    Answer { text: String, citations: Vec<Value>, notes: Vec<String>, usage: Usage, model: String },
    Error { code: String, message: String },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Text { .. } => "text",
            Event::ToolCall { .. } => "tool_call",
            Event::ToolResult { .. } => "tool_result",
            Event::ApprovalRequest { .. } => "approval_request",
            Event::Answer { .. } => "answer",
            Event::Error { .. } => "error",
        }
    }
}

pub struct Agent {
    pub model: Arc<dyn ChatModel>,
    pub gate: Arc<ToolGate>,
    pub registry: Registry,
    pub budgets: Budgets,
    pub queries: AgentQueries,
    pub control: Option<control::repo::Repo>,
    pub admin_role: String,
    /// Tools offered per request.
    pub offer: usize,
    /// Retries of a model call that failed before its first delta.
    pub retries: u32,
    /// How long a proposed write action waits for the user's approval.
    pub approval_ttl_ms: i64,
    /// The first reply of a turn must call a tool (weak models look before they answer).
    pub require_tool_first: bool,
    /// The longest model reply, in tokens.
    pub max_tokens: Option<u32>,
    /// The model's context window: requests longer than it are compacted ([`crate::context`]).
    pub context_tokens: u32,
}

/// What the user asked, and where they were looking.
pub struct Question<'a> {
    pub text: &'a str,
    /// Proposed write actions are kept under it.
    pub conversation_id: &'a str,
    pub workspace: Option<&'a str>,
    pub project: Option<&'a str>,
}

const SYSTEM: &str = "You are the Hexabase assistant for platform operators and application teams. \
Find the cause of problems in the user's Kubernetes workspaces with the tools: start with an overview \
(patterns, counts), then look closer. Answer in a few sentences and name what you looked at. \
If the question does not say which workspace or project and you cannot tell, ask.";

impl Agent {
    /// Runs one turn; events go to `tx` (a closed channel stops the turn: the client left).
    /// Returns the answer's text and the messages the turn added, for the conversation.
    pub async fn turn(
        &self,
        identity: Arc<Identity>,
        history: Vec<Message>,
        q: Question<'_>,
        tx: &mpsc::Sender<Event>,
    ) -> Result<(String, Vec<Message>), ProviderError> {
        let offered = self.registry.offer(q.text, self.offer);
        let specs = Registry::specs(&offered);
        let known: Vec<&str> = offered.iter().map(|t| t.name()).collect();
        // What the tools' schemas take of the context, set aside beside the reply's room.
        let tool_tokens = estimate_tokens(&serde_json::to_string(&specs).unwrap_or_default());
        let native = self.model.native_tools();
        let mut system = format!("{SYSTEM}\n{}", sandbox::channel::SYSTEM_RULES);
        if let Some(ws) = q.workspace {
            system.push_str(&format!("\nThe user is looking at workspace `{ws}`"));
            if let Some(p) = q.project {
                system.push_str(&format!(", project `{p}`"));
            }
            system.push('.');
        }
        if !native {
            system.push('\n');
            system.push_str(&fallback::protocol(&specs));
        }
        let mut messages = vec![Message::System { content: system }];
        messages.extend(history);
        let first_new = messages.len();
        messages.push(Message::User { content: q.text.to_owned() });

        let ctx = ToolContext {
            identity: &identity,
            queries: &self.queries,
            control: self.control.as_ref(),
            admin_role: &self.admin_role,
            workspace: q.workspace,
            project: q.project,
        };
        let mut turn = Turn::new(identity.clone(), self.budgets.clone());
        let (mut citations, mut notes, mut usage) = (Vec::new(), Vec::new(), Usage::default());
        for step in 0..=self.budgets.max_steps {
            let last = step == self.budgets.max_steps || turn.remaining().is_zero();
            let tools = if last || !native { Vec::new() } else { specs.clone() };
            if last {
                messages.push(Message::User {
                    content: "The step budget for this question is spent: answer now with what you found, and say what you could not check.".into(),
                });
                notes.push("the step budget ran out; the answer is the best one from what was found".into());
            }
            let require_tool = step == 0 && !last && self.require_tool_first && !specs.is_empty();
            // Without native tool calls, a required call is a reply constrained to name one of
            // the offered tools (their defaults then apply).
            let response_schema = (require_tool && !native).then(|| {
                json!({ "type": "object", "additionalProperties": false, "required": ["tool", "arguments"], "properties": {
                    "tool": { "enum": known }, "arguments": { "type": "object", "properties": {}, "additionalProperties": false } } })
            });
            // What is sent fits the context: the reply's room and the tools' schemas set aside.
            let room = u64::from(self.max_tokens.unwrap_or(1024)) + if tools.is_empty() { 0 } else { tool_tokens };
            let budget = u64::from(self.context_tokens).saturating_sub(room).max(256);
            let (sent, compacted) = crate::context::fit(&messages, first_new, budget);
            if compacted && !notes.iter().any(|n: &String| n.contains("compacted")) {
                notes.push("the conversation was longer than the model's context: earlier turns were compacted to their questions and answers".into());
            }
            let request = ChatRequest { messages: sent, tools, require_tool: require_tool && native, response_schema, max_tokens: self.max_tokens };
            let (text, mut calls, u) = self.ask(request, tx, native).await?;
            usage.prompt_tokens += if u.prompt_tokens == 0 {
                messages.iter().map(|m| estimate_tokens(&serde_json::to_string(m).unwrap_or_default())).sum()
            } else {
                u.prompt_tokens
            };
            usage.completion_tokens += if u.completion_tokens == 0 { estimate_tokens(&text) } else { u.completion_tokens };
            if !native && !last {
                calls = fallback::parse_calls(&text, &known);
            }
            if calls.is_empty() || last {
                if !native {
                    // With the text protocol a reply is shown once it is known not to be a call.
                    let _ = tx.send(Event::Text { delta: text.clone() }).await;
                }
                messages.push(Message::Assistant { content: text.clone(), tool_calls: Vec::new() });
                let model = format!("{}/{}", self.model.describe().0, self.model.describe().1);
                let _ = tx.send(Event::Answer { text: text.clone(), citations, notes, usage, model }).await;
                return Ok((text, messages.split_off(first_new)));
            }
            messages.push(Message::Assistant { content: if native { text } else { String::new() }, tool_calls: calls.clone() });
            for c in &calls {
                if tx.send(Event::ToolCall { id: c.id.clone(), name: c.name.clone(), arguments: c.arguments.clone() }).await.is_err() {
                    return Err(ProviderError::new("the client went away", false));
                }
            }
            // The calls run at once; each goes through the gate with the turn's budgets.
            let outcomes = self.run_calls(&ctx, &mut turn, &calls, &known, q.conversation_id, tx).await;
            for (c, outcome) in calls.iter().zip(outcomes) {
                match outcome.status {
                    "ok" => {
                        if let Some(t) = self.registry.get(&c.name)
                            && let Some(url) = t.cite(&ctx, &c.arguments)
                        {
                            citations.push(json!({ "tool": c.name, "arguments": c.arguments, "query": url }));
                        }
                        if c.name.starts_with("logs.") && c.arguments.get("since").is_none() && !notes.iter().any(|n| n.contains("default time range")) {
                            notes.push("log tools looked at the default time range, the last hour".into());
                        }
                    }
                    other => notes.push(format!("{} {other}: {}", c.name, outcome.summary)),
                }
                let _ = tx
                    .send(Event::ToolResult { id: c.id.clone(), name: c.name.clone(), status: outcome.status.into(), summary: outcome.summary.clone() })
                    .await;
                let content = outcome.for_model;
                messages.push(if native { Message::Tool { call_id: c.id.clone(), name: c.name.clone(), content } } else { Message::User { content } });
            }
        }
        Err(ProviderError::new("the loop ended without an answer", false))
    }

    async fn run_calls(
        &self,
        ctx: &ToolContext<'_>,
        turn: &mut Turn,
        calls: &[ToolCall],
        offered: &[&str],
        conversation: &str,
        tx: &mpsc::Sender<Event>,
    ) -> Vec<sandbox::CallOutcome> {
        // Admission (budgets, repeats, write refusals) is decided for every call first; the
        // admitted ones then run at once, each under its timeout; results are completed in order.
        let started = std::time::Instant::now();
        let admitted: Vec<(sandbox::Admission, Option<Arc<dyn crate::tools::Tool>>)> = calls
            .iter()
            .map(|c| {
                // Only the tools offered in this turn can be called.
                let tool = self.registry.get(&c.name).filter(|_| offered.contains(&c.name.as_str())).cloned();
                let class = tool.as_ref().map_or(sandbox::ToolClass::Read, |t| t.class());
                (self.gate.admit(turn, &c.name, class, &c.arguments), tool)
            })
            .collect();
        // Write tools are refused by the gate; here they become proposals the user decides on.
        let mut proposed: Vec<Option<sandbox::Ran>> = Vec::with_capacity(calls.len());
        for (c, (_, tool)) in calls.iter().zip(&admitted) {
            proposed.push(match tool {
                Some(t) if t.class() == sandbox::ToolClass::Write => Some(self.propose(ctx, t.as_ref(), c, conversation, tx).await),
                _ => None,
            });
        }
        let runs = calls.iter().zip(&admitted).zip(proposed).map(|((c, (admission, tool)), proposal)| async move {
            if let Some(p) = proposal {
                return p;
            }
            match (admission, tool) {
                (sandbox::Admission::Refused(why), _) => sandbox::Ran::Refused(why.clone()),
                (sandbox::Admission::Go { .. }, None) => {
                    sandbox::Ran::Done(Err(sandbox::ToolError(format!("there is no tool `{}` in this conversation; use one of {offered:?}", c.name))))
                }
                (sandbox::Admission::Go { timeout }, Some(t)) => match tokio::time::timeout(*timeout, t.run(ctx, c.arguments.clone())).await {
                    Err(_) => sandbox::Ran::TimedOut(*timeout),
                    Ok(r) => sandbox::Ran::Done(r),
                },
            }
        });
        let ran = futures_util::future::join_all(runs).await;
        calls.iter().zip(ran).map(|(c, r)| self.gate.complete(turn, &c.name, &c.id, &c.arguments, r, started)).collect()
    }

    /// Stores the exact action of write call `c` for the user's approval and tells them.
    async fn propose(&self, ctx: &ToolContext<'_>, tool: &dyn crate::tools::Tool, c: &ToolCall, conversation: &str, tx: &mpsc::Sender<Event>) -> sandbox::Ran {
        let (action, resolved) = match tool.action(ctx, &c.arguments).await {
            Ok(a) => a,
            Err(e) => return sandbox::Ran::Done(Err(e)),
        };
        let Some(repo) = &self.control else { return sandbox::Ran::Refused("write actions need the control database for approvals".into()) };
        let proposal = control::conversations::Proposal {
            org_id: ctx.identity.org_id(),
            user: ctx.identity.user(),
            conversation_id: conversation,
            tool: &c.name,
            arguments: &resolved,
            action: &action,
            ttl_ms: self.approval_ttl_ms,
        };
        match repo.propose(&proposal).await {
            Ok(a) => {
                let _ = tx
                    .send(Event::ApprovalRequest {
                        id: a.id.clone(),
                        tool: c.name.clone(),
                        arguments: resolved.clone(),
                        action: action.clone(),
                        expires_at: a.expires_at,
                    })
                    .await;
                sandbox::Ran::Proposed(json!({
                    "approval": a.id, "action": action,
                    "status": "proposed to the user; nothing has changed yet. Tell the user what will happen once they approve it.",
                }))
            }
            Err(e) => sandbox::Ran::Done(Err(sandbox::ToolError(format!("the proposal could not be stored: {e}")))),
        }
    }

    /// One model call, streamed: text deltas go out as they come; retried with backoff when
    /// it fails before anything arrived.
    async fn ask(&self, request: ChatRequest, tx: &mpsc::Sender<Event>, native: bool) -> Result<(String, Vec<ToolCall>, Usage), ProviderError> {
        let mut attempt = 0;
        loop {
            let mut stream = self.model.stream(request.clone());
            let (mut text, mut calls, mut usage, mut got_any) = (String::new(), Vec::new(), Usage::default(), false);
            let mut failed = None;
            while let Some(d) = stream.next().await {
                match d {
                    Ok(Delta::Text(t)) => {
                        got_any = true;
                        // With the text protocol a reply may be a call: it is shown once known to be prose.
                        if native && tx.send(Event::Text { delta: t.clone() }).await.is_err() {
                            return Err(ProviderError::new("the client went away", false));
                        }
                        text.push_str(&t);
                    }
                    Ok(Delta::ToolCall(c)) => {
                        got_any = true;
                        calls.push(c);
                    }
                    Ok(Delta::Done(u)) => usage = u,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    return Ok((text, calls, usage));
                }
                Some(e) if e.retryable && !got_any && attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "model call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * (1 << attempt))).await;
                }
                Some(e) => return Err(e),
            }
        }
    }
}
