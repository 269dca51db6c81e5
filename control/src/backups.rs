//! Backups of Dedicated workspaces: storages (where backups go), policies (a CronJob each:
//! schedule, kind, retention, encryption), runs (recorded, retained, restorable) and the
//! per-workspace data key that encrypts them.
//!
//! The data key is 32 random bytes, sealed under the server's master key (`keys.rs`) before it
//! is stored; it is unsealed only to write the workspace's `backup-key` Secret, and never
//! logged, audited or returned.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::db::{Cols, is_unique_violation, new_id, now_ms};
pub use crate::keys::MasterKey;
use crate::model::{Plan, Task, Workspace, check_name};
use crate::repo::{Actor, AuditEntry, IdempotencyKey, Render, Repo, Stored, audit, enqueue, remember, reserve};
use crate::{ControlError, on_db};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupStorage {
    pub id: String,
    pub workspace: String,
    pub name: String,
    /// `s3` (S3 and compatible stores) or `gcs`.
    pub kind: String,
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    /// The Secret (in the workspace's host namespace) with the storage's credentials.
    pub credentials_secret: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupPolicy {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub storage: String,
    /// A Kubernetes CronJob schedule: five fields or `@daily`-style.
    pub schedule: String,
    /// `full`, `incremental` or `application`.
    pub kind: String,
    /// Successful runs kept; older ones are expired.
    pub retention_count: i64,
    pub encrypted: bool,
    /// `active`, `deleting` or `deleted`.
    pub status: String,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl BackupPolicy {
    /// The CronJob's name in the workspace's host namespace.
    pub fn cronjob_name(&self) -> String {
        format!("backup-{}", self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRun {
    pub id: String,
    pub policy: String,
    /// `running`, `succeeded`, `failed`, `expired`, or `planned` (no cluster configured).
    pub status: String,
    /// `manual`, `schedule` or `restore`.
    pub trigger: String,
    pub location: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub started_at: i64,
    pub finished_at: i64,
    #[serde(skip)]
    pub policy_id: String,
}

/// Checks a CronJob schedule: five fields (minute hour day-of-month month day-of-week), each
/// `*`, a number, a range, a list or a step within its bounds, or one of the `@` macros.
pub fn check_schedule(s: &str) -> Result<(), ControlError> {
    let bad = |m: String| Err(ControlError::Invalid { field: "schedule", message: m });
    if matches!(s, "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly") {
        return Ok(());
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return bad(format!("`{s}`: use five fields (minute hour day-of-month month day-of-week), like `0 2 * * *`, or @daily"));
    }
    let bounds = [(0, 59, "minute"), (0, 23, "hour"), (1, 31, "day of month"), (1, 12, "month"), (0, 7, "day of week")];
    for (field, (lo, hi, what)) in fields.iter().zip(bounds) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step
                && !st.parse::<u32>().is_ok_and(|n| n >= 1 && n <= hi)
            {
                return bad(format!("`{part}`: the step of the {what} must be 1–{hi}"));
            }
            if range == "*" {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
                return bad(format!("`{part}`: the {what} must be numbers ({lo}–{hi}), ranges, lists or steps"));
            };
            if a < lo || b > hi || a > b {
                return bad(format!("`{part}`: the {what} must lie in {lo}–{hi}"));
            }
        }
    }
    Ok(())
}

/// Backups need the Dedicated plan.
pub fn require_dedicated(ws: &Workspace) -> Result<(), ControlError> {
    if ws.plan == Plan::Dedicated {
        Ok(())
    } else {
        Err(ControlError::PlanNotAllowed(format!("workspace `{}` is on the Shared plan; backups need the Dedicated plan (PATCH its plan first)", ws.name)))
    }
}

fn storage_of(r: &impl Cols, ws: &str) -> Result<BackupStorage, ControlError> {
    Ok(BackupStorage {
        id: r.text("id")?,
        workspace: ws.to_owned(),
        name: r.text("name")?,
        kind: r.text("kind")?,
        bucket: r.text("bucket")?,
        endpoint: r.text("endpoint")?,
        region: r.text("region")?,
        credentials_secret: r.text("credentials_secret")?,
        created_at: r.int("created_at")?,
    })
}

fn policy_of(r: &impl Cols, ws: &str) -> Result<BackupPolicy, ControlError> {
    Ok(BackupPolicy {
        id: r.text("id")?,
        workspace: ws.to_owned(),
        name: r.text("name")?,
        storage: r.text("storage")?,
        schedule: r.text("schedule")?,
        kind: r.text("kind")?,
        retention_count: r.int("retention_count")?,
        encrypted: r.int("encrypted")? != 0,
        status: r.text("status")?,
        version: r.int("version")?,
        created_by: r.text("created_by")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

fn run_of(r: &impl Cols, policy: &str) -> Result<BackupRun, ControlError> {
    Ok(BackupRun {
        id: r.text("id")?,
        policy: policy.to_owned(),
        policy_id: r.text("policy_id")?,
        status: r.text("status")?,
        trigger: r.text("trigger_kind")?,
        location: r.text("location")?,
        error: r.text("error")?,
        started_at: r.int("started_at")?,
        finished_at: r.int("finished_at")?,
    })
}

/// What a new storage is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStorage {
    pub name: String,
    #[serde(default = "s3")]
    pub kind: String,
    pub bucket: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub region: String,
    pub credentials_secret: String,
}

fn s3() -> String {
    "s3".into()
}

impl NewStorage {
    pub fn check(&self) -> Result<(), ControlError> {
        check_name("name", &self.name, 40)?;
        check_name("credentials_secret", &self.credentials_secret, 63)?;
        if !matches!(self.kind.as_str(), "s3" | "gcs") {
            return Err(ControlError::Invalid { field: "kind", message: format!("`{}`: use `s3` or `gcs`", self.kind) });
        }
        let ok_bucket = !self.bucket.is_empty()
            && self.bucket.len() <= 63
            && self.bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !ok_bucket {
            return Err(ControlError::Invalid { field: "bucket", message: "3–63 characters of a–z, 0–9, `-` and `.`".into() });
        }
        if !(self.endpoint.is_empty() || self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) || self.endpoint.len() > 200 {
            return Err(ControlError::Invalid { field: "endpoint", message: "an http(s) URL, or empty for the provider's default".into() });
        }
        if self.region.len() > 40 || !self.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ControlError::Invalid { field: "region", message: "letters, digits and `-`".into() });
        }
        Ok(())
    }
}

/// What a new policy is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    pub name: String,
    pub storage: String,
    pub schedule: String,
    #[serde(default = "full")]
    pub kind: String,
    #[serde(default = "seven")]
    pub retention_count: i64,
    #[serde(default = "yes")]
    pub encrypted: bool,
}

fn full() -> String {
    "full".into()
}
fn seven() -> i64 {
    7
}
fn yes() -> bool {
    true
}

impl NewPolicy {
    pub fn check(&self) -> Result<(), ControlError> {
        check_name("name", &self.name, 40)?;
        check_schedule(&self.schedule)?;
        if !matches!(self.kind.as_str(), "full" | "incremental" | "application") {
            return Err(ControlError::Invalid { field: "kind", message: format!("`{}`: use `full`, `incremental` or `application`", self.kind) });
        }
        if !(1..=1000).contains(&self.retention_count) {
            return Err(ControlError::Invalid { field: "retention_count", message: "between 1 and 1000".into() });
        }
        Ok(())
    }
}

const POLICY_Q: &str = "SELECT p.id, p.name, s.name AS storage, p.schedule, p.kind, p.retention_count, p.encrypted, p.status, p.version, p.created_by, p.created_at, p.updated_at \
     FROM backup_policies p JOIN backup_storages s ON s.id = p.storage_id";

impl Repo {
    pub async fn create_storage(&self, actor: &Actor<'_>, ws: &Workspace, s: &NewStorage) -> Result<BackupStorage, ControlError> {
        let st = BackupStorage {
            id: new_id("bst"),
            workspace: ws.name.clone(),
            name: s.name.clone(),
            kind: s.kind.clone(),
            bucket: s.bucket.clone(),
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            credentials_secret: s.credentials_secret.clone(),
            created_at: now_ms(),
        };
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO backup_storages (id, workspace_id, name, kind, bucket, endpoint, region, credentials_secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(&st.id).bind(&ws.id).bind(&st.name).bind(&st.kind).bind(&st.bucket).bind(&st.endpoint).bind(&st.region).bind(&st.credentials_secret).bind(st.created_at)
                .execute(&mut *tx).await
                .map_err(|e| if is_unique_violation(&e) { ControlError::AlreadyExists { kind: "backup storage", name: st.name.clone() } } else { e.into() })?;
            audit!(tx, &AuditEntry::new(actor, &ws.name, "backup_storage.create", &format!("workspaces/{}/backup-storages/{}", ws.name, st.name), None, serde_json::to_value(&st).ok()));
            tx.commit().await?;
            Ok(st)
        })
    }

    pub async fn storages(&self, ws: &Workspace) -> Result<Vec<BackupStorage>, ControlError> {
        Ok(
            on_db!(self.db(), pool => sqlx::query("SELECT id, name, kind, bucket, endpoint, region, credentials_secret, created_at FROM backup_storages WHERE workspace_id = $1 ORDER BY name")
            .bind(&ws.id).fetch_all(pool).await?.iter().map(|r| storage_of(r, &ws.name)).collect::<Result<_, _>>()?),
        )
    }

    /// The workspace's sealed data key, made (and sealed with `master`) on first use.
    pub async fn workspace_key(&self, ws: &Workspace, master: &MasterKey) -> Result<Vec<u8>, ControlError> {
        let sealed = on_db!(self.db(), pool => sqlx::query("SELECT sealed_key FROM workspace_keys WHERE workspace_id = $1").bind(&ws.id).fetch_optional(pool).await?.map(|r| r.text("sealed_key")).transpose()?);
        if let Some(s) = sealed {
            return master.open(&s, &ws.id);
        }
        let mut key = [0u8; 32];
        SystemRandom::new().fill(&mut key).map_err(|_| ControlError::Config("no system randomness".into()))?;
        let sealed = master.seal(&key, &ws.id)?;
        on_db!(self.db(), pool => {
            sqlx::query("INSERT INTO workspace_keys (workspace_id, sealed_key, created_at) VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO NOTHING")
                .bind(&ws.id).bind(&sealed).bind(now_ms()).execute(pool).await?;
        });
        // Another request may have won the insert: what is stored is the key.
        let stored = on_db!(self.db(), pool => sqlx::query("SELECT sealed_key FROM workspace_keys WHERE workspace_id = $1").bind(&ws.id).fetch_one(pool).await?.text("sealed_key")?);
        master.open(&stored, &ws.id)
    }

    pub async fn create_policy(
        &self,
        actor: &Actor<'_>,
        ws: &Workspace,
        p: &NewPolicy,
        idem: Option<&IdempotencyKey>,
        render: Render<'_, BackupPolicy>,
    ) -> Result<(BackupPolicy, Task, Stored), ControlError> {
        require_dedicated(ws)?;
        let storage_id = on_db!(self.db(), pool => sqlx::query("SELECT id FROM backup_storages WHERE workspace_id = $1 AND name = $2").bind(&ws.id).bind(&p.storage).fetch_optional(pool).await?.map(|r| r.text("id")).transpose()?);
        let Some(storage_id) = storage_id else {
            return Err(ControlError::Invalid {
                field: "storage",
                message: format!("no backup storage `{}` in workspace `{}`; create it first", p.storage, ws.name),
            });
        };
        let now = now_ms();
        let policy = BackupPolicy {
            id: new_id("bpol"),
            workspace: ws.name.clone(),
            name: p.name.clone(),
            storage: p.storage.clone(),
            schedule: p.schedule.clone(),
            kind: p.kind.clone(),
            retention_count: p.retention_count,
            encrypted: p.encrypted,
            status: "active".into(),
            version: 1,
            created_by: actor.user.to_owned(),
            created_at: now,
            updated_at: now,
        };
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            reserve!(tx, actor, idem);
            sqlx::query("INSERT INTO backup_policies (id, workspace_id, name, storage_id, schedule, kind, retention_count, encrypted, status, version, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', 1, $9, $10, $10)")
                .bind(&policy.id).bind(&ws.id).bind(&policy.name).bind(&storage_id).bind(&policy.schedule).bind(&policy.kind)
                .bind(policy.retention_count).bind(i64::from(policy.encrypted)).bind(actor.user).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| if is_unique_violation(&e) { ControlError::AlreadyExists { kind: "backup policy", name: policy.name.clone() } } else { e.into() })?;
            let task = enqueue!(tx, actor, "backup_policy.apply", &policy.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, &ws.name, "backup_policy.create", &format!("workspaces/{}/backup-policies/{}", ws.name, policy.name), None, serde_json::to_value(&policy).ok()));
            let (status, body) = render(&policy, &task);
            remember!(tx, actor, idem, status, &body);
            tx.commit().await?;
            Ok((policy, task, Stored { status, body }))
        })
    }

    pub async fn policy(&self, ws: &Workspace, name: &str) -> Result<BackupPolicy, ControlError> {
        const Q: &str = "SELECT p.id, p.name, s.name AS storage, p.schedule, p.kind, p.retention_count, p.encrypted, p.status, p.version, p.created_by, p.created_at, p.updated_at \
             FROM backup_policies p JOIN backup_storages s ON s.id = p.storage_id WHERE p.workspace_id = $1 AND p.name = $2 AND p.status <> 'deleted'";
        debug_assert!(Q.starts_with(POLICY_Q));
        let found = on_db!(self.db(), pool => sqlx::query(Q).bind(&ws.id).bind(name).fetch_optional(pool).await?.map(|r| policy_of(&r, &ws.name)).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "backup policy", name: name.to_owned() })
    }

    pub async fn policies(&self, ws: &Workspace) -> Result<Vec<BackupPolicy>, ControlError> {
        const Q: &str = "SELECT p.id, p.name, s.name AS storage, p.schedule, p.kind, p.retention_count, p.encrypted, p.status, p.version, p.created_by, p.created_at, p.updated_at \
             FROM backup_policies p JOIN backup_storages s ON s.id = p.storage_id WHERE p.workspace_id = $1 AND p.status <> 'deleted' ORDER BY p.name";
        Ok(on_db!(self.db(), pool => sqlx::query(Q).bind(&ws.id).fetch_all(pool).await?.iter().map(|r| policy_of(r, &ws.name)).collect::<Result<_, _>>()?))
    }

    /// A policy, its workspace and storage, by the policy's id (for the worker).
    pub async fn policy_by_id(&self, id: &str) -> Result<Option<(BackupPolicy, Workspace, BackupStorage)>, ControlError> {
        let ws_id = on_db!(self.db(), pool => sqlx::query("SELECT workspace_id FROM backup_policies WHERE id = $1").bind(id).fetch_optional(pool).await?.map(|r| r.text("workspace_id")).transpose()?);
        let Some(ws_id) = ws_id else { return Ok(None) };
        let Some(ws) = self.workspace_by_id(&ws_id).await? else { return Ok(None) };
        const Q: &str = "SELECT p.id, p.name, s.name AS storage, p.schedule, p.kind, p.retention_count, p.encrypted, p.status, p.version, p.created_by, p.created_at, p.updated_at \
             FROM backup_policies p JOIN backup_storages s ON s.id = p.storage_id WHERE p.id = $1";
        let Some(policy) = on_db!(self.db(), pool => sqlx::query(Q).bind(id).fetch_optional(pool).await?.map(|r| policy_of(&r, &ws.name)).transpose()?) else {
            return Ok(None);
        };
        let storage = self.storages(&ws).await?.into_iter().find(|s| s.name == policy.storage);
        Ok(storage.map(|s| (policy, ws, s)))
    }

    pub async fn delete_policy(&self, actor: &Actor<'_>, ws: &Workspace, name: &str) -> Result<(BackupPolicy, Task), ControlError> {
        let before = self.policy(ws, name).await?;
        if before.status == "deleting" {
            return Err(ControlError::Conflict(format!("backup policy `{name}` is being deleted already")));
        }
        let now = now_ms();
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE backup_policies SET status = 'deleting', version = version + 1, updated_at = $1 WHERE id = $2").bind(now).bind(&before.id).execute(&mut *tx).await?;
            let after = BackupPolicy { status: "deleting".into(), version: before.version + 1, updated_at: now, ..before.clone() };
            let task = enqueue!(tx, actor, "backup_policy.delete", &before.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, &ws.name, "backup_policy.delete", &format!("workspaces/{}/backup-policies/{name}", ws.name), serde_json::to_value(&before).ok(), serde_json::to_value(&after).ok()));
            tx.commit().await?;
            Ok((after, task))
        })
    }

    pub async fn set_policy_status(&self, id: &str, status: &str) -> Result<(), ControlError> {
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE backup_policies SET status = $1, updated_at = $2 WHERE id = $3").bind(status).bind(now_ms()).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Starts a run of `policy` (`manual`) or a restore from run `from` (`restore`); the
    /// worker creates its Job and follows it.
    pub async fn start_run(
        &self,
        actor: &Actor<'_>,
        ws: &Workspace,
        policy: &BackupPolicy,
        trigger: &str,
        from: Option<&BackupRun>,
    ) -> Result<(BackupRun, Task), ControlError> {
        let now = now_ms();
        let id = new_id("brun");
        let location = match from {
            Some(r) => r.location.clone(),
            None => format!("{}/{}/{}", ws.id, policy.name, id),
        };
        let run = BackupRun {
            id,
            policy: policy.name.clone(),
            policy_id: policy.id.clone(),
            status: "running".into(),
            trigger: trigger.to_owned(),
            location,
            error: String::new(),
            started_at: now,
            finished_at: 0,
        };
        let kind = if trigger == "restore" { "backup.restore" } else { "backup.run" };
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO backup_runs (id, policy_id, workspace_id, status, trigger_kind, location, started_at) VALUES ($1, $2, $3, 'running', $4, $5, $6)")
                .bind(&run.id).bind(&policy.id).bind(&ws.id).bind(trigger).bind(&run.location).bind(now).execute(&mut *tx).await?;
            let task = enqueue!(tx, actor, kind, &run.id, self.max_attempts);
            let action = if trigger == "restore" { "backup.restore" } else { "backup.run" };
            audit!(tx, &AuditEntry::new(actor, &ws.name, action, &format!("workspaces/{}/backup-policies/{}/runs/{}", ws.name, policy.name, run.id), None, serde_json::to_value(&run).ok()));
            tx.commit().await?;
            Ok((run, task))
        })
    }

    pub async fn runs(&self, ws: &Workspace, policy: &BackupPolicy) -> Result<Vec<BackupRun>, ControlError> {
        Ok(
            on_db!(self.db(), pool => sqlx::query("SELECT id, policy_id, status, trigger_kind, location, error, started_at, finished_at FROM backup_runs WHERE workspace_id = $1 AND policy_id = $2 ORDER BY started_at DESC, id DESC LIMIT 200")
            .bind(&ws.id).bind(&policy.id).fetch_all(pool).await?.iter().map(|r| run_of(r, &policy.name)).collect::<Result<_, _>>()?),
        )
    }

    pub async fn run(&self, ws: &Workspace, id: &str) -> Result<BackupRun, ControlError> {
        let found = on_db!(self.db(), pool => sqlx::query("SELECT r.id, r.policy_id, p.name AS policy, r.status, r.trigger_kind, r.location, r.error, r.started_at, r.finished_at \
                 FROM backup_runs r JOIN backup_policies p ON p.id = r.policy_id WHERE r.workspace_id = $1 AND r.id = $2")
            .bind(&ws.id).bind(id).fetch_optional(pool).await?.map(|r| { let p = r.text("policy")?; run_of(&r, &p) }).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "backup run", name: id.to_owned() })
    }

    /// A run and its policy, workspace and storage, by the run's id (for the worker).
    pub async fn run_by_id(&self, id: &str) -> Result<Option<(BackupRun, BackupPolicy, Workspace, BackupStorage)>, ControlError> {
        let row = on_db!(self.db(), pool => sqlx::query("SELECT id, policy_id, status, trigger_kind, location, error, started_at, finished_at FROM backup_runs WHERE id = $1")
            .bind(id).fetch_optional(pool).await?.map(|r| run_of(&r, "")).transpose()?);
        let Some(mut run) = row else { return Ok(None) };
        let Some((policy, ws, storage)) = self.policy_by_id(&run.policy_id).await? else { return Ok(None) };
        run.policy = policy.name.clone();
        Ok(Some((run, policy, ws, storage)))
    }

    /// Every active policy of every workspace, with its workspace and storage (for the sync of
    /// scheduled runs).
    pub async fn active_policies(&self) -> Result<Vec<(BackupPolicy, Workspace, BackupStorage)>, ControlError> {
        let ids: Vec<String> = on_db!(self.db(), pool => sqlx::query("SELECT id FROM backup_policies WHERE status = 'active' ORDER BY id LIMIT 10000")
            .fetch_all(pool).await?.iter().map(|r| r.text("id")).collect::<Result<_, _>>()?);
        let mut out = Vec::new();
        for id in ids {
            if let Some(found) = self.policy_by_id(&id).await? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// Records a run the CronJob started (`id` = its Job's name) in the state its Job is in.
    /// Returns the run when this call saw it finish (so retention can follow), else `None`.
    pub async fn record_scheduled_run(
        &self,
        policy: &BackupPolicy,
        ws: &Workspace,
        id: &str,
        location: &str,
        status: &str,
        error: &str,
    ) -> Result<Option<BackupRun>, ControlError> {
        let now = now_ms();
        let before: Option<String> = on_db!(self.db(), pool => sqlx::query("SELECT status FROM backup_runs WHERE id = $1").bind(id).fetch_optional(pool).await?.map(|r| r.text("status")).transpose()?);
        if before.as_deref().is_some_and(|b| b != "running") {
            return Ok(None);
        }
        on_db!(self.db(), pool => {
            sqlx::query("INSERT INTO backup_runs (id, policy_id, workspace_id, status, trigger_kind, location, error, started_at, finished_at) VALUES ($1, $2, $3, $4, 'schedule', $5, $6, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error, finished_at = excluded.finished_at")
                .bind(id).bind(&policy.id).bind(&ws.id).bind(status).bind(location).bind(error).bind(now).bind(if status == "running" { 0 } else { now })
                .execute(pool).await?;
        });
        if status == "running" {
            return Ok(None);
        }
        Ok(Some(BackupRun {
            id: id.to_owned(),
            policy: policy.name.clone(),
            policy_id: policy.id.clone(),
            status: status.to_owned(),
            trigger: "schedule".into(),
            location: location.to_owned(),
            error: error.to_owned(),
            started_at: now,
            finished_at: now,
        }))
    }

    /// Ends a run; after a successful backup, runs beyond the policy's retention are expired
    /// (oldest first) and returned, so their Jobs can be removed.
    pub async fn finish_run(&self, run: &BackupRun, policy: &BackupPolicy, status: &str, error: &str) -> Result<Vec<BackupRun>, ControlError> {
        let now = now_ms();
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE backup_runs SET status = $1, error = $2, finished_at = $3 WHERE id = $4").bind(status).bind(error).bind(now).bind(&run.id).execute(pool).await?;
        });
        if status != "succeeded" || run.trigger == "restore" {
            return Ok(Vec::new());
        }
        let kept: Vec<BackupRun> = on_db!(self.db(), pool => sqlx::query("SELECT id, policy_id, status, trigger_kind, location, error, started_at, finished_at FROM backup_runs \
                 WHERE policy_id = $1 AND status = 'succeeded' AND trigger_kind <> 'restore' ORDER BY started_at DESC, id DESC")
            .bind(&policy.id).fetch_all(pool).await?.iter().map(|r| run_of(r, &policy.name)).collect::<Result<_, _>>()?);
        let expired: Vec<BackupRun> = kept.into_iter().skip(policy.retention_count.max(1) as usize).collect();
        for r in &expired {
            on_db!(self.db(), pool => {
                sqlx::query("UPDATE backup_runs SET status = 'expired' WHERE id = $1").bind(&r.id).execute(pool).await?;
            });
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked_like_cronjobs() {
        for good in ["0 2 * * *", "*/15 * * * *", "0 0 1,15 * 1-5", "@daily", "30 3 * 1-12/2 0", "59 23 31 12 7"] {
            assert!(check_schedule(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "a b c d e",
            "5-1 * * * *",
            "@often",
            "0 2 * * * *",
            "1;rm -rf / * * * *",
        ] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
    }
}
