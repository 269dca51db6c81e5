//! The chat API: `POST /api/v1/ai/chat` streams a turn as server-sent events, and the user's
//! conversations are listed, read and deleted under `/api/v1/ai/conversations`.
//!
//! Events: `conversation` (its id), `text` (a piece of the answer), `tool_call` (name and
//! arguments), `tool_result` (status and a summary, never the data), `answer` (the whole text,
//! citations as reproducible queries, notes on what could not be seen, token usage), `error`
//! (code and message). Closing the connection cancels the model call and the tools.

use std::convert::Infallible;
use std::sync::Arc;

use auth::{Identity, TokenVerifier};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse_, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use query::agent::AgentQueries;
use sandbox::ToolGate;
use schemas::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::agent::{Agent, Event, Question};
use crate::config::{AssistantConfig, Models};
use crate::model::Message;
use crate::tools::Registry;

/// Longest question.
pub const MAX_QUESTION_CHARS: usize = 8_000;
/// Earlier messages given to the model; older turns are left out (compacted), newest kept.
const HISTORY_MESSAGES: usize = 40;

#[derive(Clone)]
pub struct AssistantState {
    pub verifier: TokenVerifier,
    pub models: Models,
    pub gate: Arc<ToolGate>,
    pub queries: AgentQueries,
    pub control: Option<control::repo::Repo>,
    pub admin_role: String,
    pub config: Arc<AssistantConfig>,
    pub registry: Registry,
}

pub fn router(state: AssistantState) -> Router {
    Router::new()
        .route("/api/v1/ai/chat", post(chat))
        .route("/api/v1/ai/conversations", get(list))
        .route("/api/v1/ai/conversations/{id}", get(read).delete(remove))
        .route("/api/v1/ai/approvals/{id}", get(approval).post(decide))
        .with_state(state)
}

impl AssistantState {
    async fn identify(&self, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
        self.verifier.verify_request(headers).await.map_err(ApiError::from)
    }

    fn repo(&self) -> Result<&control::repo::Repo, ApiError> {
        self.control.as_ref().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "conversations need the control database"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    message: String,
    conversation_id: Option<String>,
    workspace: Option<String>,
    project: Option<String>,
}

/// Aborts the turn when the response stream is dropped (the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn sse_event(e: &Event) -> Sse_ {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("type");
    }
    Sse_::default().event(e.name()).data(v.to_string())
}

async fn chat(State(state): State<AssistantState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let id = state.identify(&headers).await?;
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "the body is over 64 KiB"))?;
    let req: ChatBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorCode::MalformedBody, format!("the body is not the JSON expected: {e}")))?;
    let question = req.message.trim().to_owned();
    if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("message: 1–{MAX_QUESTION_CHARS} characters")));
    }
    for (field, v) in [("workspace", &req.workspace), ("project", &req.project)] {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 63 || !v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(ApiError::new(ErrorCode::BadRequest, format!("{field}: a DNS label")));
        }
    }
    let model = state.models.for_org(id.org_id())?;
    let repo = state.repo()?.clone();
    let conversation = match &req.conversation_id {
        Some(cid) => repo.conversation(id.org_id(), id.user(), cid).await?,
        None => repo.create_conversation(id.org_id(), id.user(), &question).await?,
    };
    let stored = repo.conversation_messages(&conversation).await?;
    let mut history: Vec<Message> = stored.iter().filter_map(|m| serde_json::from_str(m).ok()).collect();
    if history.len() > HISTORY_MESSAGES {
        history.drain(..history.len() - HISTORY_MESSAGES);
        // A kept window must not start in the middle of a call and its results.
        while matches!(history.first(), Some(Message::Tool { .. }) | Some(Message::Assistant { .. })) {
            history.remove(0);
        }
    }
    let agent = Agent {
        model: model.clone(),
        gate: state.gate.clone(),
        registry: state.registry.clone(),
        budgets: state.config.budgets.clone(),
        queries: state.queries.clone(),
        control: state.control.clone(),
        admin_role: state.admin_role.clone(),
        offer: state.config.tools_offered.max(1),
        retries: state.config.retries,
        approval_ttl_ms: (state.config.approval_ttl_secs as i64).saturating_mul(1000),
        require_tool_first: state.models.requires_tool_first(model.as_ref()),
        max_tokens: Some(state.config.max_output_tokens).filter(|n| *n > 0),
        context_tokens: state.models.context_tokens(model.as_ref()),
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    let conv = conversation.clone();
    let task = tokio::spawn(async move {
        let q = Question { text: &question, conversation_id: &conv.id, workspace: req.workspace.as_deref(), project: req.project.as_deref() };
        match agent.turn(id.clone(), history, q, &tx).await {
            Ok((_, added)) => {
                let texts: Vec<String> = added.iter().filter_map(|m| serde_json::to_string(m).ok()).collect();
                if let Err(e) = repo.append_messages(&conv, &texts).await {
                    tracing::warn!(error = %e, "storing a conversation failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "assistant turn failed");
                let code = if e.retryable { "unavailable" } else { "model_error" };
                let _ = tx.send(Event::Error { code: code.into(), message: e.message }).await;
            }
        }
    });
    let guard = AbortOnDrop(task);
    let first = Sse_::default().event("conversation").data(json!({ "id": conversation.id, "title": conversation.title }).to_string());
    let events =
        futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(sse_event(&e)), (rx, guard))) });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Sse_, Infallible>> + Send>> =
        Box::pin(futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), events));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn list(State(state): State<AssistantState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = state.identify(&headers).await?;
    let items = state.repo()?.conversations(id.org_id(), id.user(), 200).await?;
    Ok((StatusCode::OK, axum::Json(json!({ "data": items, "meta": {} }))).into_response())
}

