//! Search, histogram and stream counts over the embedded store's Parquet files, read by
//! DataFusion through the scope's [`super::ScopedTable`].
//!
//! The scope is applied three times: only the partition directories of the scope's
//! organisation and workspaces are listed (a tenant outside the scope is never read from disk),
//! the table's wall filters every row DataFusion's scan yields, and every row is checked again
//! against `TenantScope::allows` before anything else looks at it.

use std::collections::HashMap;
use std::path::PathBuf;

use arrow::array::{Array, AsArray, MapArray, StringArray};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use schemas::Table;

use super::{DirKey, EmbeddedStore, NS_PER_DAY, escape, planning, table};
use crate::StoreError;
use schemas::{LogRecord, Severity};

use crate::search::{HistogramBucket, LogSearch, Matcher, StreamCount, StreamsBy, newest_first, oldest_first};

/// Collected matches are trimmed back to the page size once they pass this many pages' worth.
const TRIM_FACTOR: usize = 4;

impl EmbeddedStore {
    fn search_dirs(&self, q: &LogSearch) -> Result<Vec<PathBuf>, StoreError> {
        if q.scope.table() != Table::Logs || q.scope.is_empty() {
            return Ok(Vec::new());
        }
        let (from_day, to_day) = (q.from_ns.div_euclid(NS_PER_DAY), (q.to_ns - 1).div_euclid(NS_PER_DAY));
        let org = q.scope.org_id().map(escape);
        let workspaces: Option<Vec<String>> = q.scope.workspaces().map(|w| w.into_iter().map(escape).collect());
        let keep = |k: &DirKey| {
            org.as_ref().is_none_or(|o| o == k.org)
                && workspaces.as_ref().is_none_or(|ws| ws.iter().any(|w| w == k.workspace))
                && k.day >= from_day
                && k.day <= to_day
        };
        self.partition_dirs(Some(Table::Logs), &keep)
    }

    /// Calls `f` with every batch of rows of the scope in the query's range (narrowed by its
    /// cursor), read by DataFusion through the scope's [`super::ScopedTable`]. `columns`: what
    /// a returned line shows ([`LINE_COLUMNS`]) or only what [`Columns::matches`] and the
    /// groupings look at ([`MATCHED_COLUMNS`]).
    fn each_batch(&self, q: &LogSearch, columns: &[&str], f: impl FnMut(&RecordBatch) -> Result<(), StoreError>) -> Result<(), StoreError> {
        // A cursor narrows the range: a later page reads only the row groups it can come from.
        let (mut from, mut to) = (q.from_ns, q.to_ns);
        if let Some(c) = q.cursor {
            if q.oldest_first {
                from = from.max(c.timestamp_ns);
            } else {
                to = to.min(c.timestamp_ns.saturating_add(1));
            }
        }
        let table = self.scoped_table(Table::Logs, &self.search_dirs(q)?, table::wall_of_scope(&q.scope))?;
        let projection: Vec<usize> = columns.iter().filter_map(|c| table.column(c)).collect();
        let plan = table.plan(Some(&projection), &[table.time_range(from, to)]).map_err(planning)?;
        table::each_batch(plan, f)
    }

    pub(super) fn search_blocking(&self, q: &LogSearch) -> Result<Vec<LogRecord>, StoreError> {
        let matcher = Matcher::new(&q.terms).map_err(StoreError::Rejected)?;
        let order = if q.oldest_first { oldest_first } else { newest_first };
        let want = q.limit + q.cursor.map_or(0, |c| c.skip as usize);
        let mut out: Vec<LogRecord> = Vec::new();
        let mut floor: Option<LogRecord> = None;
        self.each_batch(q, &LINE_COLUMNS, |batch| {
            let c = Columns::of(batch)?;
            for i in 0..batch.num_rows() {
                let Some(ts) = c.matches(i, q, &matcher) else { continue };
                if let Some(cur) = q.cursor
                    && (if q.oldest_first { ts < cur.timestamp_ns } else { ts > cur.timestamp_ns })
                {
                    continue;
                }
                let line = c.line(i, ts);
                if floor.as_ref().is_some_and(|f| order(&line, f).is_ge()) {
                    continue;
                }
                out.push(line);
                if out.len() >= want.max(1) * TRIM_FACTOR {
                    out.sort_by(order);
                    out.truncate(want);
                    floor = out.last().cloned();
                }
            }
            Ok(())
        })?;
        out.sort_by(order);
        out.truncate(want);
        if let Some(cur) = q.cursor {
            // Pass over the rows at the cursor's timestamp that the previous page returned.
            let mut skipped = 0;
            out.retain(|l| {
                if l.timestamp_ns == cur.timestamp_ns && skipped < cur.skip {
                    skipped += 1;
                    return false;
                }
                true
            });
        }
        out.truncate(q.limit);
        Ok(out)
    }

