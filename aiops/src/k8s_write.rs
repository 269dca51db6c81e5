//! The write tools: offered only with `assistant.write_tools`; a call only proposes, and the
//! exact action (stored server-side, every default filled in) runs once the user approves it,
//! as the user (impersonated, so their RBAC decides), audited like every call.
//!
//! - `k8s.scale`: a Deployment's or StatefulSet's replicas;
//! - `k8s.restart`: a rolling restart of a Deployment, StatefulSet or DaemonSet (what `kubectl
//!   rollout restart` does: a new `restartedAt` annotation on the pod template);
//! - `k8s.apply`: a manifest, checked in the jail first (as `manifest.validate` does); what is
//!   approved is the checked objects themselves, applied by server-side apply.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use sandbox::{ToolClass, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::k8s::{WorkspaceClusters, kube_error, namespace_of, resource, workspace_of};
use crate::manifest;
use crate::manifest_tools::Validator;
use crate::tools::{Tool, ToolContext, parse_args, schema_of};

/// The field manager of what the assistant applies for a user.
const MANAGER: &str = "hexabase-assistant";

fn workspace_named<'a>(ctx: &'a ToolContext<'_>, named: Option<&'a str>) -> Result<&'a str, ToolError> {
    named.or(ctx.workspace).ok_or_else(|| ToolError("say which workspace".into()))
}

// ---- k8s.scale

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScaleArgs {
    pub workspace: Option<String>,
    pub namespace: Option<String>,
    /// deployment or statefulset.
    pub kind: String,
    pub name: String,
    /// 0–50.
    pub replicas: u32,
}

pub struct K8sScale(pub WorkspaceClusters);

const SCALABLE: &[&str] = &["Deployment", "StatefulSet"];

/// `kind`'s resource when it is one of `kinds`, else `refusal`.
fn one_of(kind: &str, kinds: &[&str], refusal: &str) -> Result<ApiResource, ToolError> {
    let ar = resource(kind)?;
    if kinds.contains(&ar.kind.as_str()) { Ok(ar) } else { Err(ToolError(refusal.into())) }
}

impl Tool for K8sScale {
    fn name(&self) -> &'static str {
        "k8s.scale"
    }
    fn description(&self) -> &'static str {
        "Propose scaling a deployment or statefulset. It does not happen until the user approves the exact change."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Write
    }
    fn parameters(&self) -> Value {
        schema_of::<ScaleArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["scale", "replica"]
    }
    fn action<'a>(&'a self, ctx: &'a ToolContext<'a>, args: &'a Value) -> BoxFuture<'a, Result<(String, Value), ToolError>> {
        Box::pin(async move {
            let a: ScaleArgs = parse_args(self.name(), args.clone())?;
            let ar = one_of(&a.kind, SCALABLE, "only deployments and statefulsets are scaled")?;
            if a.replicas > 50 {
                return Err(ToolError("at most 50 replicas".into()));
            }
            let ws = workspace_named(ctx, a.workspace.as_deref())?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let resolved = json!({ "workspace": ws, "namespace": ns, "kind": a.kind, "name": a.name, "replicas": a.replicas });
            Ok((format!("scale {} {ns}/{} in workspace {ws} to {} replicas", ar.kind, a.name, a.replicas), resolved))
        })
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: ScaleArgs = parse_args(self.name(), args)?;
            let ws = workspace_of(ctx, a.workspace.as_deref()).await?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let ar = one_of(&a.kind, SCALABLE, "only deployments and statefulsets are scaled")?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.client_as(ctx.identity, &ws)?, ns, &ar);
            let patch = json!({ "spec": { "replicas": a.replicas } });
            let o = api.patch(&a.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(kube_error)?;
            Ok(json!({ "scaled": format!("{}/{}", ns, a.name), "replicas": o.data["spec"]["replicas"] }))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let ns = args["namespace"].as_str().or(ctx.project)?;
        Some(format!("kubectl scale {} {} -n {ns} --replicas={}", args["kind"].as_str()?, args["name"].as_str()?, args["replicas"]))
    }
}

// ---- k8s.restart

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RestartArgs {
    pub workspace: Option<String>,
    pub namespace: Option<String>,
    /// deployment, statefulset or daemonset.
    pub kind: String,
    pub name: String,
}

pub struct K8sRestart(pub WorkspaceClusters);

const RESTARTABLE: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

