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
use std::sync::Arc;
use std::time::Duration;

use auth::{Identity, TokenVerifier};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use schemas::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::model::{Plan, Project, Task, Workspace, check_name};
use crate::repo::{Actor, IDEMPOTENCY_RACE, IdempotencyKey, Repo, Stored};
use crate::{ControlError, Status};

/// Request bodies larger than this are refused (they are a few fields).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_PAGE: usize = 200;

#[derive(Clone)]
pub struct ControlState {
    pub repo: Repo,
    pub verifier: Arc<TokenVerifier>,
    /// The token role of organisation administrators.
    pub admin_role: String,
    /// Wakes the worker and the audit relay after a change.
    pub wake_worker: Arc<Notify>,
    pub wake_audit: Arc<Notify>,
    /// Reads from workspaces' API servers (CronJobs and their Jobs).
    pub provisioner: Arc<dyn crate::provider::Provisioner>,
    /// Calls of functions go out through this client.
    pub http: reqwest::Client,
    pub functions: crate::function_providers::FunctionsConfig,
}

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

pub(crate) type Answer = Result<Response, ApiError>;

impl ControlState {
    pub(crate) async fn identify(&self, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
        let (token, cookies) = auth::credentials(headers);
        self.verifier.verify(token, cookies).await.map_err(ApiError::from)
    }

    pub(crate) fn is_admin(&self, id: &Identity) -> bool {
        id.has_role(&self.admin_role)
    }

    /// The workspace if the caller may see it: organisation admins see all of their
    /// organisation's, members those their token names or whose groups they are in.
    pub(crate) async fn visible(&self, id: &Identity, name: &str) -> Result<(Workspace, Vec<String>), ApiError> {
        let hidden = || ApiError::from(ControlError::NotFound { kind: "workspace", name: name.to_owned() });
        check_name("workspace", name, 40).map_err(|_| hidden())?;
        let ws = self.repo.workspace(id.org_id(), name).await?;
        // Admins and members the token names see it without asking the groups.
        if self.is_admin(id) || id.workspaces().contains(name) {
            return Ok((ws, Vec::new()));
        }
        let groups = self.repo.groups_of(&ws.id, id.user()).await?;
        if groups.is_empty() { Err(hidden()) } else { Ok((ws, groups)) }
    }

    pub(crate) async fn workspace_admin(&self, id: &Identity, name: &str) -> Result<Workspace, ApiError> {
        let (ws, _) = self.visible(id, name).await?;
        if self.is_admin(id) {
            return Ok(ws);
        }
        let groups = self.repo.groups_of(&ws.id, id.user()).await?;
        if groups.iter().any(|g| g == "WSAdmins") {
            Ok(ws)
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, format!("only workspace admins (group WSAdmins of `{name}`) or organisation admins may do this")))
        }
    }

    pub(crate) fn woke(&self) {
        self.wake_worker.notify_one();
        self.wake_audit.notify_one();
    }
}

pub(crate) fn actor(id: &Identity) -> Actor<'_> {
    Actor { org_id: id.org_id(), user: id.user(), initiated_by: "user" }
}

pub(crate) async fn read_body(body: Body) -> Result<Vec<u8>, ApiError> {
    read_body_up_to(body, MAX_BODY_BYTES).await
}

pub(crate) async fn read_body_up_to(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is over {limit} bytes or was cut off")))
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(ErrorCode::MalformedBody, format!("the body is not the JSON expected: {e}")))
}

/// The request's idempotency key, bound to what was asked (method, path, body).
pub(crate) fn idempotency(headers: &HeaderMap, method: &Method, path: &str, body: &[u8]) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()));
    let Some(key) = key else {
        return Err(ApiError::new(ErrorCode::BadRequest, "Idempotency-Key: use 1–200 printable ASCII characters (a UUID is usual)"));
    };
    let mut h = Sha256::new();
    h.update(method.as_str());
    h.update([0]);
    h.update(path);
    h.update([0]);
    h.update(body);
    let hash = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(IdempotencyKey { key: key.to_owned(), request_hash: hash }))
}

fn stored(s: Stored, replayed: bool) -> Response {
    let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK);
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], s.body).into_response();
    if replayed {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

pub(crate) fn task_meta(t: &Task) -> Value {
    json!({ "id": t.id, "kind": t.kind, "status": t.status, "url": format!("/api/v1/tasks/{}", t.id) })
}

pub(crate) fn with_etag(mut r: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

pub(crate) fn envelope<T: serde::Serialize>(status: StatusCode, data: &T, meta: Value) -> Response {
    (status, axum::Json(json!({ "data": data, "meta": meta }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl PageParams {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::new(ErrorCode::BadRequest, format!("limit: between 1 and {MAX_PAGE}"))),
        }
    }
}

fn page_params(q: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>) -> Result<PageParams, ApiError> {
    q.map(|Query(p)| p).map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("query parameters: {}; use limit and cursor", e.body_text())))
}

/// A create that may be a replay: the stored answer if this key was seen, else `create`'s.
pub(crate) async fn create_once<F, Fut>(state: &ControlState, id: &Identity, key: Option<IdempotencyKey>, create: F) -> Answer
where
    F: Fn(Option<IdempotencyKey>) -> Fut,
    Fut: Future<Output = Result<Stored, ControlError>>,
{
    if let Some(k) = &key
        && let Some(s) = state.repo.replay(&actor(id), k).await?
    {
        return Ok(stored(s, true));
    }
    match create(key.clone()).await {
        Ok(s) => {
            state.woke();
            Ok(stored(s, false))
        }
        // A concurrent request with the same key won: its answer is this one's too.
        Err(ControlError::Conflict(m)) if m == IDEMPOTENCY_RACE => match &key {
            Some(k) => match state.repo.replay(&actor(id), k).await? {
                Some(s) => Ok(stored(s, true)),
                None => Err(ApiError::new(ErrorCode::Conflict, IDEMPOTENCY_RACE)),
            },
            None => Err(ApiError::new(ErrorCode::Conflict, IDEMPOTENCY_RACE)),
        },
        Err(e) => Err(e.into()),
    }
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
