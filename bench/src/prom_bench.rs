//! `prom-bench`: what the Prometheus API (token, authorisation, PromQL parsed and scoped, the
//! answer relayed and counted) adds to a `query_range` answered by a real Prometheus, beside the
//! same query with the tenant matchers written by hand and sent straight to that Prometheus, in
//! the same run. See `bench/README.md`.
//!
//! ```sh
//! cargo build --release -p dataplane -p bench
//! prom-bench [--series 1000] [--runs 20] [--dataplane PATH]
//! ```

#[allow(dead_code)]
mod procs;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use procs::{CLIENT_CORE, Guard, Server, quantile};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seconds between samples (a one-minute scrape).
const INTERVAL: i64 = 60;
const DAY: i64 = 86_400;

struct Args {
    /// Which parts: the proxy in front of Prometheus, native evaluation, or both.
    proxy: bool,
    native: bool,
    series: usize,
    runs: usize,
    dataplane: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args { proxy: true, native: true, series: 1000, runs: 20, dataplane: exe.with_file_name("dataplane") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--series" => a.series = v()?.parse()?,
            "--runs" => a.runs = v()?.parse()?,
            "--dataplane" => a.dataplane = PathBuf::from(v()?),
            "--only" => match v()?.as_str() {
                "proxy" => a.native = false,
                "native" => a.proxy = false,
                other => bail!("--only {other}: proxy or native"),
            },
            other => bail!("unknown argument {other}; usage: prom-bench [--series N] [--runs N] [--only proxy|native] [--dataplane PATH]"),
        }
    }
    Ok(a)
}

/// The series of the workload: two tenants of `series` series each (acme/ws-a, the one asked
/// about, and acme/ws-b): (workspace, pod, code, increase per minute).
fn series_of(series: usize) -> Vec<(&'static str, String, &'static str, u64)> {
    ["ws-a", "ws-b"]
        .iter()
        .flat_map(|ws| (0..series).map(move |i| (*ws, format!("api-{i:04}"), if i % 10 == 0 { "500" } else { "200" }, 1 + (i as u64 % 7))))
        .collect()
}

/// 24 h of one-minute samples of `http_requests_total`, as OpenMetrics text for `promtool`.
fn write_openmetrics(path: &std::path::Path, series: usize, end: i64) -> anyhow::Result<u64> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(f, "# TYPE http_requests counter")?;
    let all = series_of(series);
    let mut samples = 0u64;
    for (step, t) in (end - DAY..=end).step_by(INTERVAL as usize).enumerate() {
        for (ws, pod, code, per) in &all {
            let labels = format!("organization=\"acme\",workspace=\"{ws}\",namespace=\"shop\",pod=\"{pod}\",code=\"{code}\"");
            writeln!(f, "http_requests_total{{{labels}}} {} {t}", step as u64 * per)?;
            samples += 1;
        }
    }
    writeln!(f, "# EOF")?;
    f.flush()?;
    Ok(samples)
}

