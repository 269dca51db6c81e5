//! The Kubernetes objects a workspace and a project are made of, built from their rows. Pure:
//! applying them is the provider's job (`provider.rs`), so what would be created can be
//! shown, tested and diffed without a cluster.

use serde_json::{Value, json};

use crate::model::{Plan, Project, Quota, Workspace};

/// Which API server an object goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// The host cluster, where the workspace's vCluster runs.
    Host,
    /// The workspace's own API server (its vCluster), by workspace id.
    Workspace { id: String, host_namespace: String },
}

/// One object to apply (server-side apply) or delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub cluster: Cluster,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub body: Value,
}

impl Manifest {
    fn new(
        cluster: &Cluster,
        api_version: &'static str,
        kind: &'static str,
        plural: &'static str,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
    ) -> Manifest {
        body["apiVersion"] = json!(api_version);
        body["kind"] = json!(kind);
        body["metadata"]["name"] = json!(name);
        if let Some(ns) = namespace {
            body["metadata"]["namespace"] = json!(ns);
        }
        Manifest { cluster: cluster.clone(), api_version, kind, plural, namespace: namespace.map(str::to_owned), name: name.to_owned(), body }
    }

    /// The step's name in a task's progress: `host/Namespace/hx-ws-…`.
    pub fn step(&self) -> String {
        let cluster = match self.cluster {
            Cluster::Host => "host",
            Cluster::Workspace { .. } => "workspace",
        };
        match &self.namespace {
            Some(ns) => format!("{cluster}/{}/{ns}/{}", self.kind, self.name),
            None => format!("{cluster}/{}/{}", self.kind, self.name),
        }
    }
}

pub const ADMIN_ROLE: &str = "hexabase:workspace-admin";
pub const VIEWER_ROLE: &str = "hexabase:workspace-viewer";
/// The label nodes of a Dedicated workspace carry.
pub const DEDICATED_NODE_LABEL: &str = "hexabase.io/dedicated-workspace";

fn labels(ws: &Workspace) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "hexabase-dataplane",
        "hexabase.io/organization": ws.org_id,
        "hexabase.io/workspace": ws.name,
        "hexabase.io/workspace-id": ws.id,
        "hexabase.io/plan": ws.plan.as_str(),
    })
}

fn quota_spec(q: Quota) -> Value {
    json!({ "hard": {
        "requests.cpu": q.requests_cpu, "requests.memory": q.requests_memory,
        "limits.cpu": q.limits_cpu, "limits.memory": q.limits_memory, "pods": q.pods,
    }})
}

/// What the platform's identity provider is, for the vCluster's API server (OIDC).
#[derive(Debug, Clone, PartialEq)]
pub struct Oidc {
    pub issuer: String,
    pub client_id: String,
}

/// Everything a workspace is made of, in the order it is created (deleted in reverse).
pub fn workspace(ws: &Workspace, oidc: &Oidc) -> Vec<Manifest> {
    let host = Cluster::Host;
    let ns = ws.host_namespace();
    let inner = Cluster::Workspace { id: ws.id.clone(), host_namespace: ns.clone() };
    let mut values = json!({
        "controlPlane": { "distro": { "k8s": { "apiServer": { "extraArgs": [
            format!("--oidc-issuer-url={}", oidc.issuer),
            format!("--oidc-client-id={}", oidc.client_id),
            "--oidc-username-claim=sub",
            "--oidc-groups-claim=groups",
        ]}}}},
        "sync": { "fromHost": { "nodes": { "enabled": ws.plan == Plan::Dedicated } } },
    });
    if ws.plan == Plan::Dedicated {
        let selector = json!({ DEDICATED_NODE_LABEL: ws.id });
        values["sync"]["fromHost"]["nodes"]["selector"] = json!({ "labels": selector });
        values["controlPlane"]["statefulSet"] = json!({ "scheduling": { "nodeSelector": selector } });
        values["policies"] = json!({ "nodeSelector": format!("{DEDICATED_NODE_LABEL}={}", ws.id) });
    }
    let group = |g: &str| format!("{}:{g}", ws.name);
    vec![
        Manifest::new(&host, "v1", "Namespace", "namespaces", None, &ns, json!({ "metadata": { "labels": labels(ws) } })),
        Manifest::new(
            &host,
            "v1",
            "ResourceQuota",
            "resourcequotas",
            Some(&ns),
            "workspace-quota",
            json!({ "metadata": { "labels": labels(ws) }, "spec": quota_spec(ws.plan.workspace_quota()) }),
        ),
        Manifest::new(
            &host,
            "infrastructure.cluster.x-k8s.io/v1alpha1",
            "VCluster",
            "vclusters",
            Some(&ns),
            "vcluster",
            json!({ "metadata": { "labels": labels(ws) }, "spec": { "helmRelease": { "chart": { "name": "vcluster" }, "values": values.to_string() } } }),
        ),
        Manifest::new(
            &inner,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            None,
            ADMIN_ROLE,
            json!({ "metadata": { "labels": labels(ws) }, "rules": [{ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }] }),
        ),
        Manifest::new(
            &inner,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            None,
            VIEWER_ROLE,
            // Secrets are left out on purpose: viewers read workloads, not credentials.
            json!({ "metadata": { "labels": labels(ws) }, "rules": [
                { "apiGroups": [""], "resources": ["pods", "pods/log", "services", "configmaps", "events", "namespaces", "persistentvolumeclaims", "resourcequotas", "limitranges"], "verbs": ["get", "list", "watch"] },
                { "apiGroups": ["apps", "batch", "autoscaling", "networking.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch"] },
            ]}),
        ),
        binding(&inner, ws, ADMIN_ROLE, &group("WSAdmins")),
        binding(&inner, ws, VIEWER_ROLE, &group("WSUsers")),
    ]
}

