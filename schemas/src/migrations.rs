//! ClickHouse DDL as numbered migrations, in a single-node form and a cluster form.
//!
//! Single node: `MergeTree` tables with a non-zero `non_replicated_deduplication_window`, so
//! that a retried insert carrying the same `insert_deduplication_token` is dropped (the default
//! window is 0, which deduplicates nothing). Cluster: `Replicated*` local tables created
//! `ON CLUSTER`, with `Distributed` tables of the public names in front, sharded by tenant.
//!
//! Identifiers come from configuration, never from a request, and are checked by
//! [`Identifier::parse`] before they reach any statement.

/// A ClickHouse identifier that is safe to write into DDL unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(String);

impl Identifier {
    /// Accepts `[A-Za-z_][A-Za-z0-9_]{0,63}`.
    pub fn parse(s: &str) -> Result<Identifier, String> {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().enumerate().all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if ok { Ok(Identifier(s.to_owned())) } else { Err(format!("`{s}` is not a plain identifier: use letters, digits and `_`, at most 64")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Retention per class of data, in days. Each becomes its table's TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub logs_days: u32,
    pub audit_days: u32,
    pub system_days: u32,
    pub metrics_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { logs_days: 30, audit_days: 400, system_days: 14, metrics_days: 90 }
    }
}

/// What the DDL is generated for.
#[derive(Debug, Clone)]
pub struct DdlTarget {
    pub database: Identifier,
    /// `Some` for a cluster: `ON CLUSTER`, `Replicated*` and `Distributed`.
    pub cluster: Option<Identifier>,
    pub retention: Retention,
}

/// One numbered step. Statements are idempotent (`IF NOT EXISTS`), so a step interrupted half
/// way can simply be run again.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: Vec<String>,
}

/// The table that records applied migrations.
pub fn migrations_table(t: &DdlTarget) -> String {
    let db = t.database.as_str();
    match &t.cluster {
        None => format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
             ENGINE = ReplacingMergeTree ORDER BY version"
        ),
        Some(c) => {
            let c = c.as_str();
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {c} (version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) \
                 ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/schema_migrations', '{{replica}}') ORDER BY version"
            )
        }
    }
}

pub fn create_database(t: &DdlTarget) -> String {
    match &t.cluster {
        None => format!("CREATE DATABASE IF NOT EXISTS {}", t.database.as_str()),
        Some(c) => format!("CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}", t.database.as_str(), c.as_str()),
    }
}

struct TableDef {
    name: &'static str,
    columns: &'static str,
    order_by: &'static str,
    shard_key: &'static str,
    ttl_column: &'static str,
}

const LOGS: TableDef = TableDef {
    name: "logs",
    columns: "timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    observed_timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    org_id LowCardinality(String),
    workspace LowCardinality(String),
    project LowCardinality(String),
    application LowCardinality(String),
    pod LowCardinality(String),
    container LowCardinality(String),
    node LowCardinality(String),
    stream LowCardinality(String),
    severity LowCardinality(String),
    message String CODEC(ZSTD(3)),
    attributes Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    INDEX idx_message lower(message) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 1",
    order_by: "(org_id, workspace, project, timestamp)",
    shard_key: "cityHash64(org_id, workspace)",
    ttl_column: "timestamp",
};

const AUDIT: TableDef = TableDef {
    name: "audit_logs",
    columns: "timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    org_id LowCardinality(String),
    workspace LowCardinality(String),
    actor String,
    initiated_by LowCardinality(String),
    action LowCardinality(String),
    resource String,
    outcome LowCardinality(String),
    message String CODEC(ZSTD(3)),
    attributes Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    INDEX idx_message lower(message) TYPE tokenbf_v1(8192, 3, 0) GRANULARITY 1",
    order_by: "(org_id, timestamp)",
    shard_key: "cityHash64(org_id)",
    ttl_column: "timestamp",
};

