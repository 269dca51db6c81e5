//! Backups and functions through the control API, against the fake host and vCluster API
//! servers: the exact objects, their lifecycle, and what is never shown.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::control_api::{ADMIN, Control, call, control_toml, finished, object, start, task_of};
use crate::query_api::token;
use crate::support::kube::FakeKube;
use crate::support::{Server, ServerOptions, client, eventually};

/// Backups: refused on Shared with a clear code; on Dedicated a CronJob per policy with the
/// storage's credentials and the sealed workspace key as Secrets, manual runs followed to
/// their Job's end, retention expiring the oldest, a restore as its own operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_on_dedicated_workspaces_only_on_sqlite() {
    backups(&start("", 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_on_dedicated_workspaces_only_on_postgres() {
    let pg = crate::support::postgres::Postgres::start();
    backups(&start(&pg.url(), 2)).await;
}

async fn backups(c: &Control) {
    let s = &c.server;
    for (name, plan) in [("small", "shared"), ("db", "dedicated")] {
        let (_, body, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": name, "plan": plan })), &[]).await;
        assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");
    }
    let storage =
        json!({ "name": "s3-main", "bucket": "acme-backups", "endpoint": "https://s3.example", "region": "eu-west-1", "credentials_secret": "s3-creds" });
    let (status, shared, _) = call(s, Method::POST, "/api/v1/workspaces/small/backup-storages", &c.admin, Some(storage.clone()), &[]).await;
    assert_eq!((status, shared["error"]["code"].as_str()), (403, Some("plan_not_allowed")), "{shared}");
    assert!(shared["error"]["message"].as_str().unwrap_or("").contains("Dedicated"), "{shared}");
    let policy = json!({ "name": "nightly", "storage": "s3-main", "schedule": "0 2 * * *", "retention_count": 2 });
    let (status, _, _) = call(s, Method::POST, "/api/v1/workspaces/small/backup-policies", &c.admin, Some(policy.clone()), &[]).await;
    assert_eq!(status, 403);
    let member = token(s, "bob", "acme", &["db"], &[]);
    let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces/db/backup-storages", &member, Some(storage.clone()), &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "members are not workspace admins");

    let mut bad_bucket = storage.clone();
    bad_bucket["bucket"] = json!("Bad_Bucket");
    assert_eq!(call(s, Method::POST, "/api/v1/workspaces/db/backup-storages", &c.admin, Some(bad_bucket), &[]).await.0, 400);
    let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces/db/backup-storages", &c.admin, Some(storage), &[]).await;
    assert_eq!(status, 201, "{body}");
    for (bad, field) in [
        (json!({ "schedule": "61 * * * *" }), "schedule"),
        (json!({ "storage": "nope" }), "storage"),
        (json!({ "kind": "snapshot" }), "kind"),
        (json!({ "retention_count": 0 }), "retention_count"),
    ] {
        let mut p = policy.clone();
        if let (Some(p), Some(b)) = (p.as_object_mut(), bad.as_object()) {
            p.extend(b.clone());
        }
        let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces/db/backup-policies", &c.admin, Some(p), &[]).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").starts_with(field), "{body}");
    }
    let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces/db/backup-policies", &c.admin, Some(policy), &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");

    let (_, ws, _) = call(s, Method::GET, "/api/v1/workspaces/db", &c.admin, None, &[]).await;
    let ns = format!("hx-{}", ws["data"]["id"].as_str().expect("id"));
    let host = c.host.objects().await;
    let cron = object(&host, &format!("/apis/batch/v1/namespaces/{ns}/cronjobs/backup-nightly"));
    assert_eq!(cron["spec"]["schedule"], "0 2 * * *");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["envFrom"], json!([{ "secretRef": { "name": "s3-creds" } }]));
    let key_env = container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == "BACKUP_KEY")).cloned().unwrap_or(Value::Null);
    assert_eq!(key_env["valueFrom"], json!({ "secretKeyRef": { "name": "backup-key", "key": "key" } }), "{container}");
    assert!(container["args"].to_string().contains("--encrypt"), "{container}");
    let key = object(&host, &format!("/api/v1/namespaces/{ns}/secrets/backup-key"))["stringData"]["key"].as_str().expect("key").to_owned();
    assert_eq!(key.len(), 64);

    // Three manual runs, each followed until its Job reports; retention keeps two.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (status, body, _) = call(s, Method::POST, "/api/v1/workspaces/db/backup-policies/nightly/runs", &c.admin, None, &[]).await;
        assert_eq!(status, 202, "{body}");
        let run = body["data"]["id"].as_str().expect("run").to_owned();
        let job = format!("/apis/batch/v1/namespaces/{ns}/jobs/{run}");
        eventually(20, "the backup Job", || async { c.host.objects().await.contains_key(&job) }).await;
        c.host.set_status(&job, json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] })).await;
        assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");
        runs.push(run);
    }
    let (_, list, _) = call(s, Method::GET, "/api/v1/workspaces/db/backup-policies/nightly/runs", &c.admin, None, &[]).await;
    let status_of = |id: &str| list["data"].as_array().and_then(|a| a.iter().find(|r| r["id"] == id)).map(|r| r["status"].clone());
    assert_eq!(
        [status_of(&runs[0]), status_of(&runs[1]), status_of(&runs[2])],
        [Some(json!("expired")), Some(json!("succeeded")), Some(json!("succeeded"))],
        "{list}"
    );
    let host = c.host.objects().await;
    assert!(!host.contains_key(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{}", runs[0])), "the expired run's Job is removed");

    // A failing Job fails its run, with the Job's reason.
    let (_, body, _) = call(s, Method::POST, "/api/v1/workspaces/db/backup-policies/nightly/runs", &c.admin, None, &[]).await;
    let failing = body["data"]["id"].as_str().expect("run").to_owned();
    let job = format!("/apis/batch/v1/namespaces/{ns}/jobs/{failing}");
    eventually(20, "the backup Job", || async { c.host.objects().await.contains_key(&job) }).await;
    c.host
        .set_status(
            &job,
            json!({ "failed": 3, "conditions": [{ "type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit" }] }),
        )
        .await;
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "failed");
    let (_, list, _) = call(s, Method::GET, "/api/v1/workspaces/db/backup-policies/nightly/runs", &c.admin, None, &[]).await;
    let run = list["data"].as_array().and_then(|a| a.iter().find(|r| r["id"] == failing.as_str())).cloned().expect("failed run");
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap_or("").contains("backoff limit"), "{run}");

    // Restore: only from a succeeded backup; the Job restores from that backup's location.
    let (status, body, _) = call(s, Method::POST, &format!("/api/v1/workspaces/db/backup-runs/{failing}/restore"), &c.admin, None, &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body, _) = call(s, Method::POST, &format!("/api/v1/workspaces/db/backup-runs/{}/restore", runs[2]), &c.admin, None, &[]).await;
    assert_eq!(status, 202, "{body}");
    let restore = body["data"]["id"].as_str().expect("restore").to_owned();
    let job = format!("/apis/batch/v1/namespaces/{ns}/jobs/{restore}");
    eventually(20, "the restore Job", || async { c.host.objects().await.contains_key(&job) }).await;
    let args = c.host.objects().await[&job]["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert_eq!(args[0], "restore");
    assert!(args.to_string().contains(&format!("{}/nightly/{}", ws["data"]["id"].as_str().unwrap_or(""), runs[2])), "{args}");
    c.host.set_status(&job, json!({ "succeeded": 1 })).await;
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");

    // A run the CronJob starts on its schedule is recorded from its Job, and counts for retention.
    let scheduled = "backup-nightly-29123456";
    let job = format!("/apis/batch/v1/namespaces/{ns}/jobs/{scheduled}");
    let template = c.host.objects().await[&format!("/apis/batch/v1/namespaces/{ns}/cronjobs/backup-nightly")]["spec"]["jobTemplate"].clone();
    c.host.apply(&job, json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": scheduled, "namespace": ns, "labels": template["metadata"]["labels"] }, "spec": template["spec"] })).await;
    let runs_of = || async { call(s, Method::GET, "/api/v1/workspaces/db/backup-policies/nightly/runs", &c.admin, None, &[]).await.1 };
    let find = |list: &Value, id: &str| list["data"].as_array().and_then(|a| a.iter().find(|r| r["id"] == id)).cloned();
    eventually(20, "the scheduled run recorded", || async {
        find(&runs_of().await, scheduled).is_some_and(|r| r["status"] == "running" && r["trigger"] == "schedule")
    })
    .await;
    c.host.set_status(&job, json!({ "succeeded": 1 })).await;
    eventually(20, "the scheduled run finished", || async { find(&runs_of().await, scheduled).is_some_and(|r| r["status"] == "succeeded") }).await;
    let list = runs_of().await;
    assert_eq!(find(&list, &runs[1]).map(|r| r["status"].clone()), Some(json!("expired")), "{list}");
    assert_eq!(find(&list, &runs[2]).map(|r| r["status"].clone()), Some(json!("succeeded")), "{list}");

    // The key is never in the audit log; deleting the policy removes its CronJob.
    let auditor = token(s, "carol", "acme", &[], &["auditor"]);
    eventually(20, "backup changes in the audit log", || async {
        let (_, r, _) = call(s, Method::GET, "/api/v1/audit/search?action=backup.restore&since=1h", &auditor, None, &[]).await;
        r["records"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let (_, all, _) = call(s, Method::GET, "/api/v1/audit/search?since=1h&limit=1000", &auditor, None, &[]).await;
    assert!(!all.to_string().contains(&key), "the backup key reached the audit log");
    let (status, body, _) = call(s, Method::DELETE, "/api/v1/workspaces/db/backup-policies/nightly", &c.admin, None, &[]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");
    assert!(!c.host.objects().await.contains_key(&format!("/apis/batch/v1/namespaces/{ns}/cronjobs/backup-nightly")));
    assert_eq!(call(s, Method::GET, "/api/v1/workspaces/db/backup-policies/nightly", &c.admin, None, &[]).await.0, 404);
}

/// A function server standing in for Fission's router and Knative's ingress: echoes what it
/// is sent (and whether a bearer token came along); `/…/slow` never answers in time.
async fn function_server() -> String {
    use axum::extract::Path as P;
    use axum::http::HeaderMap;
    async fn echo(P((project, function)): P<(String, String)>, headers: HeaderMap, body: String) -> axum::Json<Value> {
        if function == "slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let invoked_by = headers.get("x-hexabase-invoked-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        axum::Json(
            json!({ "project": project, "function": function, "got": body, "authorization": headers.contains_key("authorization"), "invoked_by": invoked_by }),
        )
    }
    let app = axum::Router::new().route("/{project}/{function}", axum::routing::post(echo)).route("/kn/{project}/{function}", axum::routing::post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Functions on Fission (code) and Knative (an image): the exact objects per version, new
/// versions and rollbacks, invocations recorded, env values never shown, deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_deploy_roll_back_invoke_and_delete_on_sqlite() {
    functions("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_deploy_roll_back_invoke_and_delete_on_postgres() {
    let pg = crate::support::postgres::Postgres::start();
    functions(&pg.url()).await;
}

async fn functions(database_url: &str) {
    let fn_url = function_server().await;
    let host = FakeKube::start(&[], json!([]));
    let vc = FakeKube::start(&[], json!([]));
    let extra = format!(
        "{}[control.functions]\nfission_invoke_url = \"{fn_url}/{{project}}/{{function}}\"\nknative_invoke_url = \"{fn_url}/kn/{{project}}/{{function}}\"\ninvoke_timeout_ms = 1000\n",
        control_toml(database_url, &host, &vc, 3)
    );
    let server = Server::start(ServerOptions { extra_toml: extra, ..Default::default() });
    let admin = token(&server, "alice", "acme", &[], ADMIN);
    let c = Control { server, host, vc, admin };
    let s = &c.server;
    let (_, ws, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "apps" })), &[]).await;
    assert_eq!(finished(s, &c.admin, &task_of(&ws)).await["status"], "succeeded");
    let (_, p, _) = call(s, Method::POST, "/api/v1/workspaces/apps/projects", &c.admin, Some(json!({ "name": "web" })), &[]).await;
    assert_eq!(finished(s, &c.admin, &task_of(&p)).await["status"], "succeeded");
    let base = "/api/v1/workspaces/apps/projects/web/functions";
    let member = token(s, "bob", "acme", &["apps"], &[]);

    let code_v1 = "def main():\n    return 'hello v1'\n";
    let create = json!({
        "name": "hello", "runtime": "python", "code": code_v1, "env": { "API_TOKEN": "s3cr3t-value" },
        "triggers": [{ "kind": "http" }, { "kind": "schedule", "cron": "*/5 * * * *" }, { "kind": "event", "topic": "orders.created" }],
    });
    let (status, body, _) = call(s, Method::POST, base, &member, Some(create), &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");
    let objects = c.vc.objects().await;
    let fission = |kind: &str, name: &str| format!("/apis/fission.io/v1/namespaces/web/{kind}/{name}");
    assert_eq!(object(&objects, &fission("environments", "python"))["spec"]["runtime"]["image"], "ghcr.io/fission/python-env");
    let package = object(&objects, &fission("packages", "hello-v1"));
    use base64::Engine;
    assert_eq!(package["spec"]["deployment"]["literal"], base64::engine::general_purpose::STANDARD.encode(code_v1));
    let function = object(&objects, &fission("functions", "hello"));
    assert_eq!(function["spec"]["package"]["packageref"]["name"], "hello-v1");
    assert_eq!(object(&objects, &fission("httptriggers", "hello-http-0"))["spec"]["relativeurl"], "/web/hello");
    assert_eq!(object(&objects, &fission("timetriggers", "hello-schedule-1"))["spec"]["cron"], "*/5 * * * *");
    assert_eq!(object(&objects, &fission("messagequeuetriggers", "hello-event-2"))["spec"]["topic"], "orders.created");

    let (_, got, _) = call(s, Method::GET, &format!("{base}/hello"), &member, None, &[]).await;
    assert_eq!(got["data"]["versions"][0]["env"], json!(["API_TOKEN"]));
    assert!(!got.to_string().contains("s3cr3t-value"), "env values are never returned: {got}");
    assert_eq!(got["data"]["triggers"].as_array().map(Vec::len), Some(3));

    // Invoking: the body goes through, the caller's token does not.
    let r = client().post(s.url(&format!("{base}/hello/invoke"))).bearer_auth(&member).body("ping").send().await.expect("invoke");
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.expect("json");
    assert_eq!(r["data"]["invocation"]["status"], "ok", "{r}");
    let echoed: Value = serde_json::from_str(r["data"]["body"].as_str().expect("body")).expect("echo");
    assert_eq!(
        (echoed["got"].as_str(), echoed["authorization"].as_bool(), echoed["invoked_by"].as_str()),
        (Some("ping"), Some(false), Some("bob")),
        "{echoed}"
    );

    // A new version, then back to the first; the Function follows, the Packages stay.
    let (status, v2, _) =
        call(s, Method::POST, &format!("{base}/hello/versions"), &member, Some(json!({ "code": "def main():\n    return 'v2'\n" })), &[]).await;
    assert_eq!((status, v2["data"]["active_version"].as_i64()), (202, Some(2)), "{v2}");
    assert_eq!(finished(s, &c.admin, &task_of(&v2)).await["status"], "succeeded");
    assert_eq!(c.vc.objects().await[&fission("functions", "hello")]["spec"]["package"]["packageref"]["name"], "hello-v2");
    for (to, want) in [(9, (400, "bad_request")), (2, (409, "conflict"))] {
        let (status, body, _) = call(s, Method::POST, &format!("{base}/hello/rollback"), &member, Some(json!({ "version": to })), &[]).await;
        assert_eq!((status, body["error"]["code"].as_str().unwrap_or("")), want, "{body}");
    }
    let (status, back, _) = call(s, Method::POST, &format!("{base}/hello/rollback"), &member, Some(json!({ "version": 1 })), &[]).await;
    assert_eq!(status, 202, "{back}");
    assert_eq!(finished(s, &c.admin, &task_of(&back)).await["status"], "succeeded");
    let objects = c.vc.objects().await;
    assert_eq!(objects[&fission("functions", "hello")]["spec"]["package"]["packageref"]["name"], "hello-v1");
    assert!(objects.contains_key(&fission("packages", "hello-v2")));

    // A function that does not answer in time is recorded as unreachable.
    let (status, body, _) =
        call(s, Method::POST, base, &member, Some(json!({ "name": "slow", "runtime": "nodejs", "code": "module.exports = async () => {}" })), &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");
    let (status, r, _) = call(s, Method::POST, &format!("{base}/slow/invoke"), &member, Some(json!({})), &[]).await;
    assert_eq!((status, r["data"]["invocation"]["status"].as_str()), (200, Some("unreachable")), "{r}");
    let (_, invs, _) = call(s, Method::GET, &format!("{base}/hello/invocations"), &member, None, &[]).await;
    assert_eq!(
        (invs["data"][0]["status"].as_str(), invs["data"][0]["version"].as_i64(), invs["data"][0]["invoked_by"].as_str()),
        (Some("ok"), Some(1), Some("bob")),
        "{invs}"
    );

    // Knative: an image as a Service whose revision is the version.
    let (status, body, _) = call(s, Method::POST, base, &member, Some(json!({ "name": "api", "runtime": "container", "provider": "knative", "image": "ghcr.io/acme/api:1", "triggers": [{ "kind": "schedule", "cron": "@hourly" }] })), &[]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(finished(s, &c.admin, &task_of(&body)).await["status"], "succeeded");
    let objects = c.vc.objects().await;
    let svc = object(&objects, "/apis/serving.knative.dev/v1/namespaces/web/services/api");
    assert_eq!((svc["spec"]["template"]["metadata"]["name"].as_str(), svc["spec"]["traffic"][0]["percent"].as_i64()), (Some("api-v1"), Some(100)));
    assert_eq!(object(&objects, "/apis/sources.knative.dev/v1/namespaces/web/pingsources/api-schedule-0")["spec"]["schedule"], "@hourly");
    let (_, r, _) = call(s, Method::POST, &format!("{base}/api/invoke"), &member, Some(json!({ "x": 1 })), &[]).await;
    assert_eq!(r["data"]["invocation"]["status"], "ok", "{r}");

    // Refused: mismatched runtime and provider, a stranger, code over the limit.
    let (status, body, _) =
        call(s, Method::POST, base, &member, Some(json!({ "name": "bad", "runtime": "python", "provider": "knative", "code": "x" })), &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let stranger = token(s, "mallory", "acme", &["other"], &[]);
    assert_eq!(call(s, Method::GET, base, &stranger, None, &[]).await.0, 404);
    let (status, _, _) = call(s, Method::POST, base, &member, Some(json!({ "name": "big", "runtime": "python", "code": "x".repeat(300_000) })), &[]).await;
    assert_eq!(status, 400);

    // Deleting removes the function's objects; the shared Environment stays.
    let (status, d, _) = call(s, Method::DELETE, &format!("{base}/hello"), &member, None, &[]).await;
    assert_eq!(status, 202, "{d}");
    assert_eq!(finished(s, &c.admin, &task_of(&d)).await["status"], "succeeded");
    let objects = c.vc.objects().await;
    let left: Vec<&String> = objects.keys().filter(|k| k.contains("/fission.io/") && k.contains("hello")).collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(objects.contains_key(&fission("environments", "python")));
    assert_eq!(call(s, Method::GET, &format!("{base}/hello"), &member, None, &[]).await.0, 404);
}

/// A project's CronJobs, read from the vCluster, and their executions, recorded so that the
/// history outlives the Jobs Kubernetes cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_history_outlives_its_jobs() {
    let c = start("", 3);
    let s = &c.server;
    let (_, ws, _) = call(s, Method::POST, "/api/v1/workspaces", &c.admin, Some(json!({ "name": "apps" })), &[]).await;
    assert_eq!(finished(s, &c.admin, &task_of(&ws)).await["status"], "succeeded");
    let (_, p, _) = call(s, Method::POST, "/api/v1/workspaces/apps/projects", &c.admin, Some(json!({ "name": "web" })), &[]).await;
    assert_eq!(finished(s, &c.admin, &task_of(&p)).await["status"], "succeeded");
    let base = "/apis/batch/v1/namespaces/web";
    c.vc.apply(&format!("{base}/cronjobs/report"), json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "report", "namespace": "web" }, "spec": { "schedule": "0 * * * *", "jobTemplate": {} }, "status": { "lastScheduleTime": "2026-12-01T10:00:00Z" } })).await;
    let owned = json!([{ "apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": "u1" }]);
    for (name, owner, status) in [
        ("report-100", owned.clone(), json!({ "startTime": "2026-12-01T09:00:00Z", "completionTime": "2026-12-01T09:00:07Z", "succeeded": 1 })),
        (
            "report-101",
            owned.clone(),
            json!({ "startTime": "2026-12-01T10:00:00Z", "failed": 1, "conditions": [{ "type": "Failed", "status": "True", "message": "BackoffLimitExceeded" }] }),
        ),
        ("other-1", json!([{ "kind": "CronJob", "name": "other" }]), json!({ "succeeded": 1 })),
    ] {
        let path = format!("{base}/jobs/{name}");
        c.vc.apply(
            &path,
            json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name, "namespace": "web", "ownerReferences": owner }, "spec": {} }),
        )
        .await;
        c.vc.set_status(&path, status).await;
    }
    let member = token(s, "bob", "acme", &["apps"], &[]);
    let (status, list, _) = call(s, Method::GET, "/api/v1/workspaces/apps/projects/web/cronjobs", &member, None, &[]).await;
    assert_eq!((status, list["data"][0]["name"].as_str(), list["data"][0]["schedule"].as_str()), (200, Some("report"), Some("0 * * * *")), "{list}");
    let history = "/api/v1/workspaces/apps/projects/web/cronjobs/report/executions";
    let (_, first, _) = call(s, Method::GET, history, &member, None, &[]).await;
    let want = json!([
        { "job": "report-101", "status": "failed", "started": "2026-12-01T10:00:00Z", "finished": "", "message": "BackoffLimitExceeded" },
        { "job": "report-100", "status": "succeeded", "started": "2026-12-01T09:00:00Z", "finished": "2026-12-01T09:00:07Z" },
    ]);
    assert_eq!(first["data"], want, "{first}");
    // Kubernetes cleans the Jobs up; the history stays.
    for name in ["report-100", "report-101"] {
        let r = client().delete(format!("{}{base}/jobs/{name}", c.vc.url)).bearer_auth(crate::support::kube::KUBE_TOKEN).send().await.expect("delete");
        assert!(r.status().is_success());
    }
    let (_, later, _) = call(s, Method::GET, history, &member, None, &[]).await;
    assert_eq!(later["data"], want);
    let stranger = token(s, "mallory", "acme", &["other"], &[]);
    assert_eq!(call(s, Method::GET, history, &stranger, None, &[]).await.0, 404);
}
