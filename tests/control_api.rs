//! The control API over HTTP on both databases (SQLite and a real PostgreSQL 15), provisioning
//! against fake Kubernetes API servers (host and vCluster) that keep what they are sent: the
//! exact objects per plan, their removal, retries, a crash mid-operation, idempotent creates,
//! optimistic locking, and the audit records of every change.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::query_api::token;
use crate::support::kube::FakeKube;
use crate::support::postgres::Postgres;
use crate::support::{Server, ServerOptions, client, eventually};

pub(crate) const ADMIN: &[&str] = &["org-admin"];

pub(crate) struct Control {
    pub server: Server,
    pub host: FakeKube,
    pub vc: FakeKube,
    pub admin: String,
}

pub(crate) fn control_toml(database_url: &str, host: &FakeKube, vc: &FakeKube, max_attempts: u32) -> String {
    format!(
        "[control]\ndatabase_url = \"{database_url}\"\n[control.worker]\nretry_base_ms = 50\nretry_max_ms = 200\nmax_attempts = {max_attempts}\nlease_ms = 1500\npoll_ms = 50\njob_poll_ms = 50\nsync_secs = 1\n\
         [control.kubernetes]\nhost_url = \"{}\"\nhost_token_file = \"{}\"\nworkspace_url = \"{}\"\nworkspace_token_file = \"{}\"\ntimeout_ms = 3000\n",
        host.url,
        host.token_file.display(),
        vc.url,
        vc.token_file.display()
    )
}

pub(crate) fn start(database_url: &str, max_attempts: u32) -> Control {
    let host = FakeKube::start(&[], json!([]));
    let vc = FakeKube::start(&[], json!([]));
    let server = Server::start(ServerOptions { extra_toml: control_toml(database_url, &host, &vc, max_attempts), ..Default::default() });
    let admin = token(&server, "alice", "acme", &[], ADMIN);
    Control { server, host, vc, admin }
}

pub(crate) async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client().request(method, server.url(path)).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
}

/// Polls a task until it has finished; its final state.
pub(crate) async fn finished(server: &Server, token: &str, task: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = call(server, Method::GET, &format!("/api/v1/tasks/{task}"), token, None, &[]).await;
        assert_eq!(status, 200, "{body}");
        let s = body["data"]["status"].as_str().unwrap_or("").to_owned();
        if s == "succeeded" || s == "failed" {
            return body["data"].clone();
        }
        assert!(Instant::now() < deadline, "task {task} did not finish: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn task_of(body: &Value) -> String {
    body["meta"]["task"]["id"].as_str().unwrap_or_else(|| panic!("no task in {body}")).to_owned()
}

pub(crate) fn object<'a>(objects: &'a serde_json::Map<String, Value>, path: &str) -> &'a Value {
    objects.get(path).unwrap_or_else(|| panic!("{path} not created; have {:?}", objects.keys().collect::<Vec<_>>()))
}

