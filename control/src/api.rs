//! The control REST API under `/api/v1/`: workspaces, their projects, and the tasks that carry
//! out long operations.
//!
//! Conventions: answers are `{"data": …, "meta": …}`; lists page by name (`limit` ≤ 200,
//! `cursor` = `meta.next_cursor`); a change that starts a long operation answers with the
//! resource and `meta.task` (follow it at `/api/v1/tasks/{id}`, or its `/events` stream);
//! creates take an `Idempotency-Key` (the same key and body get the first answer back, a
//! different body is a 409); updates need the `version` read (`If-Match` or in the body), and
//! a stale one is a 409. Errors are `{"error": {"code", "message"}}`. Workspaces the caller
//! may not see answer 404, exactly as ones that do not exist.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use schemas::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;

use crate::Status;
use crate::http::{Answer, PageParams, actor, create_once, envelope, idempotency, page_params, parse, read_body, task_meta, with_etag};
pub use crate::http::{ControlState, MAX_BODY_BYTES};
use crate::model::{Plan, Project, Task, Workspace, check_name};

pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/api/v1/workspaces", get(list_workspaces).post(create_workspace))
        .route("/api/v1/workspaces/{ws}", get(get_workspace).patch(update_workspace).delete(delete_workspace))
        .route("/api/v1/workspaces/{ws}/groups/mine", get(my_groups))
        .route("/api/v1/workspaces/{ws}/projects", get(list_projects).post(create_project))
        .route("/api/v1/workspaces/{ws}/projects/{project}", get(get_project).delete(delete_project))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/events", get(task_events))
        .merge(crate::api_backups::routes())
        .merge(crate::api_functions::routes())
        .merge(crate::api_groups::routes())
        .merge(crate::cronjobs::routes())
        .with_state(state)
}

// ---- workspaces

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    name: String,
    #[serde(default = "shared")]
    plan: String,
}

fn shared() -> String {
    "shared".into()
}

async fn create_workspace(State(state): State<ControlState>, method: Method, headers: HeaderMap, body: Body) -> Answer {
    let id = state.identify(&headers).await?;
    if !state.is_admin(&id) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("creating workspaces needs the `{}` role in organisation `{}`", state.admin_role, id.org_id()),
        ));
    }
    let bytes = read_body(body).await?;
    let req: NewWorkspace = parse(&bytes)?;
    check_name("name", &req.name, 40)?;
    let plan = Plan::parse(&req.plan)?;
    let key = idempotency(&headers, &method, "/api/v1/workspaces", &bytes)?;
    let render = |ws: &Workspace, t: &Task| (201, json!({ "data": ws, "meta": { "task": task_meta(t) } }).to_string());
    create_once(&state, &id, key, |k| {
        let (state, id, name, render) = (&state, &id, &req.name, &render);
        async move { state.repo.create_workspace(&actor(id), name, plan, k.as_ref(), render).await.map(|(_, _, s)| s) }
    })
    .await
}

async fn list_workspaces(
    State(state): State<ControlState>,
    headers: HeaderMap,
    q: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let id = state.identify(&headers).await?;
    let p = page_params(q)?;
    let limit = p.limit()?;
    let cursor = p.cursor.unwrap_or_default();
    let page = if state.is_admin(&id) {
        state.repo.workspaces(id.org_id(), &cursor, limit, None).await?
    } else {
        // Members see the workspaces their token names; group membership is checked per
        // workspace on read.
        let mine = |name: &str| id.workspaces().contains(name);
        state.repo.workspaces(id.org_id(), &cursor, limit, Some(&mine)).await?
    };
    Ok(envelope(StatusCode::OK, &page.items, json!({ "limit": limit, "next_cursor": page.next_cursor })))
}

async fn get_workspace(State(state): State<ControlState>, headers: HeaderMap, Path(ws): Path<String>) -> Answer {
    let id = state.identify(&headers).await?;
    let (ws, _) = state.visible(&id, &ws).await?;
    let version = ws.version;
    Ok(with_etag(envelope(StatusCode::OK, &ws, json!({})), version))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceChange {
    plan: String,
    version: Option<i64>,
}

fn expected_version(headers: &HeaderMap, body: Option<i64>) -> Result<i64, ApiError> {
    let header = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "If-Match: send the ETag you read, like \"3\""))?,
        ),
    };
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::new(ErrorCode::BadRequest, "If-Match and version disagree; send one")),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => {
            Err(ApiError::new(ErrorCode::BadRequest, "send the version you read (If-Match header or `version`), so a concurrent change is not overwritten"))
        }
    }
}

async fn update_workspace(State(state): State<ControlState>, headers: HeaderMap, Path(name): Path<String>, body: Body) -> Answer {
    let id = state.identify(&headers).await?;
    let (_, _) = state.visible(&id, &name).await?;
    if !state.is_admin(&id) {
        return Err(ApiError::new(ErrorCode::Forbidden, format!("changing a workspace's plan needs the `{}` role", state.admin_role)));
    }
    let change: WorkspaceChange = parse(&read_body(body).await?)?;
    let plan = Plan::parse(&change.plan)?;
    let version = expected_version(&headers, change.version)?;
    let (ws, task) = state.repo.update_workspace(&actor(&id), &name, version, plan).await?;
    state.woke();
    let v = ws.version;
    Ok(with_etag(envelope(StatusCode::ACCEPTED, &ws, json!({ "task": task_meta(&task) })), v))
}