fn binding(cluster: &Cluster, ws: &Workspace, role: &str, group: &str) -> Manifest {
    Manifest::new(
        cluster,
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        None,
        role,
        json!({
            "metadata": { "labels": labels(ws) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group }],
        }),
    )
}

/// A project: a namespace in the workspace's vCluster with the plan's quota and defaults.
pub fn project(ws: &Workspace, p: &Project) -> Vec<Manifest> {
    let inner = Cluster::Workspace { id: ws.id.clone(), host_namespace: ws.host_namespace() };
    let mut l = labels(ws);
    l["hexabase.io/project"] = json!(p.name);
    let [limit_cpu, limit_mem, req_cpu, req_mem] = ws.plan.container_defaults();
    vec![
        Manifest::new(&inner, "v1", "Namespace", "namespaces", None, &p.name, json!({ "metadata": { "labels": l } })),
        Manifest::new(
            &inner,
            "v1",
            "ResourceQuota",
            "resourcequotas",
            Some(&p.name),
            "project-quota",
            json!({ "metadata": { "labels": l }, "spec": quota_spec(ws.plan.project_quota()) }),
        ),
        Manifest::new(
            &inner,
            "v1",
            "LimitRange",
            "limitranges",
            Some(&p.name),
            "project-limits",
            json!({ "metadata": { "labels": l }, "spec": { "limits": [{
                "type": "Container",
                "default": { "cpu": limit_cpu, "memory": limit_mem },
                "defaultRequest": { "cpu": req_cpu, "memory": req_mem },
            }]}}),
        ),
    ]
}

/// The Secret holding a workspace's backup data key, in its host namespace.
pub fn backup_key_secret(ws: &Workspace, key: &[u8]) -> Manifest {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Manifest::new(
        &Cluster::Host,
        "v1",
        "Secret",
        "secrets",
        Some(&ws.host_namespace()),
        "backup-key",
        json!({ "metadata": { "labels": labels(ws) }, "type": "Opaque", "stringData": { "key": hex } }),
    )
}

/// What one backup or restore Job runs.
pub struct BackupJob<'a> {
    pub ws: &'a Workspace,
    pub policy: &'a crate::backups::BackupPolicy,
    pub storage: &'a crate::backups::BackupStorage,
    pub image: &'a str,
}

