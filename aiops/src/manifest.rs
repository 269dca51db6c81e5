//! Kubernetes manifests checked before anyone applies them: each YAML or JSON document is read
//! into its typed Kubernetes schema (k8s-openapi), fields the schema does not have are named,
//! and the rules the API server would enforce first are checked (names, a workload's selector
//! against its template's labels, containers with images, ports in range), with warnings for
//! what works but hurts later (no resource requests, `:latest` images).
//!
//! [`check`] is pure and runs inside the sandbox's jail (`dataplane manifest validate`): the
//! text comes from a model or a user, and a parser fed a hostile document should exhaust a
//! jailed process, not the server. [`generate`] builds manifests from typed values.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentSpec, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, LimitRange, Namespace, PersistentVolumeClaim, Pod, PodSpec, PodTemplateSpec, ResourceQuota,
    ResourceRequirements, Secret, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Documents in one text at most.
pub const MAX_DOCUMENTS: usize = 20;
/// Bytes of manifest text at most.
pub const MAX_BYTES: usize = 256 * 1024;

/// A kind the checks know: its API group, version, plural and whether it lives in a namespace.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    typed: fn(Value) -> Result<Value, String>,
}

fn typed<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let t: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
    })?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

macro_rules! kinds {
    ($( $api:literal, $kind:literal, $plural:literal, $ns:literal, $ty:ty; )*) => {
        const KINDS: &[Kind] = &[ $( Kind { api_version: $api, kind: $kind, plural: $plural, namespaced: $ns, typed: typed::<$ty> }, )* ];
    };
}

kinds! {
    "v1", "Pod", "pods", true, Pod;
    "v1", "Service", "services", true, Service;
    "v1", "ConfigMap", "configmaps", true, ConfigMap;
    "v1", "Secret", "secrets", true, Secret;
    "v1", "ServiceAccount", "serviceaccounts", true, ServiceAccount;
    "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, PersistentVolumeClaim;
    "v1", "ResourceQuota", "resourcequotas", true, ResourceQuota;
    "v1", "LimitRange", "limitranges", true, LimitRange;
    "v1", "Namespace", "namespaces", false, Namespace;
    "apps/v1", "Deployment", "deployments", true, Deployment;
    "apps/v1", "StatefulSet", "statefulsets", true, StatefulSet;
    "apps/v1", "DaemonSet", "daemonsets", true, DaemonSet;
    "apps/v1", "ReplicaSet", "replicasets", true, ReplicaSet;
    "batch/v1", "Job", "jobs", true, Job;
    "batch/v1", "CronJob", "cronjobs", true, CronJob;
    "networking.k8s.io/v1", "Ingress", "ingresses", true, Ingress;
    "networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", true, NetworkPolicy;
    "autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, HorizontalPodAutoscaler;
    "policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true, PodDisruptionBudget;
    "rbac.authorization.k8s.io/v1", "Role", "roles", true, Role;
    "rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true, RoleBinding;
}

impl Kind {
    /// The kind as kube's dynamic API addresses it.
    pub fn api_resource(&self) -> kube::api::ApiResource {
        let (group, version) = self.api_version.split_once('/').unwrap_or(("", self.api_version));
        kube::api::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: self.api_version.into(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// The dynamic API of this kind: in `namespace` when the kind is namespaced, else cluster-wide.
    pub fn api(&self, client: kube::Client, namespace: Option<&str>) -> kube::api::Api<kube::api::DynamicObject> {
        match namespace {
            Some(ns) if self.namespaced => kube::api::Api::namespaced_with(client, ns, &self.api_resource()),
            _ => kube::api::Api::all_with(client, &self.api_resource()),
        }
    }
}

pub fn kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.api_version == api_version && k.kind == kind)
}

/// What the checks found in one document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocumentReport {
    pub index: usize,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub valid: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The document as JSON, when it is valid (for a server-side dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// The report on a whole text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub documents: Vec<DocumentReport>,
    /// A text that could not be read at all (YAML syntax, too large, too many documents).
    pub error: Option<String>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.error.is_none() && !self.documents.is_empty() && self.documents.iter().all(|d| d.valid)
    }
}

