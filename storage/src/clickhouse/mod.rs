//! ClickHouse backend, through the official `clickhouse` crate over HTTP.
//!
//! Exactly-once: a batch is split by partition (tenant, UTC day) in a deterministic order and
//! each partition is one INSERT carrying `insert_deduplication_token = <batch id>-<index>`. The
//! tables keep a deduplication window (see `schemas::migrations`), so a retried partition that
//! already landed is dropped by the server, whatever happened to the first attempt's response.
//!
//! Values never go into SQL text: they travel as server-side query parameters (`{name:Type}`).
//! Only identifiers from validated configuration (database, cluster) and static table names do.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use clickhouse::{Client, Row, RowWrite, error::Error as ChError};
use schemas::migrations::{self, DdlTarget, Identifier, Retention};
use schemas::{AuditRecord, LogRecord, MetricSample, Rows, Severity, SystemRecord, Table};
use serde::{Deserialize, Serialize};

use crate::search::{HistogramBucket, LogSearch};
use crate::{BoxFuture, ScanRequest, Store, StoreError, WriteBatch};

mod search;

/// Bounds reads and DDL so a hung connection cannot stall a caller forever; it is not meant to
/// bound the cost of a query (ClickHouse's own settings do that).
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// ClickHouse error codes for statements or data that can never succeed as sent: retrying the
/// same call would fail the same way. Everything else (network, timeouts, overload, other server
/// errors) is treated as transient.
const PERMANENT_CODES: &[u32] = &[
    6, 26, 27, 38, 41, 72, // CANNOT_PARSE_{TEXT, QUOTED_STRING, INPUT_ASSERTION_FAILED, DATE, DATETIME, NUMBER}
    16, 47, 60, 81, // NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_IDENTIFIER, UNKNOWN_TABLE, UNKNOWN_DATABASE
    33, 53, 62, 117, // CANNOT_READ_ALL_DATA (malformed RowBinary), TYPE_MISMATCH, SYNTAX_ERROR, INCORRECT_DATA
];

#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// `http://host:8123`.
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    /// Set for a ClickHouse cluster: DDL runs `ON CLUSTER` with replicated tables.
    pub cluster: Option<String>,
    pub retention: Retention,
    /// Bounds sending each INSERT and waiting for its answer.
    pub insert_timeout: Duration,
}

pub struct ClickHouseStore {
    client: Client,
    target: DdlTarget,
    insert_timeout: Duration,
}