    pub(super) fn histogram_blocking(&self, q: &LogSearch, step_ns: i64) -> Result<Vec<HistogramBucket>, StoreError> {
        let matcher = Matcher::new(&q.terms).map_err(StoreError::Rejected)?;
        // By severity first, so a row costs a lookup by `&str`, not a new key string.
        let mut counts: HashMap<String, HashMap<i64, u64>> = HashMap::new();
        self.each_batch(q, &MATCHED_COLUMNS, |batch| {
            let c = Columns::of(batch)?;
            for i in 0..batch.num_rows() {
                let Some(ts) = c.matches(i, q, &matcher) else { continue };
                let start = q.from_ns + (ts - q.from_ns).div_euclid(step_ns) * step_ns;
                let severity = c.s(c.severity, i);
                let per_bucket = match counts.get_mut(severity) {
                    Some(m) => m,
                    None => counts.entry(severity.to_owned()).or_default(),
                };
                *per_bucket.entry(start).or_default() += 1;
            }
            Ok(())
        })?;
        let mut out: Vec<HistogramBucket> = counts
            .into_iter()
            .flat_map(|(severity, buckets)| buckets.into_iter().map(move |(start_ns, count)| HistogramBucket { start_ns, severity: severity.clone(), count }))
            .collect();
        out.sort_by(|a, b| a.start_ns.cmp(&b.start_ns).then_with(|| a.severity.cmp(&b.severity)));
        Ok(out)
    }
}

impl EmbeddedStore {
    pub(super) fn streams_blocking(&self, q: &LogSearch, by: StreamsBy) -> Result<Vec<StreamCount>, StoreError> {
        let (step_ns, columns) = (by.step_ns, by.columns);
        let matcher = Matcher::new(&q.terms).map_err(StoreError::Rejected)?;
        let step = step_ns.unwrap_or(i64::MAX).max(1);
        // Column values are interned, so a row costs lookups by `&str`, not new strings.
        // Id 0 is the empty value, which columns not grouped by get.
        let mut names: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
        let mut by_id: Vec<String> = vec![String::new()];
        let mut counts: HashMap<(i64, [u32; 8]), (u64, u64)> = HashMap::new();
        self.each_batch(q, &MATCHED_COLUMNS, |batch| {
            let c = Columns::of(batch)?;
            for i in 0..batch.num_rows() {
                let Some(ts) = c.matches(i, q, &matcher) else { continue };
                let start = q.from_ns + (ts - q.from_ns).div_euclid(step) * step;
                let mut col = 0;
                let key = [c.workspace, c.project, c.application, c.pod, c.container, c.node, c.stream, c.severity].map(|a| {
                    col += 1;
                    if !columns.has(col - 1) {
                        return 0;
                    }
                    let v = c.s(a, i);
                    match names.get(v) {
                        Some(id) => *id,
                        None => {
                            let id = by_id.len() as u32;
                            by_id.push(v.to_owned());
                            names.insert(v.to_owned(), id);
                            id
                        }
                    }
                });
                let e = counts.entry((start, key)).or_default();
                e.0 += 1;
                if by.bytes {
                    e.1 += c.s(c.message, i).len() as u64;
                }
            }
            Ok(())
        })?;
        let name = |id: u32| by_id[id as usize].clone();
        let mut out: Vec<StreamCount> = counts
            .into_iter()
            .map(|((start_ns, [w, p, a, pod, c, n, st, sev]), (entries, bytes))| StreamCount {
                start_ns,
                workspace: name(w),
                project: name(p),
                application: name(a),
                pod: name(pod),
                container: name(c),
                node: name(n),
                stream: name(st),
                severity: name(sev),
                entries,
                bytes,
            })
            .collect();
        out.sort_unstable_by(StreamCount::order);
        Ok(out)
    }
}

