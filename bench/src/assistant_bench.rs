//! `assistant-bench`: what the assistant adds to a turn and to a tool call, excluding model
//! time, against a model server that answers at once (in this process, the OpenAI streaming
//! format), beside the same model request sent straight to that server and the same log search
//! sent straight to the query API, in the same run; and what the jail adds to the program
//! `manifest.validate` runs, beside the same program spawned plainly. See `bench/README.md`.
//!
//! ```sh
//! cargo build --release -p dataplane -p bench
//! assistant-bench [--runs 200] [--lines 5000] [--dataplane PATH]
//! ```

#[allow(dead_code)]
mod procs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use procs::{CLIENT_CORE, Server, TOKEN, quantile};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    runs: usize,
    lines: usize,
    dataplane: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args { runs: 200, lines: 5000, dataplane: exe.with_file_name("dataplane") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--runs" => a.runs = v()?.parse()?,
            "--lines" => a.lines = v()?.parse()?,
            "--dataplane" => a.dataplane = PathBuf::from(v()?),
            other => bail!("unknown argument {other}; usage: assistant-bench [--runs N] [--lines N] [--dataplane PATH]"),
        }
    }
    Ok(a)
}

/// The instant model: a tool call to `logs.search` when the question asks for one and no tool
/// result is in the conversation yet, else a short text; the last request body is kept.
#[derive(Clone, Default)]
struct Model {
    last: Arc<Mutex<Value>>,
}

const SEARCH_ARGS: &str = r#"{\"q\":\"ERROR\",\"since\":\"1h\",\"limit\":20}"#;

fn sse(body: &Value) -> String {
    let wants_tool = body["messages"].to_string().contains("[tool]") && !body["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({ "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "instant", "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        )
    };
    let mut out = chunk(json!({ "role": "assistant", "content": "" }), Value::Null);
    if wants_tool {
        out.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"instant\",\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{{\"name\":\"logs.search\",\"arguments\":\"{SEARCH_ARGS}\"}}}}]}},\"finish_reason\":\"tool_calls\"}}]}}\n\n"
        ));
    } else {
        out.push_str(&chunk(json!({ "content": "The payment service refuses connections." }), Value::Null));
        out.push_str(&chunk(json!({}), json!("stop")));
    }
    out.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"instant\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}\n\ndata: [DONE]\n\n");
    out
}

async fn serve_model(model: Model) -> anyhow::Result<String> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|axum::extract::State(m): axum::extract::State<Model>, axum::Json(body): axum::Json<Value>| async move {
            let text = sse(&body);
            if let Ok(mut l) = m.last.lock() {
                *l = body;
            }
            ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], text)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app.with_state(model)).await });
    Ok(format!("http://{addr}"))
}

/// Milliseconds to the first `text` event and to the end of the turn.
async fn turn(http: &reqwest::Client, url: &str, token: &str, question: &str) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let mut r = http.post(url).bearer_auth(token).json(&json!({ "message": question, "workspace": "ws-a" })).send().await?;
    if !r.status().is_success() {
        bail!("chat: {}", r.status());
    }
    let (mut seen, mut first) = (String::new(), None);
    while let Some(c) = r.chunk().await? {
        seen.push_str(&String::from_utf8_lossy(&c));
        if first.is_none() && seen.contains("event: text") {
            first = Some(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    if !seen.contains("event: answer") {
        bail!("no answer: {seen}");
    }
    Ok((first.unwrap_or(f64::NAN), started.elapsed().as_secs_f64() * 1e3))
}

/// Milliseconds to the first content chunk of the model, asked directly.
async fn model_direct(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut r = http.post(format!("{url}/v1/chat/completions")).json(body).send().await?;
    let mut seen = String::new();
    while let Some(c) = r.chunk().await? {
        seen.push_str(&String::from_utf8_lossy(&c));
        if seen.contains("\"content\":\"The") || seen.contains("tool_calls") {
            break;
        }
    }
    let t = started.elapsed().as_secs_f64() * 1e3;
    while r.chunk().await?.is_some() {}
    Ok(t)
}

fn events(lines: usize) -> anyhow::Result<Vec<u8>> {
    let dir = std::env::var_os("LOGHUB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub"));
    let text = std::fs::read_to_string(dir.join("HDFS/HDFS_2k.log")).with_context(|| format!("{} (set LOGHUB_DIR)", dir.display()))?;
    let source: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for i in 0..lines {
        let ts = now - chrono::Duration::milliseconds((lines - i) as i64 * 100);
        let e = json!({
            "message": source[i % source.len()],
            "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "kubernetes": { "pod_namespace": "shop", "pod_name": "cart-7d9f8", "container_name": "app", "pod_node_name": "node-1",
                "pod_labels": { "hexabase.ai/organization": "acme", "hexabase.ai/workspace": "ws-a", "app": "cart" } },
            "stream": "stdout",
        });
        out.extend(serde_json::to_vec(&e)?);
        out.push(b'\n');
    }
    Ok(out)
}

fn p50(v: &mut [f64]) -> f64 {
    quantile(v, 0.5)
}

