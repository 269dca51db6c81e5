//! What was measured, what is on disk, and the final table with ratios and targets.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use parquet::file::reader::{FileReader, SerializedFileReader};
use storage::Store;
use storage::embedded::{EmbeddedConfig, EmbeddedStore};

use crate::baselines::{DIRECT_BATCH_ROWS, DIRECT_CONCURRENCY, Rate};
use crate::load::Outcome;
use crate::procs::{Adapter, CLIENT_CORE, SERVER_CORE};
use crate::workload::{self, Encoding, Workload};
use crate::{Args, Backend};

const TARGET_PER_CORE: f64 = 300_000.0;
const TARGET_DIRECT_RATIO: f64 = 0.9;
const TARGET_COMPRESSION_EMBEDDED: f64 = 7.0;
const TARGET_COMPRESSION_CLICKHOUSE: f64 = 12.0;

/// Footprint on disk: as the server left it, then after the backend's own compaction
/// (the embedded store's `maintain`, ClickHouse's `OPTIMIZE … FINAL`).
#[derive(Debug, Default)]
pub struct Disk {
    pub rows: u64,
    pub written_bytes: u64,
    pub written_pieces: u64,
    pub final_bytes: u64,
    pub final_pieces: u64,
    /// ClickHouse's own (uncompressed, compressed) bytes after the merge.
    pub engine: Option<(u64, u64)>,
}

pub struct RunResult {
    pub backend: Backend,
    pub encoding: Encoding,
    pub peak: Outcome,
    /// From the start of the peak phase until every row it acknowledged was stored.
    pub stored_secs: f64,
    /// Rows per second stored after the load stopped, while a backlog of at least two
    /// batches drained (`None`: no such backlog).
    pub drain_eps: Option<f64>,
    pub drained: bool,
    pub cpu_secs: f64,
    pub adapter_cpu: Option<f64>,
    pub latency: Outcome,
    pub latency_rate_eps: f64,
    pub rss_mib: f64,
    /// Acknowledged over the whole run (warm-up, peak, latency), and found stored afterwards.
    pub acked_total: u64,
    pub stored_total: u64,
    pub footprint: Footprint,
}

/// Every distinct event stored once, by a server of its own.
pub struct Footprint {
    pub events: u64,
    pub raw_bytes: u64,
    pub disk: Disk,
}

impl RunResult {
    pub fn ack_eps(&self) -> f64 {
        self.peak.events as f64 / self.peak.elapsed.as_secs_f64()
    }
    pub fn stored_eps(&self) -> f64 {
        self.peak.events as f64 / self.stored_secs
    }
    pub fn per_core(&self) -> f64 {
        self.peak.events as f64 / self.cpu_secs.max(1e-9)
    }
    fn ratio_written(&self) -> f64 {
        self.footprint.raw_bytes as f64 / self.footprint.disk.written_bytes.max(1) as f64
    }
    fn ratio_final(&self) -> f64 {
        self.footprint.raw_bytes as f64 / self.footprint.disk.final_bytes.max(1) as f64
    }
    pub fn summary(&self) -> String {
        format!(
            "acked {:.0} ev/s, stored {:.0} ev/s, {:.0} ev/s per server core, p99 {:.1} ms at {:.0} ev/s, {} non-2xx, {} rows stored of {} acked",
            self.ack_eps(),
            self.stored_eps(),
            self.per_core(),
            self.latency.quantile_ms(0.99),
            self.latency_rate_eps,
            self.peak.failures_text(),
            self.stored_total,
            self.acked_total
        )
    }
}

#[derive(Default)]
pub struct Baselines {
    pub parse: Vec<(Encoding, Rate)>,
    /// Per row shape: NDJSON (and NDJSON zstd), Loki protobuf.
    pub direct_insert: Vec<(Encoding, Rate)>,
}

impl Baselines {
    /// The direct insert of the rows `encoding` produces.
    pub fn direct_for(&self, encoding: Encoding) -> Option<&Rate> {
        let shape = if encoding == Encoding::LokiProto { Encoding::LokiProto } else { Encoding::Ndjson };
        self.direct_insert.iter().find(|(e, _)| *e == shape).map(|(_, r)| r)
    }
}

fn walk(dir: &Path, bytes: &mut u64, files: &mut u64, rows: &mut u64) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        if m.is_dir() {
            walk(&e.path(), bytes, files, rows)?;
            continue;
        }
        *bytes += m.len();
        if e.file_name().to_string_lossy().ends_with(".parquet") {
            *files += 1;
            *rows += SerializedFileReader::new(File::open(e.path())?)?.metadata().file_metadata().num_rows() as u64;
        }
    }
    Ok(())
}

