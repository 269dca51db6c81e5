//! Applying manifests to clusters: the [`Provisioner`] contract, the Kubernetes implementation
//! (server-side apply through kube, the platform's own service identity) and the plan-only one
//! used when no cluster is configured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::manifests::{Cluster, Manifest};

/// Why applying or deleting failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProvisionError {
    pub message: String,
    pub retryable: bool,
    /// The API server could not be reached at all (no answer, as opposed to an error answer).
    pub unreachable: bool,
}

impl ProvisionError {
    pub fn new(message: impl Into<String>, retryable: bool) -> ProvisionError {
        ProvisionError { message: message.into(), retryable, unreachable: false }
    }
}

/// Where manifests go. Both operations are idempotent — applying what is there already and
/// deleting what is gone succeed — so a task that crashed half-way can run again from the
/// start of its unfinished step. Dropping a future abandons the call; the step is retried.
pub trait Provisioner: Send + Sync + 'static {
    fn apply<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<(), ProvisionError>>;
    fn delete<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<(), ProvisionError>>;
    /// The object's `status` as the API server has it; `None` when it does not exist or when
    /// nothing is really applied (plan only).
    fn status<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProvisionError>>;
    /// The objects of `m`'s kind in its namespace that carry the labels of `selector`
    /// (`k=v,k2=v2`); empty when nothing is really applied.
    fn list<'a>(&'a self, m: &'a Manifest, selector: &'a str) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ProvisionError>>;
    /// Shown in a finished task's status reason when nothing is really applied.
    fn note(&self) -> Option<&'static str> {
        None
    }
}

/// Renders manifests and applies nothing: the default when `control.kubernetes` is not set,
/// so a workspace's lifecycle can be tried on one machine (its manifests are in the log).
#[derive(Debug, Default)]
pub struct PlanOnly;

impl Provisioner for PlanOnly {
    fn apply<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            tracing::info!(step = %m.step(), "would apply (no Kubernetes configured)");
            Ok(())
        })
    }
    fn delete<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            tracing::info!(step = %m.step(), "would delete (no Kubernetes configured)");
            Ok(())
        })
    }
    fn status<'a>(&'a self, _m: &'a Manifest) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProvisionError>> {
        Box::pin(async { Ok(None) })
    }
    fn list<'a>(&'a self, _m: &'a Manifest, _selector: &'a str) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ProvisionError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn note(&self) -> Option<&'static str> {
        Some("no Kubernetes configured (control.kubernetes): manifests rendered, not applied")
    }
}

/// `[control.kubernetes]`: the host cluster and how to reach each workspace's vCluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesControlConfig {
    /// The host cluster's API server; empty means no cluster (plan only).
    pub host_url: String,
    pub host_token_file: Option<PathBuf>,
    pub host_ca_file: Option<PathBuf>,
    /// A workspace's vCluster API server; `{namespace}` and `{workspace_id}` are filled in.
    pub workspace_url: String,
    pub workspace_token_file: Option<PathBuf>,
    pub workspace_ca_file: Option<PathBuf>,
    pub timeout_ms: u64,
}

impl KubernetesControlConfig {
    pub fn workspace_url_or_default(&self) -> &str {
        if self.workspace_url.is_empty() { "https://vcluster.{namespace}.svc:443" } else { &self.workspace_url }
    }
}

const FIELD_MANAGER: &str = "hexabase-dataplane";

/// Server-side apply against real API servers, as the platform's service account.
pub struct KubeProvisioner {
    host: kube::Client,
    config: KubernetesControlConfig,
    workspaces: Mutex<HashMap<String, kube::Client>>,
}

impl std::fmt::Debug for KubeProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeProvisioner").field("host_url", &self.config.host_url).finish_non_exhaustive()
    }
}

impl KubeProvisioner {
    /// Must be called inside a Tokio runtime.
    pub fn new(config: &KubernetesControlConfig) -> Result<KubeProvisioner, String> {
        let timeout = Duration::from_millis(if config.timeout_ms == 0 { 10_000 } else { config.timeout_ms });
        let host = auth::kube_client("control.kubernetes.host", &config.host_url, config.host_token_file.as_deref(), config.host_ca_file.as_deref(), timeout)?;
        Ok(KubeProvisioner { host, config: config.clone(), workspaces: Mutex::new(HashMap::new()) })
    }