impl ClickHouseStore {
    pub fn new(config: ClickHouseConfig) -> Result<Self, StoreError> {
        let database = Identifier::parse(&config.database).map_err(|e| StoreError::Rejected(format!("clickhouse.database: {e}")))?;
        let cluster = match &config.cluster {
            Some(c) => Some(Identifier::parse(c).map_err(|e| StoreError::Rejected(format!("clickhouse.cluster: {e}")))?),
            None => None,
        };
        // No database on the client: statements name it, and `migrate` must work before it exists.
        // Rows travel as plain RowBinary: the schema is ours (the migrations), every row type
        // is read and written against the real engine in the tests, and the crate's validation
        // (RowBinaryWithNamesAndTypes, a schema fetch per insert table) costs decode time on
        // every answer.
        // The crate's transport as it builds it (keep-alive probes every minute, idle connections
        // dropped after two seconds, before a server's three to ten), with Nagle's algorithm off,
        // which the crate leaves on: small requests and answers leave at once instead of waiting
        // for the peer's acknowledgement of the previous segment.
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(2)).build(connector);
        let mut client = Client::with_http_client(http).with_url(&config.url).with_validation(false);
        if !config.user.is_empty() {
            client = client.with_user(&config.user);
        }
        if !config.password.is_empty() {
            client = client.with_password(&config.password);
        }
        Ok(ClickHouseStore { client, target: DdlTarget { database, cluster, retention: config.retention }, insert_timeout: config.insert_timeout })
    }

    fn table(&self, table: Table) -> String {
        format!("{}.{}", self.target.database.as_str(), table.name())
    }

    /// Rows stored in `table`.
    pub async fn count(&self, table: Table) -> Result<u64, StoreError> {
        let sql = format!("SELECT count() FROM {}", self.table(table));
        timed(self.client.query(&sql).fetch_one::<u64>()).await
    }

    /// Compressed bytes of the database's active parts.
    pub async fn disk_bytes_total(&self) -> Result<u64, StoreError> {
        self.parts_sum("bytes_on_disk").await
    }

    /// Uncompressed bytes of the database's active parts (for the compression ratio).
    pub async fn uncompressed_bytes(&self) -> Result<u64, StoreError> {
        self.parts_sum("data_uncompressed_bytes").await
    }

    async fn parts_sum(&self, column: &str) -> Result<u64, StoreError> {
        let parts = match &self.target.cluster {
            Some(c) => format!("clusterAllReplicas({}, system.parts)", c.as_str()),
            None => "system.parts".to_owned(),
        };
        let sql = format!("SELECT toUInt64(sum({column})) FROM {parts} WHERE active AND database = {{db:String}}");
        timed(self.client.query(&sql).param("db", self.target.database.as_str()).fetch_one::<u64>()).await
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        let t = &self.target;
        // DDL goes verbatim (`query_raw`): a `?` in it must not be read as a client-side bind.
        timed(self.client.query_raw(&migrations::create_database(t)).execute()).await?;
        timed(self.client.query_raw(&migrations::migrations_table(t)).execute()).await?;
        let sql = format!("SELECT DISTINCT version FROM {}.schema_migrations", t.database.as_str());
        let applied: Vec<u32> = timed(self.client.query(&sql).fetch_all::<u32>()).await?;
        for m in migrations::all(t) {
            if applied.contains(&m.version) {
                continue;
            }
            for statement in &m.statements {
                timed(self.client.query_raw(statement).execute()).await?;
            }
            let record = format!("INSERT INTO {}.schema_migrations (version, name) SELECT {{v:UInt32}}, {{n:String}}", t.database.as_str());
            timed(self.client.query(&record).param("v", m.version).param("n", m.name).execute()).await?;
            tracing::info!(version = m.version, name = m.name, "applied clickhouse migration");
        }
        Ok(())
    }

    async fn write_batch(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        for (key, idx) in batch.rows.partition_groups() {
            let token = batch.id.token(&key);
            let idx = &idx;
            match batch.rows.as_ref() {
                Rows::Logs(v) => self.insert(Table::Logs, &token, v, idx).await,
                Rows::AuditLogs(v) => self.insert(Table::AuditLogs, &token, v, idx).await,
                Rows::SystemLogs(v) => self.insert(Table::SystemLogs, &token, v, idx).await,
                Rows::Metrics(v) => self.insert(Table::Metrics, &token, v, idx).await,
            }
            .map_err(classify)?;
        }
        Ok(())
    }

    /// One partition as one INSERT; the same token every time for the same batch and partition.
    async fn insert<T: ToRow>(&self, table: Table, token: &str, records: &[T], idx: &[usize]) -> Result<(), ChError> {
        let mut insert = self
            .client
            .insert_unescaped::<T::Row>(&self.table(table))
            .await?
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", token)
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
        if self.target.cluster.is_some() {
            // A Distributed table otherwise acknowledges an insert once it is queued on the
            // node that took it; the write-ahead log may only be released once it is stored.
            insert = insert.with_setting("distributed_foreground_insert", "1");
        }
        for &i in idx {
            insert.write(&records[i].row()).await?;
        }
        insert.end().await
    }

    /// Metric samples for PromQL: the scan's filters plus the metric names, as parameters; the
    /// scope is applied again to every row while grouping.
    async fn metric_rows(&self, read: &crate::MetricRead) -> Result<Vec<crate::MetricSeries>, StoreError> {
        let req = crate::metrics::scan_request(read)?;
        if read.scope.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = format!(
            "SELECT ?fields FROM {} WHERE timestamp >= fromUnixTimestamp64Milli{} AND timestamp <= fromUnixTimestamp64Milli{}",
            self.table(Table::Metrics),
            search::int(read.from_ms),
            search::int(read.to_ms)
        );
        if req.org_id.is_some() {
            sql.push_str(" AND org_id = {org:String}");
        }
        if req.workspaces.is_some() {
            sql.push_str(" AND workspace IN {ws:Array(String)}");
        }
        if read.metrics.is_some() {
            sql.push_str(" AND metric IN {names:Array(String)}");
        }
        let mut q = self.client.query(&sql).with_setting("additional_table_filters", self.table_filters(None, Some(&read.scope)));
        if let Some(org) = &req.org_id {
            q = q.param("org", org.as_str());
        }
        if let Some(ws) = &req.workspaces {
            q = q.param("ws", ws);
        }
        if let Some(names) = &read.metrics {
            q = q.param("names", names.iter().collect::<Vec<_>>());
        }
        let rows = Rows::Metrics(timed(q.fetch_all::<MetricOut>()).await?.into_iter().map(MetricOut::into_record).collect());
        let batch = schemas::arrow_schema::to_record_batch(&rows).map_err(|e| StoreError::Rejected(format!("arrow conversion: {e}")))?;
        crate::metrics::group(&[batch], read)
    }

    async fn scan_rows(&self, req: &ScanRequest) -> Result<Rows, StoreError> {
        let (convert, from, to) = match req.table {
            Table::Logs | Table::AuditLogs => ("fromUnixTimestamp64Nano", req.from_ns, req.to_ns),
            // Millisecond rows: `ts_ms * 1e6 >= from_ns` exactly when `ts_ms >= ceil(from_ns / 1e6)`.
            Table::Metrics => ("fromUnixTimestamp64Milli", ceil_div(req.from_ns, 1_000_000), ceil_div(req.to_ns, 1_000_000)),
            other => return Err(StoreError::Rejected(format!("scan of {} not supported yet", other.name()))),
        };
        let mut sql = format!(
            "SELECT ?fields FROM {} WHERE timestamp >= {convert}{} AND timestamp < {convert}{}",
            self.table(req.table),
            search::int(from),
            search::int(to)
        );
        if req.org_id.is_some() {
            sql.push_str(" AND org_id = {org:String}");
        }
        if req.workspaces.is_some() {
            sql.push_str(" AND workspace IN {ws:Array(String)}");
        }
        sql.push_str(" ORDER BY timestamp");
        let query = |sql: &str| {
            let mut q = self.client.query(sql);
            if let Some(org) = &req.org_id {
                q = q.param("org", org.as_str());
            }
            if let Some(ws) = &req.workspaces {
                q = q.param("ws", ws);
            }
            q
        };
        Ok(match req.table {
            Table::Logs => Rows::Logs(timed(query(&sql).fetch_all::<LogOut>()).await?.into_iter().map(LogOut::into_record).collect()),
            Table::AuditLogs => Rows::AuditLogs(timed(query(&sql).fetch_all::<AuditOut>()).await?.into_iter().map(AuditOut::into_record).collect()),
            _ => Rows::Metrics(timed(query(&sql).fetch_all::<MetricOut>()).await?.into_iter().map(MetricOut::into_record).collect()),
        })
    }
}

