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

/// mimalloc hands freed memory back to the OS after a second, and the ingest path then faults
/// each batch's buffers back in — 2 MiB zeroed at a time where transparent huge pages are on:
/// measured at about 40 % of the server's CPU under load, with p99 acknowledgements past a
/// second. Call first thing in `main` of a process that uses mimalloc (the server, and the
/// benchmarks that compare with it, so both run with the same allocator): freed memory stays
/// with the process unless `MIMALLOC_PURGE_DELAY` says otherwise.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    /// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same in v2 and v3; the
    /// bindings do not name it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one allocator option before any other thread exists; the call only
        // stores the value (-1: never purge).
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    }
}