/// The embedded store after shutdown; with `compact`, then after the store's own compaction
/// run on every partition (as its maintenance does once `compact_min_files` accumulate).
pub async fn embedded_disk(store_dir: &Path, compact: bool) -> anyhow::Result<Disk> {
    let (mut d, mut rows) = (Disk::default(), 0);
    walk(store_dir, &mut d.written_bytes, &mut d.written_pieces, &mut rows)?;
    if !compact {
        d.rows = rows;
        return Ok(d);
    }
    let config = EmbeddedConfig { compact_min_files: 2, ..EmbeddedConfig::new(store_dir) };
    let store = std::sync::Arc::new(EmbeddedStore::open(config).map_err(|e| anyhow::anyhow!("{e}"))?);
    store.maintain().await.map_err(|e| anyhow::anyhow!("compaction: {e}"))?;
    walk(store_dir, &mut d.final_bytes, &mut d.final_pieces, &mut d.rows)?;
    if rows != d.rows {
        bail!("compaction changed the row count: {rows} → {}", d.rows);
    }
    Ok(d)
}

/// `logs` in ClickHouse once every acknowledged row is there; with `compact`, then after
/// `OPTIMIZE … FINAL`. The table is emptied afterwards for the next run.
pub async fn clickhouse_disk(ch: &Adapter, client: &reqwest::Client, acked: u64, compact: bool) -> anyhow::Result<Disk> {
    let parts = "SELECT sum(bytes_on_disk), sum(data_uncompressed_bytes), count() FROM system.parts WHERE active AND database = 'hexabase' AND table = 'logs'";
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut d = Disk::default();
    loop {
        d.rows = ch.numbers(client, "SELECT count() FROM hexabase.logs").await?.first().copied().unwrap_or(0);
        if d.rows >= acked || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = ch.numbers(client, parts).await?;
    (d.written_bytes, d.written_pieces) = (v[0], v[2]);
    if compact {
        ch.sql(client, "OPTIMIZE TABLE hexabase.logs FINAL").await?;
        let v = ch.numbers(client, parts).await?;
        (d.final_bytes, d.final_pieces, d.engine) = (v[0], v[2], Some((v[1], v[0])));
    }
    ch.sql(client, "TRUNCATE TABLE hexabase.logs").await?;
    Ok(d)
}

fn int(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

pub fn print(args: &Args, w: &Workload, runs: &[RunResult], base: &Baselines) {
    let mb = 1e6;
    println!("\n## Ingest benchmark\n");
    println!(
        "{} · server pinned to core {SERVER_CORE}, load generator and ClickHouse adapter to core {CLIENT_CORE} · {} s per phase · {} keep-alive connections · \
         {} bodies × 1,000 events (mean {:.0} B as NDJSON; Loghub, {} systems; {} workspaces in {} orgs) · load average at the end {}\n",
        cpu_model(),
        args.seconds,
        args.connections,
        w.ndjson.len(),
        w.mean_event_bytes,
        w.loghub_systems,
        workload::WORKSPACES,
        workload::ORGS,
        loadavg()
    );
    println!(
        "| backend | encoding | acked ev/s | stored ev/s | drain ev/s (no load) | ev/s per server core | server core busy | MB/s raw (wire) | CPU-s per 1M ev | p50 / p99 ms (at ev/s) | peak RSS MiB | B/event on disk | compression | non-2xx |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in runs {
        let secs = r.peak.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {}{} | {} | {} | {:.0}% | {:.1} ({:.1}) | {:.2} | {:.1} / {:.1} ({}) | {:.0} | {:.1} → {:.1} | {:.1}× → {:.1}× | {} |",
            r.backend.name(),
            r.encoding.name(),
            int(r.ack_eps()),
            int(r.stored_eps()),
            if r.drained { "" } else { " (not drained)" },
            r.drain_eps.map_or("–".into(), int),
            int(r.per_core()),
            100.0 * r.cpu_secs / r.stored_secs,
            r.peak.ndjson_bytes as f64 / mb / secs,
            r.peak.wire_bytes as f64 / mb / secs,
            r.cpu_secs / r.peak.events.max(1) as f64 * 1e6,
            r.latency.quantile_ms(0.5),
            r.latency.quantile_ms(0.99),
            int(r.latency_rate_eps),
            r.rss_mib,
            r.footprint.disk.written_bytes as f64 / r.footprint.disk.rows.max(1) as f64,
            r.footprint.disk.final_bytes as f64 / r.footprint.disk.rows.max(1) as f64,
            r.ratio_written(),
            r.ratio_final(),
            {
                let mut f = r.peak.failures.clone();
                for (k, v) in &r.latency.failures {
                    *f.entry(*k).or_default() += v;
                }
                Outcome { failures: f, ..Outcome::default() }.failures_text()
            }
        );
    }
    println!(
        "\nacked: 2xx events ÷ peak phase; stored: the same events ÷ time until all were in storage; drain: the backlog left when the load stopped ÷ the time to store it (the load generator, which shares the engine's core, idle); per server core: events ÷ server CPU-seconds (utime+stime) over that time; \
         latency: open loop at half the sustained rate, from scheduled send to acknowledgement; disk: a separate server stores every distinct event once and stops; its store as left → after compaction \
         (embedded `maintain` merging every partition's files, ClickHouse `OPTIMIZE FINAL`); compression: raw NDJSON bytes ÷ bytes on disk."
    );
    for r in runs {
        let f = &r.footprint;
        let extra = match (r.adapter_cpu, f.disk.engine) {
            (Some(a), Some((u, c))) => format!(
                "; adapter CPU {:.0}% of a core over the peak phase; ClickHouse's own ratio {:.1}× ({} parts → {})",
                100.0 * a / r.stored_secs,
                u as f64 / c.max(1) as f64,
                f.disk.written_pieces,
                f.disk.final_pieces
            ),
            _ => format!("; footprint {} Parquet files → {}", f.disk.written_pieces, f.disk.final_pieces),
        };
        let check = if r.stored_total == r.acked_total { "all".to_owned() } else { format!("MISMATCH: {} of", r.stored_total) };
        let fcheck = if f.disk.rows == f.events { "" } else { " (footprint row count MISMATCH)" };
        println!(
            "- {} / {}: {check} {} acknowledged events stored; footprint measured on {} distinct events{fcheck}{extra}",
            r.backend.name(),
            r.encoding.name(),
            int(r.acked_total as f64),
            int(f.events as f64)
        );
    }

    println!("\n### Baselines (same run, on core {SERVER_CORE})\n");
    println!("| baseline | figure |\n|---|--:|");
    for (enc, rate) in &base.parse {
        println!("| parse ceiling, {} (decode only, one core) | {} ev/s per core |", enc.name(), int(rate.per_cpu_sec()));
    }
    for (enc, d) in &base.direct_insert {
        println!(
            "| direct insert of the {} rows into the same ClickHouse engine (`ClickHouseStore::write`, {} rows per batch, {DIRECT_CONCURRENCY} in flight) | {} rows/s |",
            enc.name(),
            int(DIRECT_BATCH_ROWS as f64),
            int(d.per_wall_sec())
        );
    }
    println!("\n### Ratios\n");
    println!("| backend | encoding | per server core ÷ parse ceiling | stored ev/s ÷ direct insert | drain ev/s ÷ direct insert |\n|---|---|--:|--:|--:|");
    for r in runs {
        let parse = base.parse.iter().find(|(e, _)| *e == r.encoding).map(|(_, p)| r.per_core() / p.per_cpu_sec());
        let (direct, drain) = match (r.backend, base.direct_for(r.encoding)) {
            (Backend::ClickHouse, Some(d)) => {
                (format!("{:.2}", r.stored_eps() / d.per_wall_sec()), r.drain_eps.map_or("–".into(), |e| format!("{:.2}", e / d.per_wall_sec())))
            }
            _ => ("–".into(), "–".into()),
        };
        println!("| {} | {} | {} | {direct} | {drain} |", r.backend.name(), r.encoding.name(), parse.map_or("–".into(), |p| format!("{p:.2}")));
    }

    println!("\n### Targets\n");
    for r in runs {
        match r.backend {
            Backend::Embedded => println!(
                "- ≥ 300,000 ev/s per server core into the embedded store, durable acks ({}): {} — {}",
                r.encoding.name(),
                int(r.per_core()),
                verdict(r.per_core() >= TARGET_PER_CORE && r.drained)
            ),
            Backend::ClickHouse => {
                if let Some(d) = base.direct_for(r.encoding) {
                    let under_load = r.stored_eps() / d.per_wall_sec();
                    let drain = r.drain_eps.map(|e| e / d.per_wall_sec());
                    println!(
                        "- ≥ 90% of direct-insert throughput on the ClickHouse path ({}): draining {} — {}; under load (the load generator sharing the engine's core) {:.0}%",
                        r.encoding.name(),
                        drain.map_or("n/a".into(), |x| format!("{:.0}%", 100.0 * x)),
                        verdict(drain.is_some_and(|x| x >= TARGET_DIRECT_RATIO) && r.drained),
                        100.0 * under_load
                    );
                }
            }
        }
    }
    for r in runs {
        let target = match r.backend {
            Backend::Embedded => TARGET_COMPRESSION_EMBEDDED,
            Backend::ClickHouse => TARGET_COMPRESSION_CLICKHOUSE,
        };
        println!(
            "- compression ≥ {target:.0}× in {} ({}): as written {:.1}× — {}; after compaction {:.1}× — {}",
            r.backend.name(),
            r.encoding.name(),
            r.ratio_written(),
            verdict(r.ratio_written() >= target),
            r.ratio_final(),
            verdict(r.ratio_final() >= target)
        );
    }
}