impl Tool for K8sRestart {
    fn name(&self) -> &'static str {
        "k8s.restart"
    }
    fn description(&self) -> &'static str {
        "Propose a rolling restart of a deployment, statefulset or daemonset (its pods are replaced one by one). It does not happen until the user approves."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Write
    }
    fn parameters(&self) -> Value {
        schema_of::<RestartArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["restart", "rollout", "bounce", "recreate"]
    }
    fn action<'a>(&'a self, ctx: &'a ToolContext<'a>, args: &'a Value) -> BoxFuture<'a, Result<(String, Value), ToolError>> {
        Box::pin(async move {
            let a: RestartArgs = parse_args(self.name(), args.clone())?;
            let ar = one_of(&a.kind, RESTARTABLE, "only deployments, statefulsets and daemonsets are restarted")?;
            let ws = workspace_named(ctx, a.workspace.as_deref())?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let resolved = json!({ "workspace": ws, "namespace": ns, "kind": a.kind, "name": a.name });
            Ok((format!("restart {} {ns}/{} in workspace {ws} (a rolling restart: its pods are replaced one by one)", ar.kind, a.name), resolved))
        })
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: RestartArgs = parse_args(self.name(), args)?;
            let ws = workspace_of(ctx, a.workspace.as_deref()).await?;
            let ns = namespace_of(ctx, a.namespace.as_deref())?;
            let ar = one_of(&a.kind, RESTARTABLE, "only deployments, statefulsets and daemonsets are restarted")?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.client_as(ctx.identity, &ws)?, ns, &ar);
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let patch = json!({ "spec": { "template": { "metadata": { "annotations": { "kubectl.kubernetes.io/restartedAt": at } } } } });
            api.patch(&a.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(kube_error)?;
            Ok(json!({ "restarted": format!("{}/{}", ns, a.name), "restarted_at": at }))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let ns = args["namespace"].as_str().or(ctx.project)?;
        Some(format!("kubectl rollout restart {}/{} -n {ns}", args["kind"].as_str()?, args["name"].as_str()?))
    }
}

// ---- k8s.apply

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApplyArgs {
    pub workspace: Option<String>,
    /// Project (namespace) of documents that name none; default the one the user is looking at.
    pub project: Option<String>,
    /// The manifest: YAML (documents separated by ---) or JSON.
    pub manifest: String,
}

/// What is approved: the checked objects themselves.
#[derive(Debug, Deserialize)]
struct ApplyPlan {
    workspace: String,
    objects: Vec<Value>,
}

pub struct K8sApply {
    pub validator: Arc<Validator>,
    pub clusters: WorkspaceClusters,
}

impl Tool for K8sApply {
    fn name(&self) -> &'static str {
        "k8s.apply"
    }
    fn description(&self) -> &'static str {
        "Propose applying a Kubernetes manifest (checked against the typed schemas first). Nothing changes until the user approves the exact objects."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Write
    }
    fn parameters(&self) -> Value {
        schema_of::<ApplyArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["apply", "deploy it", "roll out"]
    }
    fn action<'a>(&'a self, ctx: &'a ToolContext<'a>, args: &'a Value) -> BoxFuture<'a, Result<(String, Value), ToolError>> {
        Box::pin(async move {
            let a: ApplyArgs = parse_args(self.name(), args.clone())?;
            let ws = workspace_named(ctx, a.workspace.as_deref())?;
            let ns = a.project.as_deref().or(ctx.project).ok_or_else(|| ToolError("say which project (namespace)".into()))?;
            let (report, _) = self.validator.check(&a.manifest).await?;
            if let Some(e) = report.error {
                return Err(ToolError(format!("the manifest cannot be applied: {e}")));
            }
            let mut objects = Vec::new();
            let mut names = Vec::new();
            for d in &report.documents {
                if !d.valid {
                    return Err(ToolError(format!("{} {} cannot be applied: {}", d.kind, d.name, d.errors.join("; "))));
                }
                if d.kind == "Secret" {
                    return Err(ToolError("Secrets are never handled by the assistant; the user applies them".into()));
                }
                let k = manifest::kind(&d.api_version, &d.kind).ok_or_else(|| ToolError(format!("{} is not a kind that can be applied here", d.kind)))?;
                let mut o = d.object.clone().unwrap_or(Value::Null);
                if k.namespaced {
                    let at = d.namespace.clone().unwrap_or_else(|| ns.to_owned());
                    o["metadata"]["namespace"] = json!(at);
                    names.push(format!("{} {at}/{}", d.kind, d.name));
                } else {
                    names.push(format!("{} {}", d.kind, d.name));
                }
                objects.push(o);
            }
            let action = format!("apply to workspace {ws} (server-side apply as you): {}", names.join(", "));
            Ok((action, json!({ "workspace": ws, "objects": objects })))
        })
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let plan: ApplyPlan = serde_json::from_value(args).map_err(|e| ToolError(format!("k8s.apply runs only an approved plan: {e}")))?;
            let ws = workspace_of(ctx, Some(&plan.workspace)).await?;
            let client = self.clusters.client_as(ctx.identity, &ws)?;
            let mut applied = Vec::new();
            for o in &plan.objects {
                let (api_version, kind, name) =
                    (o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""));
                let k = manifest::kind(api_version, kind).filter(|k| k.kind != "Secret").ok_or_else(|| ToolError(format!("{kind} is not applied here")))?;
                let api = k.api(client.clone(), o["metadata"]["namespace"].as_str());
                let obj: DynamicObject = serde_json::from_value(o.clone()).map_err(|e| ToolError(e.to_string()))?;
                api.patch(name, &PatchParams::apply(MANAGER).validation_strict(), &Patch::Apply(&obj)).await.map_err(kube_error)?;
                applied.push(format!("{kind} {}{name}", o["metadata"]["namespace"].as_str().map(|n| format!("{n}/")).unwrap_or_default()));
            }
            Ok(json!({ "applied": applied }))
        })
    }
    fn cite(&self, _ctx: &ToolContext<'_>, _args: &Value) -> Option<String> {
        Some("kubectl apply --server-side --field-manager=hexabase-assistant -f manifest.yaml".into())
    }
}