/// The columns [`Columns::matches`], the histogram and the stream counts read; a read for them
/// alone leaves the rest (attributes above all) undecoded.
const MATCHED_COLUMNS: [&str; 11] = ["timestamp", "org_id", "workspace", "project", "application", "pod", "container", "node", "stream", "severity", "message"];
/// What a returned line carries: all but the observed time and the span id, which no answer
/// shows (see [`crate::Store::search`]).
const LINE_COLUMNS: [&str; 13] =
    ["timestamp", "org_id", "workspace", "project", "application", "pod", "container", "node", "stream", "severity", "message", "attributes", "trace_id"];

/// The columns of a `logs` batch, by name. Those only a returned line shows are optional.
struct Columns<'a> {
    ts: &'a arrow::array::PrimitiveArray<TimestampNanosecondType>,
    org: &'a StringArray,
    workspace: &'a StringArray,
    project: &'a StringArray,
    application: &'a StringArray,
    pod: &'a StringArray,
    container: &'a StringArray,
    node: &'a StringArray,
    stream: &'a StringArray,
    severity: &'a StringArray,
    message: &'a StringArray,
    trace_id: Option<&'a StringArray>,
    attributes: Option<&'a MapArray>,
}

impl<'a> Columns<'a> {
    fn of(b: &'a RecordBatch) -> Result<Columns<'a>, StoreError> {
        let col = |name: &str| b.column_by_name(name).ok_or_else(|| StoreError::Unavailable(format!("stored file lacks column `{name}`")));
        let s = |name: &str| -> Result<&'a StringArray, StoreError> {
            col(name)?.as_any().downcast_ref::<StringArray>().ok_or_else(|| StoreError::Unavailable(format!("column `{name}` is not text")))
        };
        Ok(Columns {
            ts: col("timestamp")?.as_primitive_opt::<TimestampNanosecondType>().ok_or_else(|| StoreError::Unavailable("timestamp column type".into()))?,
            org: s("org_id")?,
            workspace: s("workspace")?,
            project: s("project")?,
            application: s("application")?,
            pod: s("pod")?,
            container: s("container")?,
            node: s("node")?,
            stream: s("stream")?,
            severity: s("severity")?,
            message: s("message")?,
            trace_id: s("trace_id").ok(),
            attributes: b.column_by_name("attributes").and_then(|c| c.as_map_opt()),
        })
    }

    fn s(&self, a: &'a StringArray, i: usize) -> &'a str {
        if a.is_null(i) { "" } else { a.value(i) }
    }

    /// The row's timestamp when it is in scope and matches every condition.
    fn matches(&self, i: usize, q: &LogSearch, m: &Matcher) -> Option<i64> {
        let ts = self.ts.value(i);
        if ts < q.from_ns || ts >= q.to_ns {
            return None;
        }
        let (org, ws, project) = (self.s(self.org, i), self.s(self.workspace, i), self.s(self.project, i));
        if !q.scope.allows(org, ws, project) {
            return None;
        }
        let ok = q.filters.matches(project, self.s(self.application, i), self.s(self.pod, i), self.s(self.container, i), self.s(self.severity, i))
            && m.is_match(self.s(self.message, i));
        ok.then_some(ts)
    }

    fn line(&self, i: usize, ts: i64) -> LogRecord {
        let mut attributes = Vec::new();
        if let Some(a) = self.attributes.filter(|a| !a.is_null(i)) {
            let entry = a.value(i);
            let (keys, values) = (entry.column(0).as_string::<i32>(), entry.column(1).as_string::<i32>());
            for j in 0..entry.len() {
                attributes.push((keys.value(j).to_owned(), if values.is_null(j) { String::new() } else { values.value(j).to_owned() }));
            }
        }
        LogRecord {
            timestamp_ns: ts,
            // Not read (see `LINE_COLUMNS`).
            observed_ns: 0,
            org_id: self.s(self.org, i).to_owned(),
            workspace: self.s(self.workspace, i).to_owned(),
            project: self.s(self.project, i).to_owned(),
            application: self.s(self.application, i).to_owned(),
            pod: self.s(self.pod, i).to_owned(),
            container: self.s(self.container, i).to_owned(),
            node: self.s(self.node, i).to_owned(),
            stream: self.s(self.stream, i).to_owned(),
            severity: Severity::parse(self.s(self.severity, i)).unwrap_or_default(),
            message: self.s(self.message, i).to_owned(),
            trace_id: self.trace_id.map_or("", |a| self.s(a, i)).to_owned(),
            span_id: String::new(),
            attributes,
        }
    }
}