/// The whole life of a workspace and a project, with the resources asserted exactly.
async fn lifecycle(c: &Control) {
    let s = &c.server;
    let create = json!({ "name": "shop", "plan": "dedicated" });
    let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(create.clone()), &[("idempotency-key", "create-shop-1")]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["status"], "pending");
    let id = body["data"]["id"].as_str().expect("id").to_owned();
    // The same key and body: the first answer again, nothing created twice.
    let (status, again, headers) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(create.clone()), &[("idempotency-key", "create-shop-1")]).await;
    assert_eq!((status, &again), (201, &body));
    assert_eq!(headers.get("idempotent-replayed").map(|v| v.to_str().unwrap_or("")), Some("true"));
    let task = finished(s, &c.admin, &task_of(&body)).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["steps_done"].as_array().map(Vec::len), Some(7), "{task}");

    let ns = format!("hx-{id}");
    let host = c.host.objects().await;
    let namespace = object(&host, &format!("/api/v1/namespaces/{ns}"));
    assert_eq!(namespace["metadata"]["labels"]["hexabase.io/workspace"], "shop");
    assert_eq!(namespace["metadata"]["labels"]["hexabase.io/organization"], "acme");
    assert_eq!(namespace["metadata"]["labels"]["hexabase.io/plan"], "dedicated");
    let quota = object(&host, &format!("/api/v1/namespaces/{ns}/resourcequotas/workspace-quota"));
    assert_eq!(quota["spec"]["hard"], json!({ "requests.cpu": "32", "requests.memory": "128Gi", "limits.cpu": "64", "limits.memory": "256Gi", "pods": "500" }));
    let vcluster = object(&host, &format!("/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/{ns}/vclusters/vcluster"));
    let values: Value = serde_json::from_str(vcluster["spec"]["helmRelease"]["values"].as_str().expect("values")).expect("values JSON");
    assert_eq!(values["controlPlane"]["statefulSet"]["scheduling"]["nodeSelector"]["hexabase.io/dedicated-workspace"], json!(id));
    let args = values["controlPlane"]["distro"]["k8s"]["apiServer"]["extraArgs"].to_string();
    assert!(args.contains("--oidc-issuer-url=") && args.contains("--oidc-groups-claim=groups"), "{args}");
    assert_eq!(host.len(), 3, "{:?}", host.keys().collect::<Vec<_>>());

    let inner = c.vc.objects().await;
    let admin_role = object(&inner, "/apis/rbac.authorization.k8s.io/v1/clusterroles/hexabase:workspace-admin");
    assert_eq!(admin_role["rules"][0]["verbs"], json!(["*"]));
    let viewer = object(&inner, "/apis/rbac.authorization.k8s.io/v1/clusterroles/hexabase:workspace-viewer");
    assert!(!viewer["rules"].to_string().contains("secrets"), "viewers do not read secrets");
    let admins = object(&inner, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/hexabase:workspace-admin");
    assert_eq!(admins["subjects"], json!([{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "shop:WSAdmins" }]));
    let users = object(&inner, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/hexabase:workspace-viewer");
    assert_eq!(users["subjects"][0]["name"], "shop:WSUsers");

    // The creator is in WSAdmins, flattened upwards into WSUsers.
    let (_, groups, _) = call(s, Method::GET, "/api/v1/workspaces/shop/groups/mine", &c.admin, None, &[]).await;
    assert_eq!(groups["data"]["claim"], json!(["shop:WSAdmins", "shop:WSUsers"]), "{groups}");

    let (status, ws, headers) = call(s, Method::GET, "/api/v1/workspaces/shop", &c.admin, None, &[]).await;
    assert_eq!((status, ws["data"]["status"].as_str()), (200, Some("running")), "{ws}");
    assert_eq!(headers.get("etag").map(|v| v.to_str().unwrap_or("").to_owned()), Some("\"1\"".to_owned()));

    // A project: a namespace in the vCluster with the plan's quota and container defaults.
    let (status, p, _) = call(s, Method::POST, "/api/v1/workspaces/shop/projects", &c.admin, Some(json!({ "name": "web" })), &[]).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(finished(s, &c.admin, &task_of(&p)).await["status"], "succeeded");
    let inner = c.vc.objects().await;
    assert_eq!(object(&inner, "/api/v1/namespaces/web")["metadata"]["labels"]["hexabase.io/project"], "web");
    assert_eq!(object(&inner, "/api/v1/namespaces/web/resourcequotas/project-quota")["spec"]["hard"]["pods"], "250");
    assert_eq!(object(&inner, "/api/v1/namespaces/web/limitranges/project-limits")["spec"]["limits"][0]["default"], json!({ "cpu": "1", "memory": "1Gi" }));
    let (status, list, _) = call(s, Method::GET, "/api/v1/workspaces/shop/projects", &c.admin, None, &[]).await;
    assert_eq!((status, list["data"][0]["name"].as_str(), list["data"][0]["status"].as_str()), (200, Some("web"), Some("running")), "{list}");

    // Changing the plan: a stale version is refused, the current one re-applies the quota.
    let (status, stale, _) = call(s, Method::PATCH, "/api/v1/workspaces/shop", &c.admin, Some(json!({ "plan": "shared", "version": 7 })), &[]).await;
    assert_eq!((status, stale["error"]["code"].as_str()), (409, Some("conflict")), "{stale}");
    let (status, up, _) = call(s, Method::PATCH, "/api/v1/workspaces/shop", &c.admin, Some(json!({ "plan": "shared" })), &[("if-match", "\"1\"")]).await;
    assert_eq!((status, up["data"]["version"].as_i64()), (202, Some(2)), "{up}");
    assert_eq!(finished(s, &c.admin, &task_of(&up)).await["status"], "succeeded");
    let host = c.host.objects().await;
    assert_eq!(object(&host, &format!("/api/v1/namespaces/{ns}/resourcequotas/workspace-quota"))["spec"]["hard"]["pods"], "100");

    // Deleting the project removes its namespace; deleting the workspace removes the rest.
    let (status, d, _) = call(s, Method::DELETE, "/api/v1/workspaces/shop/projects/web", &c.admin, None, &[]).await;
    assert_eq!(status, 202, "{d}");
    assert_eq!(finished(s, &c.admin, &task_of(&d)).await["status"], "succeeded");
    assert!(!c.vc.objects().await.keys().any(|k| k.starts_with("/api/v1/namespaces/web")));
    let (status, d, _) = call(s, Method::DELETE, "/api/v1/workspaces/shop", &c.admin, None, &[]).await;
    assert_eq!(status, 202, "{d}");
    assert_eq!(finished(s, &c.admin, &task_of(&d)).await["status"], "succeeded");
    assert!(c.host.objects().await.is_empty(), "{:?}", c.host.objects().await.keys().collect::<Vec<_>>());
    assert!(c.vc.objects().await.is_empty(), "{:?}", c.vc.objects().await.keys().collect::<Vec<_>>());
    let (status, _, _) = call(s, Method::GET, "/api/v1/workspaces/shop", &c.admin, None, &[]).await;
    assert_eq!(status, 404);
    // The name is free again.
    let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "shop" })), &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["data"]["id"], json!(id));

    // Every change is in the audit log, as who asked, with before and after.
    let auditor = token(s, "carol", "acme", &[], &["auditor"]);
    let want = ["workspace.create", "workspace.update", "workspace.delete", "project.create", "project.delete", "workspace.running", "workspace.deleted"];
    eventually(20, "control changes in the audit log", || async {
        let (_, r, _) = call(s, Method::GET, "/api/v1/audit/search?since=1h&limit=200", &auditor, None, &[]).await;
        let actions: Vec<String> =
            r["records"].as_array().map(|a| a.iter().filter_map(|x| x["action"].as_str().map(str::to_owned)).collect()).unwrap_or_default();
        want.iter().all(|w| actions.iter().any(|a| a == w))
    })
    .await;
    let (_, r, _) = call(s, Method::GET, "/api/v1/audit/search?action=workspace.update&since=1h", &auditor, None, &[]).await;
    let rec = &r["records"][0];
    assert_eq!((rec["actor"].as_str(), rec["initiated_by"].as_str(), rec["workspace"].as_str()), (Some("alice"), Some("user"), Some("shop")), "{rec}");
    let before: Value = serde_json::from_str(rec["attributes"]["before"].as_str().expect("before")).expect("json");
    let after: Value = serde_json::from_str(rec["attributes"]["after"].as_str().expect("after")).expect("json");
    assert_eq!((before["plan"].as_str(), after["plan"].as_str()), (Some("dedicated"), Some("shared")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_lifecycle_on_sqlite() {
    let c = start("", 3);
    lifecycle(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_lifecycle_on_postgres() {
    let pg = Postgres::start();
    let c = start(&pg.url(), 3);
    lifecycle(&c).await;
}

/// method, path, token, body, headers, status, code
type Case<'a> = (Method, &'a str, &'a str, Option<Value>, Vec<(&'a str, &'a str)>, u16, &'a str);

/// Bad input, permissions and tenancy: each refused with its status and stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_other_tenants_are_refused() {
    let c = start("", 3);
    let s = &c.server;
    let (status, _, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "shop" })), &[("idempotency-key", "k")]).await;
    assert_eq!(status, 201);
    let member = token(s, "bob", "acme", &["shop"], &[]);
    let stranger = token(s, "mallory", "acme", &["other"], &[]);
    let other_org = token(s, "eve", "globex", &["shop"], ADMIN);
    let cases: Vec<Case> = vec![
        (Method::POST, "/api/v1/workspaces", "", Some(json!({ "name": "x" })), vec![], 401, "unauthenticated"),
        (Method::POST, "/api/v1/workspaces", "forged.jwt.token", Some(json!({ "name": "x" })), vec![], 401, "unauthenticated"),
        (Method::POST, "/api/v1/workspaces", &member, Some(json!({ "name": "x" })), vec![], 403, "forbidden"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "shop" })), vec![], 409, "already_exists"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "other" })), vec![("idempotency-key", "k")], 409, "conflict"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "Shop'; DROP TABLE workspaces; --" })), vec![], 400, "bad_request"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "x".repeat(41) })), vec![], 400, "bad_request"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "x", "plan": "gold" })), vec![], 400, "bad_request"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "x", "owner": "eve" })), vec![], 400, "malformed_body"),
        (Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "x" })), vec![("idempotency-key", "")], 400, "bad_request"),
        (Method::PATCH, "/api/v1/workspaces/shop", &c.admin, Some(json!({ "plan": "dedicated" })), vec![], 400, "bad_request"),
        (Method::PATCH, "/api/v1/workspaces/shop", &member, Some(json!({ "plan": "dedicated", "version": 1 })), vec![], 403, "forbidden"),
        (Method::DELETE, "/api/v1/workspaces/shop", &member, None, vec![], 403, "forbidden"),
        (Method::GET, "/api/v1/workspaces/shop", &stranger, None, vec![], 404, "not_found"),
        (Method::GET, "/api/v1/workspaces/shop", &other_org, None, vec![], 404, "not_found"),
        (Method::DELETE, "/api/v1/workspaces/shop", &other_org, None, vec![], 404, "not_found"),
        (Method::GET, "/api/v1/workspaces/nope", &c.admin, None, vec![], 404, "not_found"),
        (Method::GET, "/api/v1/workspaces?limit=0", &c.admin, None, vec![], 400, "bad_request"),
        (Method::GET, "/api/v1/workspaces?limit=5&sort=name", &c.admin, None, vec![], 400, "bad_request"),
        (Method::POST, "/api/v1/workspaces/shop/projects", &stranger, Some(json!({ "name": "web" })), vec![], 404, "not_found"),
        (Method::POST, "/api/v1/workspaces/shop/projects", &member, Some(json!({ "name": "kube-system!" })), vec![], 400, "bad_request"),
    ];
    for (method, path, tok, body, headers, want_status, want_code) in cases {
        let (status, got, _) = call(s, method.clone(), path, tok, body.clone(), &headers).await;
        assert_eq!((status, got["error"]["code"].as_str()), (want_status, Some(want_code)), "{method} {path} {body:?}: {got}");
        assert!(got["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Bodies that are not JSON, too deep, or too large.
    for (body, want) in [
        ("{\"name\":".to_owned(), (400, "malformed_body")),
        (format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)), (413, "payload_too_large")),
        (format!("{{\"name\":{}\"x\"{}}}", "[".repeat(1000), "]".repeat(1000)), (400, "malformed_body")),
        (format!("{{\"name\":\"{}\"}}", "a".repeat(70_000)), (413, "payload_too_large")),
    ] {
        let r = client().post(s.url("/api/v1/workspaces")).bearer_auth(&c.admin).body(body).send().await.expect("send");
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("json error");
        assert_eq!((status, v["error"]["code"].as_str().unwrap_or("")), want, "{v}");
    }
    // The member sees the workspace their token names; the other organisation sees none.
    let (_, mine, _) = call(s, Method::GET, "/api/v1/workspaces", &member, None, &[]).await;
    assert_eq!(mine["data"].as_array().map(|a| a.iter().map(|w| w["name"].clone()).collect::<Vec<_>>()), Some(vec![json!("shop")]));
    let (_, theirs, _) = call(s, Method::GET, "/api/v1/workspaces", &other_org, None, &[]).await;
    assert_eq!(theirs["data"], json!([]));
    let (status, _, _) = call(s, Method::POST, "/api/v1/workspaces/shop/projects", &member, Some(json!({ "name": "web" })), &[]).await;
    assert_eq!(status, 201);
    // Paging: three more workspaces, two per page, in name order.
    for n in ["a1", "b2", "c3"] {
        assert_eq!(call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": n })), &[]).await.0, 201);
    }
    let (_, p1, _) = call(s, Method::GET, "/api/v1/workspaces?limit=2", &c.admin, None, &[]).await;
    let cursor = p1["meta"]["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, p2, _) = call(s, Method::GET, &format!("/api/v1/workspaces?limit=2&cursor={cursor}"), &c.admin, None, &[]).await;
    let names =
        |p: &Value| p["data"].as_array().map(|a| a.iter().filter_map(|w| w["name"].as_str().map(str::to_owned)).collect::<Vec<_>>()).unwrap_or_default();
    assert_eq!(
        (names(&p1), names(&p2), p2["meta"]["next_cursor"].clone()),
        (vec!["a1".to_owned(), "b2".into()], vec!["c3".to_owned(), "shop".into()], Value::Null)
    );
}

/// Two updates from the same version: one wins, the other is told to read again. Two creates
/// with the same idempotency key at once: one workspace, the same answer twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_postgres() {
    let pg = Postgres::start();
    let c = start(&pg.url(), 3);
    let s = &c.server;
    let body = json!({ "name": "race", "plan": "shared" });
    let headers = [("idempotency-key", "same-key")];
    let (a, b) = tokio::join!(
        call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(body.clone()), &headers),
        call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(body.clone()), &headers)
    );
    assert_eq!((a.0, b.0), (201, 201), "{} {}", a.1, b.1);
    assert_eq!(a.1["data"]["id"], b.1["data"]["id"]);
    assert_eq!(finished(s, &c.admin, &task_of(&a.1)).await["status"], "succeeded");
    let patch = |plan: &'static str| call(s, Method::PATCH, "/api/v1/workspaces/race", &c.admin, Some(json!({ "plan": plan, "version": 1 })), &[]);
    let (x, y) = tokio::join!(patch("dedicated"), patch("shared"));
    let mut statuses = [x.0, y.0];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{} {}", x.1, y.1);
    let (_, ws, _) = call(s, Method::GET, "/api/v1/workspaces/race", &c.admin, None, &[]).await;
    assert_eq!(ws["data"]["version"], 2);
}

