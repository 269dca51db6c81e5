//! Control operations: workspaces (a vCluster each, on the Shared or Dedicated plan, with its
//! quotas, roles and groups) and their projects (namespaces in the vCluster), behind a REST
//! API, on PostgreSQL or SQLite.
//!
//! How the parts fit:
//! - [`db::Db`] opens either database and applies the one set of migrations; [`repo::Repo`]
//!   runs the same statements on both. Each change is one transaction holding the row, its
//!   audit record (the outbox) and, for long operations, its [`model::Task`].
//! - [`api::router`] is the REST API: identity from the same tokens as the query side,
//!   organisation admins by role, workspace members by token claim or group.
//! - [`worker::Worker`] claims tasks under a lease, applies [`manifests`] through a
//!   [`provider::Provisioner`] step by step (each step recorded, so a crash resumes after the
//!   last one), retries with exponential backoff, and ends with `running`, `deleted` or `error`
//!   and a reason. [`worker::relay_audit`] hands the outbox to the audit log.
//!
//! ```text
//! POST /api/v1/workspaces {"name":"shop","plan":"dedicated"}
//!   → 201 {"data":{"name":"shop","status":"pending",…},"meta":{"task":{"id":"task-…"}}}
//! worker: host/Namespace/hx-ws-… → host/ResourceQuota → host/VCluster
//!         → workspace/ClusterRole ×2 → workspace/ClusterRoleBinding ×2 → status running
//! ```

pub mod api;
mod api_backups;
mod api_functions;
mod api_groups;
pub mod backups;
mod config;
pub mod conversations;
pub mod cronjobs;
pub mod db;
mod error;
pub mod function_providers;
pub mod functions;
pub mod groups;
mod http;
mod keys;
pub mod manifests;
pub mod model;
pub mod provider;
pub mod repo;
mod tasks;
pub mod worker;

pub use config::ControlConfig;
pub use error::ControlError;
pub use model::{Plan, Status};
