//! The control plane's resources as the API shows them, and the rules on their values.

use serde::{Deserialize, Serialize};

use crate::ControlError;

/// A workspace's plan: what it may use, and whether it gets nodes of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Shared,
    Dedicated,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Shared => "shared",
            Plan::Dedicated => "dedicated",
        }
    }
    pub fn parse(s: &str) -> Result<Plan, ControlError> {
        match s {
            "shared" => Ok(Plan::Shared),
            "dedicated" => Ok(Plan::Dedicated),
            _ => Err(ControlError::Invalid { field: "plan", message: format!("`{s}` is not a plan; use `shared` or `dedicated`") }),
        }
    }
    /// The quota of the workspace's host namespace (the vCluster and everything it syncs).
    pub fn workspace_quota(self) -> Quota {
        match self {
            Plan::Shared => Quota { requests_cpu: "4", requests_memory: "8Gi", limits_cpu: "8", limits_memory: "16Gi", pods: "100" },
            Plan::Dedicated => Quota { requests_cpu: "32", requests_memory: "128Gi", limits_cpu: "64", limits_memory: "256Gi", pods: "500" },
        }
    }
    /// The quota of one project's namespace.
    pub fn project_quota(self) -> Quota {
        match self {
            Plan::Shared => Quota { requests_cpu: "2", requests_memory: "4Gi", limits_cpu: "4", limits_memory: "8Gi", pods: "50" },
            Plan::Dedicated => Quota { requests_cpu: "16", requests_memory: "64Gi", limits_cpu: "32", limits_memory: "128Gi", pods: "250" },
        }
    }
    /// Container defaults in a project (LimitRange): (default limit cpu, memory, default request cpu, memory).
    pub fn container_defaults(self) -> [&'static str; 4] {
        match self {
            Plan::Shared => ["500m", "512Mi", "100m", "128Mi"],
            Plan::Dedicated => ["1", "1Gi", "250m", "256Mi"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub requests_cpu: &'static str,
    pub requests_memory: &'static str,
    pub limits_cpu: &'static str,
    pub limits_memory: &'static str,
    pub pods: &'static str,
}

/// Where a workspace or project is in its life:
/// `pending → provisioning → running ⇄ updating`, `→ deleting → deleted`, or `error` (with a
/// reason) from any step; an errored one can be updated (retried) or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Provisioning,
    Running,
    Updating,
    Deleting,
    Deleted,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Provisioning => "provisioning",
            Status::Running => "running",
            Status::Updating => "updating",
            Status::Deleting => "deleting",
            Status::Deleted => "deleted",
            Status::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Status {
        match s {
            "pending" => Status::Pending,
            "provisioning" => Status::Provisioning,
            "running" => Status::Running,
            "updating" => Status::Updating,
            "deleting" => Status::Deleting,
            "deleted" => Status::Deleted,
            _ => Status::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workspace {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub plan: Plan,
    pub status: Status,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_reason: String,
    /// Bumped by every change; send it back (`If-Match` or `version`) to update.
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Workspace {
    /// The workspace's namespace on the host cluster, where its vCluster runs.
    pub fn host_namespace(&self) -> String {
        format!("hx-{}", self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_reason: String,
    pub version: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A long operation, as `GET /api/v1/tasks/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    pub kind: String,
    pub target_id: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Steps finished so far, in order (each is done once, even across restarts).
    pub steps_done: Vec<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub org_id: String,
    #[serde(skip)]
    pub run_after: i64,
}

impl Task {
    pub fn is_finished(&self) -> bool {
        self.status == "succeeded" || self.status == "failed"
    }
}

/// A name that is a DNS label (RFC 1123) of at most `max` characters: what Kubernetes accepts
/// for namespaces, and what keeps names safe in URLs, labels and logs.
pub fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), ControlError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid {
            field, message: format!("must be 1–{max} characters of a–z, 0–9 and `-`, starting and ending with a letter or digit")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["a", "ws-a", "shop2", "a-b-c"] {
            assert!(check_name("name", good, 40).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a b", "ws-a'; drop table workspaces; --", &"x".repeat(41), "é"] {
            assert!(check_name("name", bad, 40).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [Status::Pending, Status::Provisioning, Status::Running, Status::Updating, Status::Deleting, Status::Deleted, Status::Error] {
            assert_eq!(Status::parse(s.as_str()), s);
        }
    }
}
