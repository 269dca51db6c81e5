//! Functions in the control API: create (version 1 with its triggers), new versions, roll
//! back, invoke (each call recorded), list invocations, delete. Any member of the workspace
//! may manage a project's functions.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::routing::{get, post};
use schemas::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::db::{new_id, now_ms};
use crate::function_providers::runtime_of;
use crate::functions::{Function, Invocation, MAX_CODE_BYTES, NewFunction, NewVersion};
use crate::http::{Answer, ControlState, actor, create_once, envelope, idempotency, parse, read_body_up_to, task_meta};
use crate::model::{Project, Task, Workspace};

/// Bodies of function calls at most, both ways.
pub const MAX_INVOKE_BYTES: usize = 1 << 20;

pub(crate) fn routes() -> Router<ControlState> {
    let f = "/api/v1/workspaces/{ws}/projects/{project}/functions";
    Router::new()
        .route(f, get(list).post(create))
        .route(&format!("{f}/{{function}}"), get(read).delete(delete))
        .route(&format!("{f}/{{function}}/versions"), post(new_version))
        .route(&format!("{f}/{{function}}/rollback"), post(rollback))
        .route(&format!("{f}/{{function}}/invoke"), post(invoke))
        .route(&format!("{f}/{{function}}/invocations"), get(invocations))
}

async fn project(state: &ControlState, headers: &HeaderMap, ws: &str, project: &str) -> Result<(std::sync::Arc<auth::Identity>, Workspace, Project), ApiError> {
    let id = state.identify(headers).await?;
    let (ws, _) = state.visible(&id, ws).await?;
    let p = state.repo.project(&ws, project).await?;
    Ok((id, ws, p))
}

fn with_details(f: &Function, versions: Value, triggers: Value) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    v["versions"] = versions;
    v["triggers"] = triggers;
    v
}

async fn create(State(state): State<ControlState>, method: Method, headers: HeaderMap, Path((ws, project_name)): Path<(String, String)>, body: Body) -> Answer {
    let (id, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let bytes = read_body_up_to(body, 2 * MAX_CODE_BYTES).await?;
    let req: NewFunction = parse(&bytes)?;
    req.check()?;
    let key = idempotency(&headers, &method, &format!("/api/v1/workspaces/{}/projects/{}/functions", ws.name, p.name), &bytes)?;
    let render = |f: &Function, t: &Task| (201, json!({ "data": f, "meta": { "task": task_meta(t) } }).to_string());
    create_once(&state, &id, key, |k| {
        let (state, id, ws, p, req, render) = (&state, &id, &ws, &p, &req, &render);
        async move { state.repo.create_function(&actor(id), ws, p, req, k.as_ref(), render).await.map(|(_, _, s)| s) }
    })
    .await
}

async fn list(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name)): Path<(String, String)>) -> Answer {
    let (_, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    Ok(envelope(StatusCode::OK, &state.repo.functions(&ws, &p.name).await?, json!({})))
}

async fn read(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name, name)): Path<(String, String, String)>) -> Answer {
    let (_, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let f = state.repo.function(&ws, &p.name, &name).await?;
    let versions = serde_json::to_value(state.repo.versions(&f).await?).unwrap_or(Value::Null);
    let triggers = serde_json::to_value(state.repo.triggers(&f).await?).unwrap_or(Value::Null);
    Ok(envelope(StatusCode::OK, &with_details(&f, versions, triggers), json!({})))
}

async fn new_version(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Path((ws, project_name, name)): Path<(String, String, String)>,
    body: Body,
) -> Answer {
    let (id, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let f = state.repo.function(&ws, &p.name, &name).await?;
    let v: NewVersion = parse(&read_body_up_to(body, 2 * MAX_CODE_BYTES).await?)?;
    v.check(&f.runtime)?;
    let (f, task) = state.repo.set_function_version(&actor(&id), &ws, &f, Some(&v), None).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &f, json!({ "task": task_meta(&task) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: i64,
}

async fn rollback(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name, name)): Path<(String, String, String)>, body: Body) -> Answer {
    let (id, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let f = state.repo.function(&ws, &p.name, &name).await?;
    let r: Rollback = parse(&read_body_up_to(body, 1024).await?)?;
    if r.version == f.active_version {
        return Err(ApiError::new(ErrorCode::Conflict, format!("version {} is the live one already", r.version)));
    }
    let (f, task) = state.repo.set_function_version(&actor(&id), &ws, &f, None, Some(r.version)).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &f, json!({ "task": task_meta(&task) })))
}

async fn delete(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name, name)): Path<(String, String, String)>) -> Answer {
    let (id, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let f = state.repo.function(&ws, &p.name, &name).await?;
    let (f, task) = state.repo.delete_function(&actor(&id), &ws, &f).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &f, json!({ "task": task_meta(&task) })))
}

/// Calls the function with the request's body and answers what it said; the call is recorded
/// whatever happens (a function that does not answer is `unreachable`).
async fn invoke(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name, name)): Path<(String, String, String)>, body: Body) -> Answer {
    let (id, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let f = state.repo.function(&ws, &p.name, &name).await?;
    if f.status != "running" {
        return Err(ApiError::new(ErrorCode::Conflict, format!("function `{name}` is {}; invoke it once it is running", f.status)));
    }
    let payload = read_body_up_to(body, MAX_INVOKE_BYTES).await?;
    let url = runtime_of(&f.provider).invoke_url(&state.functions, &ws, &f);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream").to_owned();
    let started = Instant::now();
    // The caller's token is not passed on: the function gets the body, and who called it in a
    // header of our own.
    let sent = state.http.post(&url).header(header::CONTENT_TYPE, content_type).header("x-hexabase-invoked-by", id.user()).body(payload).send().await;
    let mut inv = Invocation {
        id: new_id("inv"),
        version: f.active_version,
        trigger: "http".into(),
        status: "unreachable".into(),
        http_status: 0,
        duration_ms: 0,
        error: String::new(),
        invoked_by: id.user().to_owned(),
        created_at: now_ms(),
    };
    let answer = match sent {
        Ok(resp) => {
            inv.http_status = i64::from(resp.status().as_u16());
            inv.status = if resp.status().is_success() { "ok" } else { "error" }.into();
            let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            match read_capped(resp, MAX_INVOKE_BYTES).await {
                Ok(bytes) => Some((ct, bytes)),
                Err(e) => {
                    inv.status = "error".into();
                    inv.error = e;
                    None
                }
            }
        }
        Err(e) => {
            inv.error =
                if e.is_timeout() { format!("no answer within {} ms", state.functions.invoke_timeout_ms) } else { "the function could not be reached".into() };
            None
        }
    };
    inv.duration_ms = started.elapsed().as_millis() as i64;
    state.repo.record_invocation(&f, &inv).await?;
    let (content_type, body) = answer.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok(envelope(StatusCode::OK, &json!({ "invocation": inv, "content_type": content_type, "body": text }), json!({})))
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| "the answer was cut off".to_owned())? {
        if out.len() + chunk.len() > cap {
            return Err(format!("the answer is over {cap} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<i64>,
}

async fn invocations(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Path((ws, project_name, name)): Path<(String, String, String)>,
    q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let (_, ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let limit = q.map_err(|_| ApiError::new(ErrorCode::BadRequest, "query parameters: only limit"))?.0.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::new(ErrorCode::BadRequest, "limit: between 1 and 200"));
    }
    let f = state.repo.function(&ws, &p.name, &name).await?;
    Ok(envelope(StatusCode::OK, &state.repo.invocations(&f, limit).await?, json!({})))
}