impl BackupJob<'_> {
    fn labels(&self) -> Value {
        let mut l = labels(self.ws);
        l["hexabase.io/backup-policy"] = json!(self.policy.name);
        l
    }

    /// The pod template: the agent with the storage's credentials and, when the policy
    /// encrypts, the workspace's data key (both from Secrets, never inline).
    fn template(&self, args: Vec<String>) -> Value {
        let mut env = vec![
            json!({ "name": "BACKUP_STORAGE_KIND", "value": self.storage.kind }),
            json!({ "name": "BACKUP_BUCKET", "value": self.storage.bucket }),
            json!({ "name": "BACKUP_ENDPOINT", "value": self.storage.endpoint }),
            json!({ "name": "BACKUP_REGION", "value": self.storage.region }),
        ];
        if self.policy.encrypted {
            env.push(json!({ "name": "BACKUP_KEY", "valueFrom": { "secretKeyRef": { "name": "backup-key", "key": "key" } } }));
        }
        let mut spec = json!({
            "restartPolicy": "Never",
            "serviceAccountName": "vcluster",
            "containers": [{
                "name": "backup",
                "image": self.image,
                "args": args,
                "env": env,
                "envFrom": [{ "secretRef": { "name": self.storage.credentials_secret } }],
                "securityContext": { "runAsNonRoot": true, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
            }],
        });
        if self.ws.plan == Plan::Dedicated {
            spec["nodeSelector"] = json!({ DEDICATED_NODE_LABEL: self.ws.id });
        }
        json!({ "metadata": { "labels": self.labels() }, "spec": spec })
    }

    fn backup_args(&self, location: &str) -> Vec<String> {
        let mut a = vec!["backup".into(), format!("--kind={}", self.policy.kind), format!("--workspace={}", self.ws.id), format!("--location={location}")];
        if self.policy.encrypted {
            a.push("--encrypt".into());
        }
        a
    }

    /// The policy's CronJob: scheduled runs, each under `<workspace>/<policy>/<time>`.
    pub fn cronjob(&self) -> Manifest {
        let prefix = format!("{}/{}/$(date +%Y%m%dT%H%M%SZ)", self.ws.id, self.policy.name);
        Manifest::new(
            &Cluster::Host,
            "batch/v1",
            "CronJob",
            "cronjobs",
            Some(&self.ws.host_namespace()),
            &self.policy.cronjob_name(),
            json!({
                "metadata": { "labels": self.labels() },
                "spec": {
                    "schedule": self.policy.schedule,
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": self.policy.retention_count.min(10),
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": { "metadata": { "labels": self.labels() }, "spec": { "backoffLimit": 2, "template": self.template(self.backup_args(&prefix)) } },
                },
            }),
        )
    }

    /// A one-off Job: a manual backup into `run.location`, or a restore from it.
    pub fn job(&self, run: &crate::backups::BackupRun) -> Manifest {
        let args = if run.trigger == "restore" {
            let mut a = vec!["restore".into(), format!("--workspace={}", self.ws.id), format!("--location={}", run.location)];
            if self.policy.encrypted {
                a.push("--decrypt".into());
            }
            a
        } else {
            self.backup_args(&run.location)
        };
        let mut m = Manifest::new(
            &Cluster::Host,
            "batch/v1",
            "Job",
            "jobs",
            Some(&self.ws.host_namespace()),
            &run.id,
            json!({ "metadata": { "labels": self.labels() }, "spec": { "backoffLimit": 2, "ttlSecondsAfterFinished": 86_400, "template": self.template(args) } }),
        );
        m.body["metadata"]["labels"]["hexabase.io/backup-run"] = json!(run.id);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn ws(plan: Plan) -> Workspace {
        Workspace {
            id: "ws-0011".into(),
            org_id: "acme".into(),
            name: "shop".into(),
            plan,
            status: Status::Pending,
            status_reason: String::new(),
            version: 1,
            created_by: "alice".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn dedicated_workspaces_select_their_own_nodes_and_shared_do_not() {
        let oidc = Oidc { issuer: "https://id.example".into(), client_id: "hexabase".into() };
        let shared = workspace(&ws(Plan::Shared), &oidc);
        let dedicated = workspace(&ws(Plan::Dedicated), &oidc);
        let values = |m: &[Manifest]| {
            m.iter().find(|m| m.kind == "VCluster").map(|m| m.body["spec"]["helmRelease"]["values"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
        };
        assert!(!values(&shared).contains(DEDICATED_NODE_LABEL));
        assert!(values(&dedicated).contains(&format!("{DEDICATED_NODE_LABEL}\":\"ws-0011")));
        assert!(values(&shared).contains("--oidc-issuer-url=https://id.example"));
        let quota = |m: &[Manifest]| m.iter().find(|m| m.kind == "ResourceQuota").map(|m| m.body["spec"]["hard"]["pods"].clone());
        assert_ne!(quota(&shared), quota(&dedicated));
        assert_eq!(shared.iter().map(Manifest::step).collect::<Vec<_>>()[0], "host/Namespace/hx-ws-0011");
    }
}
