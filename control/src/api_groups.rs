//! Workspace groups in the control API, for workspace admins: hierarchical groups whose
//! members are also in every group above them.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, put};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Answer, ControlState, actor, envelope, parse, read_body};

pub(crate) fn routes() -> Router<ControlState> {
    Router::new()
        .route("/api/v1/workspaces/{ws}/groups", get(list).post(create))
        .route("/api/v1/workspaces/{ws}/groups/{group}", delete(remove))
        .route("/api/v1/workspaces/{ws}/groups/{group}/members/{user}", put(add_member).delete(remove_member))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    parent: Option<String>,
}

async fn list(State(state): State<ControlState>, headers: HeaderMap, Path(ws): Path<String>) -> Answer {
    let id = state.identify(&headers).await?;
    let (ws, _) = state.visible(&id, &ws).await?;
    Ok(envelope(StatusCode::OK, &state.repo.groups(&ws).await?, json!({})))
}

async fn create(State(state): State<ControlState>, headers: HeaderMap, Path(ws): Path<String>, body: Body) -> Answer {
    let id = state.identify(&headers).await?;
    let ws = state.workspace_admin(&id, &ws).await?;
    let req: NewGroup = parse(&read_body(body).await?)?;
    let g = state.repo.create_group(&actor(&id), &ws, &req.name, req.parent.as_deref()).await?;
    state.woke();
    Ok(envelope(StatusCode::CREATED, &g, json!({})))
}

async fn remove(State(state): State<ControlState>, headers: HeaderMap, Path((ws, group)): Path<(String, String)>) -> Answer {
    let id = state.identify(&headers).await?;
    let ws = state.workspace_admin(&id, &ws).await?;
    state.repo.delete_group(&actor(&id), &ws, &group).await?;
    state.woke();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_member(State(state): State<ControlState>, headers: HeaderMap, Path((ws, group, user)): Path<(String, String, String)>) -> Answer {
    member(state, headers, ws, group, user, true).await
}

async fn remove_member(State(state): State<ControlState>, headers: HeaderMap, Path((ws, group, user)): Path<(String, String, String)>) -> Answer {
    member(state, headers, ws, group, user, false).await
}

async fn member(state: ControlState, headers: HeaderMap, ws: String, group: String, user: String, add: bool) -> Answer {
    let id = state.identify(&headers).await?;
    let ws = state.workspace_admin(&id, &ws).await?;
    state.repo.set_member(&actor(&id), &ws, &group, &user, add).await?;
    state.woke();
    Ok(StatusCode::NO_CONTENT.into_response())
}
