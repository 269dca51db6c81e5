//! SQL for Grafana's ClickHouse datasource, on the real ClickHouse engine: three tenants' rows
//! (acme/ws-a, acme/ws-b, globex/ws-a: the same workspace name in another organisation); each
//! caller's SQL, hostile or not, reads or counts only their own rows, or is refused with a code.

use serde_json::Value;

use crate::ingest_api::post_logs;
use crate::query_api::token;
use crate::support::fixtures::{Source, ndjson, now_ns, vector_events};
use crate::support::{ClickHouse, Server, ServerOptions, TOKEN_ALL, client, eventually};

async fn sql(server: &Server, token: &str, query: &str, format: &str) -> (u16, String) {
    let url = format!("{}?default_format={format}", server.url("/sql/"));
    let resp = client().post(url).bearer_auth(token).body(query.to_owned()).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_only_the_callers_rows_and_refuses_the_rest() {
    let ch = ClickHouse::start();
    let server = Server::start(ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() });
    let mut events = Vec::new();
    for (org, ws, n) in [("acme", "ws-a", 5), ("acme", "ws-b", 7), ("globex", "ws-a", 11)] {
        events.extend(vector_events(&Source::new(org, ws, "shop"), &format!("{org}-{ws}"), n));
    }
    let (status, body) = post_logs(&server, TOKEN_ALL, ndjson(&events), None).await;
    assert_eq!(status, 200, "{body}");
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    eventually(60, "rows stored", || async { sql(&server, &alice, "SELECT count() FROM logs", "TabSeparated").await.1.trim() == "5" }).await;

    // Whatever the SQL says, the caller's 5 rows are all it sees or counts.
    for q in [
        "SELECT count() FROM logs",
        "SELECT count() FROM hexabase.logs",
        "SELECT count() FROM logs WHERE 1 = 1 OR org_id != ''",
        "SELECT count() FROM logs WHERE workspace = 'ws-b' OR org_id = 'globex' OR 1",
        "SELECT count() FROM (SELECT * FROM logs UNION ALL SELECT * FROM hexabase.logs WHERE org_id = 'globex')",
        "SELECT count() FROM logs -- WHERE org_id = 'acme'\n",
        "SELECT count() FROM logs /* OR 1=1 */",
        "SELECT count() FROM `logs` AS l WHERE l.workspace IN (SELECT workspace FROM logs)",
    ] {
        let (status, body) = sql(&server, &alice, q, "TabSeparated").await;
        assert_eq!(status, 200, "{q}: {body}");
        let n: u64 = body.trim().lines().map(|l| l.parse::<u64>().unwrap_or(0)).sum();
        assert!(n == 5 || n == 10, "{q}: counted {body}");
        if !q.contains("UNION") {
            assert_eq!(n, 5, "{q}");
        }
    }
    let (_, body) = sql(&server, &alice, "SELECT DISTINCT org_id, workspace FROM logs ORDER BY workspace", "JSONEachRow").await;
    assert_eq!(body.trim(), r#"{"org_id":"acme","workspace":"ws-a"}"#);
    // The same workspace name in another organisation is another tenant.
    let gina = token(&server, "gina", "globex", &["ws-a"], &[]);
    let (_, body) = sql(&server, &gina, "SELECT count() FROM logs", "TabSeparated").await;
    assert_eq!(body.trim(), "11");
    // A caller of no workspace: no rows, not an error.
    let nobody = token(&server, "nobody", "acme", &[], &[]);
    let (status, body) = sql(&server, &nobody, "SELECT count() FROM logs", "TabSeparated").await;
    assert_eq!((status, body.trim()), (200, "0"));

    // Refused, with a code: other tables, table functions, files and the network, writes, DDL,
    // settings, several statements, placeholders.
    for q in [
        "SELECT * FROM system.users",
        "SELECT name FROM system.parts",
        "SELECT * FROM hexabase.audit_logs",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT file('/etc/passwd')",
        "SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')",
        "SELECT * FROM remote('127.0.0.1', hexabase.logs)",
        "SELECT * FROM logs SETTINGS readonly = 0",
        "SELECT 1; DROP TABLE hexabase.logs",
        "DROP TABLE hexabase.logs",
        "INSERT INTO hexabase.logs (message) VALUES ('x')",
        "ALTER TABLE hexabase.logs DELETE WHERE 1",
        "SELECT * FROM logs WHERE org_id = {org:String}",
        "SELECT * FROM logs UNION ALL SELECT * FROM system.query_log",
        "SET readonly = 0",
    ] {
        let (status, body) = sql(&server, &alice, q, "TabSeparated").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!((400..500).contains(&status) && v["error"]["code"].is_string(), "{q}: {status} {body}");
    }
    // Grafana's query builder browses a catalog of our two tables only.
    for (q, want) in [
        ("SHOW DATABASES", "hexabase"),
        ("SHOW TABLES FROM \"hexabase\"", "logs\nmetrics"),
        ("SELECT name FROM system.tables ORDER BY name", "logs\nmetrics"),
        ("SELECT count() > 5, countIf(name = 'message') FROM system.columns WHERE table = 'logs'", "1\t1"),
    ] {
        let (status, body) = sql(&server, &alice, q, "TabSeparated").await;
        assert_eq!((status, body.trim()), (200, want), "{q}");
    }
    let (status, body) = sql(&server, &alice, "DESC TABLE \"hexabase\".\"logs\"", "TabSeparated").await;
    assert!(status == 200 && body.lines().any(|l| l.starts_with("message\tString")), "{status} {body}");
    // Request settings other than the format are refused too.
    let url = format!("{}?readonly=0&max_rows_to_read=1", server.url("/sql/"));
    let resp = client().post(url).bearer_auth(&alice).body("SELECT count() FROM logs").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    // No token, no answer; the rows are still all there.
    let resp = client().post(server.url("/sql/")).body("SELECT count() FROM logs").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let root = token(&server, "root", "acme", &["ws-a", "ws-b"], &[]);
    let (_, body) = sql(&server, &root, "SELECT workspace, count() FROM logs GROUP BY workspace ORDER BY workspace", "TabSeparated").await;
    assert_eq!(body.trim(), "ws-a\t5\nws-b\t7");
    let _ = now_ns();

    // The second wall, in the engine: a statement that reached storage unscoped (as if the check
    // had missed a table) still reads only the caller's rows, and nothing of a table it was not
    // scoped for.
    let settings = auth::AuthConfig::default().validate(&server.data_dir).unwrap();
    let id = auth::TokenVerifier::new(settings).unwrap().verify(&alice, None).await.unwrap();
    let gate = auth::Gate::new(std::sync::Arc::new(auth::StaticPolicy::members_read_all()), "platform-operator", Vec::new());
    let scope = gate.logs(&id, None, None).await.unwrap();
    // Grants of single projects: the wall's (workspace, project) pairs, one pair here.
    let project = |p: &str| std::collections::BTreeSet::from([p.to_owned()]);
    let shop = gate.logs(&id, None, Some(&project("shop"))).await.unwrap();
    let billing = gate.logs(&id, None, Some(&project("billing"))).await.unwrap();
    let store = ch.store();
    let ask =
        |sql: &str, logs: Option<auth::TenantScope>| storage::SqlRead { sql: sql.into(), logs, metrics: None, format: "TabSeparated".into(), timeout_secs: 10 };
    for (sql, logs, want) in [
        ("SELECT count() FROM hexabase.logs", Some(scope.clone()), "5"),
        ("SELECT count() FROM hexabase.logs WHERE org_id = 'globex' OR 1", Some(scope.clone()), "5"),
        ("SELECT count() FROM (SELECT * FROM hexabase.logs UNION ALL SELECT * FROM hexabase.logs)", Some(scope.clone()), "10"),
        ("SELECT count() FROM hexabase.logs", None, "0"),
        ("SELECT count() FROM hexabase.audit_logs", Some(scope.clone()), "0"),
        ("SELECT count() FROM hexabase.logs", Some(shop), "5"),
        ("SELECT count() FROM hexabase.logs WHERE 1", Some(billing), "0"),
    ] {
        let got = storage::Store::sql(&store, &ask(sql, logs)).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got).trim(), want, "{sql}");
    }
    // A scope of one whole workspace and one namespace of another (the wall's alternatives
    // joined by OR): ws-b's rows are all in `shop`, so granting `billing` there adds none.
    let root_id = auth::TokenVerifier::new(auth::AuthConfig::default().validate(&server.data_dir).unwrap()).unwrap().verify(&root, None).await.unwrap();
    for (ns_b, want) in [("shop", "12"), ("billing", "5")] {
        let grant = |workspace: &str, ns: &str| auth::StaticGrant {
            users: vec!["root".into()],
            groups: Vec::new(),
            workspace: workspace.into(),
            namespaces: vec![ns.into()],
        };
        let policy = auth::StaticPolicy { members_read_all: false, grants: vec![grant("ws-a", "*"), grant("ws-b", ns_b)] };
        let mixed = auth::Gate::new(std::sync::Arc::new(policy), "platform-operator", Vec::new()).logs(&root_id, None, None).await.unwrap();
        for sql in ["SELECT count() FROM hexabase.logs", "SELECT count() FROM hexabase.logs WHERE workspace = 'ws-b' OR 1"] {
            let got = storage::Store::sql(&store, &ask(sql, Some(mixed.clone()))).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&got).trim(), want, "{sql} with ws-b/{ns_b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_on_the_embedded_store_says_what_it_needs() {
    let server = Server::start(ServerOptions::default());
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let (status, body) = sql(&server, &alice, "SELECT count() FROM logs", "TabSeparated").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    assert!(v["error"]["message"].as_str().unwrap().contains("clickhouse"), "{body}");
}
