//! Serverless functions in a project: versions (code or an image), triggers (HTTP, schedule,
//! event), the provider that runs them (Fission by default, Knative for compatibility) and
//! the record of every invocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backups::check_schedule;
use crate::db::{Cols, is_unique_violation, new_id, now_ms};
use crate::model::{Project, Task, Workspace, check_name};
use crate::repo::{Actor, AuditEntry, IdempotencyKey, Render, Repo, Stored, audit, enqueue, remember, reserve};
use crate::{ControlError, on_db};

/// Code of one version at most (the body limit of the functions API is above it).
pub const MAX_CODE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    pub id: String,
    pub workspace: String,
    pub project: String,
    pub name: String,
    /// `python`, `nodejs`, `go` (Fission environments) or `container` (an image).
    pub runtime: String,
    /// `fission` or `knative`.
    pub provider: String,
    /// `deploying`, `running`, `deleting`, `deleted` or `error`.
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_reason: String,
    /// The version that is (or is being made) live.
    pub active_version: i64,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub workspace_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionVersion {
    pub number: i64,
    #[serde(skip)]
    pub code: String,
    pub code_bytes: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
    pub entrypoint: String,
    /// Names only: values may be secrets and are never returned.
    pub env: Vec<String>,
    #[serde(skip)]
    pub env_values: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Trigger {
    /// Requests to the function's route.
    Http {
        #[serde(default = "default_methods")]
        methods: Vec<String>,
    },
    /// A CronJob-style schedule.
    Schedule { cron: String },
    /// Messages on a topic.
    Event { topic: String },
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "POST".into()]
}

impl Trigger {
    fn check(&self) -> Result<(), ControlError> {
        match self {
            Trigger::Http { methods } => {
                let ok = ["GET", "POST", "PUT", "PATCH", "DELETE"];
                if methods.is_empty() || methods.iter().any(|m| !ok.contains(&m.as_str())) {
                    return Err(ControlError::Invalid { field: "triggers", message: "http methods: some of GET, POST, PUT, PATCH, DELETE".into() });
                }
                Ok(())
            }
            Trigger::Schedule { cron } => check_schedule(cron).map_err(|e| ControlError::Invalid { field: "triggers", message: e.to_string() }),
            Trigger::Event { topic } => {
                let ok = !topic.is_empty() && topic.len() <= 100 && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if ok { Ok(()) } else { Err(ControlError::Invalid { field: "triggers", message: "event topic: letters, digits, `-`, `_` and `.`".into() }) }
            }
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Http { .. } => "http",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Event { .. } => "event",
        }
    }
}

