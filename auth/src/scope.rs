//! [`TenantScope`]: what one request may read. Storage takes one for every read and applies it
//! itself, so a read that was not authorised does not compile.

use std::collections::BTreeSet;

use schemas::Table;

/// The namespaces (projects) of one workspace a scope covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(BTreeSet<String>),
}

impl Namespaces {
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(ns),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Namespaces::Only(s) if s.is_empty())
    }

    /// What both allow.
    pub fn intersect(&self, other: &Namespaces) -> Namespaces {
        match (self, other) {
            (Namespaces::All, o) | (o, Namespaces::All) => o.clone(),
            (Namespaces::Only(a), Namespaces::Only(b)) => Namespaces::Only(a.intersection(b).cloned().collect()),
        }
    }
}

/// One workspace and the namespaces of it the caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceGrant {
    pub(crate) workspace: String,
    pub(crate) namespaces: Namespaces,
}

impl WorkspaceGrant {
    pub fn workspace(&self) -> &str {
        &self.workspace
    }
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }
}

/// What a request may read: one table, one organisation (or every one, for platform
/// operators), and for workload logs the exact workspaces and namespaces that were authorised.
/// Only this crate makes one (see [`crate::Gate`]); fields are read through accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    pub(crate) table: Table,
    pub(crate) user: String,
    /// `None`: every organisation (platform operators on system logs).
    pub(crate) org_id: Option<String>,
    /// `None`: every workspace of the organisation (audit logs). `Some(empty)`: nothing.
    pub(crate) grants: Option<Vec<WorkspaceGrant>>,
}

impl TenantScope {
    pub fn table(&self) -> Table {
        self.table
    }
    /// Who the scope was made for (audit records, per-user limits).
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn org_id(&self) -> Option<&str> {
        self.org_id.as_deref()
    }
    pub fn grants(&self) -> Option<&[WorkspaceGrant]> {
        self.grants.as_deref()
    }

    /// Whether the scope can match no row at all.
    pub fn is_empty(&self) -> bool {
        self.grants.as_ref().is_some_and(|g| g.iter().all(|g| g.namespaces.is_empty()))
    }

    /// The workspaces of the grants (`None`: any of the organisation).
    pub fn workspaces(&self) -> Option<Vec<&str>> {
        self.grants.as_ref().map(|g| g.iter().filter(|g| !g.namespaces.is_empty()).map(|g| g.workspace.as_str()).collect())
    }

    /// Whether a row of this organisation, workspace and project is inside the scope. Every
    /// store applies the same rule (the second wall).
    pub fn allows(&self, org_id: &str, workspace: &str, project: &str) -> bool {
        if self.org_id.as_deref().is_some_and(|o| o != org_id) {
            return false;
        }
        match &self.grants {
            None => true,
            Some(grants) => grants.iter().any(|g| g.workspace == workspace && g.namespaces.contains(project)),
        }
    }
}
