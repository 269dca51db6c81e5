//! `ingest-bench`: the ingest path's throughput, cost, latency, memory and footprint on disk,
//! each beside a baseline measured in the same run. See `bench/README.md`.
//!
//! ```sh
//! cargo build --release -p dataplane -p bench
//! cargo run --release -p bench --bin ingest-bench -- [--seconds N] [--backend embedded|clickhouse|both]
//!     [--dataplane PATH] [--connections K]
//! ```

mod baselines;
mod load;
// Shared with query-bench and prom-bench, which use parts this one does not.
#[allow(dead_code)]
mod procs;
mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use procs::{Adapter, CLIENT_CORE, Server, cpu_seconds, peak_rss_mib};
use report::{Baselines, RunResult};
use workload::{Encoding, Workload};

/// The same allocator as the server, so the parse ceiling is measured like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct bodies (every event in them is distinct: its own timestamp and trace id).
const BODIES: usize = 256;
const EVENTS_PER_BODY: usize = 1_000;
const WARMUP: Duration = Duration::from_secs(1);
/// Longest wait for acknowledged rows to reach storage after a phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    ClickHouse,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::ClickHouse => "ClickHouse",
        }
    }
}

pub struct Args {
    pub seconds: u64,
    pub backends: Vec<Backend>,
    pub dataplane: PathBuf,
    pub connections: usize,
}

const USAGE: &str = "usage: ingest-bench [--seconds N] [--backend embedded|clickhouse|both] [--dataplane PATH] [--connections K]";

