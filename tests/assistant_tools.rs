//! The assistant's tools over HTTP: Kubernetes reads as the user (impersonated), metrics as
//! the user, manifests checked in the jail and dry-run as the user, and write actions that
//! wait for the user's approval.

use std::time::Duration;

use serde_json::{Value, json};

use crate::assistant_api::{agent_audit, answer, assistant_toml, chat, start};
use crate::query_api::token;
use crate::support::fixtures::now_ns;
use crate::support::llm::ScriptedModel;
use crate::support::{Server, ServerOptions, TOKEN_ALL, client, eventually};

/// A fake API server for workspace ws-a on which alice may use project `shop`, a scripted model,
/// and a server pointed at both with `assistant` settings.
fn with_kube(assistant: &str) -> (crate::support::kube::FakeKube, ScriptedModel, Server) {
    let kube = crate::support::kube::FakeKube::start(&[], json!([{ "user": "alice", "groups": [], "namespaces": ["shop"] }]));
    let model = ScriptedModel::start();
    let extra = format!("[[auth.kubernetes.workspaces]]\nworkspace = \"ws-a\"\nurl = \"{}\"\ntoken_file = \"{}\"\n", kube.url, kube.token_file.display());
    let server = Server::start(ServerOptions { extra_toml: format!("{}{extra}", assistant_toml(&model, "openai", true, assistant)), ..Default::default() });
    (kube, model, server)
}

/// The Kubernetes tools read the workspace's API server as the user (impersonated), so its
/// RBAC decides; Secrets are never read; env values and secrets in logs are masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_tools_act_as_the_user() {
    let (kube, model, server) = with_kube("tools_offered = 8");
    let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "cart-1", "namespace": "shop" },
        "spec": { "containers": [{ "name": "app", "image": "cart:1.4", "env": [{ "name": "DB_PASSWORD", "value": "hunter2" }] }] },
        "status": { "phase": "Running", "containerStatuses": [{ "name": "app", "restartCount": 7, "state": { "waiting": { "reason": "CrashLoopBackOff" } } }] } });
    kube.apply("/api/v1/namespaces/shop/pods/cart-1", pod.clone()).await;
    kube.set_status("/api/v1/namespaces/shop/pods/cart-1", pod["status"].clone()).await;
    kube.apply("/api/v1/namespaces/shop/events/cart-1.1", json!({ "apiVersion": "v1", "kind": "Event", "metadata": { "name": "cart-1.1", "namespace": "shop" },
        "involvedObject": { "kind": "Pod", "name": "cart-1" }, "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container app", "count": 12, "lastTimestamp": "2026-12-01T10:00:00Z" })).await;
    kube.apply("/api/v1/namespaces/admin/pods/vault-0", json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "vault-0", "namespace": "admin" } }))
        .await;
    kube.set_pod_log(
        "/api/v1/namespaces/shop/pods/cart-1/log",
        "starting cart\nconnecting to postgres://cart:hunter2@db:5432/cart\npanic: connection refused\n",
    )
    .await;
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    model
        .script(json!([
            { "tool_calls": [
                { "name": "k8s.list", "arguments": { "kind": "pods" } },
                { "name": "k8s.events", "arguments": { "object": "cart-1" } },
                { "name": "k8s.pod_logs", "arguments": { "pod": "cart-1", "previous": true, "tail_lines": 500 } },
                { "name": "k8s.get", "arguments": { "kind": "secrets", "name": "db" } },
                { "name": "k8s.list", "arguments": { "kind": "pods", "namespace": "admin" } },
                { "name": "k8s.get", "arguments": { "kind": "pods", "name": "cart-1" } },
            ] },
            { "text": "cart-1 is crash looping: the database refuses connections." },
        ]))
        .await;
    let (_, events) = chat(&server, &alice, json!({ "message": "why is the cart pod crashing?", "workspace": "ws-a", "project": "shop" })).await;
    let statuses: Vec<(&str, &str)> =
        events.iter().filter(|(n, _)| n == "tool_result").map(|(_, v)| (v["name"].as_str().unwrap_or(""), v["status"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        statuses,
        vec![("k8s.list", "ok"), ("k8s.events", "ok"), ("k8s.pod_logs", "ok"), ("k8s.get", "error"), ("k8s.list", "error"), ("k8s.get", "ok")],
        "{events:?}"
    );
    let seen = model.requests().await[1].to_string();
    for want in ["CrashLoopBackOff", "Back-off restarting", "panic: connection refused", "at most 100 are returned", "Secrets are never read", "forbidden"] {
        assert!(seen.contains(want), "{want} not in what the model saw");
    }
    assert!(!seen.contains("hunter2"), "a secret reached the model");
    assert!(!seen.contains("vault-0"));
    let requests = kube.requests().await;
    let reads: Vec<&String> = requests.iter().filter(|r| r.starts_with("GET /api")).collect();
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|r| r.ends_with(" as alice")), "every read impersonates the user: {reads:?}");
    assert!(!requests.iter().any(|r| r.contains("/secrets")), "{requests:?}");
}

