//! The ingest path: log and metric streams in, durable rows out.
//!
//! ```text
//! HTTP (http.rs) ─ authenticate ─ read body within limits ─ decompress ─ decode (decode/)
//!   ─ attach tenancy (tenancy.rs) ─ Pipeline::submit (pipeline.rs): one WAL record (wal.rs),
//!     fsynced in a group commit ─ 2xx ─ buffer ─ batch marker ─ Store::write ─ done note
//! ```
//!
//! - [`http::router`] serves Vector's `http` sink (`/ingest/v1/logs`), ClickHouse's HTTP insert
//!   (`/clickhouse/`, or `/` on its own listener), Loki push and Prometheus remote_write.
//! - [`config::IngestConfig`] is what operators write; [`config::IngestSettings`] what runs.
//! - [`pipeline::Pipeline`] turns acknowledged records into stored rows exactly once.
//! - [`wal::Wal`] is the write-ahead log.

pub mod config;
pub mod decode;
pub mod event;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod tenancy;
pub mod wal;