async fn delete_workspace(State(state): State<ControlState>, headers: HeaderMap, Path(name): Path<String>) -> Answer {
    let id = state.identify(&headers).await?;
    let (_, _) = state.visible(&id, &name).await?;
    if !state.is_admin(&id) {
        return Err(ApiError::new(ErrorCode::Forbidden, format!("deleting a workspace needs the `{}` role", state.admin_role)));
    }
    let (ws, task) = state.repo.delete_workspace(&actor(&id), &name).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &ws, json!({ "task": task_meta(&task) })))
}

/// The caller's groups in the workspace, flattened (what its OIDC `groups` claim carries).
async fn my_groups(State(state): State<ControlState>, headers: HeaderMap, Path(name): Path<String>) -> Answer {
    let id = state.identify(&headers).await?;
    let (ws, _) = state.visible(&id, &name).await?;
    let groups = state.repo.groups_of(&ws.id, id.user()).await?;
    let claim: Vec<String> = groups.iter().map(|g| format!("{}:{g}", ws.name)).collect();
    Ok(envelope(StatusCode::OK, &json!({ "groups": groups, "claim": claim }), json!({})))
}

// ---- projects

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
}

async fn create_project(State(state): State<ControlState>, method: Method, headers: HeaderMap, Path(ws): Path<String>, body: Body) -> Answer {
    let id = state.identify(&headers).await?;
    let (ws, _) = state.visible(&id, &ws).await?;
    if !matches!(ws.status, Status::Running | Status::Provisioning | Status::Pending | Status::Updating) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("workspace `{}` is {}; projects can be added while it is running", ws.name, ws.status.as_str()),
        ));
    }
    let bytes = read_body(body).await?;
    let req: NewProject = parse(&bytes)?;
    check_name("name", &req.name, 63)?;
    let key = idempotency(&headers, &method, &format!("/api/v1/workspaces/{}/projects", ws.name), &bytes)?;
    let render = |p: &Project, t: &Task| (201, json!({ "data": p, "meta": { "task": task_meta(t) } }).to_string());
    create_once(&state, &id, key, |k| {
        let (state, id, ws, name, render) = (&state, &id, &ws, &req.name, &render);
        async move { state.repo.create_project(&actor(id), ws, name, k.as_ref(), render).await.map(|(_, _, s)| s) }
    })
    .await
}

async fn list_projects(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    q: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let id = state.identify(&headers).await?;
    let (ws, _) = state.visible(&id, &ws).await?;
    let p = page_params(q)?;
    let limit = p.limit()?;
    let page = state.repo.projects(&ws, p.cursor.as_deref().unwrap_or(""), limit).await?;
    Ok(envelope(StatusCode::OK, &page.items, json!({ "limit": limit, "next_cursor": page.next_cursor })))
}

async fn get_project(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project)): Path<(String, String)>) -> Answer {
    let id = state.identify(&headers).await?;
    let (ws, _) = state.visible(&id, &ws).await?;
    let p = state.repo.project(&ws, &project).await?;
    let v = p.version;
    Ok(with_etag(envelope(StatusCode::OK, &p, json!({})), v))
}

async fn delete_project(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project)): Path<(String, String)>) -> Answer {
    let id = state.identify(&headers).await?;
    let ws = state.workspace_admin(&id, &ws).await?;
    let (p, task) = state.repo.delete_project(&actor(&id), &ws, &project).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &p, json!({ "task": task_meta(&task) })))
}

// ---- tasks

async fn get_task(State(state): State<ControlState>, headers: HeaderMap, Path(task): Path<String>) -> Answer {
    let id = state.identify(&headers).await?;
    let t = state.repo.task(id.org_id(), &task).await?;
    Ok(envelope(StatusCode::OK, &t, json!({})))
}

/// The task as server-sent events: a `task` event at every change, then `end` once it has
/// finished. Closing the connection stops the polling.
async fn task_events(
    State(state): State<ControlState>,
    headers: HeaderMap,
    Path(task): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = state.identify(&headers).await?;
    let first = state.repo.task(id.org_id(), &task).await?;
    struct Follow {
        state: ControlState,
        org: String,
        task: String,
        next: Option<Task>,
        last: Option<i64>,
        ended: bool,
    }
    let start = Follow { state, org: id.org_id().to_owned(), task: first.id.clone(), next: Some(first), last: None, ended: false };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            let t = match f.next.take() {
                Some(t) => t,
                None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match f.state.repo.task(&f.org, &f.task).await {
                        Ok(t) => t,
                        Err(e) => {
                            f.ended = true;
                            let e = ApiError::from(e);
                            return Some((Ok(Event::default().event("error").data(json!({ "code": e.code.as_str(), "message": e.message }).to_string())), f));
                        }
                    }
                }
            };
            if Some(t.updated_at) != f.last || t.is_finished() {
                f.last = Some(t.updated_at);
                f.ended = t.is_finished();
                let ev = Event::default().event(if f.ended { "end" } else { "task" }).data(serde_json::to_string(&t).unwrap_or_default());
                return Some((Ok(ev), f));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
