//! The dashboard's search API over HTTP, on both backends: identity from the token only, the
//! tenant wall under hostile input, paging, terms against an oracle computed from the fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{Value, json};

use crate::ingest_api::post_logs;
use crate::support::fixtures::{Source, ndjson, vector_events};
use crate::support::{ClickHouse, Server, ServerOptions, TOKEN_ALL, client, eventually};

/// `dataplane token` on the server's configuration (the development issuer).
pub fn token(server: &Server, user: &str, org: &str, workspaces: &[&str], roles: &[&str]) -> String {
    token_full(server, user, org, workspaces, &[], roles)
}

pub fn token_with_groups(server: &Server, user: &str, org: &str, workspaces: &[&str], groups: &[&str]) -> String {
    token_full(server, user, org, workspaces, groups, &[])
}

fn token_full(server: &Server, user: &str, org: &str, workspaces: &[&str], groups: &[&str], roles: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dataplane"));
    cmd.args(["token", "--config"]).arg(server.data_dir.join("test-config.toml")).args(["--user", user, "--org", org, "--ttl", "10m"]);
    for w in workspaces {
        cmd.args(["--workspace", w]);
    }
    for g in groups {
        cmd.args(["--group", g]);
    }
    for r in roles {
        cmd.args(["--role", r]);
    }
    let out = cmd.output().expect("dataplane token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

pub async fn get(server: &Server, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().get(server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).expect("encode")[2..].to_owned()
}

pub fn ids(body: &Value) -> Vec<String> {
    body["lines"]
        .as_array()
        .map(|a| a.iter().map(|l| l["message"].as_str().unwrap_or("").split(' ').next().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

fn prefixes(body: &Value) -> BTreeSet<String> {
    ids(body).iter().map(|i| i.split('-').next().unwrap_or("").to_owned()).collect()
}

/// Four tenants' rows: acme/ws-a/shop (`a`), acme/ws-a/billing (`b`), acme/ws-b/web (`c`),
/// and globex/ws-a/shop (`g`: another organisation with a workspace of the same name).
async fn load(server: &Server) -> BTreeMap<&'static str, Vec<Value>> {
    let sets = BTreeMap::from([
        ("a", vector_events(&Source::new("acme", "ws-a", "shop"), "a", 60)),
        ("b", vector_events(&Source::new("acme", "ws-a", "billing"), "b", 40)),
        ("c", vector_events(&Source::new("acme", "ws-b", "web"), "c", 30)),
        ("g", vector_events(&Source::new("globex", "ws-a", "shop"), "g", 50)),
    ]);
    for events in sets.values() {
        let (s, body) = post_logs(server, TOKEN_ALL, ndjson(events), None).await;
        assert_eq!(s, 200, "{body}");
    }
    let root = token(server, "root", "acme", &["ws-a", "ws-b"], &[]);
    eventually(60, "acme's 130 rows searchable", || {
        let root = root.clone();
        async move { get(server, "/api/v1/logs/search?since=1h&limit=1000", Some(&root), &[]).await.1["lines"].as_array().map_or(0, Vec::len) == 130 }
    })
    .await;
    let gary = token(server, "gary", "globex", &["ws-a"], &[]);
    eventually(60, "globex's 50 rows searchable", || {
        let gary = gary.clone();
        async move { get(server, "/api/v1/logs/search?since=1h&limit=1000", Some(&gary), &[]).await.1["lines"].as_array().map_or(0, Vec::len) == 50 }
    })
    .await;
    sets
}

async fn scoped_search(server: Server) {
    let sets = load(&server).await;
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let gary = token(&server, "gary", "globex", &["ws-a"], &[]);

    // Alice sees acme's ws-a (both projects), nothing of ws-b, nothing of globex's ws-a.
    let (s, body) = get(&server, "/api/v1/logs/search?since=1h&limit=1000", Some(&alice), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(ids(&body).len(), 100);
    assert_eq!(prefixes(&body), BTreeSet::from(["a".into(), "b".into()]));
    let ts: Vec<i64> = body["lines"].as_array().unwrap().iter().map(|l| l["timestamp_ns"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let (_, body) = get(&server, "/api/v1/logs/search?since=1h&limit=1000", Some(&gary), &[]).await;
    assert_eq!(prefixes(&body), BTreeSet::from(["g".into()]));

    // Hints from the request grant nothing; hostile text stays text.
    let hostile_headers: [(&str, &str); 4] =
        [("x-scope-orgid", "globex"), ("impersonate-user", "root"), ("impersonate-group", "system:masters"), ("x-hexabase-org", "globex")];
    let hostile_queries = [
        "q=".to_owned() + &enc("' OR 1=1 --"),
        "q=".to_owned() + &enc("\") OR (1=1"),
        "q=".to_owned() + &enc("/.*/"),
        "q=".to_owned() + &enc("x'; DROP TABLE logs; --"),
        "level=".to_owned() + &enc("info') OR ('1'='1"),
        "application=".to_owned() + &enc("cart' OR workspace != '"),
        "project=".to_owned() + &enc("shop,billing,web"),
        "pod=".to_owned() + &enc("*"),
        "q=".to_owned() + &enc("{workspace=~\".*\"}"),
        "q=%00%ff".to_owned(),
    ];
    for q in &hostile_queries {
        for h in [&hostile_headers[..], &[]] {
            let (s, body) = get(&server, &format!("/api/v1/logs/search?since=1h&limit=1000&{q}"), Some(&alice), h).await;
            assert!(s == 200 || s == 400, "{q}: {s} {body}");
            assert!(prefixes(&body).is_subset(&BTreeSet::from(["a".into(), "b".into()])), "{q} leaked: {body}");
            if s == 200 {
                for l in body["lines"].as_array().unwrap() {
                    assert_eq!(l["workspace"], "ws-a", "{q}");
                }
            } else {
                assert_eq!(body["error"]["code"], "invalid_query", "{q}: {body}");
            }
            let (s, body) = get(&server, &format!("/api/v1/logs/histogram?since=1h&{q}"), Some(&alice), h).await;
            assert!(s == 200 || s == 400, "{q}: {s} {body}");
            let total: u64 = body["totals"].as_object().map_or(0, |t| t.values().filter_map(Value::as_u64).sum());
            assert!(total <= 100, "{q}: histogram counted other tenants' rows: {body}");
        }
    }
    // Naming a workspace outside the token: 403, the same answer whether it exists or not.
    for ws in ["ws-b", "ws-nowhere"] {
        let (s, body) = get(&server, &format!("/api/v1/logs/search?since=1h&workspace={ws}"), Some(&alice), &[]).await;
        assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
        let (s, _) = get(&server, &format!("/api/v1/logs/histogram?since=1h&workspace={ws}"), Some(&alice), &[]).await;
        assert_eq!(s, 403);
    }

    // Filters.
    let (_, body) = get(&server, "/api/v1/logs/search?since=1h&limit=1000&project=shop", Some(&alice), &[]).await;
    assert_eq!((ids(&body).len(), prefixes(&body)), (60, BTreeSet::from(["a".into()])));
    let (_, body) = get(&server, "/api/v1/logs/search?since=1h&limit=1000&project=shop,billing", Some(&alice), &[]).await;
    assert_eq!((ids(&body).len(), prefixes(&body)), (100, BTreeSet::from(["a".into(), "b".into()])));
    // Levels, one and several (the stores compare one value and look several up), against the
    // levels of every line Alice sees.
    let (_, all) = get(&server, "/api/v1/logs/search?since=1h&limit=1000", Some(&alice), &[]).await;
    let mut by_level: BTreeMap<String, usize> = BTreeMap::new();
    for l in all["lines"].as_array().expect("lines") {
        *by_level.entry(l["level"].as_str().expect("level").to_owned()).or_default() += 1;
    }
    let seen = by_level.keys().next().expect("a level").clone();
    let other = ["error", "warn", "info"].into_iter().find(|l| !by_level.contains_key(*l)).unwrap_or("fatal").to_owned();
    for chosen in [vec![&seen], vec![&other], vec![&seen, &other]] {
        let q = chosen.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(",");
        let (s, body) = get(&server, &format!("/api/v1/logs/search?since=1h&limit=1000&level={q}"), Some(&alice), &[]).await;
        assert_eq!(s, 200, "{body}");
        let want: usize = chosen.iter().map(|l| by_level.get(*l).copied().unwrap_or(0)).sum();
        assert_eq!(ids(&body).len(), want, "level={q}");
        assert!(body["lines"].as_array().unwrap().iter().all(|l| chosen.iter().any(|c| l["level"] == c.as_str())), "level={q}");
    }

    // Terms, against an oracle computed from the fixtures.
    let visible: Vec<&Value> = sets["a"].iter().chain(&sets["b"]).collect();
    let msg = |e: &Value| e["message"].as_str().unwrap().to_owned();
    for (q, want) in [
        ("block", Box::new(|m: &str| m.to_ascii_lowercase().contains("block")) as Box<dyn Fn(&str) -> bool>),
        ("-block", Box::new(|m: &str| !m.to_ascii_lowercase().contains("block"))),
        ("\"packetresponder 1\"", Box::new(|m: &str| m.to_ascii_lowercase().contains("packetresponder 1"))),
        ("/blk_-[0-9]+/ info", Box::new(|m: &str| m.contains("blk_-") && m.to_ascii_lowercase().contains("info"))),
    ] {
        let expected = visible.iter().filter(|e| want(&msg(e))).count();
        let (s, body) = get(&server, &format!("/api/v1/logs/search?since=1h&limit=1000&q={}", enc(q)), Some(&alice), &[]).await;
        assert_eq!(s, 200, "{q}: {body}");
        assert_eq!(ids(&body).len(), expected, "{q}");
        let (_, h) = get(&server, &format!("/api/v1/logs/histogram?since=1h&q={}", enc(q)), Some(&alice), &[]).await;
        let total: u64 = h["totals"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
        assert_eq!(total as usize, expected, "{q}: {h}");
        if let Some(l) = body["lines"].as_array().unwrap().first()
            && !q.starts_with('-')
        {
            assert!(!l["highlights"].as_array().unwrap().is_empty(), "{q}: {l}");
        }
    }

    // A found line, field by field, against the event it was ingested from; its highlights
    // point at the searched word.
    let (_, body) = get(&server, "/api/v1/logs/search?since=1h&limit=5&q=block", Some(&alice), &[]).await;
    let lines = body["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 5, "{body}");
    for l in lines {
        let m = l["message"].as_str().expect("message");
        let e = visible.iter().find(|e| msg(e) == m).unwrap_or_else(|| panic!("no event has {m}"));
        let k = &e["kubernetes"];
        assert_eq!(
            (&l["workspace"], &l["project"], &l["pod"], &l["container"], &l["node"], &l["stream"]),
            (&json!("ws-a"), &k["pod_namespace"], &k["pod_name"], &k["container_name"], &k["pod_node_name"], &e["stream"]),
            "{l}"
        );
        let ns: i64 = l["timestamp_ns"].as_str().expect("timestamp_ns as text").parse().expect("nanoseconds");
        assert_eq!((l["timestamp"].as_str(), ns), (e["timestamp"].as_str(), crate::support::fixtures::parse_rfc3339(e["timestamp"].as_str().unwrap())), "{l}");
        assert!(l["level"].as_str().is_some_and(|v| !v.is_empty()) && l["trace_id"].is_string() && l["application"].is_string(), "{l}");
        let attrs = l["attributes"].as_object().expect("attributes as an object");
        assert!(attrs.values().all(Value::is_string), "{l}");
        assert_eq!(attrs.get("kubernetes.container_image"), Some(&k["container_image"]), "{l}");
        let h = l["highlights"].as_array().expect("highlights");
        assert!(!h.is_empty(), "{l}");
        for span in h {
            let (a, b) = (span[0].as_u64().expect("start") as usize, span[1].as_u64().expect("end") as usize);
            assert_eq!(m[a..b].to_ascii_lowercase(), "block", "{l}");
        }
    }

    // Paging back in time: every row once, in order.
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/logs/search?since=1h&limit=30&cursor={c}"),
            None => "/api/v1/logs/search?since=1h&limit=30".into(),
        };
        let (s, body) = get(&server, &path, Some(&alice), &[]).await;
        assert_eq!(s, 200, "{body}");
        seen.extend(ids(&body));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen.len(), 100, "{seen:?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 100, "no row twice");

    // Context around a hit: earlier lines and the hit onwards, in time order, same pod, in scope.
    let (_, body) = get(&server, "/api/v1/logs/search?since=1h&limit=1000&project=shop", Some(&alice), &[]).await;
    let lines = body["lines"].as_array().unwrap();
    let hit = &lines[30];
    let (ts, pod) = (hit["timestamp_ns"].as_str().unwrap(), hit["pod"].as_str().unwrap());
    let (s, ctx) = get(&server, &format!("/api/v1/logs/context?timestamp={ts}&pod={pod}&project=shop&before=5&after=5"), Some(&alice), &[]).await;
    assert_eq!(s, 200, "{ctx}");
    let stamps = |k: &str| -> Vec<i64> { ctx[k].as_array().unwrap().iter().map(|l| l["timestamp_ns"].as_str().unwrap().parse().unwrap()).collect() };
    let (before, after) = (stamps("before"), stamps("after"));
    let t: i64 = ts.parse().unwrap();
    assert_eq!((before.len(), after.len()), (5, 5), "{ctx}");
    assert!(before.windows(2).all(|w| w[0] <= w[1]) && after.windows(2).all(|w| w[0] <= w[1]), "time order: {ctx}");
    assert!(before.iter().all(|b| *b < t) && after.iter().all(|a| *a >= t), "{ctx}");
    assert_eq!(ctx["after"][0]["message"], hit["message"], "the hit comes first after");
    let expected_before: Vec<i64> = lines[31..36].iter().rev().map(|l| l["timestamp_ns"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(before, expected_before, "the five lines just before the hit");
    for k in ["before", "after"] {
        for l in ctx[k].as_array().unwrap() {
            assert_eq!((l["workspace"].as_str(), l["pod"].as_str()), (Some("ws-a"), Some(pod)), "{l}");
        }
    }
    // Another organisation asking about the same moment sees only its own lines.
    let (s, other) = get(&server, &format!("/api/v1/logs/context?timestamp={ts}&before=50&after=50"), Some(&gary), &[]).await;
    assert_eq!(s, 200, "{other}");
    for k in ["before", "after"] {
        assert!(prefixes(&json!({ "lines": other[k] })).is_subset(&BTreeSet::from(["g".into()])), "{other}");
    }
    let (s, body) = get(&server, "/api/v1/logs/context?before=5", Some(&alice), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    let (s, body) = get(&server, &format!("/api/v1/logs/context?timestamp={ts}&before=501"), Some(&alice), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("limit_exceeded")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_scoped_to_the_callers_tenants_on_the_embedded_store() {
    scoped_search(Server::start(ServerOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_scoped_to_the_callers_tenants_on_clickhouse() {
    let ch = ClickHouse::start();
    scoped_search(Server::start(ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() })).await;
}

#[test]
fn config_check_names_a_wrong_auth_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["config", "check"])
        .env("DATAPLANE_AUTH__ISSUER", "https://login.example.com")
        .env("DATAPLANE_AUTH__ALGORITHMS", r#"["none"]"#)
        .output()
        .expect("dataplane config check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.algorithms"), "{err}");
}

/// An HS256 token of the development issuer for alice in `ws-a`, with an `org_id` entry per
/// element of `orgs` (a payload serde would never write from a map, so entries are written one
/// by one).
fn sign_with_orgs(secret: &[u8], orgs: &[&str]) -> String {
    struct Claims<'a>(&'a [&'a str]);
    impl serde::Serialize for Claims<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("iss", auth::DEV_ISSUER)?;
            m.serialize_entry("aud", "dataplane")?;
            m.serialize_entry("sub", "alice")?;
            for org in self.0 {
                m.serialize_entry("org_id", org)?;
            }
            m.serialize_entry("workspaces", &["ws-a"])?;
            m.serialize_entry("exp", &(now + 600))?;
            m.end()
        }
    }
    auth::jwt_crypto::install();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &Claims(orgs), &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_bad_queries_get_clear_errors() {
    let server = Server::start(ServerOptions::default());
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let (s, body) = get(&server, "/api/v1/logs/search", None, &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    for bad in [forged.as_str(), "not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."] {
        let (s, body) = get(&server, "/api/v1/logs/search", Some(bad), &[]).await;
        assert_eq!((s, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{bad}: {body}");
    }
    // Correctly signed by the server's own issuer, but naming the organisation twice: refused,
    // whichever of the two a parser would keep.
    let secret = std::fs::read_to_string(server.data_dir.join("dev-token-secret")).expect("the development secret");
    let (s, body) = get(&server, "/api/v1/logs/search", Some(&sign_with_orgs(secret.trim().as_bytes(), &["acme"])), &[]).await;
    assert_eq!(s, 200, "the same token with one organisation is good: {body}");
    let (s, body) = get(&server, "/api/v1/logs/search", Some(&sign_with_orgs(secret.trim().as_bytes(), &["acme", "globex"])), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    for (q, code) in [
        ("limit=0", "limit_exceeded"),
        ("limit=100000", "limit_exceeded"),
        ("limit=many", "invalid_query"),
        ("from=yesterday", "invalid_query"),
        ("since=40d", "limit_exceeded"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "invalid_query"),
        ("q=%22unclosed", "invalid_query"),
        ("q=%2F(a%2F", "invalid_query"),
        // A regex bomb: refused before it runs.
        ("q=%2F(%5Cw%7B100%7D)%7B100%7D%2F", "invalid_query"),
        ("cursor=garbage!", "invalid_query"),
        ("step=0s", "invalid_query"),
    ] {
        let path = if q.starts_with("step") { format!("/api/v1/logs/histogram?{q}") } else { format!("/api/v1/logs/search?{q}") };
        let (s, body) = get(&server, &path, Some(&alice), &[]).await;
        assert_eq!((s, body["error"]["code"].as_str()), (400, Some(code)), "{q}: {body}");
    }
}
