//! What every control handler shares: the state, identity and visibility, bodies, the
//! `{data, meta}` envelope, idempotent creates and paging.

use std::sync::Arc;

use auth::{Identity, TokenVerifier};
use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::ControlError;
use crate::model::{Task, Workspace};
use crate::repo::{Actor, IDEMPOTENCY_RACE, IdempotencyKey, Repo, Stored};

/// Request bodies larger than this are refused (they are a few fields).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub(crate) const MAX_PAGE: usize = 200;

#[derive(Clone)]
pub struct ControlState {
    pub repo: Repo,
    pub verifier: TokenVerifier,
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

pub(crate) type Answer = Result<Response, ApiError>;

impl ControlState {
    pub(crate) async fn identify(&self, headers: &HeaderMap) -> Result<Arc<Identity>, ApiError> {
        self.verifier.verify_request(headers).await.map_err(ApiError::from)
    }

    pub(crate) fn is_admin(&self, id: &Identity) -> bool {
        id.has_role(&self.admin_role)
    }

    /// The workspace if the caller may see it: organisation admins see all of their
    /// organisation's, members those their token names or whose groups they are in.
    pub(crate) async fn visible(&self, id: &Identity, name: &str) -> Result<(Workspace, Vec<String>), ApiError> {
        Ok(self.repo.visible_workspace(id, &self.admin_role, name).await?)
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
pub(crate) struct PageParams {
    pub(crate) limit: Option<usize>,
    pub(crate) cursor: Option<String>,
}

impl PageParams {
    pub(crate) fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::new(ErrorCode::BadRequest, format!("limit: between 1 and {MAX_PAGE}"))),
        }
    }
}

pub(crate) fn page_params(q: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>) -> Result<PageParams, ApiError> {
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
