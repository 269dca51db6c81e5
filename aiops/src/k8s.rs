//! Kubernetes tools, always as the asking user: every request to a workspace's API server
//! impersonates the user and their groups (`Impersonate-User`, `Impersonate-Group`, set by us
//! on a client built for the call; nothing of the chat request's headers is passed on), so that
//! server's RBAC decides. There is no fallback to the data plane's own identity: a call without
//! a user is refused here, and a 403 from the API server is the answer. Secrets are never read,
//! and environment values are masked in everything returned.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, LogParams};
use sandbox::{ToolClass, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tools::{Tool, ToolContext, parse_args, schema_of};

/// Objects listed at most; lines of a pod's log at most.
pub const MAX_ITEMS: usize = 200;
pub const MAX_LOG_LINES: i64 = 100;

/// Where each workspace's API server is (the `auth.kubernetes.workspaces` entries).
#[derive(Debug, Clone, Default)]
pub struct WorkspaceClusters {
    servers: BTreeMap<String, auth::WorkspaceApiServer>,
    timeout: Duration,
}

impl WorkspaceClusters {
    pub fn new(config: &auth::KubernetesAuthConfig) -> WorkspaceClusters {
        WorkspaceClusters {
            servers: config.workspaces.iter().map(|w| (w.workspace.clone(), w.clone())).collect(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// A client of `workspace`'s API server impersonating `id` (user and groups).
    pub(crate) fn client_as(&self, id: &auth::Identity, workspace: &str) -> Result<kube::Client, ToolError> {
        let Some(w) = self.servers.get(workspace) else {
            return Err(ToolError(format!("workspace `{workspace}` has no Kubernetes API server configured")));
        };
        if id.user().is_empty() {
            return Err(ToolError("no user to act as; the assistant never uses its own identity".into()));
        }
        let key = format!("auth.kubernetes.workspaces[{workspace}]");
        let mut kc = auth::kube_config(&key, &w.url, w.token_file.as_deref(), w.ca_file.as_deref(), self.timeout).map_err(ToolError)?;
        kc.auth_info.impersonate = Some(id.user().to_owned());
        kc.auth_info.impersonate_groups = Some(id.groups().iter().cloned().collect());
        kube::Client::try_from(kc).map_err(|e| ToolError(format!("{key}: {e}")))
    }
}

/// The kinds the tools read; Secrets are not among them.
pub(crate) fn resource(kind: &str) -> Result<ApiResource, ToolError> {
    let (group, version, kind_name, plural) = match kind.to_ascii_lowercase().trim_end_matches('s') {
        "pod" => ("", "v1", "Pod", "pods"),
        "service" => ("", "v1", "Service", "services"),
        "event" => ("", "v1", "Event", "events"),
        "configmap" => ("", "v1", "ConfigMap", "configmaps"),
        "persistentvolumeclaim" | "pvc" => ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        "deployment" => ("apps", "v1", "Deployment", "deployments"),
        "statefulset" => ("apps", "v1", "StatefulSet", "statefulsets"),
        "replicaset" => ("apps", "v1", "ReplicaSet", "replicasets"),
        "daemonset" => ("apps", "v1", "DaemonSet", "daemonsets"),
        "job" => ("batch", "v1", "Job", "jobs"),
        "cronjob" => ("batch", "v1", "CronJob", "cronjobs"),
        "ingresse" | "ingres" => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        "secret" => return Err(ToolError("Secrets are never read by the assistant".into())),
        other => {
            return Err(ToolError(format!(
                "kind `{other}` is not readable here; use pods, deployments, statefulsets, replicasets, daemonsets, jobs, cronjobs, services, ingresses, events, configmaps or persistentvolumeclaims"
            )));
        }
    };
    let api_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Ok(ApiResource { group: group.into(), version: version.into(), api_version, kind: kind_name.into(), plural: plural.into() })
}

/// An object as the model may see it: no managed fields, no annotations' last-applied copy,
/// environment values and ConfigMap data masked.
pub fn sanitize(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if v["kind"] == "ConfigMap" {
        for key in ["data", "binaryData"] {
            if let Some(d) = v.get_mut(key).and_then(Value::as_object_mut) {
                for val in d.values_mut() {
                    *val = json!("[masked]");
                }
            }
        }
    }
    mask_env(&mut v);
    v
}

fn mask_env(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(env)) = o.get_mut("env") {
                for e in env.iter_mut() {
                    if let Some(val) = e.get_mut("value") {
                        *val = json!("[masked]");
                    }
                }
            }
            for (_, child) in o.iter_mut() {
                mask_env(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_env),
        _ => {}
    }
}

pub(crate) fn kube_error(e: kube::Error) -> ToolError {
    match e {
        kube::Error::Api(s) if s.code == 403 => ToolError(format!("forbidden: the workspace's API server does not allow the user this ({})", s.message)),
        kube::Error::Api(s) if s.code == 404 => ToolError(format!("not found: {}", s.message)),
        kube::Error::Api(s) => ToolError(format!("the API server answered {}: {}", s.code, s.message)),
        other => ToolError(format!("the workspace's API server could not be reached: {other}")),
    }
}

/// The workspace a call is about: the one named, else the one the user is looking at; only
/// workspaces the user may see.
pub(crate) async fn workspace_of(ctx: &ToolContext<'_>, named: Option<&str>) -> Result<String, ToolError> {
    let Some(ws) = named.or(ctx.workspace) else { return Err(ToolError("say which workspace".into())) };
    let allowed = match ctx.control {
        Some(repo) => repo.visible_workspace(ctx.identity, ctx.admin_role, ws).await.is_ok() || ctx.identity.workspaces().contains(ws),
        None => ctx.identity.workspaces().contains(ws),
    };
    if allowed { Ok(ws.to_owned()) } else { Err(ToolError(format!("workspace `{ws}` is not one of the user's"))) }
}

pub(crate) fn namespace_of<'a>(ctx: &'a ToolContext<'_>, named: Option<&'a str>) -> Result<&'a str, ToolError> {
    named.or(ctx.project).ok_or_else(|| ToolError("say which project (namespace)".into()))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Workspace; default the one the user is looking at.
    pub workspace: Option<String>,
    /// Project (namespace); default the one the user is looking at.
    pub namespace: Option<String>,
    /// pods, deployments, statefulsets, jobs, cronjobs, services, events, …
    pub kind: String,
    /// A label selector like app=cart.
    pub selector: Option<String>,
}

pub struct K8sList(pub WorkspaceClusters);

/// One line per object: what an operator looks at first.
fn summary(o: &Value) -> Value {
    let s = &o["status"];
    let mut out = json!({ "name": o["metadata"]["name"], "created": o["metadata"]["creationTimestamp"] });
    match o["kind"].as_str().unwrap_or("") {
        "Pod" => {
            let restarts: i64 = s["containerStatuses"].as_array().map(|c| c.iter().filter_map(|c| c["restartCount"].as_i64()).sum()).unwrap_or(0);
            let waiting: Vec<&str> =
                s["containerStatuses"].as_array().map(|c| c.iter().filter_map(|c| c["state"]["waiting"]["reason"].as_str()).collect()).unwrap_or_default();
            out["phase"] = s["phase"].clone();
            out["restarts"] = json!(restarts);
            if !waiting.is_empty() {
                out["waiting"] = json!(waiting);
            }
        }
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            out["replicas"] = o["spec"]["replicas"].clone();
            out["ready"] = s["readyReplicas"].clone();
        }
        "Event" => {
            out["type"] = o["type"].clone();
            out["reason"] = o["reason"].clone();
            out["object"] = json!(format!("{}/{}", o["involvedObject"]["kind"].as_str().unwrap_or(""), o["involvedObject"]["name"].as_str().unwrap_or("")));
            out["message"] = o["message"].clone();
            out["count"] = o["count"].clone();
        }
        _ => {}
    }
    out
}

