//! Where functions run: Fission (the default: code in an environment's pool) and Knative (an
//! image as a Knative Service), behind one interface. Creating, deploying a new version and
//! rolling back are all "make version n live with these triggers"; deleting removes every
//! object of the function; invoking goes to the provider's route for it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::functions::{Function, FunctionVersion, Trigger};
use crate::manifests::{Cluster, Manifest};
use crate::model::Workspace;

/// `[control.functions]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsConfig {
    /// Where an invocation goes; `{namespace}` (the workspace's host namespace),
    /// `{workspace_id}`, `{project}` and `{function}` are filled in.
    pub fission_invoke_url: String,
    pub knative_invoke_url: String,
    /// Longest wait for a function's answer.
    pub invoke_timeout_ms: u64,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            fission_invoke_url: "http://router.fission.{namespace}.svc/{project}/{function}".into(),
            knative_invoke_url: "http://{function}.{project}.{namespace}.svc".into(),
            invoke_timeout_ms: 30_000,
        }
    }
}

/// The client invocations go out through: the configured timeout, no redirects (a function
/// cannot bounce the call elsewhere).
pub fn http_client(config: &FunctionsConfig) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(config.invoke_timeout_ms.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("control.functions: {e}"))
}

/// One way of running functions.
pub trait FunctionRuntime: Send + Sync {
    fn name(&self) -> &'static str;
    /// The objects that make `v` the live version of `f`, with its triggers, in apply order.
    fn deploy(&self, ws: &Workspace, f: &Function, v: &FunctionVersion, triggers: &[Trigger]) -> Vec<Manifest>;
    /// Every object of `f` (all of its `versions`), in delete order.
    fn remove(&self, ws: &Workspace, f: &Function, versions: &[i64], triggers: &[Trigger]) -> Vec<Manifest>;
    /// Where a call of `f` is sent.
    fn invoke_url(&self, config: &FunctionsConfig, ws: &Workspace, f: &Function) -> String;
}

/// The runtime of `f.provider`.
pub fn runtime_of(provider: &str) -> &'static dyn FunctionRuntime {
    match provider {
        "knative" => &Knative,
        _ => &Fission,
    }
}

fn cluster(ws: &Workspace) -> Cluster {
    Cluster::Workspace { id: ws.id.clone(), host_namespace: ws.host_namespace() }
}

fn labels(f: &Function) -> Value {
    json!({ "app.kubernetes.io/managed-by": "hexabase-dataplane", "hexabase.io/function": f.name, "hexabase.io/function-id": f.id })
}

fn manifest(ws: &Workspace, f: &Function, api_version: &'static str, kind: &'static str, plural: &'static str, name: &str, spec: Value) -> Manifest {
    Manifest {
        cluster: cluster(ws),
        api_version,
        kind,
        plural,
        namespace: Some(f.project.clone()),
        name: name.to_owned(),
        body: json!({ "apiVersion": api_version, "kind": kind, "metadata": { "name": name, "namespace": f.project, "labels": labels(f) }, "spec": spec }),
    }
}

fn fill(template: &str, ws: &Workspace, f: &Function) -> String {
    template.replace("{namespace}", &ws.host_namespace()).replace("{workspace_id}", &ws.id).replace("{project}", &f.project).replace("{function}", &f.name)
}

fn env_list(v: &FunctionVersion) -> Vec<Value> {
    v.env_values.iter().map(|(k, val)| json!({ "name": k, "value": val })).collect()
}

/// Fission: an Environment per runtime, a Package per version (the code, literal), the
/// Function pointing at the live version's Package, and a trigger object per trigger.
pub struct Fission;

const FISSION: &str = "fission.io/v1";

impl Fission {
    fn package(f: &Function, n: i64) -> String {
        format!("{}-v{n}", f.name)
    }
    fn trigger_name(f: &Function, i: usize, t: &Trigger) -> String {
        format!("{}-{}-{i}", f.name, t.kind())
    }
    fn trigger(ws: &Workspace, f: &Function, i: usize, t: &Trigger) -> Manifest {
        let fref = json!({ "type": "name", "name": f.name });
        let name = Self::trigger_name(f, i, t);
        match t {
            Trigger::Http { methods } => manifest(
                ws,
                f,
                FISSION,
                "HTTPTrigger",
                "httptriggers",
                &name,
                json!({ "relativeurl": format!("/{}/{}", f.project, f.name), "methods": methods, "functionref": fref }),
            ),
            Trigger::Schedule { cron } => manifest(ws, f, FISSION, "TimeTrigger", "timetriggers", &name, json!({ "cron": cron, "functionref": fref })),
            Trigger::Event { topic } => manifest(
                ws,
                f,
                FISSION,
                "MessageQueueTrigger",
                "messagequeuetriggers",
                &name,
                json!({ "messageQueueType": "nats-jetstream", "topic": topic, "functionref": fref, "maxRetries": 3 }),
            ),
        }
    }
}

