//! Backups in the control API: storages, policies, runs and restores of a Dedicated
//! workspace, for its admins. On a Shared workspace every one of these is
//! `403 plan_not_allowed`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{get, post};
use schemas::ApiError;
use serde_json::json;

use crate::backups::{BackupPolicy, NewPolicy, NewStorage, require_dedicated};
use crate::http::{Answer, ControlState, actor, create_once, envelope, idempotency, parse, read_body, task_meta};
use crate::model::{Task, Workspace};

pub(crate) fn routes() -> Router<ControlState> {
    Router::new()
        .route("/api/v1/workspaces/{ws}/backup-storages", get(list_storages).post(create_storage))
        .route("/api/v1/workspaces/{ws}/backup-policies", get(list_policies).post(create_policy))
        .route("/api/v1/workspaces/{ws}/backup-policies/{policy}", get(get_policy).delete(delete_policy))
        .route("/api/v1/workspaces/{ws}/backup-policies/{policy}/runs", get(list_runs).post(start_run))
        .route("/api/v1/workspaces/{ws}/backup-runs/{run}/restore", post(restore))
}

/// The workspace, if the caller administers it and its plan has backups.
async fn dedicated(state: &ControlState, headers: &HeaderMap, ws: &str) -> Result<(std::sync::Arc<auth::Identity>, Workspace), ApiError> {
    let id = state.identify(headers).await?;
    let ws = state.workspace_admin(&id, ws).await?;
    require_dedicated(&ws)?;
    Ok((id, ws))
}

async fn create_storage(State(state): State<ControlState>, headers: HeaderMap, Path(ws): Path<String>, body: Body) -> Answer {
    let (id, ws) = dedicated(&state, &headers, &ws).await?;
    let req: NewStorage = parse(&read_body(body).await?)?;
    req.check()?;
    let st = state.repo.create_storage(&actor(&id), &ws, &req).await?;
    state.woke();
    Ok(envelope(StatusCode::CREATED, &st, json!({})))
}

async fn list_storages(State(state): State<ControlState>, headers: HeaderMap, Path(ws): Path<String>) -> Answer {
    let (_, ws) = dedicated(&state, &headers, &ws).await?;
    Ok(envelope(StatusCode::OK, &state.repo.storages(&ws).await?, json!({})))
}

async fn create_policy(State(state): State<ControlState>, method: Method, headers: HeaderMap, Path(ws): Path<String>, body: Body) -> Answer {
    let (id, ws) = dedicated(&state, &headers, &ws).await?;
    let bytes = read_body(body).await?;
    let req: NewPolicy = parse(&bytes)?;
    req.check()?;
    let key = idempotency(&headers, &method, &format!("/api/v1/workspaces/{}/backup-policies", ws.name), &bytes)?;
    let render = |p: &BackupPolicy, t: &Task| (201, json!({ "data": p, "meta": { "task": task_meta(t) } }).to_string());
    create_once(&state, &id, key, |k| {
        let (state, id, ws, req, render) = (&state, &id, &ws, &req, &render);
        async move { state.repo.create_policy(&actor(id), ws, req, k.as_ref(), render).await.map(|(_, _, s)| s) }
    })
    .await
}

async fn list_policies(State(state): State<ControlState>, headers: HeaderMap, Path(ws): Path<String>) -> Answer {
    let (_, ws) = dedicated(&state, &headers, &ws).await?;
    Ok(envelope(StatusCode::OK, &state.repo.policies(&ws).await?, json!({})))
}

async fn get_policy(State(state): State<ControlState>, headers: HeaderMap, Path((ws, policy)): Path<(String, String)>) -> Answer {
    let (_, ws) = dedicated(&state, &headers, &ws).await?;
    Ok(envelope(StatusCode::OK, &state.repo.policy(&ws, &policy).await?, json!({})))
}

async fn delete_policy(State(state): State<ControlState>, headers: HeaderMap, Path((ws, policy)): Path<(String, String)>) -> Answer {
    let (id, ws) = dedicated(&state, &headers, &ws).await?;
    let (p, task) = state.repo.delete_policy(&actor(&id), &ws, &policy).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &p, json!({ "task": task_meta(&task) })))
}

/// A backup now, outside the schedule.
async fn start_run(State(state): State<ControlState>, headers: HeaderMap, Path((ws, policy)): Path<(String, String)>) -> Answer {
    let (id, ws) = dedicated(&state, &headers, &ws).await?;
    let policy = state.repo.policy(&ws, &policy).await?;
    let (run, task) = state.repo.start_run(&actor(&id), &ws, &policy, "manual", None).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &run, json!({ "task": task_meta(&task) })))
}

async fn list_runs(State(state): State<ControlState>, headers: HeaderMap, Path((ws, policy)): Path<(String, String)>) -> Answer {
    let (_, ws) = dedicated(&state, &headers, &ws).await?;
    let policy = state.repo.policy(&ws, &policy).await?;
    Ok(envelope(StatusCode::OK, &state.repo.runs(&ws, &policy).await?, json!({})))
}

/// Restores the workspace from a successful run (a long operation of its own).
async fn restore(State(state): State<ControlState>, headers: HeaderMap, Path((ws, run)): Path<(String, String)>) -> Answer {
    let (id, ws) = dedicated(&state, &headers, &ws).await?;
    let from = state.repo.run(&ws, &run).await?;
    if from.status != "succeeded" || from.trigger == "restore" {
        return Err(ApiError::new(schemas::ErrorCode::Conflict, format!("run `{run}` is {} ({}); restore from a succeeded backup", from.status, from.trigger)));
    }
    let policy = state.repo.policies(&ws).await?.into_iter().find(|p| p.id == from.policy_id);
    let Some(policy) = policy else {
        return Err(ApiError::new(schemas::ErrorCode::Conflict, format!("the policy of run `{run}` is deleted; its backups cannot be restored from here")));
    };
    let (r, task) = state.repo.start_run(&actor(&id), &ws, &policy, "restore", Some(&from)).await?;
    state.woke();
    Ok(envelope(StatusCode::ACCEPTED, &r, json!({ "task": task_meta(&task), "restores": from.id })))
}
