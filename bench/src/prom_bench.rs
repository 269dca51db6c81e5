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
    series: usize,
    runs: usize,
    dataplane: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args { series: 1000, runs: 20, dataplane: exe.with_file_name("dataplane") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--series" => a.series = v()?.parse()?,
            "--runs" => a.runs = v()?.parse()?,
            "--dataplane" => a.dataplane = PathBuf::from(v()?),
            other => bail!("unknown argument {other}; usage: prom-bench [--series N] [--runs N] [--dataplane PATH]"),
        }
    }
    Ok(a)
}

/// 24 h of one-minute samples of `http_requests_total` for two tenants of `series` series each
/// (acme/ws-a, the one asked about, and acme/ws-b), as OpenMetrics text for `promtool`.
fn write_openmetrics(path: &std::path::Path, series: usize, end: i64) -> anyhow::Result<u64> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(f, "# TYPE http_requests counter")?;
    let labels: Vec<String> = ["ws-a", "ws-b"]
        .iter()
        .flat_map(|ws| {
            (0..series).map(move |i| {
                let code = if i % 10 == 0 { "500" } else { "200" };
                format!("organization=\"acme\",workspace=\"{ws}\",namespace=\"shop\",pod=\"api-{i:04}\",code=\"{code}\"")
            })
        })
        .collect();
    let mut samples = 0u64;
    let mut t = end - DAY;
    let mut step = 0u64;
    while t <= end {
        for (i, l) in labels.iter().enumerate() {
            writeln!(f, "http_requests_total{{{l}}} {} {t}", step * (1 + (i as u64 % 7)))?;
            samples += 1;
        }
        t += INTERVAL;
        step += 1;
    }
    writeln!(f, "# EOF")?;
    f.flush()?;
    Ok(samples)
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

    let server_dir = tempfile::Builder::new().prefix("prom-bench-dp-").tempdir()?;
    let extra = format!("[prometheus]\nupstream = \"{upstream}\"\n[query]\nmax_series = 100000\n");
    let server = Server::start_configured(&a.dataplane, None, server_dir, &extra)?;
    let token = procs::dev_token(&server, &a.dataplane, "acme", "ws-a")?;
    let (api_url, direct_url) = (server.url("/prometheus/api/v1/query_range"), format!("{upstream}/api/v1/query_range"));
    let start = end - DAY;

    println!(
        "\n## Prometheus API: {} series per tenant × 24 h at 1-minute resolution (two tenants), query_range over 24 h at a 60 s step, {} runs each\n",
        a.series, a.runs
    );
    println!(
        "Baseline: the same query with `organization`/`workspace` matchers written by hand, sent straight to the same Prometheus 2.42 (POST form), alternating with the API call.\n"
    );
    println!("| question | API p50 ms | API p95 ms | Prometheus p50 ms | Prometheus p95 ms | API ÷ Prometheus (p50) | added ms (p50) | series | answer MB |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    let mut ok = true;
    for q in &QUESTIONS {
        let (mut api, mut direct) = (Vec::new(), Vec::new());
        let (mut api_body, mut direct_body) = (bytes::Bytes::new(), bytes::Bytes::new());
        for i in 0..a.runs + 2 {
            let (ms_api, b_api) = ask(&client, &api_url, Some(&token), q.api, start, end).await?;
            let (ms_direct, b_direct) = ask(&client, &direct_url, None, q.direct, start, end).await?;
            if i >= 2 {
                api.push(ms_api);
                direct.push(ms_direct);
            }
            (api_body, direct_body) = (b_api, b_direct);
        }
        let (a50, a95, d50, d95) = (quantile(&mut api, 0.5), quantile(&mut api, 0.95), quantile(&mut direct, 0.5), quantile(&mut direct, 0.95));
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
    Ok(ok)
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
