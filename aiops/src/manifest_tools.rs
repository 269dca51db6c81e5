//! `manifest.generate` and `manifest.validate`: manifests written or checked for the user and
//! shown to them, never applied. The checks of a given text run in the sandbox's jail (the
//! text is untrusted); both tools then ask the workspace's API server for a server-side dry run
//! as the user (impersonated, like every Kubernetes tool), so its admission and the user's RBAC
//! have their say without anything being stored.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use kube::api::{DynamicObject, Patch, PatchParams};
use sandbox::jail::{End, Jail};
use sandbox::{ToolClass, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::k8s::{WorkspaceClusters, kube_error, workspace_of};
use crate::manifest::{self, DocumentReport, Report, Spec};
use crate::tools::{Tool, ToolContext, parse_args, schema_of};

const NOT_APPLIED: &str = "Nothing was applied. Show the user the summary and the manifest; they apply it themselves (kubectl apply -f).";

/// Runs the manifest checks in the jail: `program manifest validate --json`, the text on stdin.
pub struct Validator {
    jail: Jail,
    program: PathBuf,
}

impl Validator {
    /// `program` is this server's own binary (it has the `manifest validate` command).
    pub fn new(jail: Jail, program: PathBuf) -> Validator {
        Validator { jail, program }
    }

    /// The report, and how the jail held the checker.
    pub async fn check(&self, text: &str) -> Result<(Report, String), ToolError> {
        let run = self.jail.run(&self.program, &["manifest", "validate", "--json"], text.as_bytes(), &[]).await.map_err(|e| ToolError(e.to_string()))?;
        let limits = self.jail.config();
        let held =
            format!("checked in the sandbox's jail (landlock: {}, own network namespace: {}, {} ms)", run.landlock, run.network_namespace, run.elapsed_ms);
        match run.end {
            End::Exited { code: 0 | 1 } => {
                let report = serde_json::from_slice(&run.stdout).map_err(|e| ToolError(format!("the validator's report could not be read: {e}")))?;
                Ok((report, held))
            }
            End::TimedOut => Err(ToolError(format!("the validator ran past its {} ms and was stopped; check fewer or smaller documents", limits.wall_ms))),
            End::OutputLimit => Err(ToolError("the validator wrote more than its output limit and was stopped; check fewer documents".into())),
            End::Signalled { signal } => Err(ToolError(format!(
                "the validator was stopped by signal {signal} (its limits are {} s of CPU and {} MiB of memory); check fewer or smaller documents",
                limits.cpu_seconds,
                limits.memory_bytes >> 20
            ))),
            End::Exited { code } => {
                let err = String::from_utf8_lossy(&run.stderr);
                Err(ToolError(format!("the validator failed ({code}): {}", err.chars().take(300).collect::<String>())))
            }
        }
    }
}

/// The server-side dry run of `object` in `namespace` as the user, in words.
async fn dry_run(clusters: &WorkspaceClusters, ctx: &ToolContext<'_>, workspace: Option<&str>, namespace: &str, doc: &DocumentReport) -> String {
    let Some(object) = &doc.object else { return "not run: the manifest has errors".into() };
    if clusters.is_empty() {
        return "not run: no workspace API server is configured".into();
    }
    let ws = match workspace_of(ctx, workspace).await {
        Ok(ws) => ws,
        Err(e) => return format!("not run: {}", e.0),
    };
    let Some(k) = manifest::kind(&doc.api_version, &doc.kind) else { return "not run: unknown kind".into() };
    let client = match clusters.client_as(ctx.identity, &ws) {
        Ok(c) => c,
        Err(e) => return format!("not run: {}", e.0),
    };
    let ns = doc.namespace.as_deref().unwrap_or(namespace);
    let api = k.api(client, Some(ns));
    let mut object = object.clone();
    if k.namespaced {
        object["metadata"]["namespace"] = json!(ns);
    }
    let obj: DynamicObject = match serde_json::from_value(object) {
        Ok(o) => o,
        Err(e) => return format!("not run: {e}"),
    };
    let params = PatchParams::apply("hexabase-assistant").dry_run().validation_strict();
    match api.patch(&doc.name, &params, &Patch::Apply(&obj)).await {
        Ok(_) => format!("accepted by workspace {ws}'s API server (dry run as the user; nothing stored)"),
        Err(e) => format!("refused: {}", kube_error(e).0),
    }
}

fn document_json(d: &DocumentReport, dry: String) -> Value {
    json!({ "kind": d.kind, "name": d.name, "namespace": d.namespace, "valid": d.valid, "errors": d.errors, "warnings": d.warnings, "server_dry_run": dry })
}

// ---- manifest.validate

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ValidateArgs {
    /// The manifest: YAML (documents separated by ---) or JSON.
    pub manifest: String,
    /// Workspace for the server-side dry run; default the one the user is looking at.
    pub workspace: Option<String>,
    /// Project (namespace) of documents that name none; default the one the user is looking at.
    pub project: Option<String>,
}

pub struct ManifestValidate {
    pub validator: Arc<Validator>,
    pub clusters: WorkspaceClusters,
}

impl Tool for ManifestValidate {
    fn name(&self) -> &'static str {
        "manifest.validate"
    }
    fn description(&self) -> &'static str {
        "Check a Kubernetes manifest (YAML or JSON) against Kubernetes' typed schemas (unknown fields, wrong types, selectors, names, images) and with a server-side dry run as the user. Never applies anything."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<ValidateArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["manifest", "yaml", "validate", "valid", "lint", "apiversion"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: ValidateArgs = parse_args(self.name(), args)?;
            if a.manifest.len() > manifest::MAX_BYTES {
                return Err(ToolError(format!("the manifest is {} bytes; at most {} are checked at once: narrow it", a.manifest.len(), manifest::MAX_BYTES)));
            }
            let (report, held) = self.validator.check(&a.manifest).await?;
            if let Some(e) = &report.error {
                return Ok(json!({ "valid": false, "error": e, "applied": false, "jail": held }));
            }
            let ns = a.project.as_deref().or(ctx.project).unwrap_or("default");
            let mut docs = Vec::new();
            for d in &report.documents {
                docs.push(document_json(d, dry_run(&self.clusters, ctx, a.workspace.as_deref(), ns, d).await));
            }
            Ok(json!({ "valid": report.valid(), "documents": docs, "applied": false, "note": NOT_APPLIED, "jail": held }))
        })
    }
    fn cite(&self, _ctx: &ToolContext<'_>, _args: &Value) -> Option<String> {
        Some("dataplane manifest validate < manifest.yaml".into())
    }
}

