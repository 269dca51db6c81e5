//! End-to-end tests: the real `dataplane` binary, over HTTP, against real storage (the embedded
//! store and the ClickHouse engine), with real shippers' payloads.

#![allow(clippy::unwrap_used)]

mod support;

mod assistant_api;
mod assistant_evals;
mod assistant_tools;
mod audit_api;
mod authorization;
mod bad_input;
mod clickhouse_backend;
mod control_api;
mod control_ops;
mod durability;
mod ingest_api;
mod loki_api;
mod openapi_doc;
mod prometheus_api;
mod query_api;
mod shippers;
mod sql_api;
mod tail_api;
