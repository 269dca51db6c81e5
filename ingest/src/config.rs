//! Ingest configuration: what is read from the file and environment ([`IngestConfig`]) and the
//! validated form the server runs with ([`IngestSettings`]). Validation is pure and names the
//! key at fault.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::DecodeLimits;
use crate::pipeline::PipelineConfig;
use crate::tenancy::{Credential, TenancyLabels, WorkspaceSet};

/// Limits applied to a request and its events. Every field can be overridden per credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, compressed or not (bytes).
    pub max_body_bytes: usize,
    /// Longest log line (bytes).
    pub max_line_bytes: usize,
    /// Most labels or attributes on one event.
    pub max_labels: usize,
    /// Longest label name or value (bytes).
    pub max_label_bytes: usize,
    /// Deepest JSON nesting in an event.
    pub max_json_depth: usize,
    /// Oldest event accepted, seconds before now.
    pub max_event_age_secs: u64,
    /// Newest event accepted, seconds after now.
    pub max_event_future_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = DecodeLimits::default();
        LimitsConfig {
            max_body_bytes: d.max_body_bytes,
            max_line_bytes: d.max_line_bytes,
            max_labels: d.max_labels,
            max_label_bytes: d.max_label_bytes,
            max_json_depth: d.max_json_depth,
            max_event_age_secs: 7 * 86_400,
            max_event_future_secs: 600,
        }
    }
}

/// Per-credential overrides of [`LimitsConfig`]; unset fields take the global value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    pub max_body_bytes: Option<usize>,
    pub max_line_bytes: Option<usize>,
    pub max_labels: Option<usize>,
    pub max_label_bytes: Option<usize>,
    pub max_json_depth: Option<usize>,
    pub max_event_age_secs: Option<u64>,
    pub max_event_future_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Names the credential in logs and is the user name for ClickHouse-protocol basic auth.
    pub name: String,
    /// The bearer token (or basic-auth password). At least 16 characters.
    pub token: String,
    /// The organisation every event of this credential belongs to. Unset: taken from the
    /// organisation label (for host-cluster shippers).
    #[serde(default)]
    pub org: Option<String>,
    /// Workspaces this credential may write; `["*"]` for all.
    pub workspaces: Vec<String>,
    #[serde(default)]
    pub limits: LimitsOverride,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// A second listener speaking ClickHouse's HTTP insert interface at `/`, for Vector's
    /// `clickhouse` sink. Empty: off (the same interface is always at `/clickhouse/` too).
    pub clickhouse_listen: String,
    /// How long a client may take to send its body (seconds).
    pub body_timeout_secs: u64,
    pub limits: LimitsConfig,
    /// Acknowledged bytes waiting for storage, at most; above it requests get 429.
    pub buffer_max_bytes: usize,
    /// Write-ahead log size, at most; above it requests get 503.
    pub wal_max_disk_bytes: u64,
    pub wal_segment_bytes: u64,
    /// Free space kept on the log's disk: below it requests get 503 (see the README).
    pub disk_headroom_bytes: u64,
    pub batch_max_rows: usize,
    pub batch_max_bytes: usize,
    pub batch_max_age_ms: u64,
    pub flush_concurrency: usize,
    pub tenancy: TenancyLabels,
    pub credentials: Vec<CredentialConfig>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let p = PipelineConfig::default();
        IngestConfig {
            clickhouse_listen: String::new(),
            body_timeout_secs: 30,
            limits: LimitsConfig::default(),
            buffer_max_bytes: p.buffer_max_bytes,
            wal_max_disk_bytes: p.wal_max_disk_bytes,
            wal_segment_bytes: 64 << 20,
            disk_headroom_bytes: p.disk_headroom_bytes,
            batch_max_rows: p.batch_max_rows,
            batch_max_bytes: p.batch_max_bytes,
            batch_max_age_ms: p.batch_max_age.as_millis() as u64,
            flush_concurrency: p.flush_concurrency,
            tenancy: TenancyLabels::default(),
            credentials: Vec::new(),
        }
    }
}

/// The validated ingest configuration.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub clickhouse_listen: Option<String>,
    pub body_timeout: Duration,
    pub pipeline: PipelineConfig,
    pub wal_segment_bytes: u64,
    pub tenancy: Arc<TenancyLabels>,
    pub credentials: Vec<Arc<Credential>>,
}

/// A configuration error, naming the key (`ingest.credentials[1].token`).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

fn limits(base: &LimitsConfig, o: &LimitsOverride) -> LimitsConfig {
    LimitsConfig {
        max_body_bytes: o.max_body_bytes.unwrap_or(base.max_body_bytes),
        max_line_bytes: o.max_line_bytes.unwrap_or(base.max_line_bytes),
        max_labels: o.max_labels.unwrap_or(base.max_labels),
        max_label_bytes: o.max_label_bytes.unwrap_or(base.max_label_bytes),
        max_json_depth: o.max_json_depth.unwrap_or(base.max_json_depth),
        max_event_age_secs: o.max_event_age_secs.unwrap_or(base.max_event_age_secs),
        max_event_future_secs: o.max_event_future_secs.unwrap_or(base.max_event_future_secs),
    }
}

