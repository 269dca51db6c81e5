//! A project's CronJobs and what they ran: the CronJobs are read from the workspace's
//! vCluster; each Job seen is recorded, so the execution history outlives the Jobs Kubernetes
//! cleans up (`successfulJobsHistoryLimit`, TTLs).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use crate::db::{Cols, now_ms};
use crate::http::{Answer, ControlState, envelope};
use crate::manifests::{Cluster, Manifest};
use crate::model::{Project, Workspace};
use crate::repo::Repo;
use crate::{ControlError, on_db};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Execution {
    pub job: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// RFC 3339, as the Job's status has them.
    pub started: String,
    pub finished: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// How a Job ended, from its `status`: `succeeded`, `failed` (with the Failed condition's
/// message) or still `running`.
pub fn job_outcome(status: &Value) -> (&'static str, String) {
    let failed = status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Failed" && c["status"] == "True"));
    if status["succeeded"].as_i64().unwrap_or(0) >= 1 {
        ("succeeded", String::new())
    } else if let Some(c) = failed {
        ("failed", c["message"].as_str().unwrap_or("the Job failed").to_owned())
    } else {
        ("running", String::new())
    }
}

/// What a Job object says about its run.
pub fn execution_of(job: &Value) -> Execution {
    let status = &job["status"];
    let (outcome, message) = job_outcome(status);
    Execution {
        job: job["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        status: outcome.into(),
        started: status["startTime"].as_str().unwrap_or("").to_owned(),
        finished: status["completionTime"].as_str().unwrap_or("").to_owned(),
        message,
    }
}

impl Repo {
    /// Records what was seen of the CronJob's Jobs; finished ones are not changed again.
    pub async fn record_executions(&self, ws: &Workspace, project: &str, cronjob: &str, seen: &[Execution]) -> Result<(), ControlError> {
        let now = now_ms();
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            for e in seen {
                sqlx::query("INSERT INTO cronjob_executions (workspace_id, project, cronjob, job, status, started, finished, message, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (workspace_id, project, job) DO UPDATE SET status = excluded.status, finished = excluded.finished, message = excluded.message \
                     WHERE cronjob_executions.status = 'running'")
                    .bind(&ws.id).bind(project).bind(cronjob).bind(&e.job).bind(&e.status).bind(&e.started).bind(&e.finished).bind(&e.message).bind(now)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The recorded executions of a CronJob, newest first.
    pub async fn executions(&self, ws: &Workspace, project: &str, cronjob: &str) -> Result<Vec<Execution>, ControlError> {
        Ok(
            on_db!(self.db(), pool => sqlx::query("SELECT job, status, started, finished, message FROM cronjob_executions WHERE workspace_id = $1 AND project = $2 AND cronjob = $3 ORDER BY started DESC, job DESC LIMIT 200")
            .bind(&ws.id).bind(project).bind(cronjob).fetch_all(pool).await?
            .iter().map(|r| Ok::<_, ControlError>(Execution { job: r.text("job")?, status: r.text("status")?, started: r.text("started")?, finished: r.text("finished")?, message: r.text("message")? }))
            .collect::<Result<_, _>>()?),
        )
    }
}

pub(crate) fn routes() -> Router<ControlState> {
    Router::new()
        .route("/api/v1/workspaces/{ws}/projects/{project}/cronjobs", get(list))
        .route("/api/v1/workspaces/{ws}/projects/{project}/cronjobs/{cronjob}/executions", get(executions))
}

fn locator(ws: &Workspace, p: &Project, kind: &'static str, plural: &'static str) -> Manifest {
    Manifest {
        cluster: Cluster::Workspace { id: ws.id.clone(), host_namespace: ws.host_namespace() },
        api_version: "batch/v1",
        kind,
        plural,
        namespace: Some(p.name.clone()),
        name: String::new(),
        body: Value::Null,
    }
}

async fn project(state: &ControlState, headers: &HeaderMap, ws: &str, project: &str) -> Result<(Workspace, Project), schemas::ApiError> {
    let id = state.identify(headers).await?;
    let (ws, _) = state.visible(&id, ws).await?;
    let p = state.repo.project(&ws, project).await?;
    Ok((ws, p))
}

fn unavailable(e: crate::provider::ProvisionError) -> schemas::ApiError {
    tracing::warn!(error = %e, "reading from a workspace's API server failed");
    schemas::ApiError::new(schemas::ErrorCode::Unavailable, "the workspace's API server did not answer; retry shortly")
}

async fn list(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name)): Path<(String, String)>) -> Answer {
    let (ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let items = state.provisioner.list(&locator(&ws, &p, "CronJob", "cronjobs"), "").await.map_err(unavailable)?;
    let out: Vec<Value> = items
        .iter()
        .map(|c| {
            json!({
                "name": c["metadata"]["name"], "schedule": c["spec"]["schedule"], "suspend": c["spec"]["suspend"].as_bool().unwrap_or(false),
                "last_schedule_time": c["status"]["lastScheduleTime"], "active": c["status"]["active"].as_array().map_or(0, Vec::len),
            })
        })
        .collect();
    Ok(envelope(StatusCode::OK, &out, json!({})))
}

/// The CronJob's Jobs seen now are recorded, then the whole recorded history is answered.
async fn executions(State(state): State<ControlState>, headers: HeaderMap, Path((ws, project_name, cronjob)): Path<(String, String, String)>) -> Answer {
    let (ws, p) = project(&state, &headers, &ws, &project_name).await?;
    let jobs = state.provisioner.list(&locator(&ws, &p, "Job", "jobs"), "").await.map_err(unavailable)?;
    let owned: Vec<Execution> = jobs
        .iter()
        .filter(|j| j["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| r["kind"] == "CronJob" && r["name"] == cronjob.as_str())))
        .map(execution_of)
        .collect();
    state.repo.record_executions(&ws, &p.name, &cronjob, &owned).await?;
    Ok(envelope(StatusCode::OK, &state.repo.executions(&ws, &p.name, &cronjob).await?, json!({})))
}