impl Store for ClickHouseStore {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.run_migrations())
    }

    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write_batch(batch))
    }

    fn sql<'a>(&'a self, read: &'a crate::SqlRead) -> BoxFuture<'a, Result<bytes::Bytes, StoreError>> {
        Box::pin(self.sql_bytes(read))
    }

    fn metric_series<'a>(&'a self, read: &'a crate::MetricRead) -> BoxFuture<'a, Result<Vec<crate::MetricSeries>, StoreError>> {
        Box::pin(self.metric_rows(read))
    }

    fn scan<'a>(&'a self, request: &'a ScanRequest) -> BoxFuture<'a, Result<Vec<RecordBatch>, StoreError>> {
        Box::pin(async move {
            let rows = self.scan_rows(request).await?;
            let batch = schemas::arrow_schema::to_record_batch(&rows).map_err(|e| StoreError::Rejected(format!("arrow conversion: {e}")))?;
            Ok(vec![batch])
        })
    }

    fn search<'a>(&'a self, query: &'a LogSearch) -> BoxFuture<'a, Result<Vec<LogRecord>, StoreError>> {
        Box::pin(self.search_lines(query))
    }

    fn streams<'a>(&'a self, query: &'a LogSearch, by: crate::StreamsBy) -> BoxFuture<'a, Result<Vec<crate::StreamCount>, StoreError>> {
        Box::pin(self.stream_counts(query, by))
    }

    fn histogram<'a>(&'a self, query: &'a LogSearch, step_ns: i64) -> BoxFuture<'a, Result<Vec<HistogramBucket>, StoreError>> {
        Box::pin(self.histogram_buckets(query, step_ns))
    }

    fn disk_bytes(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move { self.disk_bytes_total().await.map(Some) })
    }
}