/// The code (or image) of a version, as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub image: String,
    #[serde(default = "main")]
    pub entrypoint: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn main() -> String {
    "main".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFunction {
    pub name: String,
    pub runtime: String,
    #[serde(default = "fission")]
    pub provider: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub image: String,
    #[serde(default = "main")]
    pub entrypoint: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
}

fn fission() -> String {
    "fission".into()
}

impl NewVersion {
    pub fn check(&self, runtime: &str) -> Result<(), ControlError> {
        let invalid = |field, message: &str| Err(ControlError::Invalid { field, message: message.into() });
        if runtime == "container" {
            let ok = !self.image.is_empty() && self.image.len() <= 255 && self.image.bytes().all(|b| b.is_ascii_graphic());
            if !ok || !self.code.is_empty() {
                return invalid("image", "a container function takes `image` (a registry reference) and no `code`");
            }
        } else if self.code.is_empty() || !self.image.is_empty() {
            return invalid("code", "send the function's source in `code` (or use runtime `container` with an `image`)");
        }
        if self.code.len() > MAX_CODE_BYTES {
            return invalid("code", "at most 256 KiB; package larger functions as an image");
        }
        let ok_entry =
            !self.entrypoint.is_empty() && self.entrypoint.len() <= 100 && self.entrypoint.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:".contains(&b));
        if !ok_entry {
            return invalid("entrypoint", "letters, digits, `_`, `.` and `:`");
        }
        if self.env.len() > 50 {
            return invalid("env", "at most 50 variables");
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty()
                && k.len() <= 100
                && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !k.as_bytes()[0].is_ascii_digit();
            if !ok || v.len() > 4096 {
                return invalid("env", "names of A–Z, 0–9 and `_` (not starting with a digit), values up to 4 KiB");
            }
        }
        Ok(())
    }
}

impl NewFunction {
    /// Its first version.
    pub fn version(&self) -> NewVersion {
        NewVersion { code: self.code.clone(), image: self.image.clone(), entrypoint: self.entrypoint.clone(), env: self.env.clone() }
    }

    pub fn check(&self) -> Result<(), ControlError> {
        check_name("name", &self.name, 40)?;
        if !matches!(self.runtime.as_str(), "python" | "nodejs" | "go" | "container") {
            return Err(ControlError::Invalid { field: "runtime", message: format!("`{}`: use python, nodejs, go or container", self.runtime) });
        }
        match self.provider.as_str() {
            "fission" if self.runtime == "container" => Err(ControlError::Invalid { field: "provider", message: "container functions run on knative".into() }),
            "knative" if self.runtime != "container" => {
                Err(ControlError::Invalid { field: "provider", message: "knative runs images: use runtime `container` with an `image`".into() })
            }
            "fission" | "knative" => Ok(()),
            other => Err(ControlError::Invalid { field: "provider", message: format!("`{other}`: use fission (default) or knative") }),
        }?;
        self.version().check(&self.runtime)?;
        if self.triggers.len() > 20 {
            return Err(ControlError::Invalid { field: "triggers", message: "at most 20".into() });
        }
        self.triggers.iter().try_for_each(Trigger::check)
    }
}

/// One call of a function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invocation {
    pub id: String,
    pub version: i64,
    pub trigger: String,
    /// `ok` (2xx), `error` (another status) or `unreachable`.
    pub status: String,
    pub http_status: i64,
    pub duration_ms: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub invoked_by: String,
    pub created_at: i64,
}

const FN_COLS: &str = "id, workspace_id, project, name, runtime, provider, status, status_reason, active_version, version, created_by, created_at, updated_at";

