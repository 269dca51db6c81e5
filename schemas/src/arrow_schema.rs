//! Arrow schemas of the stored tables, and rows → `RecordBatch`.
//!
//! Column names and order match the ClickHouse DDL in [`crate::migrations`], so a query written
//! against one backend reads the same against the other.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float64Builder, MapBuilder, MapFieldNames, StringBuilder, TimestampMillisecondBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::records::{Rows, Table};

fn ts_ns() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn map_type() -> DataType {
    let entries =
        Field::new("entries", DataType::Struct(vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Utf8, true)].into()), false);
    DataType::Map(Arc::new(entries), false)
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// The Arrow schema of `table`.
pub fn schema(table: Table) -> SchemaRef {
    static SCHEMAS: OnceLock<[SchemaRef; 4]> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        [
            Arc::new(Schema::new(vec![
                Field::new("timestamp", ts_ns(), false),
                Field::new("observed_timestamp", ts_ns(), false),
                utf8("org_id"),
                utf8("workspace"),
                utf8("project"),
                utf8("application"),
                utf8("pod"),
                utf8("container"),
                utf8("node"),
                utf8("stream"),
                utf8("severity"),
                utf8("message"),
                Field::new("attributes", map_type(), false),
                utf8("trace_id"),
                utf8("span_id"),
            ])),
            Arc::new(Schema::new(vec![
                Field::new("timestamp", ts_ns(), false),
                utf8("org_id"),
                utf8("workspace"),
                utf8("actor"),
                utf8("initiated_by"),
                utf8("action"),
                utf8("resource"),
                utf8("outcome"),
                utf8("message"),
                Field::new("attributes", map_type(), false),
            ])),
            Arc::new(Schema::new(vec![
                Field::new("timestamp", ts_ns(), false),
                utf8("component"),
                utf8("node"),
                utf8("severity"),
                utf8("message"),
                Field::new("attributes", map_type(), false),
            ])),
            Arc::new(Schema::new(vec![
                Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
                utf8("org_id"),
                utf8("workspace"),
                utf8("project"),
                utf8("metric"),
                Field::new("labels", map_type(), false),
                Field::new("value", DataType::Float64, false),
            ])),
        ]
    });
    match table {
        Table::Logs => all[0].clone(),
        Table::AuditLogs => all[1].clone(),
        Table::SystemLogs => all[2].clone(),
        Table::Metrics => all[3].clone(),
    }
}

struct Strings<const N: usize>([StringBuilder; N]);

impl<const N: usize> Strings<N> {
    fn new(rows: usize) -> Self {
        Strings(std::array::from_fn(|_| StringBuilder::with_capacity(rows, rows * 16)))
    }
    /// With each column's exact byte size, so no builder grows (and copies) while filling.
    fn sized(rows: usize, bytes: [usize; N]) -> Self {
        Strings(std::array::from_fn(|i| StringBuilder::with_capacity(rows, bytes[i])))
    }
    fn push(&mut self, values: [&str; N]) {
        for (b, v) in self.0.iter_mut().zip(values) {
            b.append_value(v);
        }
    }
    fn finish(self) -> Vec<ArrayRef> {
        self.0.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect()
    }
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "entries".into(), key: "keys".into(), value: "values".into() };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// A map builder with room for `rows` maps holding `pairs` entries of these key and value bytes.
fn map_builder_sized(rows: usize, pairs: usize, key_bytes: usize, value_bytes: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "entries".into(), key: "keys".into(), value: "values".into() };
    MapBuilder::with_capacity(Some(names), StringBuilder::with_capacity(pairs, key_bytes), StringBuilder::with_capacity(pairs, value_bytes), rows)
}