/// Row indices per partition with exactly the grouping and order of `Rows::split_by_partition`
/// (partitions sorted by key, row order kept inside one), without cloning or moving the rows.
/// Partition `i` here is partition `i` there, so deduplication tokens agree with it.
fn ceil_div(x: i64, m: i64) -> i64 {
    x.div_euclid(m) + i64::from(x.rem_euclid(m) != 0)
}

async fn timed<T>(f: impl Future<Output = Result<T, ChError>>) -> Result<T, StoreError> {
    match tokio::time::timeout(QUERY_TIMEOUT, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(StoreError::Unavailable(format!("clickhouse did not answer within {QUERY_TIMEOUT:?}"))),
    }
}

/// Transient or permanent, as `StoreError` defines them. Unknown failures count as transient:
/// retrying a permanent error costs time, dropping data on a transient one loses it.
fn classify(e: ChError) -> StoreError {
    let text = format!("clickhouse: {e}");
    match &e {
        ChError::BadResponse(msg) => match exception_code(msg) {
            Some(code) if PERMANENT_CODES.contains(&code) => StoreError::Rejected(text),
            _ => StoreError::Unavailable(text),
        },
        ChError::InvalidParams(_)
        | ChError::SchemaMismatch(_)
        | ChError::Custom(_)
        | ChError::SequenceMustHaveLength
        | ChError::Unsupported(_)
        | ChError::InvalidColumnsHeader(_) => StoreError::Rejected(text),
        _ => StoreError::Unavailable(text),
    }
}

/// For a caller's SQL: an exception from the engine is about the statement (a 4xx), unless it
/// says the server is busy or short of memory, or the query ran out of time.
pub(crate) fn classify_sql(e: ChError) -> StoreError {
    if let ChError::BadResponse(msg) = &e
        && exception_code(msg).is_some_and(|c| ![159, 160, 202, 241, 394].contains(&c))
    {
        return StoreError::Rejected(msg.chars().take(600).collect());
    }
    classify(e)
}

/// `N` from a ClickHouse exception text `... Code: N. DB::Exception: ...`.
fn exception_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code:")? + 5..];
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A stored record and the borrowed row the client serialises for it.
trait ToRow: Sync {
    type Row: Row + RowWrite;
    fn row(&self) -> <Self::Row as Row>::Value<'_>;
}

// Field names and order are the DDL's columns. `Map(LowCardinality(String), String)` serialises
// as a sequence of (key, value) pairs, so the records' `Vec<(String, String)>` is borrowed as is;
// DateTime64 columns are raw i64 ticks (ns, or ms for metrics); severity is its lowercase name.
#[derive(Row, Serialize)]
struct LogIn<'a> {
    timestamp: i64,
    observed_timestamp: i64,
    org_id: &'a str,
    workspace: &'a str,
    project: &'a str,
    application: &'a str,
    pod: &'a str,
    container: &'a str,
    node: &'a str,
    stream: &'a str,
    severity: &'a str,
    message: &'a str,
    attributes: &'a [(String, String)],
    trace_id: &'a str,
    span_id: &'a str,
}

impl ToRow for LogRecord {
    type Row = LogIn<'static>;
    fn row(&self) -> LogIn<'_> {
        let r = self;
        LogIn {
            timestamp: r.timestamp_ns,
            observed_timestamp: r.observed_ns,
            org_id: &r.org_id,
            workspace: &r.workspace,
            project: &r.project,
            application: &r.application,
            pod: &r.pod,
            container: &r.container,
            node: &r.node,
            stream: &r.stream,
            severity: r.severity.as_str(),
            message: &r.message,
            attributes: &r.attributes,
            trace_id: &r.trace_id,
            span_id: &r.span_id,
        }
    }
}

