//! The ingest path's own telemetry. Label values come from fixed sets (endpoint, outcome,
//! reason): never a tenant, a credential or anything a client sends, so cardinality is bounded.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct IngestMetrics {
    pub requests: Family<Labels, Counter>,
    pub events: Family<Labels, Counter>,
    pub bytes: Family<Labels, Counter>,
    pub rejected: Family<Labels, Counter>,
    pub buffer_bytes: Gauge,
    pub buffer_rows: Gauge,
    pub wal_disk_bytes: Gauge,
    pub flush_rows: Histogram,
    pub flush_seconds: Histogram,
    pub flush_errors: Family<Labels, Counter>,
    pub ack_seconds: Histogram,
    pub stored_rows: Counter<u64, AtomicU64>,
    pub spilled: Counter<u64, AtomicU64>,
    pub dead_lettered_rows: Counter<u64, AtomicU64>,
}

impl IngestMetrics {
    pub fn new(registry: &mut Registry) -> IngestMetrics {
        let m = IngestMetrics {
            requests: Family::default(),
            events: Family::default(),
            bytes: Family::default(),
            rejected: Family::default(),
            buffer_bytes: Gauge::default(),
            buffer_rows: Gauge::default(),
            wal_disk_bytes: Gauge::default(),
            flush_rows: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.5, 14)),
            flush_errors: Family::default(),
            ack_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 14)),
            stored_rows: Counter::default(),
            spilled: Counter::default(),
            dead_lettered_rows: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("dataplane_ingest");
        r.register("requests", "Ingest requests by endpoint and HTTP status", m.requests.clone());
        r.register("events", "Events received by endpoint and outcome (accepted, rejected)", m.events.clone());
        r.register("received_bytes", "Request body bytes received (before decompression) by endpoint", m.bytes.clone());
        r.register("rejected_events", "Events rejected, by reason", m.rejected.clone());
        r.register("buffer_bytes", "Bytes acknowledged and waiting to be written to storage", m.buffer_bytes.clone());
        r.register("buffer_rows", "Rows acknowledged and waiting to be written to storage", m.buffer_rows.clone());
        r.register("wal_disk_bytes", "Bytes the write-ahead log takes on disk", m.wal_disk_bytes.clone());
        r.register("flush_rows", "Rows per batch written to storage", m.flush_rows.clone());
        r.register("flush_duration_seconds", "Time to write one batch to storage, retries included", m.flush_seconds.clone());
        r.register("flush_errors", "Failed storage writes (each is retried), by kind", m.flush_errors.clone());
        r.register("ack_duration_seconds", "Time from request body read to durable acknowledgement", m.ack_seconds.clone());
        r.register("stored_rows", "Rows written to storage", m.stored_rows.clone());
        r.register("dead_lettered_rows", "Rows storage refused for good, set aside in the dead-letter directory", m.dead_lettered_rows.clone());
        r.register("spilled_records", "Acknowledged records kept only in the write-ahead log while memory was over half the buffer", m.spilled.clone());
        m
    }
}
