//! The task queue and the audit outbox in the control database: claiming under a lease,
//! recording steps, finishing or retrying; and relaying audit records.

use crate::db::{Cols, Db, now_ms};
use crate::model::Task;
use crate::repo::{AuditEntry, Repo, task_of};
use crate::{ControlError, on_db};

const TASK_COLS: &str = "id, org_id, kind, target_id, status, attempts, max_attempts, run_after, last_error, steps_done, requested_by, created_at, updated_at";

impl Repo {
    // ---- tasks

    pub async fn task(&self, org_id: &str, id: &str) -> Result<Task, ControlError> {
        let found = on_db!(self.db(), pool => sqlx::query("SELECT id, org_id, kind, target_id, status, attempts, max_attempts, run_after, last_error, steps_done, requested_by, created_at, updated_at FROM tasks WHERE id = $1 AND org_id = $2")
            .bind(id).bind(org_id).fetch_optional(pool).await?.map(|r| task_of(&r)).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "task", name: id.to_owned() })
    }

    /// Takes the next runnable task under a lease until `now + lease_ms`: a queued one whose
    /// time has come, or a running one whose lease ran out (its worker died). Tasks of one
    /// target run one at a time, in the order they were queued.
    pub async fn claim(&self, lease_ms: i64) -> Result<Option<Task>, ControlError> {
        const Q: &str = "UPDATE tasks SET status = 'running', attempts = attempts + 1, lease_until = $1, updated_at = $2 \
             WHERE id = (SELECT t.id FROM tasks t WHERE t.status IN ('queued', 'running') AND t.run_after <= $2 AND t.lease_until < $2 \
                 AND NOT EXISTS (SELECT 1 FROM tasks e WHERE e.target_id = t.target_id AND e.status IN ('queued', 'running') \
                     AND (e.created_at < t.created_at OR (e.created_at = t.created_at AND e.id < t.id))) \
                 ORDER BY t.run_after, t.created_at LIMIT 1) \
             AND status IN ('queued', 'running') AND lease_until < $2 \
             RETURNING id, org_id, kind, target_id, status, attempts, max_attempts, run_after, last_error, steps_done, requested_by, created_at, updated_at";
        debug_assert!(Q.contains(TASK_COLS));
        // PostgreSQL: concurrent claimers skip the row another is taking instead of queueing
        // behind its lock and then finding it gone. SQLite has one writer at a time anyway.
        const PG: &str = "UPDATE tasks SET status = 'running', attempts = attempts + 1, lease_until = $1, updated_at = $2 \
             WHERE id = (SELECT t.id FROM tasks t WHERE t.status IN ('queued', 'running') AND t.run_after <= $2 AND t.lease_until < $2 \
                 AND NOT EXISTS (SELECT 1 FROM tasks e WHERE e.target_id = t.target_id AND e.status IN ('queued', 'running') \
                     AND (e.created_at < t.created_at OR (e.created_at = t.created_at AND e.id < t.id))) \
                 ORDER BY t.run_after, t.created_at LIMIT 1 FOR UPDATE OF t SKIP LOCKED) \
             AND status IN ('queued', 'running') AND lease_until < $2 \
             RETURNING id, org_id, kind, target_id, status, attempts, max_attempts, run_after, last_error, steps_done, requested_by, created_at, updated_at";
        let now = now_ms();
        let row = match self.db() {
            Db::Postgres(pool) => sqlx::query(PG).bind(now + lease_ms).bind(now).fetch_optional(pool).await?.map(|r| task_of(&r)).transpose()?,
            Db::Sqlite(pool) => sqlx::query(Q).bind(now + lease_ms).bind(now).fetch_optional(pool).await?.map(|r| task_of(&r)).transpose()?,
        };
        Ok(row)
    }

    /// Tasks queued or running (the backlog).
    pub async fn unfinished_tasks(&self) -> Result<i64, ControlError> {
        Ok(on_db!(self.db(), pool => sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE status IN ('queued', 'running')").fetch_one(pool).await?.int("n")?))
    }

    /// Records a finished step and renews the lease.
    pub async fn step_done(&self, task: &mut Task, step: &str, lease_ms: i64) -> Result<(), ControlError> {
        task.steps_done.push(step.to_owned());
        let now = now_ms();
        let steps = task.steps_done.join("\n");
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE tasks SET steps_done = $1, lease_until = $2, updated_at = $3 WHERE id = $4")
                .bind(steps).bind(now + lease_ms).bind(now).bind(&task.id).execute(pool).await?;
        });
        Ok(())
    }

    /// Extends the lease of a task still running (the worker's heartbeat during a long step).
    pub async fn renew_lease(&self, id: &str, lease_ms: i64) -> Result<(), ControlError> {
        let now = now_ms();
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE tasks SET lease_until = $1 WHERE id = $2 AND status = 'running'").bind(now + lease_ms).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn finish_task(&self, id: &str, succeeded: bool, error: &str) -> Result<(), ControlError> {
        let status = if succeeded { "succeeded" } else { "failed" };
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE tasks SET status = $1, last_error = $2, lease_until = 0, updated_at = $3 WHERE id = $4")
                .bind(status).bind(error).bind(now_ms()).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Puts the task back in the queue, to run again at `run_after`.
    pub async fn retry_task(&self, id: &str, run_after: i64, error: &str) -> Result<(), ControlError> {
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE tasks SET status = 'queued', run_after = $1, last_error = $2, lease_until = 0, updated_at = $3 WHERE id = $4")
                .bind(run_after).bind(error).bind(now_ms()).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    // ---- the audit outbox

    /// Up to `limit` audit entries not yet relayed, oldest first.
    pub async fn unsent_audit(&self, limit: i64) -> Result<Vec<(String, AuditEntry)>, ControlError> {
        let rows: Vec<(String, String)> = on_db!(self.db(), pool => sqlx::query("SELECT id, record FROM audit_outbox WHERE sent_at = 0 ORDER BY created_at, id LIMIT $1")
            .bind(limit).fetch_all(pool).await?
            .iter().map(|r| Ok::<_, ControlError>((r.text("id")?, r.text("record")?))).collect::<Result<_, _>>()?);
        Ok(rows
            .into_iter()
            .filter_map(|(id, record)| match serde_json::from_str(&record) {
                Ok(e) => Some((id, e)),
                Err(e) => {
                    tracing::error!(error = %e, id, "an audit outbox record cannot be read");
                    None
                }
            })
            .collect())
    }

    pub async fn mark_audit_sent(&self, ids: &[String]) -> Result<(), ControlError> {
        let now = now_ms();
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            for id in ids {
                sqlx::query("UPDATE audit_outbox SET sent_at = $1 WHERE id = $2").bind(now).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
