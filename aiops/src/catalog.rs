//! The catalogue a server offers: every tool, built from the configuration.

use std::sync::Arc;

use crate::k8s::{K8sEvents, K8sGet, K8sList, K8sPodLogs, WorkspaceClusters};
use crate::k8s_write::{K8sApply, K8sRestart, K8sScale};
use crate::manifest_tools::{ManifestGenerate, ManifestValidate, Validator};
use crate::tools::Registry;

/// The log, metrics and workspace tools, the manifest tools (validation when a jailed
/// `validator` is given), and the Kubernetes tools when workspaces' API servers are configured;
/// with `write_tools` the write tools too (each call then needs the user's approval).
pub fn registry(clusters: &WorkspaceClusters, write_tools: bool, validator: Option<Arc<Validator>>) -> Registry {
    let mut r = Registry::default();
    r.push(Arc::new(ManifestGenerate { clusters: clusters.clone() }));
    if let Some(validator) = &validator {
        r.push(Arc::new(ManifestValidate { validator: validator.clone(), clusters: clusters.clone() }));
    }
    if !clusters.is_empty() {
        r.push(Arc::new(K8sEvents(clusters.clone())));
        r.push(Arc::new(K8sList(clusters.clone())));
        r.push(Arc::new(K8sPodLogs(clusters.clone())));
        r.push(Arc::new(K8sGet(clusters.clone())));
        if write_tools {
            r.push(Arc::new(K8sScale(clusters.clone())));
            r.push(Arc::new(K8sRestart(clusters.clone())));
            if let Some(v) = &validator {
                r.push(Arc::new(K8sApply { validator: v.clone(), clusters: clusters.clone() }));
            }
        }
    }
    r
}
