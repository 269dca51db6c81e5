//! Authorisation by each workspace's own Kubernetes API server: a `SubjectAccessReview` asking
//! whether the user (with their groups) may `get` `pods/log` in a namespace.
//!
//! What must hold:
//! - The review is asked of *that workspace's* API server (one client per workspace, from
//!   configuration); a workspace with no API server configured is denied.
//! - An error, a timeout or an answer without a status denies (fail closed) and is not cached.
//! - Decisions are cached (bounded; allowed for `allow_ttl`, denied for the shorter
//!   `deny_ttl`), keyed by everything the decision depends on: user, groups, workspace and
//!   namespace. A revoked RoleBinding takes effect within `allow_ttl`.
//! - With no namespaces named, a cluster-wide review (`namespace` empty) is asked first; if it
//!   is denied, the workspace's namespaces are listed (with the data plane's own credential
//!   for that API server: names only, cached as long as an allowed decision) and each is
//!   reviewed, at most `max_namespaces`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::policy::{Authorizer, BoxFuture};
use crate::scope::Namespaces;
use crate::{AuthError, Identity};

/// One workspace's API server (`[[auth.kubernetes.workspaces]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceApiServer {
    pub workspace: String,
    /// e.g. `https://ws-a.vcluster.svc:443`.
    pub url: String,
    /// A file holding the data plane's bearer token for this API server (allowed to create
    /// SubjectAccessReviews and list namespaces).
    pub token_file: Option<std::path::PathBuf>,
    /// PEM CA bundle for the API server's certificate.
    pub ca_file: Option<std::path::PathBuf>,
}

/// `[auth.kubernetes]`: SubjectAccessReview authorisation, per workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesAuthConfig {
    pub workspaces: Vec<WorkspaceApiServer>,
    pub allow_ttl_secs: u64,
    pub deny_ttl_secs: u64,
    pub cache_entries: u64,
    pub timeout_ms: u64,
    pub max_namespaces: usize,
}

impl Default for KubernetesAuthConfig {
    fn default() -> Self {
        KubernetesAuthConfig { workspaces: Vec::new(), allow_ttl_secs: 30, deny_ttl_secs: 5, cache_entries: 100_000, timeout_ms: 2_000, max_namespaces: 200 }
    }
}

/// Reviews in flight at once for one request.
const PARALLEL_REVIEWS: usize = 8;

#[derive(Clone, Hash, PartialEq, Eq)]
struct DecisionKey {
    user: String,
    groups: Vec<String>,
    workspace: String,
    /// Empty: cluster-wide.
    namespace: String,
}

struct ByOutcome {
    allow: Duration,
    deny: Duration,
}

impl moka::Expiry<DecisionKey, bool> for ByOutcome {
    fn expire_after_create(&self, _: &DecisionKey, allowed: &bool, _: Instant) -> Option<Duration> {
        Some(if *allowed { self.allow } else { self.deny })
    }
}

pub struct SubjectAccessReviewer {
    clients: BTreeMap<String, kube::Client>,
    cache: moka::future::Cache<DecisionKey, bool>,
    /// Each workspace's namespace names, kept as long as an allowed decision.
    namespace_lists: moka::future::Cache<String, Arc<Vec<String>>>,
    timeout: Duration,
    max_namespaces: usize,
}