/// A failing API server: retried with backoff until it recovers; failing for good ends in
/// `error` with the reason; an object the server refuses is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_failures_are_retried_then_reported() {
    let c = start("", 3);
    let s = &c.server;
    c.host.set_faults(json!([{ "method": "PATCH", "path_contains": "resourcequotas", "code": 500, "times": 2 }])).await;
    let (_, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "flaky" })), &[]).await;
    let t = finished(s, &c.admin, &task_of(&body)).await;
    assert_eq!((t["status"].as_str(), t["attempts"].as_i64()), (Some("succeeded"), Some(3)), "{t}");
    // Each step ran once it could: the namespace was applied once, the quota three times.
    let reqs = c.host.requests().await;
    assert_eq!(reqs.iter().filter(|r| r.starts_with("PATCH /api/v1/namespaces/") && r.matches('/').count() == 4).count(), 1, "{reqs:?}");
    assert_eq!(reqs.iter().filter(|r| r.starts_with("PATCH") && r.contains("resourcequotas")).count(), 3, "{reqs:?}");

    c.host.set_faults(json!([{ "method": "PATCH", "path_contains": "vclusters", "code": 500, "times": 100 }])).await;
    let (_, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "down" })), &[]).await;
    let t = finished(s, &c.admin, &task_of(&body)).await;
    assert_eq!((t["status"].as_str(), t["attempts"].as_i64()), (Some("failed"), Some(3)), "{t}");
    let (_, ws, _) = call(s, Method::GET, "/api/v1/workspaces/down", &c.admin, None, &[]).await;
    assert_eq!(ws["data"]["status"], "error");
    let reason = ws["data"]["status_reason"].as_str().unwrap_or("");
    assert!(reason.contains("VCluster") && reason.contains("after 3 attempts"), "{reason}");

    c.host.set_faults(json!([{ "method": "PATCH", "path_contains": "vclusters", "code": 422, "times": 100 }])).await;
    let (_, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "refused" })), &[]).await;
    let t = finished(s, &c.admin, &task_of(&body)).await;
    assert_eq!((t["status"].as_str(), t["attempts"].as_i64()), (Some("failed"), Some(1)), "{t}");

    // An errored workspace can be deleted; what was created for it goes.
    c.host.set_faults(json!([])).await;
    let (status, d, _) = call(s, Method::DELETE, "/api/v1/workspaces/down", &c.admin, None, &[]).await;
    assert_eq!(status, 202, "{d}");
    assert_eq!(finished(s, &c.admin, &task_of(&d)).await["status"], "succeeded");
    assert!(!c.host.objects().await.values().any(|o| o["metadata"]["labels"]["hexabase.io/workspace"] == "down"));
}

