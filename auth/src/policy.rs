//! Authorisation: may this identity read these namespaces of this workspace? And the [`Gate`],
//! the only maker of [`TenantScope`]s.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use schemas::Table;
use serde::Deserialize;

use crate::scope::{Namespaces, TenantScope, WorkspaceGrant};
use crate::{AuthError, Identity};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides which namespaces of a workspace an identity may read workload logs of (`get` on
/// `pods/log`).
///
/// Contract: the answer depends only on the identity and the workspace; an implementation
/// that cannot decide (its backend failed or timed out) returns an error, which denies (fail
/// closed) — it never guesses "all". Tenant hints from the request never reach it.
pub trait Authorizer: Send + Sync + 'static {
    /// `wanted`: the namespaces the request names (`None`: all it may). The answer is a subset
    /// of `wanted` when given.
    fn namespaces<'a>(
        &'a self,
        identity: &'a Identity,
        workspace: &'a str,
        wanted: Option<&'a BTreeSet<String>>,
    ) -> BoxFuture<'a, Result<Namespaces, AuthError>>;
}

/// A policy file (TOML):
///
/// ```toml
/// # Keep the default: a workspace in the token's workspace claim grants all its namespaces.
/// members_read_all = false
///
/// [[grant]]
/// users = ["alice"]          # and/or groups = ["team-shop"]
/// workspace = "ws-a"
/// namespaces = ["shop"]      # or ["*"]
/// ```
///
/// Every grant still needs the workspace to be in the token's workspace claim: a policy file
/// widens nothing beyond the workspaces the identity provider vouches for.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StaticPolicy {
    #[serde(default)]
    pub members_read_all: bool,
    #[serde(default, rename = "grant")]
    pub grants: Vec<StaticGrant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticGrant {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub workspace: String,
    pub namespaces: Vec<String>,
}

impl StaticPolicy {
    /// The default with no file: workspace members read every namespace of it.
    pub fn members_read_all() -> StaticPolicy {
        StaticPolicy { members_read_all: true, grants: Vec::new() }
    }

    pub fn load(path: &Path) -> Result<StaticPolicy, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("auth.policy_file: cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("auth.policy_file {}: {e}", path.display()))
    }
}

impl Authorizer for StaticPolicy {
    fn namespaces<'a>(&'a self, id: &'a Identity, workspace: &'a str, wanted: Option<&'a BTreeSet<String>>) -> BoxFuture<'a, Result<Namespaces, AuthError>> {
        Box::pin(async move {
            if !id.workspaces.contains(workspace) {
                return Ok(Namespaces::Only(BTreeSet::new()));
            }
            let mut allowed = if self.members_read_all { Namespaces::All } else { Namespaces::Only(BTreeSet::new()) };
            for g in &self.grants {
                let applies = g.workspace == workspace && (g.users.iter().any(|u| u == &id.user) || g.groups.iter().any(|gr| id.groups.contains(gr)));
                if !applies {
                    continue;
                }
                if g.namespaces.iter().any(|n| n == "*") {
                    allowed = Namespaces::All;
                } else if let Namespaces::Only(set) = &mut allowed {
                    set.extend(g.namespaces.iter().cloned());
                }
            }
            Ok(match wanted {
                Some(w) => allowed.intersect(&Namespaces::Only(w.clone())),
                None => allowed,
            })
        })
    }
}

/// The only maker of [`TenantScope`]s: each kind of log has its own rule (workload logs by the
/// [`Authorizer`], audit logs by organisation and role, system logs by the operator role).
#[derive(Clone)]
pub struct Gate {
    authorizer: Arc<dyn Authorizer>,
    operator_role: String,
    audit_roles: Vec<String>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("operator_role", &self.operator_role).finish_non_exhaustive()
    }
}

/// At most this many workspaces in one request's scope.
pub const MAX_SCOPE_WORKSPACES: usize = 256;

impl Gate {
    pub fn new(authorizer: Arc<dyn Authorizer>, operator_role: impl Into<String>, audit_roles: Vec<String>) -> Gate {
        Gate { authorizer, operator_role: operator_role.into(), audit_roles }
    }