fn check_limits(key: &str, l: &LimitsConfig, buffer_max_bytes: usize) -> Result<(), ConfigError> {
    let positive = [
        ("max_body_bytes", l.max_body_bytes),
        ("max_line_bytes", l.max_line_bytes),
        ("max_labels", l.max_labels),
        ("max_label_bytes", l.max_label_bytes),
        ("max_json_depth", l.max_json_depth),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(err(format!("{key}.{name}"), "must be greater than 0"));
        }
    }
    if l.max_json_depth > 128 {
        return Err(err(format!("{key}.max_json_depth"), "at most 128 (the JSON parser's own limit)"));
    }
    if l.max_body_bytes > buffer_max_bytes {
        return Err(err(format!("{key}.max_body_bytes"), "must not exceed ingest.buffer_max_bytes, or such a request could never be accepted"));
    }
    Ok(())
}

impl IngestConfig {
    pub fn validate(&self) -> Result<IngestSettings, ConfigError> {
        check_limits("ingest.limits", &self.limits, self.buffer_max_bytes)?;
        for (name, v) in [("batch_max_rows", self.batch_max_rows), ("batch_max_bytes", self.batch_max_bytes), ("flush_concurrency", self.flush_concurrency)] {
            if v == 0 {
                return Err(err(format!("ingest.{name}"), "must be greater than 0"));
            }
        }
        if self.wal_segment_bytes < 1 << 16 {
            return Err(err("ingest.wal_segment_bytes", "at least 65536"));
        }
        if self.body_timeout_secs == 0 {
            return Err(err("ingest.body_timeout_secs", "must be greater than 0"));
        }
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        let mut credentials = Vec::new();
        for (i, c) in self.credentials.iter().enumerate() {
            let key = format!("ingest.credentials[{i}]");
            if c.name.is_empty() || !names.insert(c.name.clone()) {
                return Err(err(format!("{key}.name"), "must be set and unique"));
            }
            if c.token.len() < 16 || !c.token.is_ascii() {
                return Err(err(format!("{key}.token"), "must be at least 16 ASCII characters; generate one with `openssl rand -hex 24`"));
            }
            if !tokens.insert(c.token.clone()) {
                return Err(err(format!("{key}.token"), "is used by another credential"));
            }
            let workspaces = match c.workspaces.as_slice() {
                [] => return Err(err(format!("{key}.workspaces"), "list the workspaces this credential may write, or [\"*\"] for all")),
                [all] if all == "*" => WorkspaceSet::All,
                list if list.iter().any(|w| w == "*" || w.is_empty()) => {
                    return Err(err(format!("{key}.workspaces"), "\"*\" must stand alone, and names must not be empty"));
                }
                list => WorkspaceSet::Only(list.iter().cloned().collect()),
            };
            if c.org.as_deref() == Some("") {
                return Err(err(format!("{key}.org"), "must not be empty; leave it out to take the organisation from labels"));
            }
            let l = limits(&self.limits, &c.limits);
            check_limits(&format!("{key}.limits"), &l, self.buffer_max_bytes)?;
            credentials.push(Arc::new(Credential {
                name: c.name.clone(),
                token: c.token.clone(),
                org: c.org.clone(),
                workspaces,
                limits: DecodeLimits {
                    max_body_bytes: l.max_body_bytes,
                    max_line_bytes: l.max_line_bytes,
                    max_labels: l.max_labels,
                    max_label_bytes: l.max_label_bytes,
                    max_json_depth: l.max_json_depth,
                },
                max_age_ns: (l.max_event_age_secs as i64).saturating_mul(1_000_000_000),
                max_future_ns: (l.max_event_future_secs as i64).saturating_mul(1_000_000_000),
            }));
        }
        Ok(IngestSettings {
            clickhouse_listen: Some(self.clickhouse_listen.clone()).filter(|s| !s.is_empty()),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            pipeline: PipelineConfig {
                batch_max_rows: self.batch_max_rows,
                batch_max_bytes: self.batch_max_bytes,
                batch_max_age: Duration::from_millis(self.batch_max_age_ms),
                buffer_max_bytes: self.buffer_max_bytes,
                wal_max_disk_bytes: self.wal_max_disk_bytes,
                flush_concurrency: self.flush_concurrency,
                retry_max_backoff: Duration::from_secs(5),
                dead_letter_dir: std::path::PathBuf::from("dead-letter"),
                disk_headroom_bytes: self.disk_headroom_bytes,
            },
            wal_segment_bytes: self.wal_segment_bytes,
            tenancy: Arc::new(self.tenancy.clone()),
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(name: &str, token: &str, ws: &[&str]) -> CredentialConfig {
        CredentialConfig {
            name: name.into(),
            token: token.into(),
            org: None,
            workspaces: ws.iter().map(|s| s.to_string()).collect(),
            limits: LimitsOverride::default(),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = IngestConfig { credentials: vec![cred("a", "0123456789abcdef", &["*"]), cred("b", "short", &["ws"])], ..Default::default() };
        assert_eq!(c.validate().unwrap_err().key, "ingest.credentials[1].token");
        c.credentials[1] = cred("b", "0123456789abcdeX", &["*", "ws"]);
        assert_eq!(c.validate().unwrap_err().key, "ingest.credentials[1].workspaces");
        c.credentials[1] = cred("b", "0123456789abcdeX", &["ws"]);
        c.credentials[1].limits.max_body_bytes = Some(usize::MAX);
        assert_eq!(c.validate().unwrap_err().key, "ingest.credentials[1].limits.max_body_bytes");
        c.credentials[1].limits.max_body_bytes = Some(1024);
        let s = c.validate().unwrap();
        assert_eq!(s.credentials[1].limits.max_body_bytes, 1024);
        assert_eq!(s.credentials[0].workspaces, WorkspaceSet::All);
    }
}