/// `kill -9` while a step hangs: after the restart the lease runs out, the task is claimed
/// again, finishes, and the steps done before the crash are not done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_provisioning_resumes_after_restart() {
    let pg = Postgres::start();
    let mut c = start(&pg.url(), 3);
    c.host.set_faults(json!([{ "method": "PATCH", "path_contains": "vclusters", "hang_secs": 20, "times": 1 }])).await;
    let (_, body, _) = call(&c.server, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "crashy" })), &[]).await;
    let task = task_of(&body);
    eventually(20, "the VCluster step to start", || async { c.host.requests().await.iter().any(|r| r.contains("vclusters")) }).await;
    let (_, t, _) = call(&c.server, Method::GET, &format!("/api/v1/tasks/{task}"), &c.admin, None, &[]).await;
    assert_eq!(t["data"]["steps_done"].as_array().map(Vec::len), Some(2), "{t}");
    c.server = c.server.restart();
    let t = finished(&c.server, &c.admin, &task).await;
    assert_eq!((t["status"].as_str(), t["attempts"].as_i64()), (Some("succeeded"), Some(2)), "{t}");
    let reqs = c.host.requests().await;
    assert_eq!(reqs.iter().filter(|r| r.starts_with("PATCH") && r.contains("resourcequotas")).count(), 1, "{reqs:?}");
    let (_, ws, _) = call(&c.server, Method::GET, "/api/v1/workspaces/crashy", &c.admin, None, &[]).await;
    assert_eq!(ws["data"]["status"], "running");
}