// ---- manifest.generate

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GenerateArgs {
    #[serde(flatten)]
    pub spec: Spec,
    /// Workspace for the server-side dry run; default the one the user is looking at.
    pub workspace: Option<String>,
    /// Project (namespace) the objects go in; default the one the user is looking at.
    pub project: Option<String>,
}

pub struct ManifestGenerate {
    pub clusters: WorkspaceClusters,
}

impl Tool for ManifestGenerate {
    fn name(&self) -> &'static str {
        "manifest.generate"
    }
    fn description(&self) -> &'static str {
        "Write Kubernetes manifests for an application (a Deployment, Job or CronJob, and a Service when it has a port), check them and dry-run them as the user, and return them with a summary to show. Never applies anything. Ask the user for the name and image (with its tag) if they did not give them."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<GenerateArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["manifest", "yaml", "generate", "write a", "new app", "cronjob"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: GenerateArgs = parse_args(self.name(), args)?;
            let Some(ns) = a.project.as_deref().or(ctx.project) else { return Err(ToolError("say which project (namespace) the application goes in".into())) };
            let (objects, summary) = manifest::generate(&a.spec, ns).map_err(ToolError)?;
            let text = manifest::to_yaml(&objects);
            // Built from typed values by this server, so checked in process.
            let report = manifest::check(&text);
            let mut docs = Vec::new();
            for d in &report.documents {
                docs.push(document_json(d, dry_run(&self.clusters, ctx, a.workspace.as_deref(), ns, d).await));
            }
            Ok(json!({ "summary": summary, "manifest": text, "valid": report.valid(), "checks": docs, "applied": false, "note": NOT_APPLIED }))
        })
    }
    fn cite(&self, _ctx: &ToolContext<'_>, _args: &Value) -> Option<String> {
        None
    }
}
