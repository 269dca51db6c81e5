//! ClickHouse backend.
