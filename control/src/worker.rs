//! The task worker: claims queued operations under a lease, runs their steps against the
//! provisioner, retries with exponential backoff, and marks the resource running, deleted or
//! in error. A worker that dies leaves its task leased; once the lease runs out another claim
//! takes it and carries on after the last recorded step. Also relays the audit outbox.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};

use crate::ControlError;
use crate::backups::{BackupPolicy, BackupRun, BackupStorage, MasterKey};
use crate::db::now_ms;
use crate::function_providers::runtime_of;
use crate::manifests::BackupJob;
use crate::manifests::{self, Manifest, Oidc};
use crate::model::Workspace;
use crate::model::{Status, Task};
use crate::provider::{ProvisionError, Provisioner};
use crate::repo::{AuditEntry, Repo};

/// `[control.worker]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Tasks run at once.
    pub concurrency: usize,
    /// How long a claimed task is the claimer's; renewed at every step.
    pub lease_ms: i64,
    /// First retry delay; doubled at each attempt up to `retry_max_ms`.
    pub retry_base_ms: i64,
    pub retry_max_ms: i64,
    /// Attempts before a task fails for good.
    pub max_attempts: u32,
    /// How often the queue is looked at when nothing wakes the worker.
    pub poll_ms: u64,
    /// How often a backup or restore Job's status is read while it runs.
    pub job_poll_ms: u64,
    /// A backup or restore Job still running after this has failed.
    pub job_timeout_secs: u64,
    /// How often the Jobs that backup CronJobs started are read and recorded as runs.
    pub sync_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            lease_ms: 60_000,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            max_attempts: 6,
            poll_ms: 1_000,
            job_poll_ms: 2_000,
            job_timeout_secs: 6 * 3600,
            sync_secs: 60,
        }
    }
}

/// The delay before attempt `attempts + 1`: base · 2^(attempts−1), capped.
pub fn backoff_ms(config: &WorkerConfig, attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 30) - 1;
    config.retry_base_ms.max(1).saturating_mul(1_i64 << exp).min(config.retry_max_ms.max(1))
}

/// Where audit records go (the binary hands them to the audit log's durable pipeline). The
/// outbox keeps a record until `deliver` returns `Ok`.
pub trait AuditDelivery: Send + Sync + 'static {
    fn deliver(&self, records: Vec<schemas::AuditRecord>) -> BoxFuture<'_, Result<(), String>>;
}

pub(crate) fn audit_record(e: &AuditEntry) -> schemas::AuditRecord {
    let mut attributes = Vec::new();
    for (k, v) in [("before", &e.before), ("after", &e.after)] {
        if let Some(v) = v {
            attributes.push((k.to_owned(), v.to_string()));
        }
    }
    schemas::AuditRecord {
        timestamp_ns: e.timestamp_ms.saturating_mul(1_000_000),
        org_id: e.org_id.clone(),
        workspace: e.workspace.clone(),
        actor: e.actor.clone(),
        initiated_by: e.initiated_by.clone(),
        action: e.action.clone(),
        resource: e.resource.clone(),
        outcome: e.outcome.clone(),
        message: format!("{} {}", e.action, e.resource),
        attributes,
    }
}

#[derive(Clone)]
pub struct Worker {
    pub repo: Repo,
    pub provisioner: Arc<dyn Provisioner>,
    pub oidc: Oidc,
    pub config: WorkerConfig,
    /// Notified when a task is queued, so it starts without waiting for the next poll.
    pub wake: Arc<Notify>,
    /// Seals each workspace's backup data key.
    pub master_key: MasterKey,
    /// The image backup and restore Jobs run.
    pub backup_image: String,
}

