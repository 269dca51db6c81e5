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

use crate::{BoxFuture, ScanRequest, Store, StoreError, WriteBatch};

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
        let mut client = Client::default().with_url(&config.url);
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
        for (i, idx) in partition_groups(&batch.rows).iter().enumerate() {
            let token = batch.id.token(i);
            match &batch.rows {
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
        for &i in idx {
            insert.write(&records[i].row()).await?;
        }
        insert.end().await
    }

    async fn scan_rows(&self, req: &ScanRequest) -> Result<Rows, StoreError> {
        let (convert, from, to) = match req.table {
            Table::Logs => ("fromUnixTimestamp64Nano", req.from_ns, req.to_ns),
            // Millisecond rows: `ts_ms * 1e6 >= from_ns` exactly when `ts_ms >= ceil(from_ns / 1e6)`.
            Table::Metrics => ("fromUnixTimestamp64Milli", ceil_div(req.from_ns, 1_000_000), ceil_div(req.to_ns, 1_000_000)),
            other => return Err(StoreError::Rejected(format!("scan of {} not supported yet", other.name()))),
        };
        let mut sql =
            format!("SELECT ?fields FROM {} WHERE timestamp >= {convert}({{from:Int64}}) AND timestamp < {convert}({{to:Int64}})", self.table(req.table));
        if req.org_id.is_some() {
            sql.push_str(" AND org_id = {org:String}");
        }
        if req.workspaces.is_some() {
            sql.push_str(" AND has({ws:Array(String)}, workspace)");
        }
        sql.push_str(" ORDER BY timestamp");
        let query = |sql: &str| {
            let mut q = self.client.query(sql).param("from", from).param("to", to);
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

    fn scan<'a>(&'a self, request: &'a ScanRequest) -> BoxFuture<'a, Result<Vec<RecordBatch>, StoreError>> {
        Box::pin(async move {
            let rows = self.scan_rows(request).await?;
            let batch = schemas::arrow_schema::to_record_batch(&rows).map_err(|e| StoreError::Rejected(format!("arrow conversion: {e}")))?;
            Ok(vec![batch])
        })
    }

    fn disk_bytes(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move { self.disk_bytes_total().await.map(Some) })
    }
}

/// Row indices per partition with exactly the grouping and order of `Rows::split_by_partition`
/// (partitions sorted by key, row order kept inside one), without cloning or moving the rows.
/// Partition `i` here is partition `i` there, so deduplication tokens agree with it.
fn partition_groups(rows: &Rows) -> Vec<Vec<usize>> {
    let keys = rows.partition_keys();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if keys[g[0]] == keys[i] => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

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
mod tests {
    //! Against the real ClickHouse engine: `tests/support/clickhouse_adapter.py` serves
    //! ClickHouse's HTTP interface over chdb, so the real client and SQL are exercised.

    use super::*;
    use crate::BatchId;
    use std::io::{Read, Write};
    use std::process::{Child, Command, Stdio};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    const DAY_NS: i64 = 86_400 * 1_000_000_000;

    struct Adapter {
        child: Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for Adapter {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Adapter {
        /// `None` (the test is skipped) only when Python's `chdb` is missing.
        fn start() -> Option<Adapter> {
            let chdb = Command::new("python3").args(["-c", "import chdb"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            if !chdb.is_ok_and(|s| s.success()) {
                eprintln!("SKIPPED: `python3 -c 'import chdb'` failed; install chdb-core to run the ClickHouse tests");
                return None;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let port_file = dir.path().join("port");
            let mut child = Command::new("python3")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/clickhouse_adapter.py"))
                .args(["--data".as_ref(), dir.path().join("data").as_os_str(), "--port-file".as_ref(), port_file.as_os_str()])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn the adapter");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse::<u16>().ok()) {
                    return Some(Adapter { child, url: format!("http://127.0.0.1:{port}"), _dir: dir });
                }
                if let Some(status) = child.try_wait().expect("poll the adapter") {
                    panic!("the adapter exited early: {status}");
                }
                assert!(Instant::now() < deadline, "the adapter did not start within 60 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        fn store(&self, database: &str) -> ClickHouseStore {
            ClickHouseStore::new(config(&self.url, database, None)).expect("valid config")
        }

        /// Arms the adapter's fault injection for the next `count` INSERTs.
        fn fault(&self, mode: &str, count: u32) {
            let addr = self.url.trim_start_matches("http://");
            let mut s = std::net::TcpStream::connect(addr).expect("connect to the adapter");
            write!(s, "POST /__fault?mode={mode}&count={count} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("send");
            let mut resp = String::new();
            s.read_to_string(&mut resp).expect("read");
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        }
    }

    fn config(url: &str, database: &str, cluster: Option<&str>) -> ClickHouseConfig {
        ClickHouseConfig {
            url: url.into(),
            user: String::new(),
            password: String::new(),
            database: database.into(),
            cluster: cluster.map(Into::into),
            retention: Retention::default(),
            insert_timeout: Duration::from_secs(20),
        }
    }

    /// Start of yesterday (UTC), so rows are inside every retention TTL.
    fn yesterday() -> i64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
        now.div_euclid(DAY_NS) * DAY_NS - DAY_NS
    }

    /// 20 rows over two days and two workspaces of `org`, unique timestamps, awkward text.
    fn logs(org: &str, base: i64) -> Vec<LogRecord> {
        let shift = if org == "o2" { 29 } else { 0 };
        let mut out = Vec::new();
        for (d, ws, k) in (0..4).flat_map(|i| (0..5i64).map(move |k| (i % 2, ["a", "b"][i as usize / 2], k))) {
            out.push(LogRecord {
                timestamp_ns: base + d * DAY_NS + k * 1_000_000_007 + if ws == "b" { 13 } else { 0 } + shift,
                observed_ns: base + d * DAY_NS + k * 1_000_000_007 + 5,
                org_id: org.into(),
                workspace: ws.into(),
                pod: format!("pod-{k}"),
                severity: [Severity::Info, Severity::Error, Severity::Unknown][k as usize % 3],
                message: format!("line {k} in {ws} with 'quotes', \"dq\", \\ and é\n"),
                attributes: vec![("app".into(), format!("x{k}")), ("zone".into(), "z'1".into())],
                trace_id: format!("{k:032x}"),
                ..Default::default()
            });
        }
        out
    }

    fn batch(seq: u64, rows: Rows) -> WriteBatch {
        WriteBatch { id: BatchId { wal_id: "wal-test".into(), seq }, rows }
    }

    #[test]
    fn partition_groups_match_split_by_partition() {
        let all: Vec<LogRecord> = logs("o1", 0).into_iter().rev().collect();
        let groups = partition_groups(&Rows::Logs(all.clone()));
        let split = Rows::Logs(all.clone()).split_by_partition();
        assert_eq!(groups.len(), split.len());
        for (idx, (_, part)) in groups.iter().zip(split) {
            assert_eq!(Rows::Logs(idx.iter().map(|&i| all[i].clone()).collect()), part);
        }
    }

    #[test]
    fn errors_are_classified_and_identifiers_validated() {
        assert_eq!(exception_code("bad response: Code: 999. DB::Exception: injected fault"), Some(999));
        assert_eq!(exception_code("500 Internal Server Error"), None);
        assert!(matches!(classify(ChError::BadResponse("Code: 117. DB::Exception: x".into())), StoreError::Rejected(_)));
        assert!(matches!(classify(ChError::BadResponse("Code: 241. DB::Exception: memory".into())), StoreError::Unavailable(_)));
        assert!(matches!(classify(ChError::TimedOut), StoreError::Unavailable(_)));
        let new = |db, cluster| ClickHouseStore::new(config("http://127.0.0.1:1", db, cluster));
        assert!(matches!(new("db; DROP", None), Err(StoreError::Rejected(m)) if m.contains("clickhouse.database")));
        assert!(matches!(new("db", Some("c`x")), Err(StoreError::Rejected(m)) if m.contains("clickhouse.cluster")));
        assert!(new("db", Some("main")).is_ok());
    }

    #[tokio::test]
    async fn migrations_and_writes_are_idempotent() {
        let Some(adapter) = Adapter::start() else { return };
        let store = adapter.store("dp_test");
        store.migrate().await.expect("migrate");
        store.migrate().await.expect("migrate again");
        let recorded: u64 = store.client.query("SELECT count() FROM dp_test.schema_migrations").fetch_one().await.expect("count");
        assert_eq!(recorded, migrations::all(&store.target).len() as u64);

        let rows = logs("o1", yesterday());
        let n = rows.len() as u64;
        let first = batch(1, Rows::Logs(rows.clone()));
        store.write(&first).await.expect("write");
        store.write(&first).await.expect("write the same batch again");
        assert_eq!(store.count(Table::Logs).await.expect("count"), n, "a replayed batch is stored once");
        // Identical rows under another batch id are new data, not a replay.
        store.write(&batch(2, Rows::Logs(rows.clone()))).await.expect("write");
        assert_eq!(store.count(Table::Logs).await.expect("count"), 2 * n);
        // And the token, not the content, identifies a partition: batch 1 replayed with other
        // bytes (say, re-encoded) is still a replay.
        let changed = rows.into_iter().map(|r| LogRecord { message: "changed".into(), ..r }).collect();
        store.write(&batch(1, Rows::Logs(changed))).await.expect("write");
        assert_eq!(store.count(Table::Logs).await.expect("count"), 2 * n, "deduplicated by token");

        // Every table's row type matches its DDL (the client validates against DESCRIBE TABLE).
        let ts = yesterday();
        let attrs = vec![("k".to_owned(), "v".to_owned())];
        let audit = AuditRecord { timestamp_ns: ts, org_id: "o1".into(), action: "delete".into(), attributes: attrs.clone(), ..Default::default() };
        let system = SystemRecord { timestamp_ns: ts, component: "ingest".into(), severity: Severity::Warn, attributes: attrs.clone(), ..Default::default() };
        let metric = MetricSample { timestamp_ms: ts / 1_000_000, org_id: "o1".into(), metric: "up".into(), labels: attrs, value: 1.5, ..Default::default() };
        for (seq, rows) in [(3, Rows::AuditLogs(vec![audit])), (4, Rows::SystemLogs(vec![system])), (5, Rows::Metrics(vec![metric]))] {
            let table = rows.table();
            store.write(&batch(seq, rows)).await.expect("write");
            assert_eq!(store.count(table).await.expect("count"), 1, "{}", table.name());
        }
        assert!(store.disk_bytes().await.expect("disk bytes").is_some_and(|b| b > 0));
        assert!(store.uncompressed_bytes().await.expect("uncompressed bytes") > 0);
    }

    #[tokio::test]
    async fn failed_inserts_retry_without_duplicates() {
        let Some(adapter) = Adapter::start() else { return };
        let store = adapter.store("dp_faults");
        store.migrate().await.expect("migrate");
        let base = yesterday();
        let mut expected = 0;
        // `reset_after`: the first partition lands but its answer is lost, the key exactly-once
        // case; `refuse_before`: the connection dies before anything is applied; `error_500`:
        // the server refuses transiently. Each time the write fails and a retry stores all once.
        for (seq, mode, count) in [(1, "reset_after", 1), (2, "reset_after", 3), (3, "refuse_before", 2), (4, "error_500", 1)] {
            let rows = logs("o1", base + seq as i64 * 1_000);
            expected += rows.len() as u64;
            let b = batch(seq, Rows::Logs(rows));
            adapter.fault(mode, count);
            let err = store.write(&b).await.expect_err(mode);
            assert!(matches!(err, StoreError::Unavailable(_)), "{mode}: {err}");
            let mut attempts = 0;
            while let Err(e) = store.write(&b).await {
                attempts += 1;
                assert!(e.is_transient() && attempts < count, "{mode}: retry {attempts} failed: {e}");
            }
            assert_eq!(store.count(Table::Logs).await.expect("count"), expected, "{mode}: every row exactly once");
        }

        // Errors that can never succeed are `Rejected`: here, a database that was never migrated.
        let missing = adapter.store("dp_missing");
        let err = missing.write(&batch(9, Rows::Logs(logs("o1", base)))).await.expect_err("no such database");
        assert!(matches!(err, StoreError::Rejected(_)), "{err}");
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn scans_apply_every_filter() {
        let Some(adapter) = Adapter::start() else { return };
        let store = adapter.store("dp_scan");
        store.migrate().await.expect("migrate");
        let base = yesterday();
        let (o1, o2) = (logs("o1", base), logs("o2", base));
        store.write(&batch(1, Rows::Logs([o1.clone(), o2.clone()].concat()))).await.expect("write");
        let scan = |org: Option<&str>, ws: Option<&[&str]>, from_ns: i64, to_ns: i64| ScanRequest {
            table: Table::Logs,
            org_id: org.map(Into::into),
            workspaces: ws.map(|w| w.iter().map(|s| s.to_string()).collect()),
            from_ns,
            to_ns,
        };
        let expect = |mut rows: Vec<LogRecord>| {
            rows.sort_by_key(|r| r.timestamp_ns);
            schemas::arrow_schema::to_record_batch(&Rows::Logs(rows)).expect("arrow")
        };
        let all = (base - DAY_NS, base + 3 * DAY_NS);

        let got = store.scan(&scan(Some("o1"), Some(&["a"]), all.0, all.1)).await.expect("scan");
        assert_eq!(got, vec![expect(o1.iter().filter(|r| r.workspace == "a").cloned().collect())], "org and workspace filters");
        let got = store.scan(&scan(Some("o2"), None, all.0, all.1)).await.expect("scan");
        assert_eq!(got, vec![expect(o2.clone())], "organisation filter");
        let got = store.scan(&scan(None, None, base + DAY_NS, base + 2 * DAY_NS)).await.expect("scan");
        let second_day: Vec<LogRecord> = o1.iter().chain(&o2).filter(|r| r.timestamp_ns >= base + DAY_NS).cloned().collect();
        assert_eq!(got, vec![expect(second_day)], "time range, upper bound exclusive");
        let first = o1.iter().map(|r| r.timestamp_ns).min().expect("rows");
        let got = store.scan(&scan(Some("o1"), None, first, first + 1)).await.expect("scan");
        assert_eq!(got[0].num_rows(), 1, "lower bound inclusive, to the nanosecond");

        for evil in ["x' OR 1=1 --", "a') OR ('1'='1", "\\'; DROP TABLE dp_scan.logs; --"] {
            let got = store.scan(&scan(Some("o1"), Some(&[evil]), all.0, all.1)).await.expect("scan");
            assert_eq!(got[0].num_rows(), 0, "{evil}");
            let got = store.scan(&scan(Some(evil), None, all.0, all.1)).await.expect("scan");
            assert_eq!(got[0].num_rows(), 0, "{evil}");
        }
        assert_eq!(store.scan(&scan(Some("o1"), Some(&[]), all.0, all.1)).await.expect("scan")[0].num_rows(), 0);
        assert_eq!(store.count(Table::Logs).await.expect("count"), (o1.len() + o2.len()) as u64, "nothing broke");

        // Metrics are stored in milliseconds; nanosecond bounds still cut exactly.
        let ms = base / 1_000_000 + 1_000;
        let sample = MetricSample { timestamp_ms: ms, org_id: "o1".into(), metric: "up".into(), value: 2.0, ..Default::default() };
        store.write(&batch(2, Rows::Metrics(vec![sample.clone()]))).await.expect("write metrics");
        let ns = ms * 1_000_000;
        for (from, to, n) in [(ns, ns + 1, 1), (ns + 1, ns + 2_000_000, 0), (ns - 5, ns, 0), (ns - 1_000_000, ns + 1, 1)] {
            let req = ScanRequest { table: Table::Metrics, org_id: Some("o1".into()), workspaces: None, from_ns: from, to_ns: to };
            let got = store.scan(&req).await.expect("scan metrics");
            assert_eq!(got[0].num_rows(), n, "[{from}, {to})");
            if n == 1 {
                assert_eq!(got[0], schemas::arrow_schema::to_record_batch(&Rows::Metrics(vec![sample.clone()])).expect("arrow"));
            }
        }
        let req = ScanRequest { table: Table::AuditLogs, org_id: None, workspaces: None, from_ns: 0, to_ns: 1 };
        assert!(matches!(store.scan(&req).await, Err(StoreError::Rejected(_))));
    }
}
