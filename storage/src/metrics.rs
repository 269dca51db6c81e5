//! Metric series for PromQL: the samples of a scope's tenants in a time range, grouped by
//! series. Every backend answers through [`crate::Store::metric_series`]; the scope is applied
//! to each row with [`auth::TenantScope::allows`] whatever the backend's own filter did.

use std::collections::{BTreeSet, HashMap};

use arrow::array::AsArray;
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
    pub org_id: String,
    pub workspace: String,
    pub project: String,
    pub metric: String,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    /// (Unix milliseconds, value).
    pub samples: Vec<(i64, f64)>,
}

/// Groups scanned metric rows into series, keeping only rows inside the scope and the request.
/// A row allocates nothing unless it starts a new series (a day of one-minute samples is
/// millions of rows for a few thousand series).
pub(crate) fn group(batches: &[RecordBatch], read: &MetricRead) -> Result<Vec<MetricSeries>, StoreError> {
    group_rows(batches, |org, ws, project, metric, t| {
        t >= read.from_ms && t <= read.to_ms && read.scope.allows(org, ws, project) && read.metrics.as_ref().is_none_or(|set| set.contains(metric))
    })
}

/// Groups the rows `keep` accepts (organisation, workspace, project, metric, time) into series.
pub(crate) fn group_rows(batches: &[RecordBatch], keep: impl Fn(&str, &str, &str, &str, i64) -> bool) -> Result<Vec<MetricSeries>, StoreError> {
    use std::hash::BuildHasher;
    let bad = |what: &str| StoreError::Unavailable(format!("metrics batch without {what}"));
    // Keys are hashed per row: a fast hasher (the index is private and its keys are ours).
    let hasher = foldhash::fast::RandomState::default();
    let mut index: HashMap<u64, Vec<usize>, foldhash::fast::RandomState> = HashMap::default();
    let mut out: Vec<MetricSeries> = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).ok_or_else(|| bad(n));
        let ts = col("timestamp")?.as_primitive_opt::<TimestampMillisecondType>().ok_or_else(|| bad("timestamp (ms)"))?;
        let string = |n: &str| -> Result<arrow::array::StringArray, StoreError> { Ok(col(n)?.as_string_opt::<i32>().ok_or_else(|| bad(n))?.clone()) };
        let (org, ws, project, metric) = (string("org_id")?, string("workspace")?, string("project")?, string("metric")?);
        let values = col("value")?.as_primitive_opt::<arrow::datatypes::Float64Type>().ok_or_else(|| bad("value"))?;
        let labels = col("labels")?.as_map_opt().ok_or_else(|| bad("labels"))?;
        let (keys, vals) = (
            labels.keys().as_string_opt::<i32>().ok_or_else(|| bad("label keys"))?,
            labels.values().as_string_opt::<i32>().ok_or_else(|| bad("label values"))?,
        );
        let offsets = labels.value_offsets();
        for i in 0..b.num_rows() {
            let t = ts.value(i);
            let (o, w, p, m) = (org.value(i), ws.value(i), project.value(i), metric.value(i));
            if !keep(o, w, p, m, t) {
                continue;
            }
            let pairs = || (offsets[i] as usize..offsets[i + 1] as usize).map(|j| (keys.value(j), vals.value(j)));
            // Order-independent over the labels: a sum of each pair's hash.
            let mut key = hasher.hash_one((o, w, p, m));
            for pair in pairs() {
                key = key.wrapping_add(hasher.hash_one(pair));
            }
            let n = offsets[i + 1] as usize - offsets[i] as usize;
            let found = index.get(&key).and_then(|c| {
                c.iter().copied().find(|&s| {
                    let s = &out[s];
                    s.workspace == w
                        && s.org_id == o
                        && s.project == p
                        && s.metric == m
                        && s.labels.len() == n
                        && pairs().all(|(k, v)| s.labels.binary_search_by(|(a, b)| (a.as_str(), b.as_str()).cmp(&(k, v))).is_ok())
                })
            });
            let at = match found {
                Some(at) => at,
                None => {
                    let mut l: Vec<(String, String)> = pairs().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                    l.sort();
                    out.push(MetricSeries {
                        org_id: o.to_owned(),
                        workspace: w.to_owned(),
                        project: p.to_owned(),
                        metric: m.to_owned(),
                        labels: l,
                        samples: Vec::new(),
                    });
                    index.entry(key).or_default().push(out.len() - 1);
                    out.len() - 1
                }
            };
            out[at].samples.push((t, values.value(i)));
        }
    }
    for s in &mut out {
        s.samples.sort_by_key(|s| s.0);
        s.samples.dedup_by_key(|s| s.0);
    }
    out.sort_by(|a, b| series_order(a).cmp(&series_order(b)));
    Ok(out)
}

fn series_order(s: &MetricSeries) -> (&str, &str, &str, &str, &[(String, String)]) {
    (&s.metric, &s.org_id, &s.workspace, &s.project, &s.labels)
}

/// The part of grouped series (a cached file's) that a read may see: inside its scope, of its
/// metrics, samples in its time range.
pub(crate) fn select<'a>(series: &'a [MetricSeries], read: &'a MetricRead) -> impl Iterator<Item = MetricSeries> + 'a {
    series.iter().filter_map(move |s| {
        if !read.scope.allows(&s.org_id, &s.workspace, &s.project) || read.metrics.as_ref().is_some_and(|m| !m.contains(&s.metric)) {
            return None;
        }
        let a = s.samples.partition_point(|p| p.0 < read.from_ms);
        let b = s.samples.partition_point(|p| p.0 <= read.to_ms);
        (b > a).then(|| MetricSeries { samples: s.samples[a..b].to_vec(), ..s.clone_head() })
    })
}

impl MetricSeries {
    fn clone_head(&self) -> MetricSeries {
        MetricSeries {
            org_id: self.org_id.clone(),
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            metric: self.metric.clone(),
            labels: self.labels.clone(),
            samples: Vec::new(),
        }
    }

    /// Bytes it takes in memory, roughly (the series cache's weight).
    pub(crate) fn weight(&self) -> usize {
        self.samples.len() * 16 + self.labels.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>() + 160
    }
}

/// The same series from several files made one, samples in order.
pub(crate) fn merge(mut parts: Vec<MetricSeries>) -> Vec<MetricSeries> {
    parts.sort_by(|a, b| series_order(a).cmp(&series_order(b)));
    let mut out: Vec<MetricSeries> = Vec::with_capacity(parts.len());
    for s in parts {
        match out.last_mut() {
            Some(last) if series_order(last) == series_order(&s) => last.samples.extend(s.samples),
            _ => out.push(s),
        }
    }
    for s in &mut out {
        s.samples.sort_by_key(|p| p.0);
        s.samples.dedup_by_key(|p| p.0);
    }
    out
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