impl FunctionRuntime for Fission {
    fn name(&self) -> &'static str {
        "fission"
    }

    fn deploy(&self, ws: &Workspace, f: &Function, v: &FunctionVersion, triggers: &[Trigger]) -> Vec<Manifest> {
        use base64::Engine;
        let env_ref = json!({ "name": f.runtime, "namespace": f.project });
        let mut out = vec![
            manifest(
                ws,
                f,
                FISSION,
                "Environment",
                "environments",
                &f.runtime,
                json!({ "version": 3, "runtime": { "image": format!("ghcr.io/fission/{}-env", f.runtime) }, "poolsize": 3 }),
            ),
            manifest(
                ws,
                f,
                FISSION,
                "Package",
                "packages",
                &Self::package(f, v.number),
                json!({ "environment": env_ref, "deployment": { "type": "literal", "literal": base64::engine::general_purpose::STANDARD.encode(&v.code) } }),
            ),
            manifest(
                ws,
                f,
                FISSION,
                "Function",
                "functions",
                &f.name,
                json!({
                    "environment": env_ref,
                    "package": { "packageref": { "name": Self::package(f, v.number), "namespace": f.project }, "functionName": v.entrypoint },
                    "InvokeStrategy": { "ExecutionStrategy": { "ExecutorType": "poolmgr" }, "StrategyType": "execution" },
                    "podspec": { "containers": [{ "name": f.name, "env": env_list(v) }] },
                }),
            ),
        ];
        out.extend(triggers.iter().enumerate().map(|(i, t)| Self::trigger(ws, f, i, t)));
        out
    }

    fn remove(&self, ws: &Workspace, f: &Function, versions: &[i64], triggers: &[Trigger]) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = triggers.iter().enumerate().map(|(i, t)| Self::trigger(ws, f, i, t)).collect();
        out.push(manifest(ws, f, FISSION, "Function", "functions", &f.name, json!({})));
        out.extend(versions.iter().map(|n| manifest(ws, f, FISSION, "Package", "packages", &Self::package(f, *n), json!({}))));
        // The Environment is shared by the project's functions of that runtime: it stays.
        out
    }

    fn invoke_url(&self, config: &FunctionsConfig, ws: &Workspace, f: &Function) -> String {
        fill(&config.fission_invoke_url, ws, f)
    }
}

/// Knative: a Service whose revision is named after the version (so rolling back is pointing
/// all traffic at an earlier revision), PingSources for schedules, Triggers for events.
pub struct Knative;

impl Knative {
    fn extra(ws: &Workspace, f: &Function, i: usize, t: &Trigger) -> Option<Manifest> {
        let sink = json!({ "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": f.name } });
        let name = format!("{}-{}-{i}", f.name, t.kind());
        match t {
            Trigger::Http { .. } => None,
            Trigger::Schedule { cron } => {
                Some(manifest(ws, f, "sources.knative.dev/v1", "PingSource", "pingsources", &name, json!({ "schedule": cron, "sink": sink })))
            }
            Trigger::Event { topic } => Some(manifest(
                ws,
                f,
                "eventing.knative.dev/v1",
                "Trigger",
                "triggers",
                &name,
                json!({ "broker": "default", "filter": { "attributes": { "type": topic } }, "subscriber": sink }),
            )),
        }
    }
}

impl FunctionRuntime for Knative {
    fn name(&self) -> &'static str {
        "knative"
    }

    fn deploy(&self, ws: &Workspace, f: &Function, v: &FunctionVersion, triggers: &[Trigger]) -> Vec<Manifest> {
        let revision = format!("{}-v{}", f.name, v.number);
        let mut service = manifest(
            ws,
            f,
            "serving.knative.dev/v1",
            "Service",
            "services",
            &f.name,
            json!({
                "template": { "metadata": { "name": revision, "labels": labels(f) }, "spec": { "containers": [{ "image": v.image, "env": env_list(v) }] } },
                "traffic": [{ "revisionName": revision, "percent": 100 }],
            }),
        );
        service.body["metadata"]["labels"]["networking.knative.dev/visibility"] = json!("cluster-local");
        let mut out = vec![service];
        out.extend(triggers.iter().enumerate().filter_map(|(i, t)| Self::extra(ws, f, i, t)));
        out
    }

    fn remove(&self, ws: &Workspace, f: &Function, _versions: &[i64], triggers: &[Trigger]) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = triggers.iter().enumerate().filter_map(|(i, t)| Self::extra(ws, f, i, t)).collect();
        // Revisions belong to the Service and go with it.
        out.push(manifest(ws, f, "serving.knative.dev/v1", "Service", "services", &f.name, json!({})));
        out
    }

    fn invoke_url(&self, config: &FunctionsConfig, ws: &Workspace, f: &Function) -> String {
        fill(&config.knative_invoke_url, ws, f)
    }
}