/// Checks every document of `text` (YAML, several separated by `---`, or JSON).
pub fn check(text: &str) -> Report {
    if text.len() > MAX_BYTES {
        return Report { documents: Vec::new(), error: Some(format!("the manifest is {} bytes; at most {MAX_BYTES} are checked at once", text.len())) };
    }
    let mut report = Report::default();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        if index >= MAX_DOCUMENTS {
            report.error = Some(format!("more than {MAX_DOCUMENTS} documents; check them in parts"));
            break;
        }
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => report.documents.push(check_document(index, v)),
            Err(e) => {
                report.error = Some(format!("document {}: not valid YAML or JSON: {e}", index + 1));
                break;
            }
        }
    }
    if report.documents.is_empty() && report.error.is_none() {
        report.error = Some("no documents in the manifest".into());
    }
    report
}

fn check_document(index: usize, v: Value) -> DocumentReport {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut r = DocumentReport {
        index,
        api_version: s("/apiVersion"),
        kind: s("/kind"),
        name: s("/metadata/name"),
        namespace: v.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned),
        ..DocumentReport::default()
    };
    if !v.is_object() {
        r.errors.push("a document must be an object with apiVersion, kind and metadata".into());
        return r;
    }
    for (field, val) in [("apiVersion", &r.api_version), ("kind", &r.kind), ("metadata.name", &r.name)] {
        if val.is_empty() {
            r.errors.push(format!("{field} is required"));
        }
    }
    if !r.errors.is_empty() {
        return r;
    }
    let Some(k) = kind(&r.api_version, &r.kind) else {
        r.errors.push(match KINDS.iter().find(|k| k.kind == r.kind) {
            Some(known) => format!("{} is served as apiVersion {}, not {}", r.kind, known.api_version, r.api_version),
            None => format!(
                "{} {} is not a kind these checks know; they know {}",
                r.api_version,
                r.kind,
                KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
            ),
        });
        return r;
    };
    match (k.typed)(v.clone()) {
        Err(e) => r.errors.push(format!("does not fit the {} schema: {e}", k.kind)),
        Ok(t) => {
            let mut unknown = Vec::new();
            unknown_fields(&v, &t, "", &mut unknown);
            for f in unknown {
                r.errors.push(format!("{f}: no such field in {} {}", k.api_version, k.kind));
            }
        }
    }
    rules(k, &v, &mut r);
    if !k.namespaced && r.namespace.is_some() {
        r.errors.push(format!("metadata.namespace: a {} is not namespaced", k.kind));
    }
    r.valid = r.errors.is_empty();
    if r.valid {
        r.object = Some(v);
    }
    r
}

