//! The embedded store: Parquet files on local disk, for one machine with nothing else installed.
//!
//! Layout: `root/<table>/org=<org>/ws=<workspace>/day=<days since epoch>/<file>.parquet`, with
//! path components percent-encoded so no tenant name can climb out of its directory. Each
//! [`WriteBatch`] partition becomes one file named after the batch (`b-<wal_id>-<seq>.parquet`;
//! the directory names the partition); writing it again finds the file (or the record that it
//! was compacted) and does nothing, which makes writes idempotent, even for a batch rebuilt
//! from fewer records.
//!
//! Durability: a file is written under a temporary name, fsynced, renamed, and its directory
//! fsynced before `write` returns.
//!
//! Compaction merges a partition's small batch files into one `c-*.parquet`, after first writing
//! a `c-*.ids` list of the files it replaces. A crash at any step is repaired on open: sources
//! listed by a finished compaction are deleted, an unfinished one is discarded.
//!
//! Retention deletes whole day directories older than the table's retention.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use schemas::Table;
use schemas::arrow_schema::to_record_batch_selected;
use schemas::migrations::Retention;
use schemas::records::PartitionKey;
use tokio::sync::RwLock;

use crate::search::{HistogramBucket, LogSearch};
use crate::{BoxFuture, ScanRequest, Store, StoreError, WriteBatch};

mod search;
mod table;
mod wall;

pub use table::ScopedTable;

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub root: PathBuf,
    pub retention: Retention,
    /// Compact a partition once it holds this many batch files.
    pub compact_min_files: usize,
}

impl EmbeddedConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EmbeddedConfig { root: root.into(), retention: Retention::default(), compact_min_files: 8 }
    }
}

/// A partition directory's escaped names and day.
struct DirKey<'a> {
    org: &'a str,
    workspace: &'a str,
    day: i64,
}

pub struct EmbeddedStore {
    config: EmbeddedConfig,
    /// Scans hold it shared while they list and read files; compaction and retention hold it
    /// exclusively while they delete, so a scan never sees a file vanish under it nor a
    /// compacted file together with its sources.
    files: RwLock<()>,
    /// Per partition directory: the batch files a finished compaction replaced.
    compacted: Mutex<HashMap<PathBuf, Arc<HashSet<String>>>>,
    /// Metric files decoded and grouped into series, by path (a file is never rewritten in
    /// place: its size and modification time must still match).
    series_cache: moka::sync::Cache<PathBuf, Arc<CachedSeries>>,
}

/// Most memory the decoded metric series of stored files may take.
const SERIES_CACHE_BYTES: u64 = 256 << 20;

pub(crate) struct CachedSeries {
    stamp: (u64, Option<std::time::SystemTime>),
    series: Vec<crate::MetricSeries>,
}

impl EmbeddedStore {
    /// Opens the store for the process that writes it, repairing what a crash interrupted.
    pub fn open(config: EmbeddedConfig) -> Result<EmbeddedStore, StoreError> {
        fs::create_dir_all(&config.root)?;
        let store = EmbeddedStore::open_for_reading(config);
        for dir in store.partition_dirs(None, &|_| true)? {
            repair_compaction(&dir)?;
        }
        Ok(store)
    }

    /// Opens the store for reading only, beside a writer in another process (no repair: the
    /// writer's temporary files are its own).
    pub fn open_for_reading(mut config: EmbeddedConfig) -> EmbeddedStore {
        // Reads name files by absolute path (DataFusion's object store takes nothing else), so
        // a relative root (the default `./data`) is resolved once, here.
        if let Ok(root) = fs::canonicalize(&config.root).or_else(|_| std::path::absolute(&config.root)) {
            config.root = root;
        }
        let series_cache = moka::sync::Cache::builder()
            .max_capacity(SERIES_CACHE_BYTES)
            .weigher(|_: &PathBuf, c: &Arc<CachedSeries>| u32::try_from(c.series.iter().map(crate::MetricSeries::weight).sum::<usize>()).unwrap_or(u32::MAX))
            .build();
        EmbeddedStore { config, files: RwLock::new(()), compacted: Mutex::new(HashMap::new()), series_cache }
    }

