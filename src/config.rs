//! The data plane's configuration: a TOML file, then `DATAPLANE_*` environment variables (the
//! environment wins), then command-line flags. Unknown keys are errors, and every error names
//! the key at fault.
//!
//! Environment names: `DATAPLANE_` + the key path in capitals with `__` between levels, e.g.
//! `DATAPLANE_STORAGE__CLICKHOUSE__URL`. A value is read as TOML when it parses as a TOML value
//! (`8`, `true`, `["ws-a"]`, `[{ name = "x", token = "…", workspaces = ["*"] }]`), otherwise
//! as a string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ingest::config::IngestConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the HTTP API listens. Loopback by default: expose it deliberately.
    pub listen: String,
    /// Where the write-ahead log, the embedded store and development credentials live.
    pub data_dir: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full `tracing` filter.
    pub log_level: String,
    /// Longest wait, on shutdown, for in-flight requests and then for buffered rows to be stored.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send its request headers.
    pub header_timeout_secs: u64,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub auth: auth::AuthConfig,
    pub query: query::QueryLimits,
    /// Grafana's Prometheus datasource, served scoped from an upstream server.
    pub prometheus: query::prom::PrometheusConfig,
    /// Workspaces, projects and their operations.
    pub control: control::ControlConfig,
    /// The AI assistant: model providers, budgets, redaction.
    pub assistant: aiops::AssistantConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            log_level: "info".into(),
            shutdown_grace_secs: 30,
            header_timeout_secs: 10,
            storage: StorageConfig::default(),
            ingest: IngestConfig::default(),
            auth: auth::AuthConfig::default(),
            query: query::QueryLimits::default(),
            prometheus: query::prom::PrometheusConfig::default(),
            control: control::ControlConfig::default(),
            assistant: aiops::AssistantConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Parquet files under `data_dir/store`: nothing else to install.
    #[default]
    Embedded,
    ClickHouse,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: Backend,
    pub clickhouse: ClickHouseSection,
    pub retention: RetentionConfig,
    /// Embedded store: merge a partition's files once it has this many.
    pub compact_min_files: usize,
    /// Seconds between compaction and retention passes.
    pub maintenance_interval_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Embedded,
            clickhouse: ClickHouseSection::default(),
            retention: RetentionConfig::default(),
            compact_min_files: 8,
            maintenance_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSection {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    /// Set to use the cluster DDL (`ON CLUSTER`, `Replicated*`, `Distributed`).
    pub cluster: Option<String>,
    pub insert_timeout_secs: u64,
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        ClickHouseSection {
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: String::new(),
            database: "hexabase".into(),
            cluster: None,
            insert_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub logs_days: u32,
    pub audit_days: u32,
    pub system_days: u32,
    pub metrics_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let r = schemas::migrations::Retention::default();
        RetentionConfig { logs_days: r.logs_days, audit_days: r.audit_days, system_days: r.system_days, metrics_days: r.metrics_days }
    }
}

impl RetentionConfig {
    pub fn to_retention(&self) -> schemas::migrations::Retention {
        schemas::migrations::Retention {
            logs_days: self.logs_days,
            audit_days: self.audit_days,
            system_days: self.system_days,
            metrics_days: self.metrics_days,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Reads the file (if any), applies the environment (`vars` is passed in so tests never touch
/// the process's own), and deserialises with unknown keys refused.
pub fn load(file: Option<&Path>, vars: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?
        }
        None => toml::Table::new(),
    };
    for (name, value) in vars {
        let Some(path) = name.strip_prefix("DATAPLANE_") else { continue };
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Env { name: name.clone(), message: "empty key segment".into() });
        }
        set_path(&mut table, &keys, parse_env_value(value)).map_err(|message| ConfigError::Env { name: name.clone(), message })?;
    }
    // Round-trip through text so errors carry the key and the offending line.
    let text = toml::to_string(&table).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    toml::from_str::<Config>(&text).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn parse_env_value(value: &str) -> toml::Value {
    let wrapped = format!("v = {value}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut current = table;
    for k in parents {
        let entry = current.entry(k.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("`{k}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// The configuration with secrets replaced, for `config print`.
pub fn redacted(config: &Config) -> Config {
    let mut c = config.clone();
    if !c.storage.clickhouse.password.is_empty() {
        c.storage.clickhouse.password = "<redacted>".into();
    }
    for cred in &mut c.ingest.credentials {
        cred.token = "<redacted>".into();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_the_file_and_parses_toml_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[storage]\nbackend = \"clickhouse\"\n").unwrap();
        let c = load(
            Some(&file),
            &vars(&[
                ("DATAPLANE_LISTEN", "127.0.0.1:2"),
                ("DATAPLANE_STORAGE__CLICKHOUSE__URL", "http://ch:8123"),
                ("DATAPLANE_INGEST__BATCH_MAX_ROWS", "5"),
                ("DATAPLANE_INGEST__CREDENTIALS", r#"[{ name = "a", token = "0123456789abcdef", workspaces = ["*"] }]"#),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.storage.backend, Backend::ClickHouse);
        assert_eq!(c.storage.clickhouse.url, "http://ch:8123");
        assert_eq!(c.ingest.batch_max_rows, 5);
        assert_eq!(c.ingest.credentials[0].name, "a");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let e = load(None, &vars(&[("DATAPLANE_INGEST__BATCH_MAX_ROWZ", "5")])).unwrap_err().to_string();
        assert!(e.contains("batch_max_rowz"), "{e}");
        let e = load(None, &vars(&[("DATAPLANE_INGEST__BATCH_MAX_ROWS", "many")])).unwrap_err().to_string();
        assert!(e.contains("batch_max_rows"), "{e}");
    }
}
