//! `control-bench`: the control API's CRUD latency at 50 concurrent clients on SQLite and on
//! PostgreSQL, beside the same statements issued directly through sqlx (the control crate's
//! repository, no HTTP, no token, no JSON) in the same run; and the task worker's throughput
//! beside the same statements run back to back. See `bench/README.md`.
//!
//! ```sh
//! cargo build --release -p dataplane -p bench
//! control-bench [--clients 50] [--rounds 20] [--tasks 2000] [--db sqlite|postgres|both]
//! ```

#[allow(dead_code)]
mod procs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use control::db::Db;
use control::repo::{Actor, Repo};
use procs::{CLIENT_CORE, Postgres, Server, quantile};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OPS: [&str; 4] = ["create", "read", "list", "delete"];

struct Args {
    clients: usize,
    rounds: usize,
    tasks: usize,
    sqlite: bool,
    postgres: bool,
    dataplane: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args { clients: 50, rounds: 20, tasks: 2000, sqlite: true, postgres: true, dataplane: exe.with_file_name("dataplane") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--clients" => a.clients = v()?.parse()?,
            "--rounds" => a.rounds = v()?.parse()?,
            "--tasks" => a.tasks = v()?.parse()?,
            "--dataplane" => a.dataplane = PathBuf::from(v()?),
            "--db" => match v()?.as_str() {
                "sqlite" => a.postgres = false,
                "postgres" => a.sqlite = false,
                "both" => {}
                other => bail!("--db {other}: sqlite, postgres or both"),
            },
            other => {
                bail!("unknown argument {other}; usage: control-bench [--clients N] [--rounds N] [--tasks N] [--db sqlite|postgres|both] [--dataplane PATH]")
            }
        }
    }
    Ok(a)
}

/// Latencies in milliseconds, per operation.
type Samples = [Vec<f64>; 4];

fn admin_token(server: &Server, binary: &std::path::Path) -> anyhow::Result<String> {
    procs::dev_token_with(server, binary, &["--org", "acme", "--role", "org-admin"])
}

async fn expect(resp: reqwest::Response, status: u16) -> anyhow::Result<Value> {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if got != status {
        bail!("expected {status}, got {got}: {body}");
    }
    Ok(body)
}

/// Each client: create, read, list and delete one project per round, through the API.
async fn api_round_trips(base: &str, token: &str, prefix: &str, clients: usize, rounds: usize) -> anyhow::Result<(Samples, f64)> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (http, base, token, prefix) = (http.clone(), base.to_owned(), token.to_owned(), prefix.to_owned());
        handles.push(tokio::spawn(async move {
            let mut s: Samples = Default::default();
            for r in 0..rounds {
                let name = format!("{prefix}-{c}-{r}");
                let t = Instant::now();
                expect(http.post(format!("{base}/projects")).bearer_auth(&token).json(&json!({ "name": name })).send().await?, 201).await?;
                s[0].push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                expect(http.get(format!("{base}/projects/{name}")).bearer_auth(&token).send().await?, 200).await?;
                s[1].push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                expect(http.get(format!("{base}/projects?limit=20")).bearer_auth(&token).send().await?, 200).await?;
                s[2].push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                // A project's create task may still hold it (pending): deleting then waits its turn.
                expect(http.delete(format!("{base}/projects/{name}")).bearer_auth(&token).send().await?, 202).await?;
                s[3].push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(s)
        }));
    }
    merge(handles, started).await
}

/// The same four operations through the repository: the statements, without the API.
async fn direct_round_trips(repo: &Repo, prefix: &str, clients: usize, rounds: usize) -> anyhow::Result<(Samples, f64)> {
    let ws = repo.workspace("acme", "bench").await?;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (repo, ws, prefix) = (repo.clone(), ws.clone(), prefix.to_owned());
        handles.push(tokio::spawn(async move {
            let actor = Actor { org_id: "acme", user: "bench", initiated_by: "user" };
            let render = |p: &control::model::Project, t: &control::model::Task| (201, json!({ "data": p, "meta": { "task": t.id } }).to_string());
            let mut s: Samples = Default::default();
            for r in 0..rounds {
                let name = format!("{prefix}-{c}-{r}");
                let t = Instant::now();
                repo.create_project(&actor, &ws, &name, None, &render).await?;
                s[0].push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                repo.project(&ws, &name).await?;
                s[1].push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                repo.projects(&ws, "", 20).await?;
                s[2].push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                repo.delete_project(&actor, &ws, &name).await?;
                s[3].push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(s)
        }));
    }
    merge(handles, started).await
}