    fn client(&self, cluster: &Cluster) -> Result<kube::Client, ProvisionError> {
        let (id, namespace) = match cluster {
            Cluster::Host => return Ok(self.host.clone()),
            Cluster::Workspace { id, host_namespace } => (id, host_namespace),
        };
        let fail = |message: String| ProvisionError::new(message, false);
        let mut cache = self.workspaces.lock().map_err(|_| fail("workspace clients poisoned".into()))?;
        if let Some(c) = cache.get(id) {
            return Ok(c.clone());
        }
        let url = self.config.workspace_url_or_default().replace("{namespace}", namespace).replace("{workspace_id}", id);
        let timeout = Duration::from_millis(if self.config.timeout_ms == 0 { 10_000 } else { self.config.timeout_ms });
        let c = auth::kube_client(
            "control.kubernetes.workspace",
            &url,
            self.config.workspace_token_file.as_deref(),
            self.config.workspace_ca_file.as_deref(),
            timeout,
        )
        .map_err(fail)?;
        cache.insert(id.clone(), c.clone());
        Ok(c)
    }

    fn api(&self, m: &Manifest) -> Result<Api<DynamicObject>, ProvisionError> {
        let client = self.client(&m.cluster)?;
        let (group, version) = m.api_version.rsplit_once('/').unwrap_or(("", m.api_version));
        let ar = ApiResource { group: group.into(), version: version.into(), api_version: m.api_version.into(), kind: m.kind.into(), plural: m.plural.into() };
        Ok(match &m.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &ar),
            None => Api::all_with(client, &ar),
        })
    }
}

fn kube_error(m: &Manifest, e: kube::Error) -> ProvisionError {
    let (retryable, unreachable) = match &e {
        // Conflicts, throttling and server errors pass; a refused object (invalid, forbidden,
        // no such kind) stays refused.
        kube::Error::Api(s) => (s.code == 409 || s.code == 429 || s.code >= 500, false),
        _ => (true, true),
    };
    let message = match &e {
        kube::Error::Api(s) => format!("{}: the API server answered {} {}: {}", m.step(), s.code, s.reason, s.message),
        other => format!("{}: {other}", m.step()),
    };
    ProvisionError { message, retryable, unreachable }
}

impl Provisioner for KubeProvisioner {
    fn apply<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let api = self.api(m)?;
            api.patch(&m.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&m.body)).await.map_err(|e| kube_error(m, e))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let api = self.api(m)?;
            match api.delete(&m.name, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(kube_error(m, e)),
            }
        })
    }

    fn status<'a>(&'a self, m: &'a Manifest) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProvisionError>> {
        Box::pin(self.get_status(m))
    }

    fn list<'a>(&'a self, m: &'a Manifest, selector: &'a str) -> BoxFuture<'a, Result<Vec<serde_json::Value>, ProvisionError>> {
        Box::pin(async move {
            let api = self.api(m)?;
            let list = api.list(&kube::api::ListParams::default().labels(selector)).await.map_err(|e| kube_error(m, e))?;
            Ok(list.items.into_iter().filter_map(|o| serde_json::to_value(o).ok()).collect())
        })
    }
}

impl KubeProvisioner {
    async fn get_status(&self, m: &Manifest) -> Result<Option<serde_json::Value>, ProvisionError> {
        let api = self.api(m)?;
        let obj = api.get_opt(&m.name).await.map_err(|e| kube_error(m, e))?;
        Ok(obj.map(|o| o.data.get("status").cloned().unwrap_or(serde_json::Value::Null)))
    }
}

/// The provisioner `config` asks for.
pub fn from_config(config: &KubernetesControlConfig) -> Result<Arc<dyn Provisioner>, String> {
    if config.host_url.is_empty() { Ok(Arc::new(PlanOnly)) } else { Ok(Arc::new(KubeProvisioner::new(config)?)) }
}
