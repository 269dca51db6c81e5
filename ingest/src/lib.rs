//! Ingest.
pub mod decode;
pub mod event;
pub mod wal;
