//! `[control]`: the control database, who administers an organisation, the worker and the
//! clusters it provisions.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::provider::KubernetesControlConfig;
use crate::worker::WorkerConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `postgres://user:password@host/db` or `sqlite://path`; empty is SQLite at
    /// `data_dir/control.db`.
    pub database_url: String,
    pub max_connections: u32,
    /// The token role that makes a user an administrator of their organisation.
    pub admin_role: String,
    /// The OIDC client id workspace API servers accept tokens for.
    pub oidc_client_id: String,
    pub worker: WorkerConfig,
    pub kubernetes: KubernetesControlConfig,
    /// The AES-256 key (64 hex digits) that seals each workspace's backup key; empty is
    /// `data_dir/control-master-key`, made on first start.
    pub master_key_file: String,
    /// The image backup and restore Jobs run.
    pub backup_image: String,
    pub functions: crate::function_providers::FunctionsConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            database_url: String::new(),
            max_connections: 16,
            admin_role: "org-admin".into(),
            oidc_client_id: "hexabase".into(),
            worker: WorkerConfig::default(),
            kubernetes: KubernetesControlConfig::default(),
            master_key_file: String::new(),
            backup_image: "ghcr.io/hexabase/backup-agent:1".into(),
            functions: Default::default(),
        }
    }
}

impl ControlConfig {
    /// The database URL in effect.
    pub fn database_url(&self, data_dir: &Path) -> String {
        if self.database_url.is_empty() { format!("sqlite://{}", data_dir.join("control.db").display()) } else { self.database_url.clone() }
    }

    pub fn master_key_path(&self, data_dir: &Path) -> std::path::PathBuf {
        if self.master_key_file.is_empty() { data_dir.join("control-master-key") } else { std::path::PathBuf::from(&self.master_key_file) }
    }

    /// Checks what can be checked without I/O; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.database_url;
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:")) {
            return Err("control.database_url: use postgres://… or sqlite://…".into());
        }
        if self.admin_role.is_empty() {
            return Err("control.admin_role: must not be empty".into());
        }
        if self.worker.concurrency == 0 || self.worker.lease_ms < 1_000 {
            return Err("control.worker: concurrency ≥ 1 and lease_ms ≥ 1000".into());
        }
        Ok(())
    }
}
