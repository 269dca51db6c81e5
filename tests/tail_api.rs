//! Live tail over HTTP: the dashboard's server-sent events and Loki's WebSocket, each passing
//! on new rows of the caller's scope once, and nothing of another tenant's.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::ingest_api::post_logs;
use crate::query_api::{get, token};
use crate::support::fixtures::{Source, ndjson, now_ns, vector_event, vector_events};
use crate::support::{Server, ServerOptions, TOKEN_ALL, client, eventually};

fn line(src: &Source, id: &str) -> Value {
    let mut e = vector_event(src, id, "live line", now_ns());
    e["level"] = json!("info");
    e
}

/// Server-sent events as (event, data) until `until` holds or the deadline passes.
async fn read_sse(resp: &mut reqwest::Response, secs: u64, mut until: impl FnMut(&[(String, Value)]) -> bool) -> Vec<(String, Value)> {
    let (mut buf, mut events) = (String::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !until(&events) {
        let chunk = match tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(_) => break,
            Err(_) => continue,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut data) = (String::new(), String::new());
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !event.is_empty() {
                events.push((event, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    events
}

fn ids_of(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .flat_map(|(_, d)| d["lines"].as_array().cloned().unwrap_or_default())
        .map(|l| l["message"].as_str().unwrap().split(' ').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_passes_on_new_rows_of_the_scope_once() {
    let server = Server::start(ServerOptions::default());
    let shop = Source::new("acme", "ws-a", "shop");
    let (web, other_org) = (Source::new("acme", "ws-b", "web"), Source::new("globex", "ws-a", "shop"));
    let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&shop, "old", 5)), None).await;
    assert_eq!(s, 200);
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    eventually(60, "old rows stored", || {
        let (server, alice) = (&server, alice.clone());
        async move { get(server, "/api/v1/logs/search?since=1h", Some(&alice), &[]).await.1["lines"].as_array().map_or(0, Vec::len) == 5 }
    })
    .await;

    // Server-sent events: the newest `limit` lines first, then new ones as they come.
    let mut sse = client().get(server.url("/api/v1/logs/tail?limit=3&project=shop")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    assert!(sse.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let first = read_sse(&mut sse, 10, |e| !e.is_empty()).await;
    assert_eq!(first[0].0, "lines");
    assert_eq!(ids_of(&first), vec!["old-2", "old-3", "old-4"], "the newest three, oldest first");

    let batch = vec![line(&shop, "new-1"), line(&web, "web-1"), line(&other_org, "globex-1"), line(&shop, "new-2")];
    let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&batch), None).await;
    assert_eq!(s, 200);
    let later = read_sse(&mut sse, 20, |e| ids_of(e).len() >= 2).await;
    let mut got = ids_of(&later);
    // Nothing else arrives: no repeat, no other tenant.
    got.extend(ids_of(&read_sse(&mut sse, 3, |_| false).await));
    got.sort();
    assert_eq!(got, vec!["new-1", "new-2"], "{later:?}");

    // A WebSocket tail as Grafana's live view opens it.
    let url = server.url("/loki/api/v1/tail").replace("http://", "ws://")
        + "?limit=2&query="
        + &serde_urlencoded::to_string([("q", r#"{project="shop"} |= "live""#)]).unwrap()[2..];
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {alice}").parse().unwrap());
    req.headers_mut().insert("x-scope-orgid", "globex".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("websocket");

    let batch = vec![line(&shop, "new-3"), line(&web, "web-2"), line(&other_org, "globex-2"), line(&shop, "new-4")];
    let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&batch), None).await;
    assert_eq!(s, 200);
    let mut seen: Vec<(Value, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await else { continue };
        let m: Value = serde_json::from_str(&t).unwrap();
        for s in m["streams"].as_array().unwrap() {
            for v in s["values"].as_array().unwrap() {
                seen.push((s["stream"].clone(), v[1].as_str().unwrap().to_owned()));
            }
        }
    }
    let lines: Vec<&str> = seen.iter().map(|(_, l)| l.split(' ').next().unwrap()).collect();
    // The newest two matching lines first (`limit=2`), then what came after, once each.
    assert_eq!(lines, vec!["new-1", "new-2", "new-3", "new-4"], "{seen:?}");
    assert!(seen.iter().all(|(s, _)| s["workspace"] == "ws-a" && s["project"] == "shop"), "{seen:?}");
    ws.close(None).await.ok();

    // No token, no tail.
    let err = tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await.expect_err("refused");
    assert!(err.to_string().contains("401"), "{err}");
    let (s, _) = get(&server, "/api/v1/logs/tail", None, &[]).await;
    assert_eq!(s, 401);
}