/// The same samples written straight into an embedded store under `root`, then compacted.
async fn load_store(root: &std::path::Path, series: usize, end: i64) -> anyhow::Result<()> {
    use storage::Store;
    let store = std::sync::Arc::new(
        storage::embedded::EmbeddedStore::open(storage::embedded::EmbeddedConfig { compact_min_files: 2, ..storage::embedded::EmbeddedConfig::new(root) })
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let all = series_of(series);
    let mut rows = Vec::new();
    let mut seq = 0;
    for (step, t) in (end - DAY..=end).step_by(INTERVAL as usize).enumerate() {
        for (ws, pod, code, per) in &all {
            rows.push(schemas::MetricSample {
                timestamp_ms: t * 1000,
                org_id: "acme".into(),
                workspace: (*ws).into(),
                project: "shop".into(),
                metric: "http_requests_total".into(),
                labels: vec![("code".into(), (*code).into()), ("namespace".into(), "shop".into()), ("pod".into(), pod.clone())],
                value: (step as u64 * per) as f64,
            });
        }
        if rows.len() >= 250_000 {
            let batch = storage::WriteBatch {
                id: storage::BatchId { wal_id: "prombench".into(), seq },
                rows: std::sync::Arc::new(schemas::Rows::Metrics(std::mem::take(&mut rows))),
            };
            store.write(&batch).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            seq += 1;
        }
    }
    let batch = storage::WriteBatch { id: storage::BatchId { wal_id: "prombench".into(), seq }, rows: std::sync::Arc::new(schemas::Rows::Metrics(rows)) };
    store.write(&batch).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    store.maintain().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// An answer as comparable values: series labels (without `organization`, which the stored
/// samples keep as their tenant, not a label) → values.
fn values_of(body: &[u8]) -> anyhow::Result<std::collections::BTreeMap<String, Vec<f64>>> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let mut out = std::collections::BTreeMap::new();
    for s in v["data"]["result"].as_array().context("no result")? {
        let mut m = s["metric"].as_object().cloned().unwrap_or_default();
        m.remove("organization");
        let vals = s["values"].as_array().context("no values")?.iter().map(|p| p[1].as_str().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN)).collect();
        out.insert(serde_json::Value::Object(m).to_string(), vals);
    }
    Ok(out)
}

fn same_values(a: &std::collections::BTreeMap<String, Vec<f64>>, b: &std::collections::BTreeMap<String, Vec<f64>>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && va.len() == vb.len()
                && va.iter().zip(vb).all(|(x, y)| (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
        })
}

struct Question {
    name: &'static str,
    /// Asked through the API (the caller's matchers added by the service).
    api: &'static str,
    /// Asked of Prometheus directly, the tenant written by hand.
    direct: &'static str,
}

const QUESTIONS: [Question; 3] = [
    Question {
        name: "per-pod request rate (1 series per pod)",
        api: "sum by (pod) (rate(http_requests_total[5m]))",
        direct: r#"sum by (pod) (rate(http_requests_total{organization="acme",workspace="ws-a"}[5m]))"#,
    },
    Question {
        name: "error ratio (1 series)",
        api: r#"sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))"#,
        direct: r#"sum(rate(http_requests_total{code=~"5..",organization="acme",workspace="ws-a"}[5m])) / sum(rate(http_requests_total{organization="acme",workspace="ws-a"}[5m]))"#,
    },
    Question { name: "raw counters (every series)", api: "http_requests_total", direct: r#"http_requests_total{organization="acme",workspace="ws-a"}"# },
];

async fn ask(client: &reqwest::Client, url: &str, token: Option<&str>, query: &str, start: i64, end: i64) -> anyhow::Result<(f64, bytes::Bytes)> {
    let form = serde_urlencoded::to_string([("query", query), ("start", &start.to_string()), ("end", &end.to_string()), ("step", &INTERVAL.to_string())])?;
    let mut req = client.post(url).header("content-type", "application/x-www-form-urlencoded").body(form);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let t = Instant::now();
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    }
    Ok((ms, body))
}

/// p50 and p95 of ours and theirs, and the last answers of each.
struct Paired {
    ours: (f64, f64),
    theirs: (f64, f64),
    ours_body: bytes::Bytes,
    theirs_body: bytes::Bytes,
}

/// `q` asked of us (with the token) and of Prometheus directly, alternating, after two warm-ups.
async fn paired(client: &reqwest::Client, ours: (&str, &str), theirs: &str, q: &Question, runs: usize, (start, end): (i64, i64)) -> anyhow::Result<Paired> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut ab, mut bb) = (bytes::Bytes::new(), bytes::Bytes::new());
    for i in 0..runs + 2 {
        let (ms_a, body_a) = ask(client, ours.0, Some(ours.1), q.api, start, end).await?;
        let (ms_b, body_b) = ask(client, theirs, None, q.direct, start, end).await?;
        if i >= 2 {
            a.push(ms_a);
            b.push(ms_b);
        }
        (ab, bb) = (body_a, body_b);
    }
    Ok(Paired {
        ours: (quantile(&mut a, 0.5), quantile(&mut a, 0.95)),
        theirs: (quantile(&mut b, 0.5), quantile(&mut b, 0.95)),
        ours_body: ab,
        theirs_body: bb,
    })
}

