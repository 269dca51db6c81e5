//! The upstream Prometheus-compatible server and its configuration (`[prometheus]`).

use std::sync::Arc;
use std::time::Duration;

use super::scope::TenantLabels;

/// `[prometheus]` in the configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus-compatible server whose API is served, scoped (for example
    /// `http://prometheus:9090`). Empty: no upstream.
    pub upstream: String,
    /// The labels that carry tenancy in the upstream's series.
    pub labels: TenantLabels,
}

impl PrometheusConfig {
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.upstream;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("prometheus.upstream: `{}` is not an http:// or https:// URL", self.upstream));
        }
        let l = &self.labels;
        let org = (!l.organization.is_empty()).then_some(("prometheus.labels.organization", &l.organization));
        for (key, v) in [("prometheus.labels.workspace", &l.workspace), ("prometheus.labels.project", &l.project)].into_iter().chain(org) {
            let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || v.starts_with("__") {
                return Err(format!("{key}: `{v}` is not a Prometheus label name"));
            }
        }
        Ok(())
    }
}

/// The upstream server and how its series carry tenancy.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub(super) base: String,
    pub(super) labels: TenantLabels,
    pub(super) client: reqwest::Client,
}

impl Upstream {
    pub fn new(config: &PrometheusConfig) -> Result<Option<Arc<Upstream>>, String> {
        config.validate()?;
        if config.upstream.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("prometheus.upstream: cannot build the HTTP client: {e}"))?;
        Ok(Some(Arc::new(Upstream { base: config.upstream.trim_end_matches('/').to_owned(), labels: config.labels.clone(), client })))
    }
}