/// metrics.query runs PromQL over the Prometheus API's own path as the user: another
/// workspace's series stay out whatever the query names, the answer is summarised per series,
/// and the query is audited as the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_queried_as_the_user() {
    use ingest::decode::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
    use prost::Message;
    let model = ScriptedModel::start();
    let server = start(&model, "openai", true, "").await;
    let now_ms = now_ns() / 1_000_000;
    let series = |ws: &str, pod: &str, per_sec: f64| TimeSeries {
        labels: [("__name__", "http_requests_total"), ("hexabase_organization", "acme"), ("workspace", ws), ("namespace", "shop"), ("pod", pod)]
            .iter()
            .map(|(k, v)| Label { name: (*k).into(), value: (*v).into() })
            .collect(),
        samples: (0..40).rev().map(|i| Sample { value: per_sec * (600 - i * 15) as f64, timestamp: now_ms - i * 15_000 }).collect(),
    };
    let req =
        WriteRequest { timeseries: vec![series("ws-a", "cart-1", 2.0), series("ws-a", "cart-2", 5.0), series("ws-b", "vault-0", 100.0)], metadata: vec![] };
    let r = client()
        .post(server.url("/api/v1/write"))
        .bearer_auth(TOKEN_ALL)
        .header("content-type", "application/x-protobuf")
        .body(crate::support::fixtures::snappy(&req.encode_to_vec()))
        .send()
        .await
        .expect("write");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    eventually(20, "the samples to be queryable", || async {
        let r: Value = client()
            .get(server.url("/prometheus/api/v1/query?query=http_requests_total"))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        r["data"]["result"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    model
        .script(json!([
            { "tool_calls": [
                { "name": "metrics.query", "arguments": { "query": "sum by (pod) (rate(http_requests_total[1m]))", "since": "10m" } },
                { "name": "metrics.query", "arguments": { "query": "http_requests_total{workspace=\"ws-b\"}", "instant": true } },
                { "name": "metrics.query", "arguments": { "query": "rate(http_requests_total[1m]" } },
            ] },
            { "text": "cart-2 serves about 5 requests a second." },
        ]))
        .await;
    let (_, events) = chat(&server, &alice, json!({ "message": "what is the request rate (metrics) of the cart pods?", "workspace": "ws-a" })).await;
    let statuses: Vec<&str> = events.iter().filter(|(n, _)| n == "tool_result").map(|(_, v)| v["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, ["ok", "ok", "error"], "{events:?}");
    let seen = model.requests().await[1].to_string();
    assert!(seen.contains("cart-2") && seen.contains("cart-1"), "{seen}");
    assert!(!seen.contains("vault-0"), "another workspace's series reached the model: {seen}");
    // The rate of cart-2, largest first, summarised.
    let first = seen.find("cart-2").expect("cart-2");
    assert!(first < seen.find("cart-1").expect("cart-1"), "largest last value first");
    assert!(seen.contains(r#"\"last\":5"#) || seen.contains(r#""last":5"#), "{seen}");
    let citations = answer(&events)["citations"].as_array().cloned().unwrap_or_default();
    assert!(citations.iter().any(|c| c.to_string().contains("/prometheus/api/v1/query_range?query=sum")), "{citations:?}");
    // Durable when the chat ends, searchable once its batch is stored (as any ingested row).
    let auditor = token(&server, "aud", "acme", &[], &["auditor"]);
    eventually(20, "the agent's prometheus.query_range audit record", || async {
        let audit = agent_audit(&server, &auditor).await;
        audit.iter().any(|r| r["action"] == "prometheus.query_range" && r["actor"] == "alice" && r["outcome"] == "ok")
    })
    .await;
}

/// Manifests are checked in the jail against the typed schemas and dry-run on the workspace's
/// API server as the user; nothing is ever stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_checked_in_the_jail_and_dry_run_as_the_user() {
    let (kube, model, server) = with_kube("tools_offered = 8");
    let good = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, labels: {app: cart}}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: cart}}\n  template:\n    metadata: {labels: {app: cart}}\n    spec:\n      containers: [{name: cart, image: 'ghcr.io/acme/cart:1.4.2', resources: {requests: {cpu: 100m}}}]\n";
    let bad = good.replace("matchLabels: {app: cart}", "matchLabels: {app: kart}").replace("name: cart, image", "name: cart, imagePulPolicy: Always, image");
    let elsewhere = good.replace("name: cart, labels", "name: cart, namespace: admin, labels");
    let bomb: String = std::iter::once("a: &a [x,x,x,x,x,x,x,x,x]\n".to_owned())
        .chain((b'b'..=b'j').map(|c| format!("{0}: &{0} [{1}]\n", c as char, vec![format!("*{}", (c - 1) as char); 9].join(","))))
        .collect();
    let unbalanced: String = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)).chars().take(256 * 1024).collect();
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    model
        .script(json!([
            { "tool_calls": [
                { "name": "manifest.validate", "arguments": { "manifest": bad } },
                { "name": "manifest.validate", "arguments": { "manifest": good } },
                { "name": "manifest.validate", "arguments": { "manifest": elsewhere } },
                { "name": "manifest.validate", "arguments": { "manifest": bomb } },
                { "name": "manifest.generate", "arguments": { "name": "web", "image": "ghcr.io/acme/web:2.0.1", "replicas": 3, "port": 8080, "memory": "256Mi" } },
                // Unbalanced flow brackets: the YAML parser spends ~40 s of CPU on these 256 KiB;
                // the jail stops it at its CPU limit.
                { "name": "manifest.validate", "arguments": { "manifest": unbalanced } },
            ] },
            { "text": "The first manifest has a typo and a selector that matches nothing." },
        ]))
        .await;
    let (_, events) =
        chat(&server, &alice, json!({ "message": "validate this manifest yaml and generate one for web", "workspace": "ws-a", "project": "shop" })).await;
    let results: Vec<&Value> = events.iter().filter(|(n, _)| n == "tool_result").map(|(_, v)| v).collect();
    assert_eq!(results.len(), 6, "{events:?}");
    assert!(results[..5].iter().all(|r| r["status"] == "ok"), "{results:?}");
    assert_eq!(results[5]["status"], "error", "{results:?}");
    let seen = model.requests().await[1].to_string();
    for want in [
        "imagePulPolicy: no such field in apps/v1 Deployment",
        "spec.selector does not match spec.template.metadata.labels (missing app=kart)",
        "accepted by workspace ws-a's API server",
        "refused: forbidden",
        "repetition limit exceeded",
        "checked in the sandbox's jail (landlock: full, own network namespace: true",
        "Deployment shop/web: 3 replica(s) of ghcr.io/acme/web:2.0.1, port 8080",
        "Service shop/web: port 8080",
        "Nothing was applied",
        "the validator was stopped by signal",
    ] {
        assert!(seen.contains(want), "{want} not in what the model saw: {seen}");
    }
    let requests = kube.requests().await;
    let patches: Vec<&String> = requests.iter().filter(|r| r.starts_with("PATCH")).collect();
    // The good one, the one in admin (refused) and the two generated objects; never the bad one.
    assert_eq!(patches.len(), 4, "{requests:?}");
    assert!(patches.iter().all(|r| r.contains(" as alice")), "{patches:?}");
    assert_eq!(patches.iter().filter(|r| r.ends_with("(dry run)")).count(), 3, "the refused one is stopped before admission: {patches:?}");
    assert!(kube.objects().await.keys().all(|k| !k.contains("deployments") && !k.contains("services")), "a dry run stores nothing");
}