fn function_of(r: &impl Cols, ws: &str) -> Result<Function, ControlError> {
    Ok(Function {
        id: r.text("id")?,
        workspace_id: r.text("workspace_id")?,
        workspace: ws.to_owned(),
        project: r.text("project")?,
        name: r.text("name")?,
        runtime: r.text("runtime")?,
        provider: r.text("provider")?,
        status: r.text("status")?,
        status_reason: r.text("status_reason")?,
        active_version: r.int("active_version")?,
        version: r.int("version")?,
        created_by: r.text("created_by")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

fn version_of(r: &impl Cols) -> Result<FunctionVersion, ControlError> {
    let code = r.text("code")?;
    let env_values: BTreeMap<String, String> = serde_json::from_str(&r.text("env")?).unwrap_or_default();
    Ok(FunctionVersion {
        number: r.int("number")?,
        code_bytes: code.len(),
        code,
        image: r.text("image")?,
        entrypoint: r.text("entrypoint")?,
        env: env_values.keys().cloned().collect(),
        env_values,
        created_by: r.text("created_by")?,
        created_at: r.int("created_at")?,
    })
}

fn invocation_of(r: &impl Cols) -> Result<Invocation, ControlError> {
    Ok(Invocation {
        id: r.text("id")?,
        version: r.int("version")?,
        trigger: r.text("trigger_kind")?,
        status: r.text("status")?,
        http_status: r.int("http_status")?,
        duration_ms: r.int("duration_ms")?,
        error: r.text("error")?,
        invoked_by: r.text("invoked_by")?,
        created_at: r.int("created_at")?,
    })
}

impl Repo {
    pub async fn create_function(
        &self,
        actor: &Actor<'_>,
        ws: &Workspace,
        project: &Project,
        f: &NewFunction,
        idem: Option<&IdempotencyKey>,
        render: Render<'_, Function>,
    ) -> Result<(Function, Task, Stored), ControlError> {
        let now = now_ms();
        let func = Function {
            id: new_id("fn"),
            workspace_id: ws.id.clone(),
            workspace: ws.name.clone(),
            project: project.name.clone(),
            name: f.name.clone(),
            runtime: f.runtime.clone(),
            provider: f.provider.clone(),
            status: "deploying".into(),
            status_reason: String::new(),
            active_version: 1,
            version: 1,
            created_by: actor.user.to_owned(),
            created_at: now,
            updated_at: now,
        };
        let env = serde_json::to_string(&f.env).map_err(|e| ControlError::Config(e.to_string()))?;
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            reserve!(tx, actor, idem);
            sqlx::query("INSERT INTO functions (id, workspace_id, project, name, runtime, provider, status, active_version, version, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'deploying', 1, 1, $7, $8, $8)")
                .bind(&func.id).bind(&ws.id).bind(&project.name).bind(&func.name).bind(&func.runtime).bind(&func.provider).bind(actor.user).bind(now)
                .execute(&mut *tx).await
                .map_err(|e| if is_unique_violation(&e) { ControlError::AlreadyExists { kind: "function", name: func.name.clone() } } else { e.into() })?;
            sqlx::query("INSERT INTO function_versions (function_id, number, code, image, entrypoint, env, created_by, created_at) VALUES ($1, 1, $2, $3, $4, $5, $6, $7)")
                .bind(&func.id).bind(&f.code).bind(&f.image).bind(&f.entrypoint).bind(&env).bind(actor.user).bind(now)
                .execute(&mut *tx).await?;
            for (i, t) in f.triggers.iter().enumerate() {
                let spec = serde_json::to_string(t).map_err(|e| ControlError::Config(e.to_string()))?;
                sqlx::query("INSERT INTO function_triggers (id, function_id, position, kind, spec, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(new_id("trg")).bind(&func.id).bind(i as i64).bind(t.kind()).bind(spec).bind(now).execute(&mut *tx).await?;
            }
            let task = enqueue!(tx, actor, "function.deploy", &func.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, &ws.name, "function.create", &format!("workspaces/{}/projects/{}/functions/{}", ws.name, project.name, func.name), None, serde_json::to_value(&func).ok()));
            let (status, body) = render(&func, &task);
            remember!(tx, actor, idem, status, &body);
            tx.commit().await?;
            Ok((func, task, Stored { status, body }))
        })
    }

    pub async fn function(&self, ws: &Workspace, project: &str, name: &str) -> Result<Function, ControlError> {
        const Q: &str = "SELECT id, workspace_id, project, name, runtime, provider, status, status_reason, active_version, version, created_by, created_at, updated_at \
             FROM functions WHERE workspace_id = $1 AND project = $2 AND name = $3 AND status <> 'deleted'";
        debug_assert!(Q.contains(FN_COLS));
        let found = on_db!(self.db(), pool => sqlx::query(Q).bind(&ws.id).bind(project).bind(name).fetch_optional(pool).await?.map(|r| function_of(&r, &ws.name)).transpose()?);
        found.ok_or_else(|| ControlError::NotFound { kind: "function", name: name.to_owned() })
    }

    pub async fn functions(&self, ws: &Workspace, project: &str) -> Result<Vec<Function>, ControlError> {
        const Q: &str = "SELECT id, workspace_id, project, name, runtime, provider, status, status_reason, active_version, version, created_by, created_at, updated_at \
             FROM functions WHERE workspace_id = $1 AND project = $2 AND status <> 'deleted' ORDER BY name LIMIT 200";
        Ok(
            on_db!(self.db(), pool => sqlx::query(Q).bind(&ws.id).bind(project).fetch_all(pool).await?.iter().map(|r| function_of(r, &ws.name)).collect::<Result<_, _>>()?),
        )
    }

    /// A function and its workspace, by the function's id (for the worker).
    pub async fn function_by_id(&self, id: &str) -> Result<Option<(Function, Workspace)>, ControlError> {
        const Q: &str = "SELECT id, workspace_id, project, name, runtime, provider, status, status_reason, active_version, version, created_by, created_at, updated_at FROM functions WHERE id = $1";
        let row = on_db!(self.db(), pool => sqlx::query(Q).bind(id).fetch_optional(pool).await?.map(|r| function_of(&r, "")).transpose()?);
        let Some(mut f) = row else { return Ok(None) };
        let Some(ws) = self.workspace_by_id(&f.workspace_id).await? else { return Ok(None) };
        f.workspace = ws.name.clone();
        Ok(Some((f, ws)))
    }

    pub async fn versions(&self, f: &Function) -> Result<Vec<FunctionVersion>, ControlError> {
        Ok(
            on_db!(self.db(), pool => sqlx::query("SELECT number, code, image, entrypoint, env, created_by, created_at FROM function_versions WHERE function_id = $1 ORDER BY number")
            .bind(&f.id).fetch_all(pool).await?.iter().map(version_of).collect::<Result<_, _>>()?),
        )
    }

    pub async fn triggers(&self, f: &Function) -> Result<Vec<Trigger>, ControlError> {
        let specs: Vec<String> = on_db!(self.db(), pool => sqlx::query("SELECT spec FROM function_triggers WHERE function_id = $1 ORDER BY position")
            .bind(&f.id).fetch_all(pool).await?.iter().map(|r| r.text("spec")).collect::<Result<_, _>>()?);
        Ok(specs.iter().filter_map(|s| serde_json::from_str(s).ok()).collect())
    }

    /// Adds version n+1 (`Some`) or goes back to version `to` (`rollback`), and queues
    /// deploying it; `expected_version` guards against a concurrent change.
    pub async fn set_function_version(
        &self,
        actor: &Actor<'_>,
        ws: &Workspace,
        f: &Function,
        new: Option<&NewVersion>,
        rollback: Option<i64>,
    ) -> Result<(Function, Task), ControlError> {
        let now = now_ms();
        let versions = self.versions(f).await?;
        let target = match (new, rollback) {
            (Some(_), _) => versions.last().map_or(1, |v| v.number + 1),
            (None, Some(to)) if versions.iter().any(|v| v.number == to) => to,
            (None, Some(to)) => return Err(ControlError::Invalid { field: "version", message: format!("function `{}` has no version {to}", f.name) }),
            (None, None) => return Err(ControlError::Invalid { field: "version", message: "say which version".into() }),
        };
        if f.status == "deleting" {
            return Err(ControlError::Conflict(format!("function `{}` is being deleted", f.name)));
        }
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE functions SET active_version = $1, status = 'deploying', status_reason = '', version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4")
                .bind(target).bind(now).bind(&f.id).bind(f.version).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(ControlError::Conflict(format!("function `{}` changed meanwhile; read it again and retry", f.name)));
            }
            if let Some(v) = new {
                let env = serde_json::to_string(&v.env).map_err(|e| ControlError::Config(e.to_string()))?;
                sqlx::query("INSERT INTO function_versions (function_id, number, code, image, entrypoint, env, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(&f.id).bind(target).bind(&v.code).bind(&v.image).bind(&v.entrypoint).bind(env).bind(actor.user).bind(now)
                    .execute(&mut *tx).await?;
            }
            let after = Function { active_version: target, status: "deploying".into(), status_reason: String::new(), version: f.version + 1, updated_at: now, ..f.clone() };
            let task = enqueue!(tx, actor, "function.deploy", &f.id, self.max_attempts);
            let action = if new.is_some() { "function.deploy" } else { "function.rollback" };
            audit!(tx, &AuditEntry::new(actor, &ws.name, action, &format!("workspaces/{}/projects/{}/functions/{}", ws.name, f.project, f.name), serde_json::to_value(f).ok(), serde_json::to_value(&after).ok()));
            tx.commit().await?;
            Ok((after, task))
        })
    }

    pub async fn delete_function(&self, actor: &Actor<'_>, ws: &Workspace, f: &Function) -> Result<(Function, Task), ControlError> {
        let now = now_ms();
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE functions SET status = 'deleting', version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3")
                .bind(now).bind(&f.id).bind(f.version).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(ControlError::Conflict(format!("function `{}` changed meanwhile; retry", f.name)));
            }
            let after = Function { status: "deleting".into(), version: f.version + 1, updated_at: now, ..f.clone() };
            let task = enqueue!(tx, actor, "function.delete", &f.id, self.max_attempts);
            audit!(tx, &AuditEntry::new(actor, &ws.name, "function.delete", &format!("workspaces/{}/projects/{}/functions/{}", ws.name, f.project, f.name), serde_json::to_value(f).ok(), serde_json::to_value(&after).ok()));
            tx.commit().await?;
            Ok((after, task))
        })
    }

    pub async fn set_function_status(&self, id: &str, status: &str, reason: &str) -> Result<(), ControlError> {
        on_db!(self.db(), pool => {
            sqlx::query("UPDATE functions SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4").bind(status).bind(reason).bind(now_ms()).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn record_invocation(&self, f: &Function, inv: &Invocation) -> Result<(), ControlError> {
        on_db!(self.db(), pool => {
            sqlx::query("INSERT INTO function_invocations (id, function_id, version, trigger_kind, status, duration_ms, http_status, error, invoked_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(&inv.id).bind(&f.id).bind(inv.version).bind(&inv.trigger).bind(&inv.status).bind(inv.duration_ms).bind(inv.http_status).bind(&inv.error).bind(&inv.invoked_by).bind(inv.created_at)
                .execute(pool).await?;
        });
        Ok(())
    }

    pub async fn invocations(&self, f: &Function, limit: i64) -> Result<Vec<Invocation>, ControlError> {
        Ok(
            on_db!(self.db(), pool => sqlx::query("SELECT id, version, trigger_kind, status, duration_ms, http_status, error, invoked_by, created_at FROM function_invocations WHERE function_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2")
            .bind(&f.id).bind(limit).fetch_all(pool).await?.iter().map(invocation_of).collect::<Result<_, _>>()?),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(runtime: &str, provider: &str, code: &str, image: &str) -> NewFunction {
        NewFunction {
            name: "hello".into(),
            runtime: runtime.into(),
            provider: provider.into(),
            code: code.into(),
            image: image.into(),
            entrypoint: "main".into(),
            env: BTreeMap::new(),
            triggers: vec![],
        }
    }

    #[test]
    fn a_function_is_code_on_fission_or_an_image_on_knative() {
        assert!(new("python", "fission", "def main(): return 'hi'", "").check().is_ok());
        assert!(new("container", "knative", "", "ghcr.io/acme/hello:1").check().is_ok());
        assert!(new("python", "knative", "x", "").check().is_err());
        assert!(new("container", "fission", "", "img").check().is_err());
        assert!(new("python", "fission", "", "").check().is_err());
        assert!(new("cobol", "fission", "x", "").check().is_err());
        assert!(new("python", "lambda", "x", "").check().is_err());
        assert!(new("python", "fission", &"x".repeat(MAX_CODE_BYTES + 1), "").check().is_err());
        let mut f = new("python", "fission", "x", "");
        f.env.insert("lower".into(), "v".into());
        assert!(f.check().is_err());
        let t: Result<Trigger, _> = serde_json::from_str(r#"{"kind":"schedule","cron":"*/5 * * * *"}"#);
        assert!(t.is_ok_and(|t| t.check().is_ok()));
        let t: Result<Trigger, _> = serde_json::from_str(r#"{"kind":"schedule","cron":"every minute"}"#);
        assert!(t.is_ok_and(|t| t.check().is_err()));
        assert!(serde_json::from_str::<Trigger>(r#"{"kind":"webhook"}"#).is_err());
    }
}