#[derive(Row, Serialize)]
struct AuditIn<'a> {
    timestamp: i64,
    org_id: &'a str,
    workspace: &'a str,
    actor: &'a str,
    initiated_by: &'a str,
    action: &'a str,
    resource: &'a str,
    outcome: &'a str,
    message: &'a str,
    attributes: &'a [(String, String)],
}

impl ToRow for AuditRecord {
    type Row = AuditIn<'static>;
    fn row(&self) -> AuditIn<'_> {
        let r = self;
        AuditIn {
            timestamp: r.timestamp_ns,
            org_id: &r.org_id,
            workspace: &r.workspace,
            actor: &r.actor,
            initiated_by: &r.initiated_by,
            action: &r.action,
            resource: &r.resource,
            outcome: &r.outcome,
            message: &r.message,
            attributes: &r.attributes,
        }
    }
}

#[derive(Row, Serialize)]
struct SystemIn<'a> {
    timestamp: i64,
    component: &'a str,
    node: &'a str,
    severity: &'a str,
    message: &'a str,
    attributes: &'a [(String, String)],
}

impl ToRow for SystemRecord {
    type Row = SystemIn<'static>;
    fn row(&self) -> SystemIn<'_> {
        let r = self;
        SystemIn {
            timestamp: r.timestamp_ns,
            component: &r.component,
            node: &r.node,
            severity: r.severity.as_str(),
            message: &r.message,
            attributes: &r.attributes,
        }
    }
}

#[derive(Row, Serialize)]
struct MetricIn<'a> {
    timestamp: i64,
    org_id: &'a str,
    workspace: &'a str,
    project: &'a str,
    metric: &'a str,
    labels: &'a [(String, String)],
    value: f64,
}

impl ToRow for MetricSample {
    type Row = MetricIn<'static>;
    fn row(&self) -> MetricIn<'_> {
        let r = self;
        MetricIn {
            timestamp: r.timestamp_ms,
            org_id: &r.org_id,
            workspace: &r.workspace,
            project: &r.project,
            metric: &r.metric,
            labels: &r.labels,
            value: r.value,
        }
    }
}

#[derive(Row, Deserialize)]
struct LogOut {
    timestamp: i64,
    observed_timestamp: i64,
    org_id: String,
    workspace: String,
    project: String,
    application: String,
    pod: String,
    container: String,
    node: String,
    stream: String,
    severity: String,
    message: String,
    attributes: Vec<(String, String)>,
    trace_id: String,
    span_id: String,
}

impl LogOut {
    fn into_record(self) -> LogRecord {
        let r = self;
        LogRecord {
            timestamp_ns: r.timestamp,
            observed_ns: r.observed_timestamp,
            org_id: r.org_id,
            workspace: r.workspace,
            project: r.project,
            application: r.application,
            pod: r.pod,
            container: r.container,
            node: r.node,
            stream: r.stream,
            severity: Severity::parse(&r.severity).unwrap_or_default(),
            message: r.message,
            attributes: r.attributes,
            trace_id: r.trace_id,
            span_id: r.span_id,
        }
    }
}

#[derive(Row, Deserialize)]
struct AuditOut {
    timestamp: i64,
    org_id: String,
    workspace: String,
    actor: String,
    initiated_by: String,
    action: String,
    resource: String,
    outcome: String,
    message: String,
    attributes: Vec<(String, String)>,
}

impl AuditOut {
    fn into_record(self) -> schemas::AuditRecord {
        let r = self;
        schemas::AuditRecord {
            timestamp_ns: r.timestamp,
            org_id: r.org_id,
            workspace: r.workspace,
            actor: r.actor,
            initiated_by: r.initiated_by,
            action: r.action,
            resource: r.resource,
            outcome: r.outcome,
            message: r.message,
            attributes: r.attributes,
        }
    }
}

#[derive(Row, Deserialize)]
struct MetricOut {
    timestamp: i64,
    org_id: String,
    workspace: String,
    project: String,
    metric: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl MetricOut {
    fn into_record(self) -> MetricSample {
        let r = self;
        MetricSample {
            timestamp_ms: r.timestamp,
            org_id: r.org_id,
            workspace: r.workspace,
            project: r.project,
            metric: r.metric,
            labels: r.labels,
            value: r.value,
        }
    }
}

#[cfg(test)]
mod tests;