/// The task stream: `task` events while it runs, `end` with the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_events_stream_until_the_end() {
    let c = start("", 3);
    c.host.set_faults(json!([{ "method": "PATCH", "path_contains": "resourcequotas", "code": 500, "times": 1 }])).await;
    let (_, body, _) = call(&c.server, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "stream" })), &[]).await;
    let text = client()
        .get(c.server.url(&format!("/api/v1/tasks/{}/events", task_of(&body))))
        .bearer_auth(&c.admin)
        .send()
        .await
        .expect("sse")
        .text()
        .await
        .expect("body");
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.last(), Some(&"end"), "{text}");
    assert!(events.len() >= 2, "{text}");
    let last: Value = serde_json::from_str(text.lines().rev().find_map(|l| l.strip_prefix("data: ")).expect("data")).expect("json");
    assert_eq!(last["status"], "succeeded");
    let (status, _, _) = call(&c.server, Method::GET, "/api/v1/tasks/task-0000/events", &c.admin, None, &[]).await;
    assert_eq!(status, 404);
    let other = token(&c.server, "eve", "globex", &[], ADMIN);
    let (status, _, _) = call(&c.server, Method::GET, &format!("/api/v1/tasks/{}", task_of(&body)), &other, None, &[]).await;
    assert_eq!(status, 404, "tasks of another organisation are not found");
}