impl Tool for K8sList {
    fn name(&self) -> &'static str {
        "k8s.list"
    }
    fn description(&self) -> &'static str {
        "List objects of one kind in a project, as the user (their RBAC applies): a line each with status (pods: phase, restarts, waiting reasons). At most 200."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<ListArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["pod", "deploy", "crash", "restart", "running", "replica", "job", "service", "kubernetes"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: ListArgs = parse_args(self.name(), args)?;
            let ws = workspace_of(ctx, a.workspace.as_deref()).await?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let ar = resource(&a.kind)?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.client_as(ctx.identity, &ws)?, ns, &ar);
            let mut lp = ListParams::default().limit(MAX_ITEMS as u32);
            if let Some(sel) = &a.selector {
                lp = lp.labels(sel);
            }
            let list = api.list(&lp).await.map_err(kube_error)?;
            let items: Vec<Value> =
                list.items.into_iter().take(MAX_ITEMS).filter_map(|o| serde_json::to_value(o).ok()).map(|o| summary(&sanitize(o))).collect();
            Ok(json!({ "workspace": ws, "namespace": ns, "kind": ar.kind, "items": items }))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let ns = args["namespace"].as_str().or(ctx.project)?;
        Some(format!("kubectl get {} -n {ns}", args["kind"].as_str()?))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetArgs {
    pub workspace: Option<String>,
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
}

pub struct K8sGet(pub WorkspaceClusters);

impl Tool for K8sGet {
    fn name(&self) -> &'static str {
        "k8s.get"
    }
    fn description(&self) -> &'static str {
        "Read one object (spec and status) as the user; environment values and ConfigMap data are masked, Secrets are never read."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<GetArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["pod", "deploy", "spec", "config", "image", "resources", "limit"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: GetArgs = parse_args(self.name(), args)?;
            let ws = workspace_of(ctx, a.workspace.as_deref()).await?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let ar = resource(&a.kind)?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.client_as(ctx.identity, &ws)?, ns, &ar);
            let o = api.get(&a.name).await.map_err(kube_error)?;
            Ok(sanitize(serde_json::to_value(o).unwrap_or(Value::Null)))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let ns = args["namespace"].as_str().or(ctx.project)?;
        Some(format!("kubectl get {} {} -n {ns} -o yaml", args["kind"].as_str()?, args["name"].as_str()?))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EventsArgs {
    pub workspace: Option<String>,
    pub namespace: Option<String>,
    /// Only events about this object (a pod or deployment name).
    pub object: Option<String>,
}