/// Fields of `given` that the typed round trip `typed` dropped: the schema has no such field.
fn unknown_fields(given: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (given, typed) {
        (Value::Object(g), Value::Object(t)) => {
            for (k, gv) in g {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    None if !gv.is_null() => out.push(p),
                    Some(tv) => unknown_fields(gv, tv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(g), Value::Array(t)) => {
            for (i, (gv, tv)) in g.iter().zip(t).enumerate() {
                unknown_fields(gv, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A DNS-1123 subdomain (most names) or, with `label`, a DNS-1035 label (Service names).
fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok_chars = name.chars().all(|c| alnum(c) || c == '-' || (!label && c == '.'));
    let first = name.chars().next().is_some_and(|c| if label { c.is_ascii_lowercase() } else { alnum(c) });
    let last = name.chars().last().is_some_and(alnum);
    if name.len() > max || !ok_chars || !first || !last {
        Some(format!(
            "metadata.name `{name}`: must be at most {max} lowercase letters, digits and '-'{}, starting with a {} and ending with a letter or digit",
            if label { "" } else { " or '.'" },
            if label { "letter" } else { "letter or digit" }
        ))
    } else {
        None
    }
}

/// The pod template of a workload, and where it is.
fn pod_spec<'v>(kind: &str, v: &'v Value) -> Option<(&'static str, &'v Value)> {
    let p = match kind {
        "Pod" => "/spec",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    };
    v.pointer(p).map(|s| (p, s))
}

fn rules(k: &Kind, v: &Value, r: &mut DocumentReport) {
    if let Some(e) = name_problem(&r.name, k.kind == "Service") {
        r.errors.push(e);
    }
    for (key, val) in v.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
        let val = val.as_str().unwrap_or("");
        let ok = val.len() <= 63
            && val.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && val.chars().next().is_none_or(|c| c.is_ascii_alphanumeric());
        if !ok {
            r.errors.push(format!("metadata.labels.{key}: `{val}` is not a label value (63 letters, digits, '-', '_' or '.' at most)"));
        }
    }
    if let Some((at, spec)) = pod_spec(k.kind, v) {
        let at = at.trim_start_matches('/').replace('/', ".");
        let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if containers.is_empty() {
            r.errors.push(format!("{at}.containers: at least one container is required"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in containers.iter().enumerate() {
            let name = c["name"].as_str().unwrap_or("");
            if !names.insert(name) {
                r.errors.push(format!("{at}.containers[{i}].name: `{name}` is used twice"));
            }
            match c["image"].as_str() {
                None | Some("") => r.errors.push(format!("{at}.containers[{i}].image is required")),
                Some(img) => {
                    let last = img.rsplit('/').next().unwrap_or(img);
                    if !last.contains(':') && !img.contains('@') || last.ends_with(":latest") {
                        r.warnings.push(format!("{at}.containers[{i}].image `{img}`: pin a version tag; `latest` changes under you"));
                    }
                }
            }
            if c.pointer("/resources/requests").is_none() {
                r.warnings
                    .push(format!("{at}.containers[{i}] ({name}): no resources.requests; the scheduler cannot place it well and the quota may refuse it"));
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                if !p["containerPort"].as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
                    r.errors.push(format!("{at}.containers[{i}].ports[{j}].containerPort must be between 1 and 65535"));
                }
            }
        }
    }
    if matches!(k.kind, "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") {
        let labels = v.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
        match v.pointer("/spec/selector/matchLabels").and_then(Value::as_object) {
            Some(sel) if !sel.is_empty() => {
                let missing: Vec<String> = sel
                    .iter()
                    .filter(|(key, val)| labels.and_then(|l| l.get(*key)) != Some(*val))
                    .map(|(key, val)| format!("{key}={}", val.as_str().unwrap_or("")))
                    .collect();
                if !missing.is_empty() {
                    r.errors.push(format!("spec.selector does not match spec.template.metadata.labels (missing {})", missing.join(", ")));
                }
            }
            _ if v.pointer("/spec/selector/matchExpressions").is_none() => r.errors.push("spec.selector.matchLabels is required".into()),
            _ => {}
        }
        if v.pointer("/spec/replicas").and_then(Value::as_i64).is_some_and(|n| n < 0) {
            r.errors.push("spec.replicas must not be negative".into());
        }
    }
    if k.kind == "Service" {
        let external = v.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
        for (j, p) in v.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if !p["port"].as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
                r.errors.push(format!("spec.ports[{j}].port must be between 1 and 65535"));
            }
        }
        if !external && v.pointer("/spec/selector").is_none() {
            r.warnings.push("spec.selector is empty: the Service sends traffic to no pod unless you manage its endpoints".into());
        }
    }
}

/// What [`generate`] builds: a workload and, with a port, the Service in front of it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Spec {
    /// deployment (default), job or cronjob.
    pub kind: Option<String>,
    /// The application's name (lowercase letters, digits, '-').
    pub name: String,
    /// The container image with its version tag, like ghcr.io/acme/cart:1.4.2.
    pub image: String,
    /// Pods to run (deployment); default 1.
    pub replicas: Option<i32>,
    /// The port the container listens on; a Service is made for it.
    pub port: Option<i32>,
    /// For a cronjob: when it runs, like "*/15 * * * *".
    pub schedule: Option<String>,
    /// Environment variables (names and values).
    pub env: Option<BTreeMap<String, String>>,
    /// CPU request, like 100m.
    pub cpu: Option<String>,
    /// Memory request (and limit), like 256Mi.
    pub memory: Option<String>,
}

/// Manifests for `spec` in `namespace`, as JSON objects, with a line per object saying what it
/// is; an error when the spec does not make one.
pub fn generate(spec: &Spec, namespace: &str) -> Result<(Vec<Value>, Vec<String>), String> {
    let labels: BTreeMap<String, String> = [("app.kubernetes.io/name".to_owned(), spec.name.clone())].into();
    let meta = || ObjectMeta { name: Some(spec.name.clone()), namespace: Some(namespace.to_owned()), labels: Some(labels.clone()), ..ObjectMeta::default() };
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(c) = &spec.cpu {
        requests.insert("cpu".to_owned(), Quantity(c.clone()));
    }
    if let Some(m) = &spec.memory {
        requests.insert("memory".to_owned(), Quantity(m.clone()));
        limits.insert("memory".to_owned(), Quantity(m.clone()));
    }
    let container = Container {
        name: spec.name.clone(),
        image: Some(spec.image.clone()),
        ports: spec.port.map(|p| vec![ContainerPort { container_port: p, ..ContainerPort::default() }]),
        env: spec.env.as_ref().map(|e| e.iter().map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), ..EnvVar::default() }).collect()),
        resources: (!requests.is_empty()).then(|| ResourceRequirements {
            requests: Some(requests.clone()),
            limits: (!limits.is_empty()).then(|| limits.clone()),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let restart = |policy: Option<&str>| PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..ObjectMeta::default() }),
        spec: Some(PodSpec { containers: vec![container.clone()], restart_policy: policy.map(str::to_owned), ..PodSpec::default() }),
    };
    let resources = match (&spec.cpu, &spec.memory) {
        (None, None) => "no resource requests".to_owned(),
        (c, m) => {
            format!("requests{}{}", c.as_ref().map(|c| format!(" cpu {c}")).unwrap_or_default(), m.as_ref().map(|m| format!(" memory {m}")).unwrap_or_default())
        }
    };
    let port = spec.port.map(|p| format!(", port {p}")).unwrap_or_default();
    let mut objects = Vec::new();
    let mut summary = Vec::new();
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(|e| e.to_string());
    match spec.kind.as_deref().unwrap_or("deployment").to_ascii_lowercase().as_str() {
        "deployment" => {
            let replicas = spec.replicas.unwrap_or(1);
            let d = Deployment {
                metadata: meta(),
                spec: DeploymentSpec {
                    replicas: Some(replicas),
                    selector: LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() },
                    template: restart(None),
                    ..DeploymentSpec::default()
                },
                ..Deployment::default()
            };
            objects.push(to_value(serde_json::to_value(&d))?);
            summary.push(format!("Deployment {namespace}/{}: {replicas} replica(s) of {}{port}, {resources}", spec.name, spec.image));
        }
        "job" => {
            let j = Job {
                metadata: meta(),
                spec: Some(JobSpec { template: restart(Some("Never")), backoff_limit: Some(3), ..JobSpec::default() }),
                ..Job::default()
            };
            objects.push(to_value(serde_json::to_value(&j))?);
            summary.push(format!("Job {namespace}/{}: runs {} once (3 retries), {resources}", spec.name, spec.image));
        }
        "cronjob" => {
            let Some(schedule) = spec.schedule.clone() else {
                return Err("a cronjob needs a schedule, like \"*/15 * * * *\"; ask the user when it should run".into());
            };
            let c = CronJob {
                metadata: meta(),
                spec: CronJobSpec {
                    schedule: schedule.clone(),
                    concurrency_policy: Some("Forbid".into()),
                    job_template: JobTemplateSpec {
                        metadata: None,
                        spec: Some(JobSpec { template: restart(Some("Never")), backoff_limit: Some(3), ..JobSpec::default() }),
                    },
                    ..CronJobSpec::default()
                },
                ..CronJob::default()
            };
            objects.push(to_value(serde_json::to_value(&c))?);
            summary.push(format!("CronJob {namespace}/{}: runs {} on `{schedule}` (no overlapping runs), {resources}", spec.name, spec.image));
        }
        other => return Err(format!("kind `{other}`: deployment, job or cronjob")),
    }
    if let Some(p) = spec.port {
        let s = Service {
            metadata: meta(),
            spec: Some(ServiceSpec {
                selector: Some(labels.clone()),
                ports: Some(vec![ServicePort { port: p, target_port: Some(IntOrString::Int(p)), name: Some("http".into()), ..ServicePort::default() }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        objects.push(to_value(serde_json::to_value(&s))?);
        summary.push(format!("Service {namespace}/{}: port {p} to the pods' port {p} (inside the cluster only)", spec.name));
    }
    Ok((objects, summary))
}

/// The objects as one YAML text, documents separated by `---`.
pub fn to_yaml(objects: &[Value]) -> String {
    objects.iter().filter_map(|o| serde_yaml_ng::to_string(o).ok()).collect::<Vec<_>>().join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: cart
  namespace: shop
  labels: {app: cart}
spec:
  replicas: 2
  selector:
    matchLabels: {app: cart}
  template:
    metadata:
      labels: {app: cart}
    spec:
      containers:
      - name: cart
        image: ghcr.io/acme/cart:1.4.2
        ports: [{containerPort: 8080}]
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {memory: 1}
---
apiVersion: v1
kind: Service
metadata: {name: cart}
spec:
  selector: {app: cart}
  ports: [{port: 80, targetPort: 8080}]
";

    #[test]
    fn a_good_manifest_passes_with_its_objects() {
        let r = check(GOOD);
        assert!(r.valid(), "{r:#?}");
        assert_eq!(r.documents.len(), 2);
        assert_eq!((r.documents[0].kind.as_str(), r.documents[0].name.as_str()), ("Deployment", "cart"));
        assert!(r.documents[0].warnings.is_empty(), "{:?}", r.documents[0].warnings);
        assert!(r.documents[1].object.is_some());
    }

    #[test]
    fn typos_wrong_types_and_broken_selectors_are_named() {
        let bad = GOOD
            .replace("replicas: 2", "replicas: two")
            .replace("containerPort: 8080", "containerPort: 8080, protocl: TCP")
            .replace("matchLabels: {app: cart}", "matchLabels: {app: kart}");
        let r = check(&bad);
        assert!(!r.valid());
        let errs = r.documents[0].errors.join("\n");
        assert!(errs.contains("spec.replicas") && errs.contains("invalid type"), "{errs}");
        // The unknown field is found even though the type error stops the typed read there.
        let fixed_type =
            GOOD.replace("containerPort: 8080", "containerPort: 8080, protocl: TCP").replace("matchLabels: {app: cart}", "matchLabels: {app: kart}");
        let errs = check(&fixed_type).documents[0].errors.join("\n");
        assert!(errs.contains("spec.template.spec.containers[0].ports[0].protocl: no such field"), "{errs}");
        assert!(errs.contains("spec.selector does not match") && errs.contains("app=kart"), "{errs}");
    }

    #[test]
    fn names_kinds_and_images_are_checked() {
        let r = check("apiVersion: v1\nkind: Service\nmetadata: {name: 9Cart}\nspec: {ports: [{port: 70000}]}\n");
        let errs = r.documents[0].errors.join("\n");
        assert!(errs.contains("metadata.name `9Cart`") && errs.contains("spec.ports[0].port"), "{errs}");
        let r = check("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n");
        assert!(r.documents[0].errors[0].contains("served as apiVersion apps/v1"), "{r:?}");
        let r = check("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: a, image: nginx}]\n");
        assert!(r.valid(), "{r:?}");
        assert!(r.documents[0].warnings.iter().any(|w| w.contains("pin a version")), "{r:?}");
        assert!(check("kind: [").error.is_some());
        assert!(check("").error.is_some());
        assert!(check(&"---\na: 1\n".repeat(30)).error.as_deref().unwrap_or("").contains("more than"));
        // Hostile shapes end as errors, not as a stack overflow or a parse that never ends.
        let deep = format!("a: {}{}", "[".repeat(1_000), "]".repeat(1_000));
        assert!(check(&deep).error.as_deref().unwrap_or("").contains("recursion limit"), "{:?}", check(&deep).error);
        let bomb = (1..10).fold(String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n"), |acc, i| {
            format!("{acc}a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 9].join(", "))
        });
        assert!(check(&bomb).error.as_deref().unwrap_or("").contains("not valid YAML"), "an alias bomb is refused by the parser");
        assert!(check(&"x".repeat(MAX_BYTES + 1)).error.as_deref().unwrap_or("").contains("at most"));
    }

    #[test]
    fn generated_manifests_pass_the_checks() {
        let spec = Spec {
            kind: None,
            name: "cart".into(),
            image: "ghcr.io/acme/cart:1.4.2".into(),
            replicas: Some(3),
            port: Some(8080),
            schedule: None,
            env: Some([("MODE".to_owned(), "prod".to_owned())].into()),
            cpu: Some("100m".into()),
            memory: Some("256Mi".into()),
        };
        let (objects, summary) = generate(&spec, "shop").expect("generate");
        assert_eq!(objects.len(), 2);
        assert!(summary[0].contains("3 replica(s) of ghcr.io/acme/cart:1.4.2, port 8080"), "{summary:?}");
        let r = check(&to_yaml(&objects));
        assert!(r.valid(), "{r:#?}");
        assert!(r.documents.iter().all(|d| d.warnings.is_empty()), "{r:#?}");
        let cron = Spec { kind: Some("cronjob".into()), port: None, ..spec };
        assert!(generate(&cron, "shop").is_err(), "a cronjob without a schedule");
    }
}
