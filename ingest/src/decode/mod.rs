//! Decoders: pure functions from request bodies to [`crate::event`] types, one per wire
//! format a shipper speaks. They do no I/O and trust nothing.
//!
//! Every decoder is total (any byte string gives a value or an error, never a panic or an
//! unbounded allocation) and splits failures in two: a body that cannot be read at all is a
//! [`BodyError`](crate::event::BodyError) (a 4xx, nothing stored), while a readable body with
//! some bad events yields the good ones plus one [`RejectReason`](crate::event::RejectReason)
//! per bad event. Shared rules (limits, NUL handling, tenancy-looking fields, memory budget)
//! live in `checks`, so every format is judged alike.
//!
//! - [`decompress`], [`snappy_block`]: `Content-Encoding` with a hard output limit.
//! - [`json_events`]: Vector `http` sink (NDJSON / JSON array) and ClickHouse `JSONEachRow`.
//! - [`loki`]: Loki push, JSON and snappy protobuf.
//! - [`remote_write`]: Prometheus remote_write 1.0.

mod checks;
mod compression;
mod json_fields;
mod json_scan;
mod label_text;
mod timestamp;

pub mod json_events;
pub mod loki;
pub mod remote_write;

#[cfg(test)]
mod testutil;

pub use compression::{decompress, snappy_block};