/// A write tool only proposes: the exact action is stored and shown; approving runs it as the
/// user, denying or waiting too long runs nothing, and only the owner decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_actions_wait_for_the_users_approval() {
    let (kube, model, server) = with_kube("write_tools = true\napproval_ttl_secs = 2");
    let deploy = "/apis/apps/v1/namespaces/shop/deployments/cart";
    kube.apply(
        deploy,
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "cart", "namespace": "shop" }, "spec": { "replicas": 1 } }),
    )
    .await;
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let bob = token(&server, "bob", "acme", &["ws-a"], &[]);
    let scale = json!([{ "tool_calls": [{ "name": "k8s.scale", "arguments": { "kind": "deployment", "name": "cart", "replicas": 3 } }] }, { "text": "Approve the change to scale cart to 3." }]);
    let propose = || async {
        model.script(scale.clone()).await;
        let (_, events) = chat(&server, &alice, json!({ "message": "scale cart to 3 replicas", "workspace": "ws-a", "project": "shop" })).await;
        let request = events.iter().find(|(n, _)| n == "approval_request").unwrap_or_else(|| panic!("no approval_request in {events:?}")).1.clone();
        let result = events.iter().find(|(n, _)| n == "tool_result").map(|(_, v)| v["status"].clone());
        assert_eq!(result, Some(json!("awaiting_approval")));
        assert!(model.requests().await[1].to_string().contains("nothing has changed yet"));
        request
    };
    let base = server.url("/api/v1/ai/approvals");
    let decide = |who: String, id: String, decision: &'static str| {
        let url = format!("{base}/{id}");
        async move {
            let r = client().post(url).bearer_auth(&who).json(&json!({ "decision": decision })).send().await.expect("decide");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let replicas = || async { kube.objects().await[deploy]["spec"]["replicas"].clone() };

    let first = propose().await;
    assert_eq!(first["action"], "scale Deployment shop/cart in workspace ws-a to 3 replicas");
    assert_eq!(replicas().await, json!(1), "nothing happens before the approval");
    assert_eq!(decide(bob.clone(), first["id"].as_str().unwrap_or("").into(), "approve").await.0, 404, "only the owner decides");
    let (status, denied) = decide(alice.clone(), first["id"].as_str().unwrap_or("").into(), "deny").await;
    assert_eq!((status, denied["data"]["status"].as_str()), (200, Some("denied")));
    let (status, again) = decide(alice.clone(), first["id"].as_str().unwrap_or("").into(), "approve").await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("conflict")), "one decision wins");
    assert_eq!(replicas().await, json!(1));

    let second = propose().await;
    let (status, done) = decide(alice.clone(), second["id"].as_str().unwrap_or("").into(), "approve").await;
    assert_eq!((status, done["data"]["status"].as_str()), (200, Some("executed")), "{done}");
    assert_eq!(replicas().await, json!(3));
    assert!(kube.requests().await.iter().any(|r| r.starts_with(&format!("PATCH {deploy}")) && r.ends_with(" as alice")));

    let third = propose().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, late) = decide(alice.clone(), third["id"].as_str().unwrap_or("").into(), "approve").await;
    assert_eq!((status, late["error"]["code"].as_str()), (409, Some("conflict")), "{late}");
    assert!(late["error"]["message"].as_str().unwrap_or("").contains("expired"));
    let (_, read) = (
        0,
        client()
            .get(server.url(&format!("/api/v1/ai/approvals/{}", third["id"].as_str().unwrap_or(""))))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("read")
            .json::<Value>()
            .await
            .expect("json"),
    );
    assert_eq!(read["data"]["status"], "expired");
    assert_eq!(decide(alice.clone(), "appr-0000".into(), "maybe").await.0, 400);
    assert_eq!(kube.requests().await.iter().filter(|r| r.starts_with("PATCH")).count(), 2, "one apply by the test, one approved scale");
}

