//! `query-bench`: the query path's latency through the HTTP API with a valid token, beside the
//! same question asked of the engine directly, in the same run. See `bench/README.md`.
//!
//! ```sh
//! cargo build --release -p dataplane -p bench
//! query-bench [--rows 10000000] [--workspaces 100] [--runs 30] [--backend embedded|clickhouse|both] [--dataplane PATH]
//! ```

// Shared with ingest-bench, which uses the parts this one does not.
#[allow(dead_code)]
mod procs;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use procs::{Adapter, CLIENT_CORE, Server, quantile};
use schemas::{LogRecord, Rows, Severity};
use storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use storage::embedded::{EmbeddedConfig, EmbeddedStore};
use storage::{BatchId, LogFilters, LogSearch, Store, Term, WriteBatch};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY_NS: i64 = 86_400_000_000_000;
const BATCH_ROWS: usize = 250_000;
/// The rare word: in 10 rows of each workspace.
const RARE: &str = "quokka";
const PHRASE: &str = "Received block";
const STEP_NS: i64 = 300_000_000_000;
const PROJECTS: [&str; 3] = ["shop", "billing", "web"];

struct Args {
    rows: usize,
    workspaces: usize,
    runs: usize,
    backends: Vec<&'static str>,
    dataplane: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args { rows: 10_000_000, workspaces: 100, runs: 30, backends: vec!["embedded", "clickhouse"], dataplane: exe.with_file_name("dataplane") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--rows" => a.rows = v()?.parse()?,
            "--workspaces" => a.workspaces = v()?.parse()?,
            "--runs" => a.runs = v()?.parse()?,
            "--dataplane" => a.dataplane = PathBuf::from(v()?),
            "--backend" => {
                a.backends = match v()?.as_str() {
                    "embedded" => vec!["embedded"],
                    "clickhouse" => vec!["clickhouse"],
                    "both" => vec!["embedded", "clickhouse"],
                    other => bail!("--backend {other}: embedded, clickhouse or both"),
                }
            }
            other => bail!(
                "unknown argument {other}; usage: query-bench [--rows N] [--workspaces N] [--runs N] [--backend embedded|clickhouse|both] [--dataplane PATH]"
            ),
        }
    }
    Ok(a)
}

fn loghub_lines() -> anyhow::Result<Vec<String>> {
    let dir = std::env::var_os("LOGHUB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub"));
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir).with_context(|| format!("{} (set LOGHUB_DIR)", dir.display()))?.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(text) = std::fs::read_to_string(e.path().join(format!("{name}_2k.log"))) {
            out.extend(text.lines().filter(|l| !l.trim().is_empty() && !l.contains(RARE)).map(str::to_owned));
        }
    }
    if out.is_empty() {
        bail!("no Loghub lines under {}", dir.display());
    }
    Ok(out)
}

fn org_of(w: usize) -> String {
    format!("org-{}", w % 10)
}
fn ws_of(w: usize) -> String {
    format!("ws-{w:03}")
}

/// Row `i` of the data set: workspaces round-robin, spread evenly over the 24 h before `end`.
fn row(i: usize, n: usize, workspaces: usize, end: i64, lines: &[String]) -> LogRecord {
    let w = i % workspaces;
    let k = i / workspaces;
    let per_ws = n / workspaces;
    let ts = end - DAY_NS + (k as i64) * (DAY_NS / per_ws.max(1) as i64) + (w as i64 * 7_919) % 1_000_000;
    let mut message = lines[(i.wrapping_mul(2_654_435_761)) % lines.len()].clone();
    if k % 10_000 == 1_234 {
        message.push(' ');
        message.push_str(RARE);
    }
    let p = PROJECTS[k % 3];
    let pod = format!("{p}-{}", k % 4);
    LogRecord {
        timestamp_ns: ts,
        observed_ns: ts,
        org_id: org_of(w),
        workspace: ws_of(w),
        project: p.to_owned(),
        application: p.to_owned(),
        pod,
        container: "app".into(),
        node: format!("node-{}", w % 8),
        stream: "stdout".into(),
        severity: match Severity::detect(&message) {
            Severity::Unknown => Severity::Info,
            s => s,
        },
        attributes: vec![("app".into(), p.to_owned())],
        trace_id: format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        span_id: String::new(),
        message,
    }
}

