//! Every query leaves an audit record (who, organisation, workspace, what, rows, outcome), and
//! the audit log is readable only within the caller's organisation by the roles allowed to.

use serde_json::Value;

use crate::ingest_api::post_logs;
use crate::query_api::{get, token};
use crate::support::fixtures::{Source, ndjson, vector_events};
use crate::support::{ClickHouse, Server, ServerOptions, TOKEN_ALL, eventually};

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).expect("encode")[2..].to_owned()
}

async fn audited(server: Server) {
    let events = vector_events(&Source::new("acme", "ws-a", "shop"), "a", 20);
    let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&events), None).await;
    assert_eq!(s, 200, "{body}");
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    eventually(60, "rows searchable", || {
        let alice = alice.clone();
        let server = &server;
        async move { get(server, "/api/v1/logs/search?since=1h&limit=100", Some(&alice), &[]).await.1["lines"].as_array().map_or(0, Vec::len) == 20 }
    })
    .await;

    let hostile = "' OR 1=1 --";
    let (s, _) = get(&server, &format!("/api/v1/logs/search?since=1h&limit=7&q={}", enc(hostile)), Some(&alice), &[]).await;
    assert_eq!(s, 200);
    let (s, _) = get(&server, &format!("/loki/api/v1/query_range?since=1h&query={}", enc(r#"{project="shop"} |= "a-1""#)), Some(&alice), &[]).await;
    assert_eq!(s, 200);
    let (s, _) = get(&server, "/api/v1/logs/search?since=1h&workspace=ws-b", Some(&alice), &[]).await;
    assert_eq!(s, 403);

    // Alice may not read the audit log; her organisation's admin may, another's sees none of it.
    let (s, body) = get(&server, "/api/v1/audit/search?since=1h", Some(&alice), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let admin = token(&server, "root", "acme", &[], &["org-admin"]);
    let records = |body: &Value| body["records"].as_array().cloned().unwrap_or_default();
    let path = "/api/v1/audit/search?since=1h&actor=alice&limit=100";
    eventually(60, "alice's queries audited", || {
        let admin = admin.clone();
        let server = &server;
        async move {
            let (s, body) = get(server, path, Some(&admin), &[]).await;
            s == 200 && body["records"].as_array().is_some_and(|r| r.iter().any(|r| r["outcome"] == "forbidden") && r.len() >= 4)
        }
    })
    .await;
    let found = records(&get(&server, path, Some(&admin), &[]).await.1);
    let by = |action: &str, outcome: &str| found.iter().find(|r| r["action"] == action && r["outcome"] == outcome).cloned();
    let search = by("logs.search", "ok")
        .filter(|r| r["query"].as_str().unwrap().contains(&enc(hostile)) || r["query"].as_str().unwrap().contains("OR"))
        .expect("the hostile search");
    assert_eq!(
        (search["actor"].as_str(), search["initiated_by"].as_str(), search["workspace"].as_str()),
        (Some("alice"), Some("user"), Some("ws-a")),
        "{search}"
    );
    assert!(search["attributes"]["duration_ms"].as_str().is_some() && search["attributes"]["rows"].as_str().is_some(), "{search}");
    let loki = by("loki.query_range", "ok").expect("the LogQL query");
    assert_eq!(loki["query"], r#"{project="shop"} |= "a-1""#);
    assert_eq!(loki["attributes"]["rows"].as_str().map(|r| r.parse::<u64>().unwrap() > 0), Some(true), "{loki}");
    assert!(by("logs.search", "forbidden").is_some(), "the refused search is audited too: {found:?}");
    // Filters and the other organisation.
    let (_, body) = get(&server, "/api/v1/audit/search?since=1h&action=loki.query_range", Some(&admin), &[]).await;
    assert!(records(&body).iter().all(|r| r["action"] == "loki.query_range") && !records(&body).is_empty(), "{body}");
    let other = token(&server, "gina", "globex", &[], &["org-admin"]);
    let (s, body) = get(&server, "/api/v1/audit/search?since=1h&limit=1000", Some(&other), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert!(records(&body).iter().all(|r| r["actor"] != "alice" && r["actor"] != "root"), "another organisation's audit leaked: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_audited_on_the_embedded_store() {
    audited(Server::start(ServerOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_audited_on_clickhouse() {
    let ch = ClickHouse::start();
    audited(Server::start(ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() })).await;
}