/// A manifest of two documents, as `manifest.validate` gets it.
const MANIFEST: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, labels: {app: cart}}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: cart}}\n  template:\n    metadata: {labels: {app: cart}}\n    spec:\n      containers: [{name: cart, image: 'ghcr.io/acme/cart:1.4.2', resources: {requests: {cpu: 100m}}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: cart}\nspec: {selector: {app: cart}, ports: [{port: 80}]}\n";

/// What the jail adds to a program `manifest.validate` runs: the same `dataplane manifest
/// validate` in the jail and spawned plainly, same input, same run.
async fn jail_cost(args: &Args) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let jail = sandbox::jail::Jail::new(sandbox::jail::JailConfig::default())?;
    let argv = ["manifest", "validate", "--json"];
    let plain = || async {
        let t = Instant::now();
        let mut child = tokio::process::Command::new(&args.dataplane)
            .args(argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(MANIFEST.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        anyhow::ensure!(out.status.success(), "plain run failed: {}", String::from_utf8_lossy(&out.stdout));
        anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let jailed = || async {
        let t = Instant::now();
        let run = jail.run(&args.dataplane, &argv, MANIFEST.as_bytes(), &[]).await?;
        anyhow::ensure!(run.success(), "jailed run failed: {run:?}");
        anyhow::Ok((t.elapsed().as_secs_f64() * 1e3, run.landlock))
    };
    for _ in 0..5 {
        plain().await?;
        jailed().await?;
    }
    let runs = args.runs.min(100);
    let (mut p, mut j, mut landlock) = (Vec::new(), Vec::new(), "");
    for _ in 0..runs {
        p.push(plain().await?);
        let (ms, l) = jailed().await?;
        j.push(ms);
        landlock = l;
    }
    let (p, j) = (p50(&mut p), p50(&mut j));
    println!(
        "  manifest check ({runs} runs): in the jail {j:.2} (landlock {landlock}), the same command spawned plainly {p:.2}: +{:.2} ms ({:.2}×)",
        j - p,
        j / p
    );
    Ok(())
}

fn main() -> ExitCode {
    ingest::keep_freed_memory();
    let run = || -> anyhow::Result<()> {
        let args = parse_args()?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        procs::pin_process(CLIENT_CORE)?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        rt.block_on(async {
            let model = Model::default();
            let model_url = serve_model(model.clone()).await?;
            let extra = format!("[assistant]\n[assistant.provider]\nkind = \"openai\"\nurl = \"{model_url}/v1\"\nmodel = \"instant\"\n");
            let server = Server::start_configured(&args.dataplane, None, tempfile::Builder::new().prefix("assistant-bench-").tempdir()?, &extra)?;
            let http = reqwest::Client::new();
            let r = http.post(server.url("/ingest/v1/logs")).bearer_auth(TOKEN).body(events(args.lines)?).send().await?;
            if !r.status().is_success() {
                bail!("ingest: {}", r.status());
            }
            let tok = procs::dev_token(&server, &args.dataplane, "acme", "ws-a")?;
            let search = server.url("/api/v1/logs/search?workspace=ws-a&q=ERROR&since=1h&limit=20");
            for _ in 0..200 {
                let v: Value = http.get(&search).bearer_auth(&tok).send().await?.json().await?;
                if v["lines"].as_array().is_some_and(|l| !l.is_empty()) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let chat = server.url("/api/v1/ai/chat");
            // Warm-up: connections, caches, the token.
            for _ in 0..20 {
                turn(&http, &chat, &tok, "hello").await?;
                turn(&http, &chat, &tok, "[tool] why errors?").await?;
            }
            let (mut ttft, mut text_turn, mut tool_turn, mut model_ttft, mut query) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.runs {
                let (first, total) = turn(&http, &chat, &tok, "hello").await?;
                ttft.push(first);
                text_turn.push(total);
                let body = model.last.lock().map(|b| b.clone()).unwrap_or(Value::Null);
                model_ttft.push(model_direct(&http, &model_url, &body).await?);
                let (_, total) = turn(&http, &chat, &tok, "[tool] why errors?").await?;
                tool_turn.push(total);
                let t = Instant::now();
                let r = http.get(&search).bearer_auth(&tok).send().await?;
                let _ = r.bytes().await?;
                query.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (ttft, text_turn, tool_turn, model_ttft, query) =
                (p50(&mut ttft), p50(&mut text_turn), p50(&mut tool_turn), p50(&mut model_ttft), p50(&mut query));
            println!("assistant-bench: {} runs, {} log lines, server pinned to core 0 (p50, ms)", args.runs, args.lines);
            println!(
                "  time to first token: through the assistant {ttft:.2}, the model asked directly {model_ttft:.2}: +{:.2} ms ({:.2}×)",
                ttft - model_ttft,
                ttft / model_ttft
            );
            println!("  a turn without tools {text_turn:.2}; with one logs.search call {tool_turn:.2}");
            println!("  the same search through the query API directly {query:.2}");
            let per_call = tool_turn - text_turn - model_ttft - query;
            println!("  overhead per tool call (tool turn − text turn − one more model call − the direct search): {per_call:.2} ms");
            println!("  tool latency inside the turn vs the direct query API: {:.2}×", (tool_turn - text_turn - model_ttft) / query);
            jail_cost(&args).await
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assistant-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