fn series_in(body: &[u8]) -> usize {
    body.windows(9).filter(|w| w == br#""metric":"#).count()
}

async fn run(a: &Args) -> anyhow::Result<bool> {
    let tmp = tempfile::Builder::new().prefix("prom-bench-").tempdir()?;
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64 / INTERVAL * INTERVAL - 300;
    let text = tmp.path().join("samples.om");
    eprintln!("writing {} series × 24 h of one-minute samples (two tenants)", 2 * a.series);
    let samples = write_openmetrics(&text, a.series, end)?;
    let tsdb = tmp.path().join("tsdb");
    eprintln!("promtool: building TSDB blocks from {samples} samples");
    let t = Instant::now();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&text)
        .arg(&tsdb)
        .output()
        .context("promtool (apt-get install prometheus)")?;
    if !out.status.success() {
        bail!("promtool: {}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("  built in {:.0} s", t.elapsed().as_secs_f64());
    std::fs::remove_file(&text)?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
    // Prometheus shares the client's core: requests are sequential, so one waits for the other.
    let child = Command::new("taskset")
        .args(["-c", &CLIENT_CORE.to_string(), "prometheus"])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=30d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting prometheus")?;
    let _prometheus = Guard { child, name: "prometheus" };
    let client = reqwest::Client::builder().pool_max_idle_per_host(4).build()?;
    let upstream = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client.get(format!("{upstream}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
        if Instant::now() > deadline {
            bail!("prometheus did not become ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let start = end - DAY;
    let direct_url = format!("{upstream}/api/v1/query_range");
    let mut ok = true;
    if a.proxy {
        let server_dir = tempfile::Builder::new().prefix("prom-bench-dp-").tempdir()?;
        let extra = format!("[prometheus]\nupstream = \"{upstream}\"\n[query]\nmax_series = 100000\n");
        let server = Server::start_configured(&a.dataplane, None, server_dir, &extra)?;
        let token = procs::dev_token(&server, &a.dataplane, "acme", "ws-a")?;
        let api_url = server.url("/prometheus/api/v1/query_range");

        println!(
            "\n## Prometheus API: {} series per tenant × 24 h at 1-minute resolution (two tenants), query_range over 24 h at a 60 s step, {} runs each\n",
            a.series, a.runs
        );
        println!(
            "Baseline: the same query with `organization`/`workspace` matchers written by hand, sent straight to the same Prometheus 2.42 (POST form), alternating with the API call.\n"
        );
        println!(
            "| question | API p50 ms | API p95 ms | Prometheus p50 ms | Prometheus p95 ms | API ÷ Prometheus (p50) | added ms (p50) | series | answer MB |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for q in &QUESTIONS {
            let Paired { ours: (a50, a95), theirs: (d50, d95), ours_body: api_body, theirs_body: direct_body } =
                paired(&client, (&api_url, &token), &direct_url, q, a.runs, (start, end)).await?;
            let added = a50 - d50;
            println!(
                "| {} | {a50:.1} | {a95:.1} | {d50:.1} | {d95:.1} | {:.3} | {added:.1} | {} | {:.1} |",
                q.name,
                a50 / d50.max(1e-9),
                series_in(&api_body),
                api_body.len() as f64 / 1e6
            );
            if api_body != direct_body {
                println!("  MISMATCH: the API's answer differs from Prometheus's for {}", q.name);
                ok = false;
            }
            if added > (0.05 * d50).max(2.0) {
                println!("  over target: the API adds {added:.1} ms (target ≤ max(5 %, 2 ms))");
                ok = false;
            }
        }
    }
    if !a.native {
        return Ok(ok);
    }
    // Native evaluation: the same samples in the embedded store, no upstream.
    let native_dir = tempfile::Builder::new().prefix("prom-bench-native-").tempdir()?;
    eprintln!("writing the same {samples} samples into an embedded store");
    let t = Instant::now();
    load_store(&native_dir.path().join("store"), a.series, end).await?;
    eprintln!("  written and compacted in {:.0} s", t.elapsed().as_secs_f64());
    let native = Server::start_configured(&a.dataplane, None, native_dir, "[query]\nmax_series = 100000\n")?;
    let token = procs::dev_token(&native, &a.dataplane, "acme", "ws-a")?;
    let native_url = native.url("/prometheus/api/v1/query_range");
    // What reading the samples costs in this process (the floor under the native answers).
    let scope = {
        let settings = auth::AuthConfig::default().validate(&native.data_dir).map_err(anyhow::Error::msg)?;
        let id = auth::TokenVerifier::new(settings)?.verify(&token, None).await?;
        auth::Gate::new(std::sync::Arc::new(auth::StaticPolicy::members_read_all()), "platform-operator", Vec::new()).metrics(&id).await?
    };
    let reader = std::sync::Arc::new(storage::embedded::EmbeddedStore::open_for_reading(storage::embedded::EmbeddedConfig::new(native.data_dir.join("store"))));
    let read = storage::MetricRead { scope, from_ms: (start - 300) * 1000, to_ms: end * 1000, metrics: None };
    let mut reads = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let n = storage::Store::metric_series(&reader, &read).await.map_err(|e| anyhow::anyhow!("{e}"))?.len();
        reads.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(n == a.series, "the store read {n} series, not {}", a.series);
    }
    let read_ms = quantile(&mut reads, 0.5);
    let scan = storage::ScanRequest {
        table: schemas::Table::Metrics,
        org_id: Some("acme".into()),
        workspaces: Some(vec!["ws-a".into()]),
        from_ns: read.from_ms * 1_000_000,
        to_ns: (read.to_ms + 1) * 1_000_000,
    };
    let mut scans = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        storage::Store::scan(&reader, &scan).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        scans.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let scan_ms = quantile(&mut scans, 0.5);
    println!("\n## Native PromQL over the embedded store (no upstream), same samples\n");
    println!(
        "Reading the tenant's {} series × 24 h from the store in-process: {read_ms:.1} ms p50 (of which decoding the Parquet files: {scan_ms:.1} ms).\n",
        a.series
    );
    println!("Baseline: the real Prometheus 2.42 answering the same query over its TSDB, alternating with ours; answers compared value by value.\n");
    println!("| question | native p50 ms | native p95 ms | Prometheus p50 ms | Prometheus p95 ms | native ÷ Prometheus (p50) | series |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for q in &QUESTIONS {
        let Paired { ours: (a50, a95), theirs: (d50, d95), ours_body: mb, theirs_body: tb } =
            paired(&client, (&native_url, &token), &direct_url, q, a.runs, (start, end)).await?;
        println!("| {} | {a50:.1} | {a95:.1} | {d50:.1} | {d95:.1} | {:.2} | {} |", q.name, a50 / d50.max(1e-9), series_in(&mb));
        if !same_values(&values_of(&mb)?, &values_of(&tb)?) {
            println!("  MISMATCH: the native answer differs from Prometheus's for {}", q.name);
            ok = false;
        }
        if a50 > 2.0 * d50 {
            println!("  over target: native evaluation takes {:.2}× Prometheus's time (target ≤ 2×)", a50 / d50);
            ok = false;
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    ingest::keep_freed_memory();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let go = || -> anyhow::Result<bool> {
        let a = parse_args()?;
        if !a.dataplane.exists() {
            bail!("{} not found; build it with `cargo build --release -p dataplane` or pass --dataplane", a.dataplane.display());
        }
        procs::pin_process(CLIENT_CORE)?;
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(&a))
    };
    match go() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("prom-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