async fn read(State(state): State<AssistantState>, headers: HeaderMap, Path(cid): Path<String>) -> Result<Response, ApiError> {
    let id = state.identify(&headers).await?;
    let repo = state.repo()?;
    let c = repo.conversation(id.org_id(), id.user(), &cid).await?;
    // Tool results are data for the model; the user sees that a call happened and its size.
    let messages: Vec<Value> = repo
        .conversation_messages(&c)
        .await?
        .iter()
        .filter_map(|m| serde_json::from_str::<Message>(m).ok())
        .map(|m| match m {
            Message::Tool { call_id, name, content } => json!({ "role": "tool", "call_id": call_id, "name": name, "bytes": content.len() }),
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        })
        .collect();
    Ok((StatusCode::OK, axum::Json(json!({ "data": { "conversation": c, "messages": messages }, "meta": {} }))).into_response())
}

async fn remove(State(state): State<AssistantState>, headers: HeaderMap, Path(cid): Path<String>) -> Result<Response, ApiError> {
    let id = state.identify(&headers).await?;
    state.repo()?.delete_conversation(id.org_id(), id.user(), &cid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn approval(State(state): State<AssistantState>, headers: HeaderMap, Path(aid): Path<String>) -> Result<Response, ApiError> {
    let id = state.identify(&headers).await?;
    let a = state.repo()?.approval(id.org_id(), id.user(), &aid).await?;
    Ok((StatusCode::OK, axum::Json(json!({ "data": a, "meta": {} }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    /// `approve` or `deny`.
    decision: String,
}

/// The user's decision on a proposed write action: approving runs exactly the stored action,
/// as the user, through the sandbox (redacted, audited); denying, or a decision after the
/// approval expired, runs nothing.
async fn decide(State(state): State<AssistantState>, headers: HeaderMap, Path(aid): Path<String>, body: Body) -> Result<Response, ApiError> {
    let id = state.identify(&headers).await?;
    let bytes = axum::body::to_bytes(body, 4096).await.map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "the body is over 4 KiB"))?;
    let d: Decision = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::MalformedBody, format!("expected {{\"decision\": \"approve\" | \"deny\"}}: {e}")))?;
    let status = match d.decision.as_str() {
        "approve" => "approved",
        "deny" => "denied",
        other => return Err(ApiError::new(ErrorCode::BadRequest, format!("decision: `{other}`: approve or deny"))),
    };
    let repo = state.repo()?;
    let a = repo.decide(id.org_id(), id.user(), &aid, status).await?;
    if status == "denied" {
        return Ok((StatusCode::OK, axum::Json(json!({ "data": a, "meta": {} }))).into_response());
    }
    let Some(tool) = state.registry.get(&a.tool).cloned() else {
        repo.record_outcome(&a.id, "failed", "the tool is no longer available").await?;
        return Err(ApiError::new(ErrorCode::Conflict, format!("`{}` is no longer available on this server", a.tool)));
    };
    let ctx = crate::tools::ToolContext {
        identity: &id,
        queries: &state.queries,
        control: state.control.as_ref(),
        admin_role: &state.admin_role,
        workspace: None,
        project: None,
    };
    let turn = sandbox::Turn::new(id.clone(), state.config.budgets.clone());
    let started = std::time::Instant::now();
    let ran = match tokio::time::timeout(std::time::Duration::from_millis(state.config.budgets.call_timeout_ms), tool.run(&ctx, a.arguments.clone())).await {
        Err(_) => sandbox::Ran::TimedOut(std::time::Duration::from_millis(state.config.budgets.call_timeout_ms)),
        Ok(r) => sandbox::Ran::Done(r),
    };
    let outcome = state.gate.complete(&turn, &a.tool, &a.id, &a.arguments, ran, started);
    let executed = outcome.status == "ok";
    repo.record_outcome(&a.id, if executed { "executed" } else { "failed" }, &outcome.summary).await?;
    let a = repo.approval(id.org_id(), id.user(), &aid).await?;
    Ok((StatusCode::OK, axum::Json(json!({ "data": a, "meta": {} }))).into_response())
}
