//! The ingest endpoints as shippers use them, on the embedded store.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::fixtures::{Source, gzip, ndjson, vector_events, zstd};
use crate::support::{Server, ServerOptions, StoredLog, TOKEN_ACME, TOKEN_ALL, TOKEN_WS_A, client, embedded_store, eventually, stored_logs};

pub async fn post_logs(server: &Server, token: &str, body: Vec<u8>, encoding: Option<&str>) -> (u16, Value) {
    let mut req = client().post(server.url("/ingest/v1/logs")).bearer_auth(token).header("content-type", "application/x-ndjson").body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The id a fixture put at the start of the message.
pub fn id_of(log: &StoredLog) -> String {
    log.message.split(' ').next().unwrap_or_default().to_owned()
}

pub fn count_ids(logs: &[StoredLog]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in logs {
        *m.entry(id_of(l)).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_http_sink_events_are_stored_once_with_their_tenancy() {
    let server = Server::start(ServerOptions::default());
    let a = vector_events(&Source::new("acme", "ws-a", "shop"), "a", 500);
    let b = vector_events(&Source::new("globex", "ws-g", "web"), "b", 300);

    let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&a[..200]), None).await;
    assert_eq!((s, body["accepted"].as_u64()), (200, Some(200)), "{body}");
    let array = serde_json::to_vec(&Value::Array(a[200..].to_vec())).unwrap();
    let (s, body) = post_logs(&server, TOKEN_ALL, gzip(&array), Some("gzip")).await;
    assert_eq!((s, body["accepted"].as_u64()), (200, Some(300)), "{body}");
    let (s, body) = post_logs(&server, TOKEN_ALL, zstd(&ndjson(&b)), Some("zstd")).await;
    assert_eq!((s, body["accepted"].as_u64()), (200, Some(300)), "{body}");

    let store = embedded_store(&server.data_dir);
    eventually(30, "800 rows stored", || async { stored_logs(store.as_ref()).await.len() >= 800 }).await;
    let logs = stored_logs(store.as_ref()).await;
    let ids = count_ids(&logs);
    assert_eq!(ids.len(), 800);
    assert!(ids.values().all(|n| *n == 1), "every event stored exactly once");
    for l in &logs {
        let expected = if id_of(l).starts_with("a-") { ("acme", "ws-a", "shop") } else { ("globex", "ws-g", "web") };
        assert_eq!((l.org_id.as_str(), l.workspace.as_str(), l.project.as_str()), expected, "{l:?}");
        assert_eq!(l.application, "cart");
        assert!(l.pod.starts_with("cart-"));
        assert!(!l.attributes.contains_key("hexabase.ai/workspace") && !l.attributes.contains_key("hexabase.ai/organization"));
        assert_eq!(l.attributes.get("pod-template-hash").map(String::as_str), Some("7d9f8"), "pod labels are kept");
    }
    assert!(logs.iter().any(|l| l.severity == "info") && logs.iter().any(|l| l.severity != "info"), "levels detected from Loghub text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_scope_workspaces_and_unlabelled_events_are_quarantined() {
    let server = Server::start(ServerOptions::default());
    let events = vector_events(&Source::new("acme", "ws-a", "shop"), "x", 1);
    for (auth, expect) in [(None, 401), (Some("Bearer not-a-known-token-123456"), 401), (Some("Basic aG9zdDp3cm9uZw=="), 401)] {
        let mut req = client().post(server.url("/ingest/v1/logs")).body(ndjson(&events));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), expect);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    }

    // A credential bound to acme/ws-a: its own workspace passes, a label for another is
    // rejected and counted, no label means its workspace, and a forged organisation is ignored.
    let mut own = Source::new("evil-org", "ws-a", "shop");
    own.pod = "own".into();
    let mut other = Source::new("acme", "ws-b", "shop");
    other.pod = "other".into();
    let mut none = Source::new("acme", "x", "shop");
    none.workspace = None;
    none.pod = "none".into();
    let mut body = vector_events(&own, "own", 2);
    body.extend(vector_events(&other, "other", 3));
    body.extend(vector_events(&none, "none", 1));
    let (s, resp) = post_logs(&server, TOKEN_WS_A, ndjson(&body), None).await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(resp, json!({ "accepted": 3, "rejected": 3, "reasons": { "workspace_not_allowed": 3 } }));

    // Only events for other workspaces: nothing accepted, a 400 the shipper will not retry.
    let (s, resp) = post_logs(&server, TOKEN_WS_A, ndjson(&vector_events(&other, "other2", 2)), None).await;
    assert_eq!((s, resp["error"]["code"].as_str()), (400, Some("nothing_accepted")), "{resp}");

    // A multi-workspace credential with no workspace label, and a host shipper with no labels
    // at all: quarantined, never dropped.
    let (s, _) = post_logs(&server, TOKEN_ACME, ndjson(&vector_events(&none, "q1", 1)), None).await;
    assert_eq!(s, 200);
    let mut bare = none.clone();
    bare.org = None;
    bare.pod = "bare".into();
    let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&bare, "q2", 1)), None).await;
    assert_eq!(s, 200);

    let store = embedded_store(&server.data_dir);
    eventually(30, "5 rows stored", || async { stored_logs(store.as_ref()).await.len() >= 5 }).await;
    let logs = stored_logs(store.as_ref()).await;
    let by_id: BTreeMap<String, (String, String)> = logs.iter().map(|l| (id_of(l), (l.org_id.clone(), l.workspace.clone()))).collect();
    let t = |o: &str, w: &str| (o.to_owned(), w.to_owned());
    assert_eq!(by_id.get("own-0"), Some(&t("acme", "ws-a")));
    assert_eq!(by_id.get("none-0"), Some(&t("acme", "ws-a")));
    assert_eq!(by_id.get("q1-0"), Some(&t("acme", "_quarantine")));
    assert_eq!(by_id.get("q2-0"), Some(&t("_quarantine", "_quarantine")));
    assert!(!by_id.keys().any(|k| k.starts_with("other")));
    assert_eq!(logs.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_protocol_insert_works_as_vector_sends_it() {
    let server = Server::start(ServerOptions::default());
    let events = vector_events(&Source::new("acme", "ws-a", "shop"), "ch", 120);
    let mut body = ndjson(&events);
    body.push(b'\n');
    let ch = format!("http://{}", server.clickhouse_addr);
    // Vector's health check.
    let r = client().get(format!("{ch}/?query=SELECT%201")).basic_auth("host", Some(TOKEN_ALL)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "1\n".to_owned()));
    let url = format!(
        "{ch}/?input_format_import_nested_json=1&input_format_skip_unknown_fields=1&date_time_input_format=best_effort\
         &query=INSERT%20INTO%20%7Bdatabase%3AIdentifier%7D.%7Btable%3AIdentifier%7D%20FORMAT%20JSONEachRow&param_database=hexabase&param_table=logs"
    );
    let r = client()
        .post(&url)
        .basic_auth("host", Some(TOKEN_ALL))
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // The same interface on the main listener, and a wrong user name for the token.
    let r = client()
        .post(server.url("/clickhouse/?query=INSERT%20INTO%20hexabase.logs%20FORMAT%20JSONEachRow"))
        .basic_auth("host", Some(TOKEN_ALL))
        .body(ndjson(&events[..1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client().post(&url).basic_auth("acme", Some(TOKEN_ALL)).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .post(format!("{ch}/?query=INSERT%20INTO%20hexabase.audit_logs%20FORMAT%20JSONEachRow"))
        .basic_auth("host", Some(TOKEN_ALL))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let store = embedded_store(&server.data_dir);
    eventually(30, "121 rows stored", || async { stored_logs(store.as_ref()).await.len() >= 121 }).await;
    let logs = stored_logs(store.as_ref()).await;
    assert_eq!(logs.len(), 121);
    assert!(logs.iter().all(|l| l.workspace == "ws-a" && l.org_id == "acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let server = Server::start(ServerOptions::default());
    let r = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&Source::new("acme", "ws-a", "shop"), "m", 10)), None).await;
    post_logs(&server, TOKEN_ALL, b"{not json".to_vec(), None).await;
    let text = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"dataplane_ingest_events_total{endpoint="vector_http",outcome="accepted"} 10"#,
        r#"dataplane_ingest_rejected_events_total{reason="malformed_event"} 1"#,
        r#"dataplane_ingest_requests_total{endpoint="vector_http",status="2xx"} 1"#,
        "dataplane_ingest_buffer_bytes",
        "dataplane_ingest_ack_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let r = client().get(server.url("/no/such/path")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_found");
}