/// Groups: a subgroup's members are in its parent too (the flattened claim), membership in a
/// group makes the workspace visible, built-in groups and the last admin stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_nest_and_flatten_into_the_claim() {
    let c = start("", 3);
    let s = &c.server;
    let (_, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "apps" })), &[]).await;
    assert_eq!(body["data"]["status"], "pending");
    let bob = token(s, "bob", "acme", &[], &[]);
    assert_eq!(call(s, Method::GET, "/api/v1/workspaces/apps", &bob, None, &[]).await.0, 404, "not a member yet");
    let (status, g, _) = call(s, Method::POST, "/api/v1/workspaces/apps/groups", &c.admin, Some(json!({ "name": "team-a" })), &[]).await;
    assert_eq!((status, g["data"]["parent"].as_str()), (201, Some("WSUsers")), "{g}");
    let (status, _, _) = call(s, Method::POST, "/api/v1/workspaces/apps/groups", &c.admin, Some(json!({ "name": "oncall", "parent": "team-a" })), &[]).await;
    assert_eq!(status, 201);
    assert_eq!(call(s, Method::PUT, "/api/v1/workspaces/apps/groups/oncall/members/bob", &c.admin, None, &[]).await.0, 204);
    let (status, mine, _) = call(s, Method::GET, "/api/v1/workspaces/apps/groups/mine", &bob, None, &[]).await;
    assert_eq!(status, 200, "a group member sees the workspace: {mine}");
    assert_eq!(mine["data"]["claim"], json!(["apps:WSUsers", "apps:oncall", "apps:team-a"]));
    // Bob is a member, not an admin of the workspace.
    let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces/apps/groups", &bob, Some(json!({ "name": "mine" })), &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    for (method, path, body, want) in [
        (Method::DELETE, "/api/v1/workspaces/apps/groups/WSAdmins", None, (409, "conflict")),
        (Method::DELETE, "/api/v1/workspaces/apps/groups/team-a", None, (409, "conflict")),
        (Method::DELETE, "/api/v1/workspaces/apps/groups/WSAdmins/members/alice", None, (409, "conflict")),
        (Method::POST, "/api/v1/workspaces/apps/groups", Some(json!({ "name": "team-a" })), (409, "already_exists")),
        (Method::POST, "/api/v1/workspaces/apps/groups", Some(json!({ "name": "x", "parent": "nope" })), (400, "bad_request")),
        (Method::POST, "/api/v1/workspaces/apps/groups", Some(json!({ "name": "a:b" })), (400, "bad_request")),
        (Method::PUT, "/api/v1/workspaces/apps/groups/nope/members/bob", None, (404, "not_found")),
    ] {
        let (status, got, _) = call(s, method.clone(), path, &c.admin, body, &[]).await;
        assert_eq!((status, got["error"]["code"].as_str().unwrap_or("")), want, "{method} {path}: {got}");
    }
    let (_, list, _) = call(s, Method::GET, "/api/v1/workspaces/apps/groups", &c.admin, None, &[]).await;
    let oncall = list["data"].as_array().and_then(|a| a.iter().find(|g| g["name"] == "oncall")).cloned().expect("oncall");
    assert_eq!((oncall["parent"].as_str(), oncall["members"].clone()), (Some("team-a"), json!(["bob"])));
    assert_eq!(call(s, Method::DELETE, "/api/v1/workspaces/apps/groups/oncall/members/bob", &c.admin, None, &[]).await.0, 204);
    assert_eq!(call(s, Method::GET, "/api/v1/workspaces/apps", &bob, None, &[]).await.0, 404, "out of the group, out of sight");
    assert_eq!(call(s, Method::DELETE, "/api/v1/workspaces/apps/groups/oncall", &c.admin, None, &[]).await.0, 204);
}