    /// Workload logs. `workspaces`: the ones the request names (`None`: every workspace of the
    /// token). `projects`: the namespaces it names (`None`: all the caller may read). Naming a
    /// workspace the caller may not read is `Forbidden` (the same answer whether or not it
    /// exists); unnamed ones the caller may not read are simply left out. Naming projects none
    /// of which the caller may read is `Forbidden` too.
    pub async fn logs(&self, id: &Identity, workspaces: Option<&BTreeSet<String>>, projects: Option<&BTreeSet<String>>) -> Result<TenantScope, AuthError> {
        let candidates: Vec<String> = match workspaces {
            Some(w) => w.iter().cloned().collect(),
            None => id.workspaces.iter().cloned().collect(),
        };
        self.logs_of(id, candidates, workspaces.is_some(), true, projects).await
    }

    /// Metric series of the token's workspaces: readable by whoever may read the workload logs of
    /// the same namespaces (the same [`Authorizer`] decides). Workspaces the caller may not read
    /// are left out.
    pub async fn metrics(&self, id: &Identity) -> Result<TenantScope, AuthError> {
        let candidates: Vec<String> = id.workspaces.iter().cloned().collect();
        let mut scope = self.logs_of(id, candidates, false, false, None).await?;
        scope.table = Table::Metrics;
        Ok(scope)
    }

    /// Workload logs of the token's workspaces that `keep` accepts (a query language's
    /// matchers on the workspace label). Workspaces the caller may not read are left out, never
    /// refused, so a pattern reveals nothing about which exist.
    pub async fn logs_matching(&self, id: &Identity, keep: impl Fn(&str) -> bool, projects: Option<&BTreeSet<String>>) -> Result<TenantScope, AuthError> {
        let candidates: Vec<String> = id.workspaces.iter().filter(|w| keep(w)).cloned().collect();
        self.logs_of(id, candidates, false, false, projects).await
    }

    async fn logs_of(
        &self,
        id: &Identity,
        candidates: Vec<String>,
        named: bool,
        refuse_projects: bool,
        projects: Option<&BTreeSet<String>>,
    ) -> Result<TenantScope, AuthError> {
        if candidates.len() > MAX_SCOPE_WORKSPACES {
            return Err(AuthError::Forbidden(format!("at most {MAX_SCOPE_WORKSPACES} workspaces per query; name the ones you need")));
        }
        let mut grants = Vec::new();
        for ws in candidates {
            let ns = if id.workspaces.contains(&ws) { self.authorizer.namespaces(id, &ws, projects).await? } else { Namespaces::Only(BTreeSet::new()) };
            if ns.is_empty() {
                if named {
                    return Err(AuthError::Forbidden(format!(
                        "no permission to read logs in workspace `{ws}`{}",
                        if projects.is_some() { " for these projects" } else { "" }
                    )));
                }
                continue;
            }
            grants.push(WorkspaceGrant { workspace: ws, namespaces: ns });
        }
        if grants.is_empty() && projects.is_some() && refuse_projects {
            return Err(AuthError::Forbidden("no permission to read logs in these projects".into()));
        }
        Ok(TenantScope { table: Table::Logs, user: id.user.clone(), org_id: Some(id.org_id.clone()), grants: Some(grants) })
    }

    /// The organisation's audit log, for the roles allowed to read it.
    pub fn audit(&self, id: &Identity) -> Result<TenantScope, AuthError> {
        if !self.audit_roles.iter().any(|r| id.has_role(r)) && !id.has_role(&self.operator_role) {
            return Err(AuthError::Forbidden(format!("reading the audit log needs one of the roles {:?}", self.audit_roles)));
        }
        Ok(TenantScope { table: Table::AuditLogs, user: id.user.clone(), org_id: Some(id.org_id.clone()), grants: None })
    }

    /// The platform's own logs: platform operators only.
    pub fn system(&self, id: &Identity) -> Result<TenantScope, AuthError> {
        if !id.has_role(&self.operator_role) {
            return Err(AuthError::Forbidden("system logs are for platform operators".into()));
        }
        Ok(TenantScope { table: Table::SystemLogs, user: id.user.clone(), org_id: None, grants: None })
    }
}