fn push_map(b: &mut MapBuilder<StringBuilder, StringBuilder>, m: &[(String, String)]) -> Result<(), ArrowError> {
    for (k, v) in m {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    b.append(true)
}

/// Converts rows into one `RecordBatch` with [`schema`] of their table.
pub fn to_record_batch(rows: &Rows) -> Result<RecordBatch, ArrowError> {
    to_record_batch_selected(rows, None)
}

/// Converts the rows at `selection` (in that order; `None`: all) without copying the rows
/// first, e.g. one partition of a batch as [`Rows::partition_groups`] lists it.
pub fn to_record_batch_selected(rows: &Rows, selection: Option<&[usize]>) -> Result<RecordBatch, ArrowError> {
    fn pick<'a, T>(v: &'a [T], selection: Option<&'a [usize]>) -> Box<dyn Iterator<Item = &'a T> + 'a> {
        match selection {
            Some(idx) => Box::new(idx.iter().filter_map(move |&i| v.get(i))),
            None => Box::new(v.iter()),
        }
    }
    let table = rows.table();
    let n = selection.map_or(rows.len(), <[usize]>::len);
    let columns: Vec<ArrayRef> = match rows {
        Rows::Logs(v) => {
            let mut ts = TimestampNanosecondBuilder::with_capacity(n);
            let mut obs = TimestampNanosecondBuilder::with_capacity(n);
            let (mut sizes, mut id_sizes) = ([0usize; 10], [0usize; 2]);
            let (mut pairs, mut key_bytes, mut value_bytes) = (0, 0, 0);
            for r in pick(v, selection) {
                pairs += r.attributes.len();
                for (k, v) in &r.attributes {
                    key_bytes += k.len();
                    value_bytes += v.len();
                }
                for (s, f) in sizes.iter_mut().zip([&r.org_id, &r.workspace, &r.project, &r.application, &r.pod, &r.container, &r.node, &r.stream]) {
                    *s += f.len();
                }
                sizes[8] += r.severity.as_str().len();
                sizes[9] += r.message.len();
                id_sizes[0] += r.trace_id.len();
                id_sizes[1] += r.span_id.len();
            }
            let mut tenancy = Strings::<10>::sized(n, sizes);
            let mut attrs = map_builder_sized(n, pairs, key_bytes, value_bytes);
            let mut ids = Strings::<2>::sized(n, id_sizes);
            for r in pick(v, selection) {
                ts.append_value(r.timestamp_ns);
                obs.append_value(r.observed_ns);
                tenancy.push([&r.org_id, &r.workspace, &r.project, &r.application, &r.pod, &r.container, &r.node, &r.stream, r.severity.as_str(), &r.message]);
                push_map(&mut attrs, &r.attributes)?;
                ids.push([&r.trace_id, &r.span_id]);
            }
            let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish().with_timezone("UTC")), Arc::new(obs.finish().with_timezone("UTC"))];
            cols.extend(tenancy.finish());
            cols.push(Arc::new(attrs.finish()));
            cols.extend(ids.finish());
            cols
        }
        Rows::AuditLogs(v) => {
            let mut ts = TimestampNanosecondBuilder::with_capacity(n);
            let mut s = Strings::<8>::new(n);
            let mut attrs = map_builder();
            for r in pick(v, selection) {
                ts.append_value(r.timestamp_ns);
                s.push([&r.org_id, &r.workspace, &r.actor, &r.initiated_by, &r.action, &r.resource, &r.outcome, &r.message]);
                push_map(&mut attrs, &r.attributes)?;
            }
            let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish().with_timezone("UTC"))];
            cols.extend(s.finish());
            cols.push(Arc::new(attrs.finish()));
            cols
        }
        Rows::SystemLogs(v) => {
            let mut ts = TimestampNanosecondBuilder::with_capacity(n);
            let mut s = Strings::<4>::new(n);
            let mut attrs = map_builder();
            for r in pick(v, selection) {
                ts.append_value(r.timestamp_ns);
                s.push([&r.component, &r.node, r.severity.as_str(), &r.message]);
                push_map(&mut attrs, &r.attributes)?;
            }
            let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish().with_timezone("UTC"))];
            cols.extend(s.finish());
            cols.push(Arc::new(attrs.finish()));
            cols
        }
        Rows::Metrics(v) => {
            let mut ts = TimestampMillisecondBuilder::with_capacity(n);
            let mut s = Strings::<4>::new(n);
            let mut labels = map_builder();
            let mut values = Float64Builder::with_capacity(n);
            for r in pick(v, selection) {
                ts.append_value(r.timestamp_ms);
                s.push([&r.org_id, &r.workspace, &r.project, &r.metric]);
                push_map(&mut labels, &r.labels)?;
                values.append_value(r.value);
            }
            let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish().with_timezone("UTC"))];
            cols.extend(s.finish());
            cols.push(Arc::new(labels.finish()));
            cols.push(Arc::new(values.finish()));
            cols
        }
    };
    RecordBatch::try_new(schema(table), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AuditRecord, LogRecord, MetricSample, SystemRecord};

    #[test]
    fn every_table_converts_with_its_schema() {
        let batches = [
            Rows::Logs(vec![LogRecord { attributes: vec![("a".into(), "b".into())], ..Default::default() }; 3]),
            Rows::AuditLogs(vec![AuditRecord::default()]),
            Rows::SystemLogs(vec![SystemRecord::default(); 2]),
            Rows::Metrics(vec![MetricSample::default()]),
        ];
        for rows in batches {
            let batch = to_record_batch(&rows).expect("converts");
            assert_eq!(batch.num_rows(), rows.len());
            assert_eq!(batch.schema(), schema(rows.table()));
        }
    }

    #[test]
    fn a_selection_converts_exactly_those_rows_in_that_order() {
        let rows = Rows::Logs((0..5).map(|i| LogRecord { timestamp_ns: i, ..Default::default() }).collect());
        let batch = to_record_batch_selected(&rows, Some(&[4, 1, 2])).expect("converts");
        let ts = batch.column(0).as_any().downcast_ref::<arrow::array::TimestampNanosecondArray>().expect("timestamps");
        assert_eq!(ts.values().to_vec(), vec![4, 1, 2]);
    }
}