impl Worker {
    /// Runs until `stop` turns true; tasks in flight then finish their current step or are
    /// left leased (and resumed by the next start).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        loop {
            if *stop.borrow() {
                return;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            match self.repo.claim(self.config.lease_ms).await {
                Ok(Some(task)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.execute(task).await;
                        drop(permit);
                    });
                    continue;
                }
                Ok(None) => drop(permit),
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "claiming a task failed");
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(self.config.poll_ms.max(10))) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Records the runs backup CronJobs start (their Jobs, by label) until `stop`: new ones as
    /// `running`, finished ones with their outcome, then retention as for manual runs.
    pub async fn sync_scheduled_runs(self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sync_once().await {
                tracing::warn!(error = %e, "recording scheduled backup runs failed");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(self.config.sync_secs.max(1))) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn sync_once(&self) -> Result<(), ProvisionError> {
        let db = |e: ControlError| ProvisionError::new(e.to_string(), true);
        for (policy, ws, storage) in self.repo.active_policies().await.map_err(db)? {
            let jobs = BackupJob { ws: &ws, policy: &policy, storage: &storage, image: &self.backup_image };
            let template = jobs.cronjob();
            let locator = Manifest { kind: "Job", plural: "jobs", ..template };
            let selector = format!("hexabase.io/backup-policy={}", policy.name);
            for job in self.provisioner.list(&locator, &selector).await? {
                let name = job["metadata"]["name"].as_str().unwrap_or("");
                // Runs started here (manual, restore) are followed by their own task.
                if name.is_empty() || name.starts_with("brun-") || job["metadata"]["labels"]["hexabase.io/backup-run"].is_string() {
                    continue;
                }
                let (outcome, error) = crate::cronjobs::job_outcome(&job["status"]);
                let args = job["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default();
                let location = args.iter().filter_map(|a| a.as_str()).find_map(|a| a.strip_prefix("--location=")).unwrap_or("").to_owned();
                let finished = self.repo.record_scheduled_run(&policy, &ws, name, &location, outcome, &error).await.map_err(db)?;
                if let Some(run) = finished.filter(|r| r.status == "succeeded") {
                    for old in self.repo.finish_run(&run, &policy, "succeeded", "").await.map_err(db)? {
                        self.provisioner.delete(&jobs.job(&old)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn execute(&self, mut task: Task) {
        tracing::info!(task = %task.id, kind = %task.kind, attempt = task.attempts, "task started");
        // Claimed again after workers died during every attempt: give up rather than loop.
        let outcome = if task.attempts > task.max_attempts {
            Err(ProvisionError::new("the worker stopped during each attempt", false))
        } else {
            // The lease is renewed while a step runs, however long the API server takes.
            let id = task.id.clone();
            let heartbeat = async {
                let every = Duration::from_millis((self.config.lease_ms / 3).max(100) as u64);
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = self.repo.renew_lease(&id, self.config.lease_ms).await {
                        tracing::warn!(task = %id, error = %e, "renewing a task's lease failed");
                    }
                }
            };
            tokio::select! {
                r = self.steps(&mut task) => r,
                () = heartbeat => unreachable_heartbeat(),
            }
        };
        let result = match outcome {
            Ok(()) => self.repo.finish_task(&task.id, true, "").await.map(|()| tracing::info!(task = %task.id, "task succeeded")),
            Err(e) if e.retryable && task.attempts < task.max_attempts => {
                let delay = backoff_ms(&self.config, task.attempts);
                tracing::warn!(task = %task.id, error = %e, attempt = task.attempts, retry_in_ms = delay, "task step failed; retrying");
                self.repo.retry_task(&task.id, now_ms() + delay, &e.message).await
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, attempts = task.attempts, "task failed");
                let reason = format!("{} (after {} attempts)", e.message, task.attempts);
                match self.mark(&task, Status::Error, &reason).await {
                    Ok(()) => self.repo.finish_task(&task.id, false, &reason).await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            // The lease runs out and the task is claimed again.
            tracing::error!(task = %task.id, error = %e, "recording a task's outcome failed");
        }
    }

    /// Marks the task's target with `status`.
    async fn mark(&self, task: &Task, status: Status, reason: &str) -> Result<(), ControlError> {
        match task.kind.split('.').next().unwrap_or("") {
            "workspace" => self.repo.set_workspace_status(&task.target_id, status, reason, task).await,
            "project" => self.repo.set_project_status(&task.target_id, status, reason).await,
            "backup_policy" => self.repo.set_policy_status(&task.target_id, status.as_str()).await,
            "function" => self.repo.set_function_status(&task.target_id, status.as_str(), reason).await,
            _ => match self.repo.run_by_id(&task.target_id).await? {
                Some((run, policy, _, _)) if run.status == "running" => self.repo.finish_run(&run, &policy, "failed", reason).await.map(|_| ()),
                _ => Ok(()),
            },
        }
    }

    /// Applies a backup policy's CronJob (and the data key's Secret when it encrypts).
    async fn apply_policy(&self, task: &mut Task, policy: &BackupPolicy, ws: &Workspace, storage: &BackupStorage) -> Result<(), ProvisionError> {
        let job = BackupJob { ws, policy, storage, image: &self.backup_image };
        let mut all = Vec::new();
        if policy.encrypted {
            let key = self.repo.workspace_key(ws, &self.master_key).await.map_err(|e| ProvisionError::new(e.to_string(), true))?;
            all.push(manifests::backup_key_secret(ws, &key));
        }
        all.push(job.cronjob());
        self.apply_all(task, &all).await
    }

    /// Creates a run's Job and follows it to its end; expired runs' Jobs are removed.
    async fn follow_run(&self, task: &mut Task, run: &BackupRun, policy: &BackupPolicy, ws: &Workspace, storage: &BackupStorage) -> Result<(), ProvisionError> {
        let db = |e: ControlError| ProvisionError::new(e.to_string(), true);
        let job = BackupJob { ws, policy, storage, image: &self.backup_image };
        let manifest = job.job(run);
        let mut all = Vec::new();
        if policy.encrypted {
            let key = self.repo.workspace_key(ws, &self.master_key).await.map_err(db)?;
            all.push(manifests::backup_key_secret(ws, &key));
        }
        all.push(manifest.clone());
        self.apply_all(task, &all).await?;
        let deadline = now_ms() + (self.config.job_timeout_secs as i64).saturating_mul(1000);
        loop {
            let status = self.provisioner.status(&manifest).await?;
            let Some(status) = status else {
                if let Some(note) = self.provisioner.note() {
                    self.repo.finish_run(run, policy, "planned", note).await.map_err(db)?;
                    return Ok(());
                }
                return Err(ProvisionError::new(format!("{}: the Job is gone", manifest.step()), true));
            };
            match crate::cronjobs::job_outcome(&status) {
                ("succeeded", _) => {
                    let expired = self.repo.finish_run(run, policy, "succeeded", "").await.map_err(db)?;
                    for old in expired {
                        self.provisioner.delete(&job.job(&old)).await?;
                    }
                    return Ok(());
                }
                ("failed", why) => return Err(ProvisionError::new(format!("{}: {why}", manifest.step()), false)),
                _ => {}
            }
            if now_ms() > deadline {
                return Err(ProvisionError::new(format!("{}: still running after {} s", manifest.step(), self.config.job_timeout_secs), false));
            }
            tokio::time::sleep(Duration::from_millis(self.config.job_poll_ms.max(10))).await;
        }
    }

    async fn steps(&self, task: &mut Task) -> Result<(), ProvisionError> {
        let db = |e: ControlError| ProvisionError::new(e.to_string(), true);
        let note = self.provisioner.note().unwrap_or("");
        match task.kind.as_str() {
            "workspace.provision" | "workspace.update" => {
                let Some(ws) = self.repo.workspace_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                if ws.status == Status::Deleting || ws.status == Status::Deleted {
                    return Ok(());
                }
                if ws.status == Status::Pending {
                    self.repo.set_workspace_status(&ws.id, Status::Provisioning, "", task).await.map_err(db)?;
                }
                self.apply_all(task, &manifests::workspace(&ws, &self.oidc)).await?;
                self.repo.set_workspace_status(&ws.id, Status::Running, note, task).await.map_err(db)
            }
            "workspace.delete" => {
                let Some(ws) = self.repo.workspace_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                let mut all = manifests::workspace(&ws, &self.oidc);
                all.reverse();
                self.delete_all(task, &all).await?;
                self.repo.set_workspace_status(&ws.id, Status::Deleted, note, task).await.map_err(db)
            }
            "project.create" => {
                let Some((p, ws)) = self.repo.project_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                if p.status == Status::Deleting || p.status == Status::Deleted {
                    return Ok(());
                }
                self.apply_all(task, &manifests::project(&ws, &p)).await?;
                self.repo.set_project_status(&p.id, Status::Running, note).await.map_err(db)
            }
            "project.delete" => {
                let Some((p, ws)) = self.repo.project_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                // The namespace takes its quota and limits with it.
                let ns: Vec<Manifest> = manifests::project(&ws, &p).into_iter().filter(|m| m.kind == "Namespace").collect();
                self.delete_all(task, &ns).await?;
                self.repo.set_project_status(&p.id, Status::Deleted, note).await.map_err(db)
            }
            "function.deploy" => {
                let Some((f, ws)) = self.repo.function_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                if f.status == "deleting" || f.status == "deleted" {
                    return Ok(());
                }
                let versions = self.repo.versions(&f).await.map_err(db)?;
                let Some(v) = versions.iter().find(|v| v.number == f.active_version) else {
                    return Err(ProvisionError::new(format!("function `{}` has no version {}", f.name, f.active_version), false));
                };
                let triggers = self.repo.triggers(&f).await.map_err(db)?;
                self.apply_all(task, &runtime_of(&f.provider).deploy(&ws, &f, v, &triggers)).await?;
                self.repo.set_function_status(&f.id, "running", note).await.map_err(db)
            }
            "function.delete" => {
                let Some((f, ws)) = self.repo.function_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                let versions: Vec<i64> = self.repo.versions(&f).await.map_err(db)?.iter().map(|v| v.number).collect();
                let triggers = self.repo.triggers(&f).await.map_err(db)?;
                self.delete_all(task, &runtime_of(&f.provider).remove(&ws, &f, &versions, &triggers)).await?;
                self.repo.set_function_status(&f.id, "deleted", note).await.map_err(db)
            }
            "backup_policy.apply" => {
                let Some((policy, ws, storage)) = self.repo.policy_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                if policy.status != "active" {
                    return Ok(());
                }
                self.apply_policy(task, &policy, &ws, &storage).await
            }
            "backup_policy.delete" => {
                let Some((policy, ws, storage)) = self.repo.policy_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                let cronjob = BackupJob { ws: &ws, policy: &policy, storage: &storage, image: &self.backup_image }.cronjob();
                self.delete_all(task, &[cronjob]).await?;
                self.repo.set_policy_status(&policy.id, "deleted").await.map_err(db)
            }
            "backup.run" | "backup.restore" => {
                let Some((run, policy, ws, storage)) = self.repo.run_by_id(&task.target_id).await.map_err(db)? else { return Ok(()) };
                if run.status != "running" {
                    return Ok(());
                }
                self.follow_run(task, &run, &policy, &ws, &storage).await
            }
            other => Err(ProvisionError::new(format!("unknown task kind `{other}`"), false)),
        }
    }

    async fn apply_all(&self, task: &mut Task, all: &[Manifest]) -> Result<(), ProvisionError> {
        for m in all {
            let step = format!("apply {}", m.step());
            if task.steps_done.contains(&step) {
                continue;
            }
            self.provisioner.apply(m).await?;
            self.repo.step_done(task, &step, self.config.lease_ms).await.map_err(|e| ProvisionError::new(e.to_string(), true))?;
        }
        Ok(())
    }

    async fn delete_all(&self, task: &mut Task, all: &[Manifest]) -> Result<(), ProvisionError> {
        for m in all {
            let step = format!("delete {}", m.step());
            if task.steps_done.contains(&step) {
                continue;
            }
            match self.provisioner.delete(m).await {
                Ok(()) => {}
                // Objects inside the vCluster go with it; an unreachable vCluster does not hold
                // up removing the host side.
                Err(e) if matches!(m.cluster, manifests::Cluster::Workspace { .. }) && e.unreachable => {
                    tracing::info!(error = %e, "workspace API server not reachable while deleting; its objects go with the vCluster");
                }
                Err(e) => return Err(e),
            }
            self.repo.step_done(task, &step, self.config.lease_ms).await.map_err(|e| ProvisionError::new(e.to_string(), true))?;
        }
        Ok(())
    }
}

fn unreachable_heartbeat() -> Result<(), ProvisionError> {
    Err(ProvisionError::new("the lease heartbeat stopped", true))
}

/// Relays the audit outbox to `delivery` until `stop`; a failed delivery is tried again.
pub async fn relay_audit(repo: Repo, delivery: Arc<dyn AuditDelivery>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        match repo.unsent_audit(500).await {
            Ok(batch) if !batch.is_empty() => {
                let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
                let records = batch.iter().map(|(_, e)| audit_record(e)).collect();
                match delivery.deliver(records).await {
                    Ok(()) => {
                        if let Err(e) = repo.mark_audit_sent(&ids).await {
                            tracing::warn!(error = %e, "marking audit records sent failed");
                        }
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "audit records could not be delivered; retrying"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the audit outbox failed"),
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = WorkerConfig { retry_base_ms: 100, retry_max_ms: 1_000, ..WorkerConfig::default() };
        assert_eq!([1, 2, 3, 4, 5, 60].map(|a| backoff_ms(&c, a)), [100, 200, 400, 800, 1_000, 1_000]);
    }
}
