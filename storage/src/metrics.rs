//! Metric series for PromQL: the samples of a scope's tenants in a time range, grouped by
//! series. Every backend answers through [`crate::Store::metric_series`]; the scope is applied
//! to each row with [`auth::TenantScope::allows`] whatever the backend's own filter did.

use std::collections::{BTreeSet, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMillisecondType;
use arrow::record_batch::RecordBatch;
use auth::TenantScope;
use schemas::Table;

use crate::StoreError;

/// Which samples to read.
#[derive(Debug, Clone)]
pub struct MetricRead {
    /// Made by [`auth::Gate::metrics`].
    pub scope: TenantScope,
    /// Inclusive bounds, Unix milliseconds.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only these metric names (`None`: every metric).
    pub metrics: Option<BTreeSet<String>>,
}

/// One series: its identity and its samples, oldest first, one per timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub workspace: String,
    pub project: String,
    pub metric: String,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    /// (Unix milliseconds, value).
    pub samples: Vec<(i64, f64)>,
}

/// Workspace, project, metric and sorted labels.
type SeriesKey = (String, String, String, Vec<(String, String)>);

/// Groups scanned metric rows into series, keeping only rows inside the scope and the request.
pub(crate) fn group(batches: &[RecordBatch], read: &MetricRead) -> Result<Vec<MetricSeries>, StoreError> {
    let bad = |what: &str| StoreError::Unavailable(format!("metrics batch without {what}"));
    let mut by_key: HashMap<SeriesKey, Vec<(i64, f64)>> = HashMap::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).ok_or_else(|| bad(n));
        let ts = col("timestamp")?.as_primitive_opt::<TimestampMillisecondType>().ok_or_else(|| bad("timestamp (ms)"))?;
        let string = |n: &str| -> Result<arrow::array::StringArray, StoreError> { Ok(col(n)?.as_string_opt::<i32>().ok_or_else(|| bad(n))?.clone()) };
        let (org, ws, project, metric) = (string("org_id")?, string("workspace")?, string("project")?, string("metric")?);
        let values = col("value")?.as_primitive_opt::<arrow::datatypes::Float64Type>().ok_or_else(|| bad("value"))?;
        let labels = col("labels")?.as_map_opt().ok_or_else(|| bad("labels"))?;
        for i in 0..b.num_rows() {
            let t = ts.value(i);
            if t < read.from_ms || t > read.to_ms || !read.scope.allows(org.value(i), ws.value(i), project.value(i)) {
                continue;
            }
            if read.metrics.as_ref().is_some_and(|m| !m.contains(metric.value(i))) {
                continue;
            }
            let entries = labels.value(i);
            let (k, v) = (entries.column(0).as_string::<i32>(), entries.column(1).as_string::<i32>());
            let mut l: Vec<(String, String)> = (0..k.len()).map(|j| (k.value(j).to_owned(), v.value(j).to_owned())).collect();
            l.sort();
            by_key.entry((ws.value(i).to_owned(), project.value(i).to_owned(), metric.value(i).to_owned(), l)).or_default().push((t, values.value(i)));
        }
    }
    let mut out: Vec<MetricSeries> = by_key
        .into_iter()
        .map(|((workspace, project, metric, labels), mut samples)| {
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
            MetricSeries { workspace, project, metric, labels, samples }
        })
        .collect();
    out.sort_by(|a, b| (&a.metric, &a.workspace, &a.labels).cmp(&(&b.metric, &b.workspace, &b.labels)));
    Ok(out)
}

/// The scan that covers a read (the backend narrows by organisation and workspace; [`group`]
/// applies the whole scope).
pub(crate) fn scan_request(read: &MetricRead) -> Result<crate::ScanRequest, StoreError> {
    if read.scope.table() != Table::Metrics {
        return Err(StoreError::Rejected("a metric read needs a metrics scope".into()));
    }
    Ok(crate::ScanRequest {
        table: Table::Metrics,
        org_id: read.scope.org_id().map(str::to_owned),
        workspaces: read.scope.workspaces().map(|w| w.into_iter().map(str::to_owned).collect()),
        from_ns: read.from_ms.saturating_mul(1_000_000),
        to_ns: read.to_ms.saturating_add(1).saturating_mul(1_000_000),
    })
}
