//! The two baselines, measured in the same run on the core the server used (it is stopped
//! by then): decoding the same bodies in-process (the parse ceiling), and inserting the same
//! rows straight into the same ClickHouse engine through the production writer.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ingest::decode::decompress;
use ingest::decode::json_events::decode_json_events;
use ingest::decode::loki::decode_loki_protobuf;
use ingest::event::{DecodeLimits, RawLog};
use ingest::tenancy::{Credential, Resolver, TenancyLabels, WorkspaceSet};
use schemas::{LogRecord, Rows};
use storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use storage::{BatchId, Store, WriteBatch};

use crate::procs::{SERVER_CORE, cpu_seconds, pin_thread};
use crate::workload::{Body, Encoding};

/// Rows per direct insert: the data plane's default `batch_max_rows`.
pub const DIRECT_BATCH_ROWS: usize = 100_000;
/// Writes in flight: the data plane's default `flush_concurrency`.
pub const DIRECT_CONCURRENCY: usize = 2;

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub items: u64,
    pub wall_secs: f64,
    pub cpu_secs: f64,
}

impl Rate {
    pub fn per_wall_sec(&self) -> f64 {
        self.items as f64 / self.wall_secs.max(1e-9)
    }
    pub fn per_cpu_sec(&self) -> f64 {
        self.items as f64 / self.cpu_secs.max(1e-9)
    }
}

/// Runs `f` on a new thread pinned to the server core.
fn on_server_core<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        pin_thread(SERVER_CORE)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("baseline thread panicked"))?
}

/// The events of one body, decoded as the server decodes that encoding.
fn decode_events(encoding: Encoding, body: &[u8], limits: &DecodeLimits) -> anyhow::Result<Vec<RawLog>> {
    let d = match encoding {
        Encoding::Ndjson => decode_json_events(body, limits)?,
        Encoding::NdjsonZstd => decode_json_events(&decompress(Some("zstd"), body, limits.max_body_bytes)?, limits)?,
        Encoding::LokiProto => decode_loki_protobuf(body, limits)?,
    };
    if !d.rejected.is_empty() {
        bail!("{} of a {} body rejected by the decoder", d.rejected.len(), encoding.name());
    }
    Ok(d.events)
}

fn decode(encoding: Encoding, body: &[u8], limits: &DecodeLimits) -> anyhow::Result<usize> {
    Ok(black_box(decode_events(encoding, body, limits)?).len())
}

/// Decodes the bodies round-robin on one core for `duration`: events per CPU-second.
pub fn parse_ceiling(encoding: Encoding, bodies: &[Body], duration: Duration) -> anyhow::Result<Rate> {
    let bodies = bodies.to_vec();
    on_server_core(move || {
        let limits = DecodeLimits::default();
        let cpu0 = cpu_seconds("/proc/thread-self/stat")?;
        let start = Instant::now();
        let mut events = 0u64;
        let mut i = 0usize;
        while start.elapsed() < duration {
            events += decode(encoding, &bodies[i % bodies.len()].bytes, &limits)? as u64;
            i += 1;
        }
        let wall_secs = start.elapsed().as_secs_f64();
        Ok(Rate { items: events, wall_secs, cpu_secs: cpu_seconds("/proc/thread-self/stat")? - cpu0 })
    })
}

/// The rows the server stores for these bodies: decoded as their encoding, with tenancy
/// resolved the same way (a host-shipper credential allowed every workspace).
pub fn stored_rows(encoding: Encoding, bodies: &[Body]) -> anyhow::Result<Vec<LogRecord>> {
    let credential = Arc::new(Credential {
        name: "bench".into(),
        token: String::new(),
        org: None,
        workspaces: WorkspaceSet::All,
        limits: DecodeLimits::default(),
        max_age_ns: 7 * 86_400 * 1_000_000_000,
        max_future_ns: 600 * 1_000_000_000,
    });
    let labels = TenancyLabels::default();
    let now_ns = crate::workload::now_ns();
    let resolver = Resolver { credential: &credential, labels: &labels, now_ns };
    let mut rows = Vec::new();
    for b in bodies {
        for raw in decode_events(encoding, &b.bytes, &credential.limits)? {
            rows.push(resolver.log(raw).map_err(|r| anyhow::anyhow!("tenancy rejected a row: {}", r.as_str()))?);
        }
    }
    Ok(rows)
}

/// Inserts batches of [`DIRECT_BATCH_ROWS`] rows (cycling through `rows`) with
/// `ClickHouseStore::write`, [`DIRECT_CONCURRENCY`] at a time, each under a new batch id, for
/// `duration`; writes still in flight then are waited for and counted. Rows per wall second.
pub fn direct_insert(url: &str, rows: &[LogRecord], duration: Duration) -> anyhow::Result<Rate> {
    let batch: Vec<LogRecord> = rows.iter().cycle().take(DIRECT_BATCH_ROWS).cloned().collect();
    let url = url.to_owned();
    on_server_core(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let store = Arc::new(
                ClickHouseStore::new(ClickHouseConfig {
                    url,
                    user: "default".into(),
                    password: String::new(),
                    database: "hexabase".into(),
                    cluster: None,
                    retention: Default::default(),
                    insert_timeout: Duration::from_secs(120),
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            store.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let wal_id = format!("direct{}", std::process::id());
            let cpu0 = cpu_seconds("/proc/thread-self/stat")?;
            let start = Instant::now();
            let deadline = start + duration;
            let mut writers = tokio::task::JoinSet::new();
            for w in 0..DIRECT_CONCURRENCY {
                let (store, wal_id) = (store.clone(), wal_id.clone());
                let mut wb = WriteBatch { id: BatchId { wal_id, seq: 0 }, rows: Rows::Logs(batch.clone()).into() };
                writers.spawn(async move {
                    let mut written = 0u64;
                    let mut seq = w as u64;
                    while Instant::now() < deadline {
                        wb.id.seq = seq;
                        store.write(&wb).await.map_err(|e| anyhow::anyhow!("direct insert: {e}"))?;
                        written += wb.rows.len() as u64;
                        seq += DIRECT_CONCURRENCY as u64;
                    }
                    anyhow::Ok(written)
                });
            }
            let mut items = 0;
            while let Some(r) = writers.join_next().await {
                items += r.context("writer task")??;
            }
            let wall_secs = start.elapsed().as_secs_f64();
            Ok(Rate { items, wall_secs, cpu_secs: cpu_seconds("/proc/thread-self/stat")? - cpu0 })
        })
    })
}