async fn merge(handles: Vec<tokio::task::JoinHandle<anyhow::Result<Samples>>>, started: Instant) -> anyhow::Result<(Samples, f64)> {
    let mut all: Samples = Default::default();
    for h in handles {
        let s = h.await??;
        for (a, b) in all.iter_mut().zip(s) {
            a.extend(b);
        }
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// Tasks/s: `n` queued project tasks drained by the worker (4 at once, nothing applied), and
/// `n` more run by one caller issuing the same statements (claim, three steps, status, finish)
/// back to back.
async fn worker_throughput(url: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let repo = Repo::new(Db::connect(url, 16).await?, 3);
    let ws = repo.workspace("acme", "bench").await?;
    let actor = Actor { org_id: "acme", user: "bench", initiated_by: "user" };
    let render = |_: &control::model::Project, _: &control::model::Task| (201, String::new());
    for i in 0..n {
        repo.create_project(&actor, &ws, &format!("worker-{i}"), None, &render).await?;
    }
    let worker = control::worker::Worker {
        repo: repo.clone(),
        provisioner: Arc::new(control::provider::PlanOnly),
        oidc: control::manifests::Oidc { issuer: "https://id.example".into(), client_id: "hexabase".into() },
        config: control::worker::WorkerConfig { poll_ms: 10, ..Default::default() },
        wake: Arc::new(tokio::sync::Notify::new()),
        master_key: control::backups::MasterKey::from_hex(&"00".repeat(32)).map_err(anyhow::Error::msg)?,
        backup_image: String::new(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let handle = tokio::spawn(worker.run(stop_rx));
    while repo.unfinished_tasks().await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let worker_rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = handle.await;

    for i in 0..n {
        repo.create_project(&actor, &ws, &format!("sequential-{i}"), None, &render).await?;
    }
    let started = Instant::now();
    let mut done = 0;
    while let Some(mut t) = repo.claim(60_000).await? {
        for step in ["apply workspace/Namespace", "apply workspace/ResourceQuota", "apply workspace/LimitRange"] {
            repo.step_done(&mut t, step, 60_000).await?;
        }
        repo.set_project_status(&t.target_id, control::Status::Running, "").await?;
        repo.finish_task(&t.id, true, "").await?;
        done += 1;
    }
    let sequential_rate = done as f64 / started.elapsed().as_secs_f64();
    Ok((worker_rate, sequential_rate))
}

fn report(label: &str, api: &mut Samples, direct: &mut Samples, api_secs: f64, direct_secs: f64) {
    println!("  {label}: op       API p50 / p95 ms    direct p50 / p95 ms    ratio p50 / p95");
    for (i, op) in OPS.iter().enumerate() {
        let (a50, a95) = (quantile(&mut api[i], 0.5), quantile(&mut api[i], 0.95));
        let (d50, d95) = (quantile(&mut direct[i], 0.5), quantile(&mut direct[i], 0.95));
        println!("  {label}: {op:<8} {a50:>8.2} / {a95:>7.2}     {d50:>8.2} / {d95:>7.2}        {:>5.2} / {:>5.2}", a50 / d50, a95 / d95);
    }
    let ops = api[0].len() * 4;
    println!(
        "  {label}: {ops} operations: API {:.0} ops/s, direct {:.0} ops/s ({:.2}×)",
        ops as f64 / api_secs,
        ops as f64 / direct_secs,
        direct_secs / api_secs
    );
}

async fn run_db(args: &Args, name: &str, database_url: Option<String>) -> anyhow::Result<()> {
    println!("{name}:");
    let extra = format!("[control]\ndatabase_url = \"{}\"\nmax_connections = 16\n[control.worker]\npoll_ms = 20\n", database_url.clone().unwrap_or_default());
    let tmp = tempfile::Builder::new().prefix("control-bench-").tempdir()?;
    let mut server = Server::start_configured(&args.dataplane, None, tmp, &extra)?;
    let url = database_url.unwrap_or_else(|| format!("sqlite://{}", server.data_dir.join("control.db").display()));
    let token = admin_token(&server, &args.dataplane)?;
    let http = reqwest::Client::new();
    expect(http.post(server.url("/api/v1/workspaces")).bearer_auth(&token).json(&json!({ "name": "bench" })).send().await?, 201).await?;
    let base = server.url("/api/v1/workspaces/bench");
    // Warm-up: connections, caches, the first JWT verification.
    api_round_trips(&base, &token, "warm-api", 4, 5).await?;
    let (mut api, api_secs) = api_round_trips(&base, &token, "api", args.clients, args.rounds).await?;
    let repo = Repo::new(Db::connect(&url, 16).await?, 3);
    direct_round_trips(&repo, "warm-direct", 4, 5).await?;
    let (mut direct, direct_secs) = direct_round_trips(&repo, "direct", args.clients, args.rounds).await?;
    report(name, &mut api, &mut direct, api_secs, direct_secs);
    // The server's worker would compete for the queue: let it finish, then stop it.
    while repo.unfinished_tasks().await? > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.proc.terminate(Duration::from_secs(30))?;
    let (worker, sequential) = worker_throughput(&url, args.tasks).await?;
    println!("  {name}: worker {worker:.0} tasks/s vs the same statements back to back {sequential:.0} tasks/s ({:.2}×)", worker / sequential);
    Ok(())
}

fn main() -> ExitCode {
    ingest::keep_freed_memory();
    let run = || -> anyhow::Result<()> {
        let args = parse_args()?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        procs::pin_process(CLIENT_CORE)?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async {
            println!("control-bench: {} clients × {} rounds of create/read/list/delete; {} tasks", args.clients, args.rounds, args.tasks);
            if args.sqlite {
                run_db(&args, "sqlite", None).await?;
            }
            if args.postgres {
                let pg = Postgres::start()?;
                run_db(&args, "postgres", Some(pg.url.clone())).await?;
                drop(pg);
            }
            anyhow::Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
