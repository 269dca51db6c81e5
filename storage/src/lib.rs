//! The store both sides use: ingest writes batches, query reads scoped rows.
//!
//! [`Store`] is the one boundary. Two implementations:
//! - [`embedded::EmbeddedStore`]: the zero-setup default for one machine. Parquet files on disk,
//!   one directory per table, tenant and UTC day; small files compacted; whole days expired by
//!   retention; read by DataFusion through [`embedded::ScopedTable`], a table provider that
//!   cannot return a row outside the request's scope.
//! - [`clickhouse::ClickHouseStore`]: production, through the official `clickhouse` crate, with a
//!   deterministic `insert_deduplication_token` per batch and partition so retries never
//!   duplicate.
//!
//! Both are idempotent per [`BatchId`]: writing the same batch twice (a retry after a timeout, a
//! replay after a crash) stores its rows once. Ingest relies on that for exactly-once delivery.

pub mod clickhouse;
pub mod embedded;
pub mod metrics;
pub mod search;

use std::future::Future;
use std::pin::Pin;

use arrow::record_batch::RecordBatch;
pub use metrics::{MetricRead, MetricSeries};
use schemas::{Rows, Table};
pub use search::{Cursor, HistogramBucket, LogFilters, LogSearch, StreamColumns, StreamCount, StreamsBy, Term};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A table SQL may read, and the marker a checked statement names it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlTable {
    Logs,
    Metrics,
}

impl SqlTable {
    pub fn marker(self) -> &'static str {
        match self {
            SqlTable::Logs => "__hx_scoped_logs",
            SqlTable::Metrics => "__hx_scoped_metrics",
        }
    }
    pub fn table(self) -> Table {
        match self {
            SqlTable::Logs => Table::Logs,
            SqlTable::Metrics => Table::Metrics,
        }
    }
}

/// The catalog SQL may browse (Grafana's query builder: databases, tables, columns), and the
/// marker a checked statement names it by; storage answers it for our two tables only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlCatalog {
    Databases,
    Tables,
    Columns,
}

impl SqlCatalog {
    pub const ALL: [SqlCatalog; 3] = [SqlCatalog::Databases, SqlCatalog::Tables, SqlCatalog::Columns];

    pub fn marker(self) -> &'static str {
        match self {
            SqlCatalog::Databases => "__hx_catalog_databases",
            SqlCatalog::Tables => "__hx_catalog_tables",
            SqlCatalog::Columns => "__hx_catalog_columns",
        }
    }
}

/// A checked `SELECT` whose tables are [`SqlTable::marker`]s, with the scope for each table it
/// reads; storage replaces each marker by a subquery scoped with parameters.
#[derive(Debug, Clone)]
pub struct SqlRead {
    pub sql: String,
    pub logs: Option<auth::TenantScope>,
    pub metrics: Option<auth::TenantScope>,
    /// A ClickHouse output format.
    pub format: String,
    pub timeout_secs: u64,
}

/// Names a batch for its whole life: across retries, crashes and replays. `wal_id` is the
/// identity of the write-ahead log that produced it (random, made when the log was created) and
/// `seq` the log position of the batch's marker, so two logs never mint the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    pub wal_id: String,
    pub seq: u64,
}

impl BatchId {
    /// The deduplication token for one partition of this batch: the same batch and partition
    /// always give the same token, whatever other partitions the batch has (a batch rebuilt
    /// from fewer records after damage keeps the tokens of the partitions it still has).
    pub fn token(&self, partition: &schemas::records::PartitionKey) -> String {
        format!("{}-{}-{:016x}", self.wal_id, self.seq, partition.stable_hash())
    }
}

/// Rows bound for one table, under one identity.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    pub id: BatchId,
    /// Shared, so a store can hand the rows to a blocking thread or a retry without copying.
    pub rows: std::sync::Arc<Rows>,
}

/// What to read. The query crate is the only place allowed to build one from a request, after
/// authorising the caller; storage applies every filter itself (the second wall).
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub table: Table,
    /// Only rows of this organisation (`None`: any; for platform operators only).
    pub org_id: Option<String>,
    /// Only rows of these workspaces (`None`: any in the organisation).
    pub workspaces: Option<Vec<String>>,
    /// Inclusive lower and exclusive upper bound, Unix nanoseconds.
    pub from_ns: i64,
    pub to_ns: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed transiently; the same call may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the data or the statement; retrying the same call will fail again.
    #[error("storage rejected the request: {0}")]
    Rejected(String),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Rejected(_))
    }
}

/// A place rows are stored durably.
///
/// Contract for implementations:
/// - `write` returns `Ok` only once every row of the batch is durable. It is idempotent per
///   `BatchId`: calling it again with the same id and rows (after an error, a timeout or a
///   crash) must not store any row twice. Dropping the future before it completes leaves the
///   batch either stored or not, never half visible after a later successful retry.
/// - `scan` returns only rows matching every filter of the request, whatever else is stored.
/// - `search` and `histogram` read only rows inside `LogSearch::scope` (an implementation
///   enforces it itself, whatever the caller checked before), newest first for `search`, with
///   the term semantics of [`search`]. A bad term (an invalid regex) is `Rejected`. Dropping
///   the future cancels the read.
/// - `migrate` prepares the schema; running it again is a no-op.
pub trait Store: Send + Sync + 'static {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>>;
    fn scan<'a>(&'a self, request: &'a ScanRequest) -> BoxFuture<'a, Result<Vec<RecordBatch>, StoreError>>;
    /// The lines matching `query`, as an answer shows them: every column but the observed time
    /// and the span id, which no answer shows and are not read (`observed_ns` 0, `span_id`
    /// empty). [`Store::scan`] reads whole rows.
    fn search<'a>(&'a self, query: &'a LogSearch) -> BoxFuture<'a, Result<Vec<schemas::LogRecord>, StoreError>>;
    /// Counts per `step_ns` bucket (aligned to `query.from_ns`) and severity.
    fn histogram<'a>(&'a self, query: &'a LogSearch, step_ns: i64) -> BoxFuture<'a, Result<Vec<HistogramBucket>, StoreError>>;
    /// Entries (and message bytes, when `by.bytes`; else 0) per stream, grouped by the stream
    /// columns `by.columns` (the others are empty) and, with `by.step_ns`, per bucket aligned to
    /// `query.from_ns`, for rows matching the query. Sorted by bucket, then stream columns.
    fn streams<'a>(&'a self, query: &'a LogSearch, by: StreamsBy) -> BoxFuture<'a, Result<Vec<StreamCount>, StoreError>>;
    /// Metric series of the read's scope and time range, grouped by series (PromQL's input).
    fn metric_series<'a>(&'a self, read: &'a MetricRead) -> BoxFuture<'a, Result<Vec<MetricSeries>, StoreError>> {
        Box::pin(async move {
            let request = metrics::scan_request(read)?;
            if read.scope.is_empty() {
                return Ok(Vec::new());
            }
            metrics::group(&self.scan(&request).await?, read)
        })
    }
    /// A caller's checked `SELECT` over the scoped tables, answered in `read.format` (ClickHouse
    /// only: the embedded store has no SQL engine yet).
    fn sql<'a>(&'a self, read: &'a SqlRead) -> BoxFuture<'a, Result<bytes::Bytes, StoreError>> {
        let _ = read;
        Box::pin(async { Err(StoreError::Rejected("SQL needs the ClickHouse backend (storage.backend = \"clickhouse\")".into())) })
    }
    /// Background upkeep (compaction, retention). Cheap when there is nothing to do.
    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Bytes the stored rows take on disk, where the backend can tell.
    fn disk_bytes(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}
