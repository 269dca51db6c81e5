//! Reading and changing the control database. Each change is one transaction that also
//! writes its audit record (and, for long operations, its task): either all of it is stored
//! or none of it.

use serde::{Deserialize, Serialize};

use crate::db::{Cols, Db, is_unique_violation, new_id, now_ms};
use crate::model::{Plan, Project, Status, Task, Workspace};
use crate::{ControlError, on_db};

/// Who is changing something, as the verified token says.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub org_id: &'a str,
    pub user: &'a str,
    /// `user`, or `agent` when the assistant acts for the user.
    pub initiated_by: &'a str,
}

/// An `Idempotency-Key` and a digest of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

/// The answer stored under an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub status: u16,
    pub body: String,
}

/// One audit record waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub timestamp_ms: i64,
    pub org_id: String,
    pub workspace: String,
    pub actor: String,
    pub initiated_by: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl AuditEntry {
    pub(crate) fn new(
        actor: &Actor<'_>,
        workspace: &str,
        action: &str,
        resource: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> AuditEntry {
        AuditEntry {
            timestamp_ms: now_ms(),
            org_id: actor.org_id.to_owned(),
            workspace: workspace.to_owned(),
            actor: actor.user.to_owned(),
            initiated_by: actor.initiated_by.to_owned(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            outcome: "ok".into(),
            before,
            after,
        }
    }
}

/// A page of a list, and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

const WORKSPACE_COLS: &str = "id, org_id, name, plan, status, status_reason, version, created_by, created_at, updated_at";

fn workspace_of(r: &impl Cols) -> Result<Workspace, ControlError> {
    Ok(Workspace {
        id: r.text("id")?,
        org_id: r.text("org_id")?,
        name: r.text("name")?,
        plan: Plan::parse(&r.text("plan")?)?,
        status: Status::parse(&r.text("status")?),
        status_reason: r.text("status_reason")?,
        version: r.int("version")?,
        created_by: r.text("created_by")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

fn project_of(r: &impl Cols, workspace: &str) -> Result<Project, ControlError> {
    Ok(Project {
        id: r.text("id")?,
        workspace: workspace.to_owned(),
        name: r.text("name")?,
        status: Status::parse(&r.text("status")?),
        status_reason: r.text("status_reason")?,
        version: r.int("version")?,
        created_by: r.text("created_by")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(crate) fn task_of(r: &impl Cols) -> Result<Task, ControlError> {
    let steps = r.text("steps_done")?;
    Ok(Task {
        id: r.text("id")?,
        org_id: r.text("org_id")?,
        kind: r.text("kind")?,
        target_id: r.text("target_id")?,
        status: r.text("status")?,
        attempts: r.int("attempts")?,
        max_attempts: r.int("max_attempts")?,
        run_after: r.int("run_after")?,
        last_error: r.text("last_error")?,
        steps_done: steps.split('\n').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        requested_by: r.text("requested_by")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// Statements used inside several transactions.
pub(crate) mod sql {
    pub const UPSERT_ORG: &str = "INSERT INTO organizations (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
    pub const UPSERT_USER: &str = "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
    pub const INSERT_AUDIT: &str = "INSERT INTO audit_outbox (id, record, created_at) VALUES ($1, $2, $3)";
    pub const INSERT_TASK: &str = "INSERT INTO tasks (id, org_id, kind, target_id, status, max_attempts, run_after, requested_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $6, $6)";
    pub const INSERT_IDEMPOTENCY: &str =
        "INSERT INTO idempotency_keys (org_id, user_id, key, request_hash, status_code, response, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub const REMEMBER_IDEMPOTENCY: &str = "UPDATE idempotency_keys SET status_code = $1, response = $2 WHERE org_id = $3 AND user_id = $4 AND key = $5";
}

/// Writes an audit entry into the outbox inside transaction `$tx`.
macro_rules! audit {
    ($tx:expr, $entry:expr) => {{
        let entry: &$crate::repo::AuditEntry = $entry;
        let record = serde_json::to_string(entry).map_err(|e| $crate::ControlError::Config(e.to_string()))?;
        sqlx::query($crate::repo::sql::INSERT_AUDIT).bind($crate::db::new_id("au")).bind(record).bind(entry.timestamp_ms).execute(&mut *$tx).await?;
    }};
}

/// Queues a task inside transaction `$tx`; evaluates to the new [`Task`].
macro_rules! enqueue {
    ($tx:expr, $actor:expr, $kind:expr, $target:expr, $max_attempts:expr) => {{
        let now = $crate::db::now_ms();
        let task = $crate::model::Task {
            id: $crate::db::new_id("task"),
            org_id: $actor.org_id.to_owned(),
            kind: $kind.to_owned(),
            target_id: $target.to_owned(),
            status: "queued".into(),
            attempts: 0,
            max_attempts: $max_attempts,
            run_after: now,
            last_error: String::new(),
            steps_done: Vec::new(),
            requested_by: $actor.user.to_owned(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query($crate::repo::sql::INSERT_TASK)
            .bind(&task.id)
            .bind(&task.org_id)
            .bind(&task.kind)
            .bind(&task.target_id)
            .bind(task.max_attempts)
            .bind(now)
            .bind(&task.requested_by)
            .execute(&mut *$tx)
            .await?;
        task
    }};
}

/// Takes the idempotency key first thing inside `$tx`: a concurrent request with the same key
/// waits on it and then fails (the caller replays the winner's answer) instead of racing to
/// create the same resource.
macro_rules! reserve {
    ($tx:expr, $actor:expr, $idem:expr) => {{
        if let Some(k) = $idem {
            sqlx::query($crate::repo::sql::INSERT_IDEMPOTENCY)
                .bind($actor.org_id)
                .bind($actor.user)
                .bind(&k.key)
                .bind(&k.request_hash)
                .bind(0_i64)
                .bind("")
                .bind($crate::db::now_ms())
                .execute(&mut *$tx)
                .await
                .map_err(
                    |e| if $crate::db::is_unique_violation(&e) { $crate::ControlError::Conflict($crate::repo::IDEMPOTENCY_RACE.into()) } else { e.into() },
                )?;
        }
    }};
}

/// Stores the answer under the key reserved in `$tx`.
macro_rules! remember {
    ($tx:expr, $actor:expr, $idem:expr, $status:expr, $body:expr) => {{
        if let Some(k) = $idem {
            sqlx::query($crate::repo::sql::REMEMBER_IDEMPOTENCY)
                .bind(i64::from($status))
                .bind($body)
                .bind($actor.org_id)
                .bind($actor.user)
                .bind(&k.key)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

pub(crate) use {audit, enqueue, remember, reserve};

/// The message of a create that lost a race on its idempotency key (replayed by the API).
pub const IDEMPOTENCY_RACE: &str = "a request with this Idempotency-Key is being processed";

/// How a created resource is answered: status and body, stored for replays.
pub type Render<'a, T> = &'a (dyn Fn(&T, &Task) -> (u16, String) + Sync);

#[derive(Debug, Clone)]
pub struct Repo {
    db: Db,
    pub(crate) max_attempts: i64,
}

impl Repo {
    pub fn new(db: Db, max_attempts: u32) -> Repo {
        Repo { db, max_attempts: i64::from(max_attempts.max(1)) }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The answer stored under `key`, if this user sent it before. The same key with a
    /// different request is a conflict.
    pub async fn replay(&self, actor: &Actor<'_>, key: &IdempotencyKey) -> Result<Option<Stored>, ControlError> {
        let row = on_db!(&self.db, pool => {
            sqlx::query("SELECT request_hash, status_code, response FROM idempotency_keys WHERE org_id = $1 AND user_id = $2 AND key = $3")
                .bind(actor.org_id).bind(actor.user).bind(&key.key)
                .fetch_optional(pool).await?
                .map(|r| Ok::<_, ControlError>((r.text("request_hash")?, r.int("status_code")?, r.text("response")?))).transpose()?
        });
        match row {
            None => Ok(None),
            Some((hash, _, _)) if hash != key.request_hash => {
                Err(ControlError::Conflict("this Idempotency-Key was used for a different request; use a new key for a new request".into()))
            }
            Some((_, status, body)) => Ok(Some(Stored { status: u16::try_from(status).unwrap_or(200), body })),
        }
    }

    // ---- workspaces

    /// Creates a workspace with its two groups (the creator in `WSAdmins`) and queues its
    /// provisioning.
    pub async fn create_workspace(
        &self,
        actor: &Actor<'_>,
        name: &str,
        plan: Plan,
        idem: Option<&IdempotencyKey>,
        render: Render<'_, Workspace>,
    ) -> Result<(Workspace, Task, Stored), ControlError> {
        let now = now_ms();
        let ws = Workspace {
            id: new_id("ws"),
            org_id: actor.org_id.to_owned(),
            name: name.to_owned(),
            plan,
            status: Status::Pending,
            status_reason: String::new(),
            version: 1,
            created_by: actor.user.to_owned(),
            created_at: now,
            updated_at: now,
        };
        let (users, admins) = (new_id("grp"), new_id("grp"));
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            reserve!(tx, actor, idem);
            sqlx::query(sql::UPSERT_ORG).bind(actor.org_id).bind(now).execute(&mut *tx).await?;
            sqlx::query(sql::UPSERT_USER).bind(actor.user).bind(now).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO members (org_id, user_id, role, created_at) VALUES ($1, $2, 'admin', $3) ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role")
                .bind(actor.org_id).bind(actor.user).bind(now).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO workspaces (id, org_id, name, plan, status, version, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)")
                .bind(&ws.id).bind(&ws.org_id).bind(&ws.name).bind(plan.as_str()).bind(ws.status.as_str()).bind(&ws.created_by).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| if is_unique_violation(&e) { ControlError::AlreadyExists { kind: "workspace", name: name.to_owned() } } else { e.into() })?;
            // Admins are users too: WSAdmins sits under WSUsers, and membership flattens upwards.
            let group = "INSERT INTO workspace_groups (id, workspace_id, name, parent_id, created_at) VALUES ($1, $2, $3, $4, $5)";
            sqlx::query(group).bind(&users).bind(&ws.id).bind("WSUsers").bind(None::<String>).bind(now).execute(&mut *tx).await?;
            sqlx::query(group).bind(&admins).bind(&ws.id).bind("WSAdmins").bind(Some(&users)).bind(now).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO group_members (group_id, user_id, created_at) VALUES ($1, $2, $3)").bind(&admins).bind(actor.user).bind(now).execute(&mut *tx).await?;
            let task = enqueue!(tx, actor, "workspace.provision", &ws.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, name, "workspace.create", &format!("workspaces/{name}"), None, serde_json::to_value(&ws).ok()));
            let (status, body) = render(&ws, &task);
            remember!(tx, actor, idem, status, &body);
            tx.commit().await?;
            Ok((ws, task, Stored { status, body }))
        })
    }

    pub async fn workspace(&self, org_id: &str, name: &str) -> Result<Workspace, ControlError> {
        const Q: &str = "SELECT id, org_id, name, plan, status, status_reason, version, created_by, created_at, updated_at FROM workspaces WHERE org_id = $1 AND name = $2 AND status <> 'deleted'";
        debug_assert!(Q.contains(WORKSPACE_COLS));
        let found = on_db!(&self.db, pool => sqlx::query(Q).bind(org_id).bind(name).fetch_optional(pool).await?.map(|r| workspace_of(&r)).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "workspace", name: name.to_owned() })
    }

    pub async fn workspace_by_id(&self, id: &str) -> Result<Option<Workspace>, ControlError> {
        const Q: &str = "SELECT id, org_id, name, plan, status, status_reason, version, created_by, created_at, updated_at FROM workspaces WHERE id = $1";
        Ok(on_db!(&self.db, pool => sqlx::query(Q).bind(id).fetch_optional(pool).await?.map(|r| workspace_of(&r)).transpose()?))
    }

    /// The organisation's live workspaces by name, `limit` after `cursor`; `only` keeps those
    /// the caller may see (all of them when `None`).
    pub async fn workspaces(
        &self,
        org_id: &str,
        cursor: &str,
        limit: usize,
        only: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<Page<Workspace>, ControlError> {
        const Q: &str = "SELECT id, org_id, name, plan, status, status_reason, version, created_by, created_at, updated_at FROM workspaces \
             WHERE org_id = $1 AND status <> 'deleted' AND name > $2 ORDER BY name LIMIT $3";
        let mut items = Vec::new();
        let mut after = cursor.to_owned();
        // Filtered pages read ahead in chunks until full or exhausted.
        loop {
            let chunk = (limit + 1).max(50) as i64;
            let rows: Vec<Workspace> = on_db!(&self.db, pool => sqlx::query(Q).bind(org_id).bind(&after).bind(chunk).fetch_all(pool).await?
                .iter().map(workspace_of).collect::<Result<_, _>>()?);
            let exhausted = (rows.len() as i64) < chunk;
            for w in rows {
                after = w.name.clone();
                if only.is_none_or(|f| f(&w.name)) {
                    items.push(w);
                }
            }
            if items.len() > limit {
                items.truncate(limit);
                let next = items.last().map(|w| w.name.clone());
                return Ok(Page { items, next_cursor: next });
            }
            if exhausted {
                return Ok(Page { items, next_cursor: None });
            }
        }
    }

    /// Changes the plan if the workspace is still at `expected_version`, and queues the update.
    pub async fn update_workspace(&self, actor: &Actor<'_>, name: &str, expected_version: i64, plan: Plan) -> Result<(Workspace, Task), ControlError> {
        let before = self.workspace(actor.org_id, name).await?;
        if !matches!(before.status, Status::Running | Status::Error) {
            return Err(ControlError::Conflict(format!("workspace `{name}` is {}; wait until it is running", before.status.as_str())));
        }
        let now = now_ms();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE workspaces SET plan = $1, status = 'updating', status_reason = '', version = version + 1, updated_at = $2 \
                 WHERE id = $3 AND version = $4 AND status IN ('running', 'error')")
                .bind(plan.as_str()).bind(now).bind(&before.id).bind(expected_version)
                .execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(ControlError::Conflict(format!(
                    "workspace `{name}` changed since version {expected_version} (now {}); read it again and retry", before.version
                )));
            }
            let after = Workspace { plan, status: Status::Updating, status_reason: String::new(), version: expected_version + 1, updated_at: now, ..before.clone() };
            let task = enqueue!(tx, actor, "workspace.update", &before.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, name, "workspace.update", &format!("workspaces/{name}"), serde_json::to_value(&before).ok(), serde_json::to_value(&after).ok()));
            tx.commit().await?;
            Ok((after, task))
        })
    }

    /// Marks the workspace (and its projects) for deletion and queues the removal of
    /// everything provisioned for it.
    pub async fn delete_workspace(&self, actor: &Actor<'_>, name: &str) -> Result<(Workspace, Task), ControlError> {
        let before = self.workspace(actor.org_id, name).await?;
        if before.status == Status::Deleting {
            return Err(ControlError::Conflict(format!("workspace `{name}` is being deleted already")));
        }
        let now = now_ms();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE workspaces SET status = 'deleting', version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3")
                .bind(now).bind(&before.id).bind(before.version).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(ControlError::Conflict(format!("workspace `{name}` changed meanwhile; retry")));
            }
            let after = Workspace { status: Status::Deleting, version: before.version + 1, updated_at: now, ..before.clone() };
            let task = enqueue!(tx, actor, "workspace.delete", &before.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, name, "workspace.delete", &format!("workspaces/{name}"), serde_json::to_value(&before).ok(), serde_json::to_value(&after).ok()));
            tx.commit().await?;
            Ok((after, task))
        })
    }

    /// Sets a workspace's status from the worker (the audit record names the task's requester).
    pub async fn set_workspace_status(&self, id: &str, status: Status, reason: &str, task: &Task) -> Result<(), ControlError> {
        let Some(before) = self.workspace_by_id(id).await? else { return Ok(()) };
        let now = now_ms();
        let actor = Actor { org_id: &before.org_id, user: &task.requested_by, initiated_by: "user" };
        let after = Workspace { status, status_reason: reason.to_owned(), updated_at: now, ..before.clone() };
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE workspaces SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4")
                .bind(status.as_str()).bind(reason).bind(now).bind(id).execute(&mut *tx).await?;
            if status == Status::Deleted {
                sqlx::query("UPDATE projects SET status = 'deleted', updated_at = $1 WHERE workspace_id = $2").bind(now).bind(id).execute(&mut *tx).await?;
            }
            let mut entry = AuditEntry::new(&actor, &before.name, &format!("workspace.{}", status.as_str()), &format!("workspaces/{}", before.name), serde_json::to_value(&before).ok(), serde_json::to_value(&after).ok());
            if status == Status::Error { entry.outcome = "error".into(); }
            audit!(tx, &entry);
            tx.commit().await?;
            Ok(())
        })
    }

    // ---- projects

    pub async fn create_project(
        &self,
        actor: &Actor<'_>,
        ws: &Workspace,
        name: &str,
        idem: Option<&IdempotencyKey>,
        render: Render<'_, Project>,
    ) -> Result<(Project, Task, Stored), ControlError> {
        let now = now_ms();
        let p = Project {
            id: new_id("prj"),
            workspace: ws.name.clone(),
            name: name.to_owned(),
            status: Status::Pending,
            status_reason: String::new(),
            version: 1,
            created_by: actor.user.to_owned(),
            created_at: now,
            updated_at: now,
        };
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            reserve!(tx, actor, idem);
            sqlx::query("INSERT INTO projects (id, workspace_id, name, status, version, created_by, created_at, updated_at) VALUES ($1, $2, $3, 'pending', 1, $4, $5, $5)")
                .bind(&p.id).bind(&ws.id).bind(name).bind(actor.user).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| if is_unique_violation(&e) { ControlError::AlreadyExists { kind: "project", name: name.to_owned() } } else { e.into() })?;
            let task = enqueue!(tx, actor, "project.create", &p.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, &ws.name, "project.create", &format!("workspaces/{}/projects/{name}", ws.name), None, serde_json::to_value(&p).ok()));
            let (status, body) = render(&p, &task);
            remember!(tx, actor, idem, status, &body);
            tx.commit().await?;
            Ok((p, task, Stored { status, body }))
        })
    }

    pub async fn project(&self, ws: &Workspace, name: &str) -> Result<Project, ControlError> {
        let found = on_db!(&self.db, pool => sqlx::query("SELECT id, name, status, status_reason, version, created_by, created_at, updated_at FROM projects WHERE workspace_id = $1 AND name = $2 AND status <> 'deleted'")
            .bind(&ws.id).bind(name).fetch_optional(pool).await?.map(|r| project_of(&r, &ws.name)).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "project", name: name.to_owned() })
    }

    /// A project and its workspace, by the project's id (for the worker).
    pub async fn project_by_id(&self, id: &str) -> Result<Option<(Project, Workspace)>, ControlError> {
        let row = on_db!(&self.db, pool => sqlx::query("SELECT workspace_id FROM projects WHERE id = $1").bind(id).fetch_optional(pool).await?.map(|r| r.text("workspace_id")).transpose()?);
        let Some(ws_id) = row else { return Ok(None) };
        let Some(ws) = self.workspace_by_id(&ws_id).await? else { return Ok(None) };
        let p = on_db!(&self.db, pool => sqlx::query("SELECT id, name, status, status_reason, version, created_by, created_at, updated_at FROM projects WHERE id = $1")
            .bind(id).fetch_optional(pool).await?.map(|r| project_of(&r, &ws.name)).transpose()?);
        Ok(p.map(|p| (p, ws)))
    }

    pub async fn projects(&self, ws: &Workspace, cursor: &str, limit: usize) -> Result<Page<Project>, ControlError> {
        let mut items: Vec<Project> = on_db!(&self.db, pool => sqlx::query("SELECT id, name, status, status_reason, version, created_by, created_at, updated_at FROM projects \
                 WHERE workspace_id = $1 AND status <> 'deleted' AND name > $2 ORDER BY name LIMIT $3")
            .bind(&ws.id).bind(cursor).bind((limit + 1) as i64).fetch_all(pool).await?
            .iter().map(|r| project_of(r, &ws.name)).collect::<Result<_, _>>()?);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|p| p.name.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub async fn delete_project(&self, actor: &Actor<'_>, ws: &Workspace, name: &str) -> Result<(Project, Task), ControlError> {
        let before = self.project(ws, name).await?;
        if before.status == Status::Deleting {
            return Err(ControlError::Conflict(format!("project `{name}` is being deleted already")));
        }
        let now = now_ms();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE projects SET status = 'deleting', version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3")
                .bind(now).bind(&before.id).bind(before.version).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(ControlError::Conflict(format!("project `{name}` changed meanwhile; retry")));
            }
            let after = Project { status: Status::Deleting, version: before.version + 1, updated_at: now, ..before.clone() };
            let task = enqueue!(tx, actor, "project.delete", &before.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, &ws.name, "project.delete", &format!("workspaces/{}/projects/{name}", ws.name), serde_json::to_value(&before).ok(), serde_json::to_value(&after).ok()));
            tx.commit().await?;
            Ok((after, task))
        })
    }

    pub async fn set_project_status(&self, id: &str, status: Status, reason: &str) -> Result<(), ControlError> {
        on_db!(&self.db, pool => {
            sqlx::query("UPDATE projects SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4")
                .bind(status.as_str()).bind(reason).bind(now_ms()).bind(id).execute(pool).await?;
        });
        Ok(())
    }
}
