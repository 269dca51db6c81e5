//! SubjectAccessReview authorisation through a fake Kubernetes API server that speaks the real
//! wire protocol: per-namespace decisions, cluster-wide grants, failures that deny, caching and
//! revocation.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ingest_api::post_logs;
use crate::query_api::{get, ids, token, token_with_groups};
use crate::support::fixtures::{Source, ndjson, vector_events};
use crate::support::kube::FakeKube;
use crate::support::{ClickHouse, Server, ServerOptions, TOKEN_ALL, eventually};

fn prefixes(body: &Value) -> BTreeSet<String> {
    ids(body).iter().map(|i| i.split('-').next().unwrap_or("").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_logs_are_authorised_per_namespace_by_the_workspaces_api_server() {
    authorised_per_namespace(None).await;
}

/// On ClickHouse too: a grant of some namespaces only is its own shape of SQL there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_logs_are_authorised_per_namespace_on_clickhouse() {
    let ch = ClickHouse::start();
    authorised_per_namespace(Some(&ch)).await;
}

async fn authorised_per_namespace(ch: Option<&ClickHouse>) {
    let kube = FakeKube::start(&["shop", "billing"], json!([{ "user": "alice", "namespaces": ["shop"] }, { "groups": ["sre"], "namespaces": ["*"] }]));
    let server = Server::start(ServerOptions { extra_toml: kube.auth_toml("ws-a", 3), clickhouse_url: ch.map(ClickHouse::url), ..Default::default() });
    for (src, p, n) in
        [(Source::new("acme", "ws-a", "shop"), "s", 20), (Source::new("acme", "ws-a", "billing"), "b", 10), (Source::new("acme", "ws-b", "web"), "w", 5)]
    {
        let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, p, n)), None).await;
        assert_eq!(s, 200, "{body}");
    }
    let sre = token_with_groups(&server, "sam", "acme", &["ws-a", "ws-b"], &["sre"]);
    eventually(30, "ws-a's 30 rows searchable", || {
        let sre = sre.clone();
        let server = &server;
        async move { ids(&get(server, "/api/v1/logs/search?since=1h&limit=100", Some(&sre), &[]).await.1).len() == 30 }
    })
    .await;
    // The same user without the group: the API server allows nothing.
    let no_group = token(&server, "sam", "acme", &["ws-a", "ws-b"], &[]);
    let (s, body) = get(&server, "/api/v1/logs/search?since=1h&limit=100", Some(&no_group), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert!(ids(&body).is_empty(), "{body}");
    // ws-b has no API server configured: never readable, even for the group that may read all
    // of ws-a.
    let (s, body) = get(&server, "/api/v1/logs/search?since=1h&workspace=ws-b", Some(&sre), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    // Alice: namespace shop only, asked as herself.
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let (s, body) = get(&server, "/api/v1/logs/search?since=1h&limit=100", Some(&alice), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((ids(&body).len(), prefixes(&body)), (20, BTreeSet::from(["s".into()])));
    let review = kube.stats().await["last_review"].clone();
    assert_eq!(review["user"], "alice", "{review}");
    assert_eq!(review["resourceAttributes"]["subresource"], "log", "{review}");
    let (s, _) = get(&server, "/api/v1/logs/search?since=1h&project=billing", Some(&alice), &[]).await;
    assert_eq!(s, 403);
    // Impersonation headers from the client change nothing.
    let (_, body) = get(&server, "/api/v1/logs/search?since=1h&limit=100", Some(&alice), &[("impersonate-user", "sam"), ("impersonate-group", "sre")]).await;
    assert_eq!(prefixes(&body), BTreeSet::from(["s".into()]));
    assert_eq!(kube.stats().await["last_review"]["user"], "alice");

    // Cached: the same question again asks the API server nothing.
    let before = kube.stats().await["reviews"].as_u64().unwrap();
    for _ in 0..5 {
        get(&server, "/api/v1/logs/search?since=1h&project=shop", Some(&alice), &[]).await;
    }
    assert_eq!(kube.stats().await["reviews"].as_u64().unwrap(), before, "decisions are cached");
    // Without named projects, the workspace's namespaces are listed once, not per request.
    get(&server, "/api/v1/logs/search?since=1h", Some(&alice), &[]).await;
    let lists = kube.stats().await["lists"].as_u64().unwrap();
    assert!(lists >= 1);
    for _ in 0..3 {
        get(&server, "/api/v1/logs/search?since=1h", Some(&alice), &[]).await;
    }
    assert_eq!(kube.stats().await["lists"].as_u64().unwrap(), lists, "namespace lists are cached");

    // Revoked: within the allow TTL (3 s here: long enough that the cached requests above all
    // fall inside it on a loaded machine) the next query is denied.
    kube.set_rules(json!([{ "groups": ["sre"], "namespaces": ["*"] }])).await;
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (s, body) = get(&server, "/api/v1/logs/search?since=1h&project=shop", Some(&alice), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    // The API server failing or hanging denies (fail closed), and is not cached as a denial.
    kube.set_rules(json!([{ "user": "alice", "namespaces": ["shop"] }])).await;
    tokio::time::sleep(Duration::from_millis(3300)).await;
    for mode in ["error", "hang"] {
        kube.set_mode(mode).await;
        let (s, body) = get(&server, "/api/v1/logs/search?since=1h&project=shop", Some(&alice), &[]).await;
        assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")), "{mode}: {body}");
        assert!(ids(&body).is_empty());
    }
    kube.set_mode("ok").await;
    let (s, body) = get(&server, "/api/v1/logs/search?since=1h&project=shop", Some(&alice), &[]).await;
    assert_eq!((s, ids(&body).len()), (200, 20), "{body}");
}