/// Restarts and applies are write tools too: each proposes its exact action (an apply, the
/// checked objects), and runs as the user only once approved; a manifest with errors or a
/// Secret is refused before anything is proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_applies_wait_for_approval_too() {
    let (kube, model, server) = with_kube("write_tools = true");
    let cart = "/apis/apps/v1/namespaces/shop/deployments/cart";
    kube.apply(cart, json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "cart", "namespace": "shop" }, "spec": { "replicas": 2 } }))
        .await;
    let web = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, labels: {app: web}}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: 'ghcr.io/acme/web:2.0.1'}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
    let typo = web.replace("containers:", "containres:");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n";
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    model
        .script(json!([
            { "tool_calls": [
                { "name": "k8s.restart", "arguments": { "kind": "deployment", "name": "cart" } },
                { "name": "k8s.apply", "arguments": { "manifest": web } },
                { "name": "k8s.apply", "arguments": { "manifest": typo } },
                { "name": "k8s.apply", "arguments": { "manifest": secret } },
            ] },
            { "text": "Approve the restart and the apply." },
        ]))
        .await;
    let (_, events) = chat(&server, &alice, json!({ "message": "restart cart and apply this manifest", "workspace": "ws-a", "project": "shop" })).await;
    let statuses: Vec<&str> = events.iter().filter(|(n, _)| n == "tool_result").map(|(_, v)| v["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, ["awaiting_approval", "awaiting_approval", "error", "error"], "{events:?}");
    let seen = model.requests().await[1].to_string();
    assert!(seen.contains("containres: no such field") && seen.contains("Secrets are never handled"), "{seen}");
    let requests: Vec<Value> = events.iter().filter(|(n, _)| n == "approval_request").map(|(_, v)| v.clone()).collect();
    assert_eq!(requests[0]["action"], "restart Deployment shop/cart in workspace ws-a (a rolling restart: its pods are replaced one by one)");
    assert_eq!(requests[1]["action"], "apply to workspace ws-a (server-side apply as you): Deployment shop/web, Service shop/web");
    let objects = || async { kube.objects().await };
    assert!(!objects().await.keys().any(|k| k.contains("/web")), "nothing is applied before the approval");
    assert!(objects().await[cart]["spec"].get("template").is_none());
    for r in &requests {
        let url = server.url(&format!("/api/v1/ai/approvals/{}", r["id"].as_str().unwrap_or("")));
        let done: Value =
            client().post(url).bearer_auth(&alice).json(&json!({ "decision": "approve" })).send().await.expect("decide").json().await.expect("json");
        assert_eq!(done["data"]["status"], "executed", "{done}");
    }
    let after = objects().await;
    assert!(after[cart]["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(), "{:?}", after[cart]);
    assert_eq!(after["/apis/apps/v1/namespaces/shop/deployments/web"]["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/web:2.0.1");
    assert!(after.contains_key("/api/v1/namespaces/shop/services/web"), "{:?}", after.keys());
    let patches: Vec<String> = kube.requests().await.into_iter().filter(|r| r.starts_with("PATCH") && !r.contains("/cart as -")).collect();
    assert_eq!(patches.len(), 3, "{patches:?}");
    assert!(patches.iter().all(|r| r.ends_with(" as alice")), "as the user, never a dry run here: {patches:?}");
}