impl std::fmt::Debug for SubjectAccessReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectAccessReviewer").field("workspaces", &self.clients.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// A client of the API server at `url` authenticated by the bearer token in `token_file`;
/// `key` names the configuration entry in errors. Must be called inside a Tokio runtime.
pub fn kube_client(
    key: &str,
    url: &str,
    token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<kube::Client, String> {
    kube::Client::try_from(kube_config(key, url, token_file, ca_file, timeout)?).map_err(|e| format!("{key}: {e}"))
}

/// The configuration [`kube_client`] builds its client from (to add impersonation, say).
pub fn kube_config(
    key: &str,
    url: &str,
    token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<kube::Config, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{key}.url: `{url}`: {e}"))?;
    let mut kc = kube::Config::new(uri);
    kc.connect_timeout = Some(timeout);
    kc.read_timeout = Some(timeout);
    if let Some(path) = token_file {
        let token = std::fs::read_to_string(path).map_err(|e| format!("{key}.token_file: {}: {e}", path.display()))?;
        kc.auth_info.token = Some(token.trim().to_owned().into());
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{key}.ca_file: {}: {e}", path.display()))?;
        kc.root_cert = Some(pem_certificates(&pem).map_err(|e| format!("{key}.ca_file: {}: {e}", path.display()))?);
    }
    Ok(kc)
}

impl SubjectAccessReviewer {
    /// Builds one client per workspace. Must be called inside a Tokio runtime.
    pub fn new(config: &KubernetesAuthConfig) -> Result<SubjectAccessReviewer, String> {
        let mut clients = BTreeMap::new();
        for (i, w) in config.workspaces.iter().enumerate() {
            let key = format!("auth.kubernetes.workspaces[{i}]");
            let client = kube_client(&key, &w.url, w.token_file.as_deref(), w.ca_file.as_deref(), Duration::from_millis(config.timeout_ms.max(1)))?;
            if clients.insert(w.workspace.clone(), client).is_some() {
                return Err(format!("{key}.workspace: `{}` is configured twice", w.workspace));
            }
        }
        let cache = moka::future::Cache::builder()
            .max_capacity(config.cache_entries.max(1))
            .expire_after(ByOutcome { allow: Duration::from_secs(config.allow_ttl_secs), deny: Duration::from_secs(config.deny_ttl_secs) })
            .build();
        let namespace_lists =
            moka::future::Cache::builder().max_capacity(clients.len().max(1) as u64).time_to_live(Duration::from_secs(config.allow_ttl_secs.max(1))).build();
        Ok(SubjectAccessReviewer {
            clients,
            cache,
            namespace_lists,
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            max_namespaces: config.max_namespaces.max(1),
        })
    }

    async fn allowed(&self, client: &kube::Client, id: &Identity, workspace: &str, namespace: &str) -> Result<bool, AuthError> {
        let key = DecisionKey {
            user: id.user.clone(),
            groups: id.groups.iter().cloned().collect(),
            workspace: workspace.to_owned(),
            namespace: namespace.to_owned(),
        };
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(hit);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(id.user.clone()),
                groups: Some(key.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                    verb: Some("get".into()),
                    resource: Some("pods".into()),
                    subresource: Some("log".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(client.clone());
        let answer = tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &review))
            .await
            .map_err(|_| AuthError::Unavailable(format!("SubjectAccessReview in {workspace}: timed out")))?
            .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview in {workspace}: {e}")))?;
        let status = answer.status.ok_or_else(|| AuthError::Unavailable(format!("SubjectAccessReview in {workspace}: no status")))?;
        let allowed = status.allowed && !status.denied.unwrap_or(false);
        self.cache.insert(key, allowed).await;
        Ok(allowed)
    }

    async fn namespaces_of(&self, client: &kube::Client, workspace: &str) -> Result<Arc<Vec<String>>, AuthError> {
        if let Some(hit) = self.namespace_lists.get(workspace).await {
            return Ok(hit);
        }
        let api: Api<Namespace> = Api::all(client.clone());
        let list = tokio::time::timeout(self.timeout, api.list(&ListParams::default().limit(self.max_namespaces as u32)))
            .await
            .map_err(|_| AuthError::Unavailable(format!("listing namespaces of {workspace}: timed out")))?
            .map_err(|e| AuthError::Unavailable(format!("listing namespaces of {workspace}: {e}")))?;
        let names: Arc<Vec<String>> = Arc::new(list.items.into_iter().filter_map(|n| n.metadata.name).take(self.max_namespaces).collect());
        self.namespace_lists.insert(workspace.to_owned(), names.clone()).await;
        Ok(names)
    }
}

impl Authorizer for SubjectAccessReviewer {
    fn namespaces<'a>(&'a self, id: &'a Identity, workspace: &'a str, wanted: Option<&'a BTreeSet<String>>) -> BoxFuture<'a, Result<Namespaces, AuthError>> {
        Box::pin(async move {
            let Some(client) = self.clients.get(workspace) else {
                tracing::warn!(workspace, "no Kubernetes API server configured for this workspace; denied");
                return Ok(Namespaces::Only(BTreeSet::new()));
            };
            let candidates: Vec<String> = match wanted {
                Some(w) => w.iter().cloned().collect(),
                None => {
                    if self.allowed(client, id, workspace, "").await? {
                        return Ok(Namespaces::All);
                    }
                    self.namespaces_of(client, workspace).await?.to_vec()
                }
            };
            // A few reviews at a time; any failure denies the whole request (fail closed).
            let decisions: Vec<Result<(String, bool), AuthError>> = futures_util::stream::iter(candidates.into_iter().take(self.max_namespaces))
                .map(|ns| async move { self.allowed(client, id, workspace, &ns).await.map(|ok| (ns, ok)) })
                .buffer_unordered(PARALLEL_REVIEWS)
                .collect()
                .await;
            let mut allowed = BTreeSet::new();
            for d in decisions {
                let (ns, ok) = d?;
                if ok {
                    allowed.insert(ns);
                }
            }
            Ok(Namespaces::Only(allowed))
        })
    }
}

/// DER certificates from a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.map(|c| c.to_vec())).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}