const SYSTEM: TableDef = TableDef {
    name: "system_logs",
    columns: "timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    component LowCardinality(String),
    node LowCardinality(String),
    severity LowCardinality(String),
    message String CODEC(ZSTD(3)),
    attributes Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    INDEX idx_message lower(message) TYPE tokenbf_v1(8192, 3, 0) GRANULARITY 1",
    order_by: "(component, timestamp)",
    shard_key: "rand()",
    ttl_column: "timestamp",
};

const METRICS: TableDef = TableDef {
    name: "metrics",
    columns: "timestamp DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    org_id LowCardinality(String),
    workspace LowCardinality(String),
    project LowCardinality(String),
    metric LowCardinality(String),
    labels Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    value Float64 CODEC(Gorilla, ZSTD(1))",
    order_by: "(org_id, workspace, metric, labels, timestamp)",
    shard_key: "cityHash64(org_id, workspace)",
    ttl_column: "timestamp",
};

fn create_table(t: &DdlTarget, def: &TableDef, days: u32) -> Vec<String> {
    let db = t.database.as_str();
    let TableDef { name, columns, order_by, shard_key, ttl_column } = def;
    let tail = format!("PARTITION BY toDate({ttl_column}) ORDER BY {order_by} TTL toDateTime({ttl_column}) + INTERVAL {days} DAY DELETE");
    match &t.cluster {
        None => vec![format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} (\n    {columns}\n) ENGINE = MergeTree {tail} \
             SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192"
        )],
        Some(c) => {
            let c = c.as_str();
            vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name}_local ON CLUSTER {c} (\n    {columns}\n) \
                     ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/{name}_local', '{{replica}}') {tail} \
                     SETTINGS replicated_deduplication_window = 10000, index_granularity = 8192"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {db}.{name}_local \
                     ENGINE = Distributed({c}, {db}, {name}_local, {shard_key})"
                ),
            ]
        }
    }
}

/// Every migration, in order.
pub fn all(t: &DdlTarget) -> Vec<Migration> {
    let r = &t.retention;
    vec![Migration {
        version: 1,
        name: "create_tables",
        statements: [
            create_table(t, &LOGS, r.logs_days),
            create_table(t, &AUDIT, r.audit_days),
            create_table(t, &SYSTEM, r.system_days),
            create_table(t, &METRICS, r.metrics_days),
        ]
        .concat(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrow_schema::schema;
    use crate::records::Table;

    #[test]
    fn identifiers_reject_anything_that_could_escape() {
        assert!(Identifier::parse("hexabase_logs").is_ok());
        for bad in ["", "a b", "x;DROP", "1abc", "db`", "a.b", &"a".repeat(65)] {
            assert!(Identifier::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ddl_columns_match_the_arrow_schema() {
        let t = DdlTarget { database: Identifier::parse("db").unwrap(), cluster: None, retention: Retention::default() };
        let defs = [(Table::Logs, &LOGS), (Table::AuditLogs, &AUDIT), (Table::SystemLogs, &SYSTEM), (Table::Metrics, &METRICS)];
        for (table, def) in defs {
            let ddl_cols: Vec<&str> =
                def.columns.lines().map(str::trim).filter(|l| !l.starts_with("INDEX")).filter_map(|l| l.split_whitespace().next()).collect();
            let arrow_cols: Vec<String> = schema(table).fields().iter().map(|f| f.name().clone()).collect();
            assert_eq!(ddl_cols, arrow_cols, "{}", table.name());
        }
        assert!(all(&t)[0].statements.iter().all(|s| s.contains("non_replicated_deduplication_window = 10000")));
    }

    #[test]
    fn cluster_form_uses_replicated_and_distributed_on_cluster() {
        let t = DdlTarget { database: Identifier::parse("db").unwrap(), cluster: Some(Identifier::parse("main").unwrap()), retention: Retention::default() };
        let stmts = &all(&t)[0].statements;
        assert_eq!(stmts.len(), 8);
        assert!(stmts.iter().all(|s| s.contains("ON CLUSTER main")));
        assert!(stmts[0].contains("ReplicatedMergeTree('/clickhouse/tables/{shard}/db/logs_local', '{replica}')"));
        assert!(stmts[1].contains("ENGINE = Distributed(main, db, logs_local, cityHash64(org_id, workspace))"));
    }
}