fn default_dataplane() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/dataplane")
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { seconds: 10, backends: vec![Backend::Embedded, Backend::ClickHouse], dataplane: default_dataplane(), connections: 8 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse().context("--seconds")?,
            "--connections" => a.connections = value()?.parse().context("--connections")?,
            "--dataplane" => a.dataplane = PathBuf::from(value()?),
            "--backend" => {
                a.backends = match value()?.as_str() {
                    "embedded" => vec![Backend::Embedded],
                    "clickhouse" => vec![Backend::ClickHouse],
                    "both" => vec![Backend::Embedded, Backend::ClickHouse],
                    other => bail!("--backend {other}: expected embedded, clickhouse or both"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if !(1..=3600).contains(&a.seconds) || !(1..=256).contains(&a.connections) {
        bail!("--seconds must be 1..=3600 and --connections 1..=256");
    }
    if !a.dataplane.is_file() {
        bail!(
            "no dataplane binary at {}: build it with `cargo build --release -p dataplane` (with the same CARGO_TARGET_DIR), or pass --dataplane PATH",
            a.dataplane.display()
        );
    }
    Ok(a)
}

fn main() -> ExitCode {
    ingest::keep_freed_memory();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = parse_args()?;
    if cfg!(debug_assertions) {
        eprintln!("warning: ingest-bench is a debug build; run it with --release");
    }
    procs::pin_process(CLIENT_CORE)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    eprintln!("building {BODIES} bodies × {EVENTS_PER_BODY} events in each encoding…");
    let w = workload::build(BODIES, EVENTS_PER_BODY)?;
    let duration = Duration::from_secs(args.seconds);
    let mut runs = Vec::new();
    let mut base = Baselines::default();
    for &backend in &args.backends {
        let adapter = match backend {
            Backend::ClickHouse => Some(Adapter::start()?),
            Backend::Embedded => None,
        };
        for enc in Encoding::ALL {
            eprintln!("{} / {}: server on core {}, load on core {CLIENT_CORE}…", backend.name(), enc.name(), procs::SERVER_CORE);
            let r = rt.block_on(run_server(&args, backend, enc, &w, adapter.as_ref()))?;
            eprintln!("  {}", r.summary());
            runs.push(r);
        }
        if let Some(ch) = &adapter {
            // The same rows each encoding's run stored (NDJSON and its zstd form decode to the
            // same rows, so they share one measurement).
            for enc in [Encoding::Ndjson, Encoding::LokiProto] {
                eprintln!("baseline: direct insert of the {} rows into the same engine…", enc.name());
                let rows = baselines::stored_rows(enc, w.bodies(enc))?;
                let rate = baselines::direct_insert(&ch.url, &rows, duration)?;
                let client = reqwest::Client::new();
                let count = rt.block_on(ch.numbers(&client, "SELECT count() FROM hexabase.logs"))?;
                if count.first() != Some(&rate.items) {
                    bail!("direct insert: {} rows written, {count:?} in the table", rate.items);
                }
                rt.block_on(ch.sql(&client, "TRUNCATE TABLE hexabase.logs"))?;
                eprintln!("  {:.0} rows/s", rate.per_wall_sec());
                base.direct_insert.push((enc, rate));
            }
        }
    }
    for enc in Encoding::ALL {
        eprintln!("baseline: parse ceiling, {}…", enc.name());
        base.parse.push((enc, baselines::parse_ceiling(enc, w.bodies(enc), duration)?));
    }
    report::print(&args, &w, &runs, &base);
    Ok(())
}

/// Footprint on disk: a fresh server receives every distinct body exactly once and stops
/// (flushing); then the store is measured as left, and after its own compaction.
async fn footprint(args: &Args, enc: Encoding, w: &Workload, ch: Option<&Adapter>) -> anyhow::Result<report::Footprint> {
    let mut server = Server::start(&args.dataplane, ch.map(|c| c.url.as_str()))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let target = load::Target::new(&server.url(""), enc, w.bodies(enc))?;
    let sent = load::once(&target, args.connections).await;
    let want: u64 = w.bodies(enc).iter().map(|b| b.events as u64).sum();
    if sent.events != want {
        bail!("footprint: {} of {want} events accepted ({})", sent.events, sent.failures_text());
    }
    wait_stored(&client, &server, sent.events).await?;
    server.proc.terminate(Duration::from_secs(180)).context("graceful shutdown")?;
    let disk = match ch {
        None => report::embedded_disk(&server.data_dir.join("store"), true).await?,
        Some(ch) => report::clickhouse_disk(ch, &client, sent.events, true).await?,
    };
    Ok(report::Footprint { events: sent.events, raw_bytes: sent.ndjson_bytes, disk })
}

/// One server, one encoding: warm-up, peak, latency at half the sustained rate, shutdown,
/// and a count of what was stored.
async fn run_server(args: &Args, backend: Backend, enc: Encoding, w: &Workload, ch: Option<&Adapter>) -> anyhow::Result<RunResult> {
    let footprint = footprint(args, enc, w, ch).await?;
    let duration = Duration::from_secs(args.seconds);
    let mut server = Server::start(&args.dataplane, ch.map(|c| c.url.as_str()))?;
    let pid = server.proc.pid();
    let stat = format!("/proc/{pid}/stat");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let target = load::Target::new(&server.url(""), enc, w.bodies(enc))?;

    let warm = load::peak(&target, args.connections, WARMUP, 0).await;
    if warm.events == 0 {
        bail!("{} / {}: nothing accepted during warm-up ({})", backend.name(), enc.name(), warm.failures_text());
    }
    let mut acked = warm.events;
    wait_stored(&client, &server, acked).await?;

    let adapter_stat = ch.map(|c| format!("/proc/{}/stat", c.proc.pid()));
    let adapter_cpu0 = adapter_stat.as_deref().map(cpu_seconds).transpose()?;
    let cpu0 = cpu_seconds(&stat)?;
    let t0 = Instant::now();
    let peak = load::peak(&target, args.connections, duration, 7).await;
    acked += peak.events;
    // What is still to be stored when the load stops is drained with the load generator idle:
    // the rate the path reaches storage at when nothing else competes for the engine's core.
    let (load_end, stored_at_end) = (Instant::now(), stored_rows(&client, &server).await?);
    let (stored_at, drained) = wait_stored(&client, &server, acked).await?;
    let backlog = acked.saturating_sub(stored_at_end);
    let drain_eps = (backlog >= 2 * 100_000).then(|| backlog as f64 / stored_at.duration_since(load_end).as_secs_f64().max(1e-9));
    let cpu_secs = cpu_seconds(&stat)? - cpu0;
    let adapter_cpu = match (adapter_stat.as_deref(), adapter_cpu0) {
        (Some(s), Some(c0)) => Some(cpu_seconds(s)? - c0),
        _ => None,
    };
    let stored_secs = stored_at.duration_since(t0).as_secs_f64();

    // Half of what the server sustained (acknowledged and stored), open loop.
    let ack_eps = peak.events as f64 / peak.elapsed.as_secs_f64();
    let sustained = ack_eps.min(peak.events as f64 / stored_secs);
    let rate_rps = 0.5 * sustained / EVENTS_PER_BODY as f64;
    let latency = load::paced(&target, rate_rps, duration, 13).await;
    acked += latency.events;
    let (_, drained_latency) = wait_stored(&client, &server, acked).await?;
    let rss_mib = peak_rss_mib(pid)?;
    server.proc.terminate(Duration::from_secs(180)).context("graceful shutdown")?;
    let stored = match ch {
        None => report::embedded_disk(&server.data_dir.join("store"), false).await?.rows,
        Some(ch) => report::clickhouse_disk(ch, &client, acked, false).await?.rows,
    };
    Ok(RunResult {
        backend,
        encoding: enc,
        peak,
        stored_secs,
        drain_eps,
        drained: drained && drained_latency,
        cpu_secs,
        adapter_cpu,
        latency,
        latency_rate_eps: rate_rps * EVENTS_PER_BODY as f64,
        rss_mib,
        acked_total: acked,
        stored_total: stored,
        footprint,
    })
}

/// `dataplane_ingest_stored_rows_total` from the server's `/metrics`.
async fn stored_rows(client: &reqwest::Client, server: &Server) -> anyhow::Result<u64> {
    let text = client.get(server.url("/metrics")).send().await?.text().await?;
    let line = text.lines().find(|l| l.starts_with("dataplane_ingest_stored_rows_total")).context("no dataplane_ingest_stored_rows_total in /metrics")?;
    Ok(line.split_whitespace().nth(1).context("metric value")?.parse::<f64>()? as u64)
}

/// Polls until `want` rows are stored; returns when that was seen and whether it happened
/// within [`DRAIN_LIMIT`].
async fn wait_stored(client: &reqwest::Client, server: &Server, want: u64) -> anyhow::Result<(Instant, bool)> {
    let start = Instant::now();
    loop {
        let now = Instant::now();
        if stored_rows(client, server).await? >= want {
            return Ok((now, true));
        }
        if start.elapsed() > DRAIN_LIMIT {
            eprintln!("  warning: acknowledged rows not all stored after {DRAIN_LIMIT:?}");
            return Ok((now, false));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