/// Writes the data set into `store`, `BATCH_ROWS` at a time, with progress.
async fn load(store: &dyn Store, a: &Args, end: i64, lines: &[String]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let batches = a.rows.div_ceil(BATCH_ROWS);
    for b in 0..batches {
        let rows: Vec<LogRecord> = (b * BATCH_ROWS..((b + 1) * BATCH_ROWS).min(a.rows)).map(|i| row(i, a.rows, a.workspaces, end, lines)).collect();
        let batch = WriteBatch { id: BatchId { wal_id: "querybench".into(), seq: b as u64 }, rows: Arc::new(Rows::Logs(rows)) };
        store.write(&batch).await.map_err(|e| anyhow::anyhow!("loading: {e}"))?;
        if b % 8 == 7 || b + 1 == batches {
            eprintln!("  loaded {} of {} rows ({:.0} s)", ((b + 1) * BATCH_ROWS).min(a.rows), a.rows, started.elapsed().as_secs_f64());
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One question, asked through the API and of the engine.
struct Question {
    name: &'static str,
    /// Path and query string of the API call.
    api: String,
    /// How many rows (or buckets) an answer holds, to check both sides agree.
    count_api: fn(&serde_json::Value) -> usize,
}

enum Engine {
    /// A store in this process: for the embedded store the same Parquet files, for ClickHouse
    /// the production client's SQL; no HTTP server, token, authorisation or JSON.
    Store { store: Arc<dyn Store>, scope: auth::TenantScope },
    /// Hand-written SQL to the same ClickHouse engine over its HTTP interface (with `wall` in
    /// [`engine_call`], sent with the engine-side wall's setting, `additional_table_filters`, as
    /// the store sends it: what that setting costs apart from the SQL the store writes).
    ClickHouse { adapter: Adapter },
}

struct Measured {
    name: &'static str,
    api: (f64, f64),
    engine: (f64, f64),
    rows: (usize, usize),
    /// ClickHouse only: the production store's own query in this process (p50), which
    /// separates the SQL the store writes from what the HTTP layer adds.
    store_p50: Option<f64>,
    /// ClickHouse only: the hand-written SQL with the wall's setting (p50).
    walled_p50: Option<f64>,
    /// ClickHouse only: the median of per-run differences between the API and that walled
    /// baseline: what the service adds over the engine with its second wall in force.
    added_over_walled: Option<f64>,
    /// The server's own account of its time (p50), where the answer carries one.
    server_p50: Option<f64>,
    /// What the API adds: the median of per-run differences (API − engine, the two timed back
    /// to back in the same run), which a slow spell of the machine shifts far less than a
    /// difference of two medians.
    added: f64,
    /// The same median within each of [`BATCHES`] consecutive batches of runs: lowest, highest.
    added_spread: (f64, f64),
}

/// Consecutive batches the runs are split into to show how steady the added time is.
const BATCHES: usize = 4;

#[allow(clippy::too_many_arguments)]
async fn engine_call(engine: &Engine, client: &reqwest::Client, q: &Question, ws: &str, org: &str, from: i64, to: i64, wall: bool) -> anyhow::Result<usize> {
    match engine {
        Engine::Store { store, scope } => {
            let base = LogSearch {
                scope: scope.clone(),
                from_ns: from,
                to_ns: to,
                filters: LogFilters::default(),
                terms: Vec::new(),
                limit: 100,
                cursor: None,
                oldest_first: false,
            };
            Ok(match q.name {
                "rare word" => store.search(&LogSearch { terms: vec![Term::Contains(RARE.into())], ..base }).await?.len(),
                "phrase" => store.search(&LogSearch { terms: vec![Term::Contains(PHRASE.into())], ..base }).await?.len(),
                "level filter" => {
                    store.search(&LogSearch { filters: LogFilters { severities: vec!["error".into()], ..Default::default() }, ..base }).await?.len()
                }
                "histogram" => store.histogram(&base, STEP_NS).await?.len(),
                _ => {
                    let q = LogSearch { from_ns: from - STEP_NS + 1, to_ns: to + 1, ..base };
                    let by = storage::StreamsBy { step_ns: Some(STEP_NS), columns: storage::StreamColumns::NONE.with("severity"), bytes: false };
                    let s = store.streams(&q, by).await?;
                    s.iter().map(|c| (c.start_ns, c.severity.clone())).collect::<BTreeSet<_>>().len()
                }
            })
        }
        Engine::ClickHouse { adapter } => {
            let cols = "toUnixTimestamp64Nano(timestamp) AS ts, org_id, workspace, project, application, pod, container, node, stream, severity, message, attributes, trace_id";
            let wher = format!(
                "org_id = '{org}' AND workspace = '{ws}' AND timestamp >= fromUnixTimestamp64Nano({from}) AND timestamp < fromUnixTimestamp64Nano({to})"
            );
            let page = "ORDER BY timestamp DESC, pod, message, trace_id LIMIT 100 FORMAT JSONEachRow";
            let sql = match q.name {
                "rare word" => format!("SELECT {cols} FROM hexabase.logs WHERE {wher} AND positionCaseInsensitive(message, '{RARE}') > 0 {page}"),
                "phrase" => format!("SELECT {cols} FROM hexabase.logs WHERE {wher} AND positionCaseInsensitive(message, '{PHRASE}') > 0 {page}"),
                "level filter" => format!("SELECT {cols} FROM hexabase.logs WHERE {wher} AND severity = 'error' {page}"),
                "histogram" => format!(
                    "SELECT {from} + intDiv(toUnixTimestamp64Nano(timestamp) - {from}, {STEP_NS}) * {STEP_NS} AS start, severity, count() FROM hexabase.logs WHERE {wher} GROUP BY start, severity FORMAT TSV"
                ),
                _ => {
                    let (f, t) = (from - STEP_NS + 1, to + 1);
                    format!(
                        "SELECT {f} + intDiv(toUnixTimestamp64Nano(timestamp) - {f}, {STEP_NS}) * {STEP_NS} AS start, severity, count() FROM hexabase.logs \
                         WHERE org_id = '{org}' AND workspace = '{ws}' AND timestamp >= fromUnixTimestamp64Nano({f}) AND timestamp < fromUnixTimestamp64Nano({t}) GROUP BY start, severity FORMAT TSV"
                    )
                }
            };
            let settings = if wall { vec![("additional_table_filters", wall_filter(org, ws))] } else { Vec::new() };
            let text = adapter.sql_with(client, &sql, &settings).await?;
            Ok(text.lines().filter(|l| !l.is_empty()).count())
        }
    }
}

/// The engine-side wall's value for a caller of `ws` in `org`, shaped as the store writes it:
/// every table of ours (and its `_local` shard) listed, the logs held to the scope, the rest to
/// nothing.
fn wall_filter(org: &str, ws: &str) -> String {
    let mut entries = Vec::new();
    for table in schemas::Table::ALL {
        let f = if table == schemas::Table::Logs { format!("org_id = \\'{org}\\' AND workspace = \\'{ws}\\'") } else { "0".to_owned() };
        for name in [format!("hexabase.{}", table.name()), format!("hexabase.{}_local", table.name())] {
            entries.push(format!("'{name}': '{f}'"));
        }
    }
    format!("{{{}}}", entries.join(", "))
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    server: &Server,
    engine: &Engine,
    also: Option<&Engine>,
    token: &str,
    a: &Args,
    ws: &str,
    org: &str,
    end: i64,
) -> anyhow::Result<Vec<Measured>> {
    let new_client = || reqwest::Client::builder().timeout(Duration::from_secs(120)).build();
    let client = new_client()?;
    // Each baseline on a connection of its own, used once per run, as the service's store uses
    // its connection to the engine. The engine's stand-in serves each connection on its own
    // thread and charges a request that arrives on another connection than the last one
    // (0.15–0.3 ms here for the same request, which a ClickHouse server does not charge): with
    // one connection shared by the two baselines, the plain one skipped that charge in every
    // other run while the service always paid it.
    let (plain_client, walled_client) = (new_client()?, new_client()?);
    let (from, to) = (end - DAY_NS, end);
    let enc = |s: &str| serde_urlencoded::to_string([("v", s)]).unwrap_or_default()[2..].to_owned();
    let logql = format!("sum by (level) (count_over_time({{workspace=\"{ws}\"}}[5m]))");
    let lines = |v: &serde_json::Value| v["lines"].as_array().map_or(0, Vec::len);
    let questions = [
        Question { name: "rare word", api: format!("/api/v1/logs/search?workspace={ws}&from={from}&to={to}&limit=100&q={RARE}"), count_api: lines },
        Question {
            name: "phrase",
            api: format!("/api/v1/logs/search?workspace={ws}&from={from}&to={to}&limit=100&q={}", enc(&format!("\"{PHRASE}\""))),
            count_api: lines,
        },
        Question { name: "level filter", api: format!("/api/v1/logs/search?workspace={ws}&from={from}&to={to}&limit=100&level=error"), count_api: lines },
        Question {
            name: "histogram",
            api: format!("/api/v1/logs/histogram?workspace={ws}&from={from}&to={to}&step=5m"),
            count_api: |v| v["buckets"].as_array().map_or(0, |b| b.iter().map(|x| x["counts"].as_object().map_or(0, |c| c.len())).sum()),
        },
        Question {
            name: "LogQL count_over_time by level",
            api: format!("/loki/api/v1/query_range?start={from}&end={to}&step=300&query={}", enc(&logql)),
            count_api: |v| v["data"]["result"].as_array().map_or(0, |r| r.iter().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum()),
        },
    ];
    let mut out = Vec::new();
    for q in &questions {
        let (mut api, mut eng, mut direct, mut walled, mut server_ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::<f64>::new());
        let (mut rows_api, mut rows_eng) = (0, 0);
        let (mut diffs, mut walled_diffs) = (Vec::new(), Vec::new());
        for i in 0..a.runs + 3 {
            // The engine goes first in every other run, so neither side always follows the other.
            let engine_first = i % 2 == 1;
            let timed_engine = || async {
                let t = Instant::now();
                let rows = engine_call(engine, &plain_client, q, ws, org, from, to, false).await?;
                anyhow::Ok((rows, t.elapsed().as_secs_f64() * 1e3))
            };
            let mut eng_ms = 0.0;
            if engine_first {
                (rows_eng, eng_ms) = timed_engine().await?;
            }
            let t = Instant::now();
            let resp = client.get(server.url(&q.api)).bearer_auth(token).send().await?;
            let status = resp.status();
            // The clock stops at the answer's last byte, as it does for the baseline (whose
            // text is counted, not parsed); reading the JSON is the client's work.
            let bytes = resp.bytes().await?;
            let api_ms = t.elapsed().as_secs_f64() * 1e3;
            let body: serde_json::Value = serde_json::from_slice(&bytes)?;
            if !status.is_success() {
                bail!("{}: {status} {body}", q.name);
            }
            rows_api = (q.count_api)(&body);
            // The time the server itself reports (the dashboard's `stats.duration_ms`, Loki's
            // `execTime`): what is left of the API's time is HTTP between the two processes.
            let reported = body["stats"]["duration_ms"].as_f64().or_else(|| body["data"]["stats"]["summary"]["execTime"].as_f64().map(|s| s * 1e3));
            if let Some(ms) = reported.filter(|_| i >= 3) {
                server_ms.push(ms);
            }
            if !engine_first {
                (rows_eng, eng_ms) = timed_engine().await?;
            }
            let t = Instant::now();
            if let Some(e) = also {
                engine_call(e, &client, q, ws, org, from, to, false).await?;
            }
            let direct_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            if matches!(engine, Engine::ClickHouse { .. }) {
                let n = engine_call(engine, &walled_client, q, ws, org, from, to, true).await?;
                anyhow::ensure!(n == rows_eng, "{}: the walled baseline found {n} rows, the plain one {rows_eng}", q.name);
            }
            let walled_ms = t.elapsed().as_secs_f64() * 1e3;
            // The first three are warm-up (the question hot, as the target asks).
            if i >= 3 {
                diffs.push(api_ms - eng_ms);
                walled_diffs.push(api_ms - walled_ms);
                api.push(api_ms);
                eng.push(eng_ms);
                direct.push(direct_ms);
                walled.push(walled_ms);
            }
        }
        out.push(Measured {
            name: q.name,
            api: (quantile(&mut api, 0.5), quantile(&mut api, 0.95)),
            engine: (quantile(&mut eng, 0.5), quantile(&mut eng, 0.95)),
            rows: (rows_api, rows_eng),
            store_p50: also.map(|_| quantile(&mut direct, 0.5)),
            walled_p50: matches!(engine, Engine::ClickHouse { .. }).then(|| quantile(&mut walled, 0.5)),
            added_over_walled: matches!(engine, Engine::ClickHouse { .. }).then(|| quantile(&mut walled_diffs, 0.5)),
            server_p50: (!server_ms.is_empty()).then(|| quantile(&mut server_ms, 0.5)),
            added_spread: diffs
                .chunks(diffs.len().div_ceil(BATCHES).max(1))
                .map(|b| quantile(&mut b.to_vec(), 0.5))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| (lo.min(m), hi.max(m))),
            added: quantile(&mut diffs, 0.5),
        });
    }
    Ok(out)
}

fn report(backend: &str, a: &Args, load_secs: f64, results: &[Measured], baseline: &str) -> bool {
    println!("\n## {backend}: {} rows in {} workspaces over 24 h (loaded in {load_secs:.0} s), {} hot runs each\n", a.rows, a.workspaces, a.runs);
    println!("Baseline: {baseline}.\n");
    if results.iter().any(|m| m.added_over_walled.is_some()) {
        println!(
            "Target (the proxy adds at most 10 % or 2 ms): checked over the engine with its tenant wall, which every query meets \
             (\"added over the walled engine\"); \"added\" is over the bare engine, for comparison.\n"
        );
    }
    println!(
        "| question (one workspace, 24 h) | API p50 ms | API p95 ms | engine p50 ms | engine p95 ms | API ÷ engine (p50) | added ms (median of per-run differences) | added, {BATCHES} batches' medians | rows API / engine | server-reported p50 ms | store in-process p50 ms | engine with the wall's setting p50 ms | added over the walled engine ms (median of per-run differences) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let mut ok = true;
    for m in results {
        let added = m.added;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}–{:.2} | {} / {} | {} | {} | {} | {} |",
            m.name,
            m.api.0,
            m.api.1,
            m.engine.0,
            m.engine.1,
            m.api.0 / m.engine.0.max(1e-9),
            added,
            m.added_spread.0,
            m.added_spread.1,
            m.rows.0,
            m.rows.1,
            m.server_p50.map_or("–".to_owned(), |v| format!("{v:.2}")),
            m.store_p50.map_or("–".to_owned(), |v| format!("{v:.2}")),
            m.walled_p50.map_or("–".to_owned(), |v| format!("{v:.2}")),
            m.added_over_walled.map_or("–".to_owned(), |v| format!("{v:.2}"))
        );
        if m.rows.0 != m.rows.1 {
            println!("  MISMATCH: the API and the engine disagree on {}", m.name);
            ok = false;
        }
        // The target holds the service to the engine as the data plane deploys it: with the
        // tenant wall in storage that every query meets (on ClickHouse the table filter, which
        // costs the engine what a row policy with the same condition costs; see
        // engine_wall.py). A hand-written query against that engine pays the wall too. On the
        // embedded store the baseline already runs through its scoped table provider.
        let (over, engine_ms, against) = match (m.added_over_walled, m.walled_p50) {
            (Some(v), Some(w)) => (v, w, "the engine with its tenant wall"),
            _ => (added, m.engine.0, "the engine"),
        };
        if over > (0.10 * engine_ms).max(2.0) {
            println!("  over target: the proxy adds {over:.2} ms to {} over {against} (target ≤ max(10 %, 2 ms))", m.name);
            ok = false;
        }
    }
    if let Some(r) = results.iter().find(|m| m.name == "rare word") {
        println!("\nrare word p50 {:.2} ms (target < 300 ms): {}", r.api.0, if r.api.0 < 300.0 { "met" } else { "NOT met" });
        ok &= r.api.0 < 300.0;
    }
    ok
}

async fn run_backend(backend: &'static str, a: &Args, lines: &[String]) -> anyhow::Result<bool> {
    let end = schemas_now() / 60_000_000_000 * 60_000_000_000;
    let tmp = tempfile::Builder::new().prefix("query-bench-").tempdir()?;
    let target_ws = a.workspaces / 2 + 7;
    let (ws, org) = (ws_of(target_ws % a.workspaces), org_of(target_ws % a.workspaces));
    eprintln!("{backend}: loading {} rows", a.rows);
    let (server, engine, also, load_secs, baseline) = match backend {
        "embedded" => {
            let root = tmp.path().join("store");
            let store =
                Arc::new(EmbeddedStore::open(EmbeddedConfig { compact_min_files: 2, ..EmbeddedConfig::new(&root) }).map_err(|e| anyhow::anyhow!("{e}"))?);
            let secs = load(&store, a, end, lines).await?;
            eprintln!("  compacting");
            store.maintain().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let server = Server::start_in(&a.dataplane, None, tmp)?;
            let token = token(&server, &a.dataplane, &org, &ws)?;
            let scope = scope_for(&server, &token, &ws).await?;
            (
                server,
                Engine::Store { store: Arc::new(Arc::new(EmbeddedStore::open_for_reading(EmbeddedConfig::new(&root)))), scope },
                None,
                secs,
                "the same search through `EmbeddedStore` in this process (the same Parquet files and scan, without HTTP, token, authorisation and JSON)",
            )
        }
        _ => {
            let adapter = Adapter::start()?;
            let store = ClickHouseStore::new(ClickHouseConfig {
                url: adapter.url.clone(),
                user: "default".into(),
                password: String::new(),
                database: "hexabase".into(),
                cluster: None,
                retention: Default::default(),
                insert_timeout: Duration::from_secs(300),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let secs = load(&store, a, end, lines).await?;
            let client = reqwest::Client::new();
            eprintln!("  merging parts");
            let _ = adapter.sql(&client, "OPTIMIZE TABLE hexabase.logs FINAL").await;
            let server = Server::start_in(&a.dataplane, Some(&adapter.url), tmp)?;
            let scope = scope_for(&server, &token(&server, &a.dataplane, &org, &ws)?, &ws).await?;
            let direct = Engine::Store { store: Arc::new(store), scope };
            (
                server,
                Engine::ClickHouse { adapter },
                Some(direct),
                secs,
                "hand-written SQL for the same question, sent to the same ClickHouse engine over its HTTP interface",
            )
        }
    };
    let token = token(&server, &a.dataplane, &org, &ws)?;
    eprintln!("  measuring");
    let results = measure(&server, &engine, also.as_ref(), &token, a, &ws, &org, end).await?;
    Ok(report(backend, a, load_secs, &results, baseline))
}

/// The scope the server would give `token` for `ws` (the same issuer secret and policy).
async fn scope_for(server: &Server, token: &str, ws: &str) -> anyhow::Result<auth::TenantScope> {
    let settings = auth::AuthConfig::default().validate(&server.data_dir).map_err(anyhow::Error::msg)?;
    let id = auth::TokenVerifier::new(settings)?.verify(token, None).await?;
    let gate = auth::Gate::new(Arc::new(auth::StaticPolicy::members_read_all()), "platform-operator", Vec::new());
    Ok(gate.logs(&id, Some(&BTreeSet::from([ws.to_owned()])), None).await?)
}

fn token(server: &Server, binary: &Path, org: &str, workspace: &str) -> anyhow::Result<String> {
    procs::dev_token(server, binary, org, workspace)
}

fn schemas_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn main() -> ExitCode {
    ingest::keep_freed_memory();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let run = || -> anyhow::Result<bool> {
        let a = parse_args()?;
        if !Path::new(&a.dataplane).exists() {
            bail!("{} not found; build it with `cargo build --release -p dataplane` or pass --dataplane", a.dataplane.display());
        }
        // The load generator and the baselines run on the client core; the server on its own.
        procs::pin_process(CLIENT_CORE)?;
        let lines = loghub_lines()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut ok = true;
        for b in a.backends.clone() {
            ok &= rt.block_on(run_backend(b, &a, &lines))?;
        }
        Ok(ok)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("query-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
