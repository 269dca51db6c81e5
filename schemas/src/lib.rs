//! The contracts every other crate speaks, and nothing else: no I/O lives here.
//!
//! - [`records`]: the four kinds of stored row ([`LogRecord`] for workload logs, [`AuditRecord`],
//!   [`SystemRecord`], [`MetricSample`]) and [`Table`], which names where each kind is stored.
//! - [`arrow_schema`]: their Arrow schemas and the conversion of a slice of rows into a
//!   `RecordBatch`, used by the embedded store and, later, by DataFusion.
//! - [`codec`]: a compact, versioned binary encoding of a [`Rows`] batch, used by the ingest
//!   write-ahead log. It is total: any byte string decodes to rows or to an error, never a panic.
//! - [`migrations`]: numbered ClickHouse DDL, single-node and cluster forms.
//! - [`ErrorCode`]: the stable error codes clients see, each with its HTTP status.
//! - `openapi` (feature `http`): the OpenAPI document of the HTTP API.
//!
//! ```
//! use schemas::{LogRecord, Rows, codec};
//! let row = LogRecord { message: "hello".into(), ..LogRecord::default() };
//! let bytes = codec::encode(&Rows::Logs(vec![row.clone()]));
//! assert_eq!(codec::decode(&bytes).unwrap(), Rows::Logs(vec![row]));
//! ```

pub mod arrow_schema;
pub mod codec;
mod error;
pub mod migrations;
#[cfg(feature = "http")]
pub mod openapi;
#[cfg(feature = "http")]
mod openapi_control;
pub mod records;

pub use error::{ApiError, ErrorCode};
pub use records::{AuditRecord, AuditSink, LogRecord, MetricSample, Rows, Severity, SystemRecord, Table};