    fn partition_dir(&self, table: Table, key: &PartitionKey) -> PathBuf {
        self.config
            .root
            .join(table.name())
            .join(format!("org={}", escape(&key.org_id)))
            .join(format!("ws={}", escape(&key.workspace)))
            .join(format!("day={}", key.day))
    }

    /// Partition directories of `table` (or all tables) that pass `keep`, which sees the
    /// directory's escaped organisation and workspace names (compare with [`escape`]).
    fn partition_dirs(&self, table: Option<Table>, keep: &dyn Fn(&DirKey) -> bool) -> Result<Vec<PathBuf>, StoreError> {
        let tables: Vec<Table> = table.map(|t| vec![t]).unwrap_or_else(|| Table::ALL.to_vec());
        let mut out = Vec::new();
        for t in tables {
            let tdir = self.config.root.join(t.name());
            for org in read_dir_names(&tdir, "org=")? {
                for ws in read_dir_names(&tdir.join(format!("org={org}")), "ws=")? {
                    let wsdir = tdir.join(format!("org={org}")).join(format!("ws={ws}"));
                    for day in read_dir_names(&wsdir, "day=")? {
                        let Ok(day_number) = day.parse::<i64>() else { continue };
                        if keep(&DirKey { org: &org, workspace: &ws, day: day_number }) {
                            out.push(wsdir.join(format!("day={day}")));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn compacted_names(&self, dir: &Path) -> Result<Arc<HashSet<String>>, StoreError> {
        let mut cache = self.compacted.lock().map_err(|_| StoreError::Unavailable("compaction cache poisoned".into()))?;
        if let Some(names) = cache.get(dir) {
            return Ok(names.clone());
        }
        let mut names = HashSet::new();
        for entry in read_dir_or_empty(dir)? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "ids") {
                names.extend(fs::read_to_string(&path)?.lines().map(str::to_owned));
            }
        }
        let names = Arc::new(names);
        cache.insert(dir.to_owned(), names.clone());
        Ok(names)
    }

    fn write_blocking(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let table = batch.rows.table();
        for (key, idx) in batch.rows.partition_groups() {
            let dir = self.partition_dir(table, &key);
            let name = format!("b-{}-{}.parquet", batch.id.wal_id, batch.id.seq);
            if dir.join(&name).exists() || self.compacted_names(&dir)?.contains(&name) {
                continue;
            }
            fs::create_dir_all(&dir)?;
            let rb = to_record_batch_selected(&batch.rows, Some(&idx)).map_err(|e| StoreError::Rejected(format!("rows do not fit the schema: {e}")))?;
            write_batch_atomically(&dir, &name, &rb)?;
        }
        Ok(())
    }

    /// The partition directories a scan reads: its table, organisation, workspaces and days.
    fn dirs_for(&self, req: &ScanRequest) -> Result<Vec<PathBuf>, StoreError> {
        let (from_day, to_day) = (req.from_ns.div_euclid(NS_PER_DAY), req.to_ns.div_euclid(NS_PER_DAY));
        let org = req.org_id.as_deref().map(escape);
        let workspaces: Option<Vec<String>> = req.workspaces.as_ref().map(|ws| ws.iter().map(|w| escape(w)).collect());
        let keep = |k: &DirKey| {
            org.as_ref().is_none_or(|o| o == k.org)
                && workspaces.as_ref().is_none_or(|ws| ws.iter().any(|w| w == k.workspace))
                && k.day >= from_day
                && k.day <= to_day
        };
        self.partition_dirs(Some(req.table), &keep)
    }

    fn scan_blocking(&self, req: &ScanRequest) -> Result<Vec<RecordBatch>, StoreError> {
        let table = self.scoped_table(req.table, &self.dirs_for(req)?, table::wall_of_request(req))?;
        let plan = table.plan(None, &[table.time_range(req.from_ns, req.to_ns)]).map_err(planning)?;
        let mut out = Vec::new();
        table::each_batch(plan, |batch| {
            out.push(batch.clone());
            Ok(())
        })?;
        Ok(out)
    }

    /// `table` as a scope sees it: the Parquet files of `dirs` (the scope's partition
    /// directories) under `wall` (the scope's predicate).
    fn scoped_table(&self, table: Table, dirs: &[PathBuf], wall: datafusion::logical_expr::Expr) -> Result<ScopedTable, StoreError> {
        let mut files = Vec::new();
        for dir in dirs {
            for path in stored_files(dir)? {
                let size = fs::metadata(&path)?.len();
                files.push((path, size));
            }
        }
        ScopedTable::new(table, files, wall)
    }

    /// Metric series from the cached decoding of each file in range (decoded on first use).
    fn metric_series_blocking(&self, read: &crate::MetricRead) -> Result<Vec<crate::MetricSeries>, StoreError> {
        let req = crate::metrics::scan_request(read)?;
        if read.scope.is_empty() {
            return Ok(Vec::new());
        }
        let mut parts = Vec::new();
        for dir in self.dirs_for(&req)? {
            for path in stored_files(&dir)? {
                let meta = fs::metadata(&path)?;
                let stamp = (meta.len(), meta.modified().ok());
                let file = match self.series_cache.get(&path).filter(|c| c.stamp == stamp) {
                    Some(c) => c,
                    None => {
                        let mut batches = Vec::new();
                        each_batch_of(&path, &mut |b: &RecordBatch| {
                            batches.push(b.clone());
                            Ok(())
                        })?;
                        let series = crate::metrics::group_rows(&batches, |_, _, _, _, _| true)?;
                        let c = Arc::new(CachedSeries { stamp, series });
                        self.series_cache.insert(path.clone(), c.clone());
                        c
                    }
                };
                parts.extend(crate::metrics::select(&file.series, read));
            }
        }
        Ok(crate::metrics::merge(parts))
    }

    fn compact_blocking(&self) -> Result<(), StoreError> {
        for dir in self.partition_dirs(None, &|_| true)? {
            let mut sources: Vec<String> =
                read_dir_or_empty(&dir)?.filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with("b-") && n.ends_with(".parquet")).collect();
            if sources.len() < self.config.compact_min_files {
                continue;
            }
            sources.sort();
            let mut batches = Vec::with_capacity(sources.len());
            for name in &sources {
                let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(dir.join(name))?)
                    .and_then(|b| b.build())
                    .map_err(|e| StoreError::Unavailable(format!("compacting {name}: {e}")))?;
                for b in reader {
                    batches.push(b.map_err(|e| StoreError::Unavailable(format!("compacting {name}: {e}")))?);
                }
            }
            let Some(first) = batches.first() else { continue };
            let merged = arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let stem = format!("c-{}", sources[0].trim_start_matches("b-").trim_end_matches(".parquet"));
            write_atomically(&dir, &format!("{stem}.ids"), sources.join("\n").as_bytes())?;
            let tmp = write_batch_to_temp(&dir, &format!("{stem}.parquet"), &merged, Effort::Compacted)?;
            self.compacted.lock().map_err(|_| StoreError::Unavailable("compaction cache poisoned".into()))?.remove(&dir);
            {
                // The merged file appears and its sources vanish under the scan lock: a scan
                // sees either the sources (before) or the merged file (after), never both.
                let _exclusive = self.files.blocking_write();
                fs::rename(&tmp, dir.join(format!("{stem}.parquet")))?;
                for name in &sources {
                    fs::remove_file(dir.join(name))?;
                }
            }
            sync_dir(&dir)?;
        }
        Ok(())
    }

    fn expire_blocking(&self, now_ns: i64) -> Result<(), StoreError> {
        let r = &self.config.retention;
        for (table, days) in
            [(Table::Logs, r.logs_days), (Table::AuditLogs, r.audit_days), (Table::SystemLogs, r.system_days), (Table::Metrics, r.metrics_days)]
        {
            let oldest_kept = now_ns.div_euclid(NS_PER_DAY) - i64::from(days);
            let expired = self.partition_dirs(Some(table), &|k| k.day < oldest_kept)?;
            if expired.is_empty() {
                continue;
            }
            let _exclusive = self.files.blocking_write();
            for dir in expired {
                tracing::info!(dir = %dir.display(), "retention expired partition");
                fs::remove_dir_all(&dir)?;
                if let Ok(mut cache) = self.compacted.lock() {
                    cache.remove(&dir);
                }
            }
        }
        Ok(())
    }

    fn disk_bytes_blocking(&self) -> Result<u64, StoreError> {
        fn walk(p: &Path) -> std::io::Result<u64> {
            let mut total = 0;
            for e in read_dir_or_empty(p)? {
                let m = e.metadata()?;
                total += if m.is_dir() { walk(&e.path())? } else { m.len() };
            }
            Ok(total)
        }
        Ok(walk(&self.config.root)?)
    }
}

impl Store for Arc<EmbeddedStore> {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn write<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<(), StoreError>> {
        let (this, batch) = (self.clone(), batch.clone());
        Box::pin(async move { spawn_blocking(move || this.write_blocking(&batch)).await })
    }

    fn scan<'a>(&'a self, request: &'a ScanRequest) -> BoxFuture<'a, Result<Vec<RecordBatch>, StoreError>> {
        let (this, request) = (self.clone(), request.clone());
        Box::pin(async move {
            let _shared = this.files.read().await;
            let inner = this.clone();
            spawn_blocking(move || inner.scan_blocking(&request)).await
        })
    }

    fn metric_series<'a>(&'a self, read: &'a crate::MetricRead) -> BoxFuture<'a, Result<Vec<crate::MetricSeries>, StoreError>> {
        let (this, read) = (self.clone(), read.clone());
        Box::pin(async move {
            let _shared = this.files.read().await;
            let inner = this.clone();
            spawn_blocking(move || inner.metric_series_blocking(&read)).await
        })
    }

    fn search<'a>(&'a self, query: &'a LogSearch) -> BoxFuture<'a, Result<Vec<schemas::LogRecord>, StoreError>> {
        let (this, query) = (self.clone(), query.clone());
        Box::pin(async move {
            let _shared = this.files.read().await;
            let inner = this.clone();
            spawn_blocking(move || inner.search_blocking(&query)).await
        })
    }

    fn histogram<'a>(&'a self, query: &'a LogSearch, step_ns: i64) -> BoxFuture<'a, Result<Vec<HistogramBucket>, StoreError>> {
        let (this, query) = (self.clone(), query.clone());
        Box::pin(async move {
            let _shared = this.files.read().await;
            let inner = this.clone();
            spawn_blocking(move || inner.histogram_blocking(&query, step_ns.max(1))).await
        })
    }

    fn streams<'a>(&'a self, query: &'a LogSearch, by: crate::StreamsBy) -> BoxFuture<'a, Result<Vec<crate::StreamCount>, StoreError>> {
        let (this, query) = (self.clone(), query.clone());
        Box::pin(async move {
            let _shared = this.files.read().await;
            let inner = this.clone();
            spawn_blocking(move || inner.streams_blocking(&query, by)).await
        })
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let this = self.clone();
        Box::pin(async move {
            spawn_blocking(move || {
                this.compact_blocking()?;
                this.expire_blocking(now_ns())
            })
            .await
        })
    }

    fn disk_bytes(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let this = self.clone();
        Box::pin(async move { spawn_blocking(move || this.disk_bytes_blocking().map(Some)).await })
    }
}

async fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn planning(e: datafusion::error::DataFusionError) -> StoreError {
    StoreError::Unavailable(format!("planning a read of stored files: {e}"))
}

/// How hard a file is compressed: batch files are written on the ingest path, so cheaply
/// (zstd 1); compaction rewrites them in the background, harder (zstd 3).
#[derive(Clone, Copy)]
enum Effort {
    Fresh,
    Compacted,
}

fn writer_properties(effort: Effort) -> WriterProperties {
    let level = match effort {
        Effort::Fresh => 1,
        Effort::Compacted => 3,
    };
    // Statistics only where a query can prune on them: the time column. Tenancy is in the
    // directory names, and the other columns of a batch file are mixed, so their min/max
    // would prune nothing and cost a comparison of every value. Near-unique columns skip the
    // dictionary, which would intern every value and then fall back.
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("timestamp"), EnabledStatistics::Page);
    for column in ["message", "trace_id", "span_id", "observed_timestamp"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    // A fresh file holds one tenant's rows of under a second: its tenancy and pod columns are
    // a dictionary of a few values and runs of small indices, which zstd barely shrinks, while
    // every compressed column costs a compression and a decompression context per file (each
    // probing the CPU, which traps to the hypervisor on a virtual machine). Compaction
    // compresses everything.
    if let Effort::Fresh = effort {
        for column in ["org_id", "workspace", "project", "application", "pod", "container", "node", "stream", "severity"] {
            b = b.set_column_compression(ColumnPath::from(column), Compression::UNCOMPRESSED);
        }
    }
    b.build()
}

/// The Parquet files of a partition directory (not the temporary ones).
fn stored_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for entry in read_dir_or_empty(dir)? {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(out)
}

/// Calls `f` with every batch of rows of the Parquet file at `path`, read whole (metric
/// files decoded once into the series cache).
fn each_batch_of(path: &Path, f: &mut impl FnMut(&RecordBatch) -> Result<(), StoreError>) -> Result<(), StoreError> {
    let unreadable = |e: parquet::errors::ParquetError| StoreError::Unavailable(format!("reading {}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?).map_err(unreadable)?.with_batch_size(8192).build().map_err(unreadable)?;
    for batch in reader {
        f(&batch.map_err(|e| StoreError::Unavailable(format!("reading {}: {e}", path.display())))?)?;
    }
    Ok(())
}

fn write_batch_atomically(dir: &Path, name: &str, batch: &RecordBatch) -> Result<(), StoreError> {
    let tmp = write_batch_to_temp(dir, name, batch, Effort::Fresh)?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Writes and fsyncs `batch` under a temporary name beside `name`; returns that path.
fn write_batch_to_temp(dir: &Path, name: &str, batch: &RecordBatch, effort: Effort) -> Result<PathBuf, StoreError> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let file = File::create(&tmp)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties(effort))).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    writer.write(batch).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let file = writer.into_inner().map_err(|e| StoreError::Unavailable(e.to_string()))?;
    file.sync_all()?;
    Ok(tmp)
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Finishes or discards a compaction a crash interrupted, and removes temporary files.
fn repair_compaction(dir: &Path) -> Result<(), StoreError> {
    for entry in read_dir_or_empty(dir)? {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            fs::remove_file(&path)?;
        } else if let Some(stem) = name.strip_suffix(".ids") {
            if dir.join(format!("{stem}.parquet")).exists() {
                for source in fs::read_to_string(&path)?.lines() {
                    let source = dir.join(source);
                    if source.exists() {
                        fs::remove_file(source)?;
                    }
                }
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

fn read_dir_or_empty(dir: &Path) -> std::io::Result<Box<dyn Iterator<Item = fs::DirEntry>>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Box::new(rd.filter_map(Result::ok))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Box::new(std::iter::empty())),
        Err(e) => Err(e),
    }
}

fn read_dir_names(dir: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    Ok(read_dir_or_empty(dir)?
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(prefix).map(str::to_owned))
        .collect())
}

/// Longest escaped name kept as is; longer names are shortened with a hash so that no tenant
/// name can exceed the file system's 255-byte limit on a path component.
const MAX_ESCAPED: usize = 160;

/// Percent-encodes everything but `[A-Za-z0-9_-]`, so `..`, `/` and empty names are safe path
/// components (the empty name becomes `%`). Names whose encoding is longer than
/// [`MAX_ESCAPED`] become `~<prefix>~<hash>` (never decoded: such partitions are found by
/// scanning every directory and filtering rows by value).
fn escape(s: &str) -> String {
    let escaped = escape_full(s);
    if escaped.len() <= MAX_ESCAPED {
        return escaped;
    }
    let key = PartitionKey::new(s, "", 0).stable_hash();
    let prefix: String = escaped.chars().take(64).filter(|c| *c != '%').collect();
    format!("~{prefix}~{key:016x}")
}

fn escape_full(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