pub struct K8sEvents(pub WorkspaceClusters);

impl Tool for K8sEvents {
    fn name(&self) -> &'static str {
        "k8s.events"
    }
    fn description(&self) -> &'static str {
        "Recent events of a project (or of one object), newest first, at most 100: back-offs, OOM kills, failed scheduling, failed probes."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<EventsArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["crash", "event", "restart", "oom", "pending", "schedul", "probe", "fail", "why"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: EventsArgs = parse_args(self.name(), args)?;
            let ws = workspace_of(ctx, a.workspace.as_deref()).await?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.client_as(ctx.identity, &ws)?, ns, &resource("events")?);
            let mut lp = ListParams::default().limit(500);
            if let Some(o) = &a.object {
                lp = lp.fields(&format!("involvedObject.name={o}"));
            }
            let list = api.list(&lp).await.map_err(kube_error)?;
            let mut items: Vec<Value> = list.items.into_iter().filter_map(|o| serde_json::to_value(o).ok()).collect();
            if let Some(o) = &a.object {
                items.retain(|e| e["involvedObject"]["name"] == o.as_str());
            }
            let when = |e: &Value| e["lastTimestamp"].as_str().or(e["eventTime"].as_str()).unwrap_or("").to_owned();
            items.sort_by_key(|e| std::cmp::Reverse(when(e)));
            let events: Vec<Value> = items
                .iter()
                .take(100)
                .map(|e| {
                    let mut s = summary(e);
                    s["last"] = json!(when(e));
                    s
                })
                .collect();
            Ok(json!({ "workspace": ws, "namespace": ns, "events": events }))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let ns = args["namespace"].as_str().or(ctx.project)?;
        Some(format!("kubectl get events -n {ns} --sort-by=.lastTimestamp"))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PodLogsArgs {
    pub workspace: Option<String>,
    pub namespace: Option<String>,
    pub pod: String,
    pub container: Option<String>,
    /// Last lines; at most 100.
    pub tail_lines: Option<i64>,
    /// The previous (crashed) container's log.
    pub previous: Option<bool>,
}

pub struct K8sPodLogs(pub WorkspaceClusters);

impl Tool for K8sPodLogs {
    fn name(&self) -> &'static str {
        "k8s.pod_logs"
    }
    fn description(&self) -> &'static str {
        "The last lines (at most 100) of a pod's container log straight from the cluster, as the user; `previous` reads the crashed container's."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<PodLogsArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["crash", "pod", "log", "restart", "previous"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: PodLogsArgs = parse_args(self.name(), args)?;
            let ws = workspace_of(ctx, a.workspace.as_deref()).await?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.0.client_as(ctx.identity, &ws)?, ns);
            let asked = a.tail_lines.unwrap_or(50);
            let lp = LogParams {
                container: a.container.clone(),
                tail_lines: Some(asked.clamp(1, MAX_LOG_LINES)),
                previous: a.previous.unwrap_or(false),
                limit_bytes: Some(256 * 1024),
                ..LogParams::default()
            };
            let text = api.logs(&a.pod, &lp).await.map_err(kube_error)?;
            let lines: Vec<&str> = text.lines().collect();
            let mut out = json!({ "workspace": ws, "namespace": ns, "pod": a.pod, "lines": lines });
            if asked > MAX_LOG_LINES {
                out["note"] = json!(format!("asked for {asked} lines; at most {MAX_LOG_LINES} are returned"));
            }
            Ok(out)
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let ns = args["namespace"].as_str().or(ctx.project)?;
        Some(format!("kubectl logs {} -n {ns}", args["pod"].as_str()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_a_kind_and_env_values_are_masked() {
        assert!(resource("secrets").is_err());
        assert!(resource("Secret").is_err());
        assert_eq!(resource("Deployments").map(|r| r.api_version).ok().as_deref(), Some("apps/v1"));
        let pod = json!({ "kind": "Pod", "metadata": { "name": "p", "managedFields": [{}] }, "spec": { "containers": [{ "env": [{ "name": "DB_PASSWORD", "value": "hunter2" }, { "name": "K", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }] }] } });
        let s = sanitize(pod).to_string();
        assert!(!s.contains("hunter2") && !s.contains("managedFields") && s.contains("DB_PASSWORD") && s.contains("secretKeyRef"), "{s}");
        let cm = sanitize(json!({ "kind": "ConfigMap", "data": { "app.conf": "password=x" } }));
        assert_eq!(cm["data"]["app.conf"], "[masked]");
    }
}
