//! Grafana's Prometheus datasource through the data plane, in front of a real Prometheus 2.42
//! that scrapes real targets on loopback under three tenants' labels: acme/ws-a (job `a`),
//! acme/ws-b (job `b`) and globex/ws-a (job `g`, the same workspace name in another
//! organisation). Each caller asks through the proxy; hostile PromQL never returns or counts
//! another tenant's series. Without an upstream, the data plane evaluates PromQL over the
//! samples Prometheus remote-wrote to it, and must answer as that Prometheus does.

use serde_json::Value;

use crate::query_api::token;
use crate::support::{ClickHouse, Prometheus, Server, ServerOptions, client, eventually, free_port};

struct Setup {
    server: Server,
    prometheus: Prometheus,
}

fn start() -> Setup {
    start_with("")
}

fn start_with(extra: &str) -> Setup {
    let port = free_port();
    let server = Server::start(ServerOptions { extra_toml: format!("[prometheus]\nupstream = \"http://127.0.0.1:{port}/\"\n{extra}"), ..Default::default() });
    let target = |job: &str, org: &str, ws: &str, ns: &str| {
        format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n        labels: {{ organization: {org}, workspace: {ws}, namespace: {ns} }}\n",
            addr = server.addr
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}{}",
        target("a", "acme", "ws-a", "shop"),
        target("b", "acme", "ws-b", "web"),
        target("g", "globex", "ws-a", "shop")
    );
    let prometheus = Prometheus::start(port, &config, &[]);
    Setup { server, prometheus }
}

async fn get(url: &str, token: Option<&str>, params: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().get(format!("{url}?{}", serde_urlencoded::to_string(params).unwrap()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    // Status 0: no connection (the upstream still starting, or stopped).
    let Ok(resp) = req.send().await else { return (0, Value::Null) };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until the upstream has scraped every job a few times.
async fn scraped(p: &Prometheus) {
    eventually(60, "Prometheus scraped the three jobs", || async {
        let (_, v) = get(&p.url("/api/v1/query"), None, &[("query", "count(count_over_time(up[1m]) >= 3)")]).await;
        v["data"]["result"][0]["value"][1] == "3"
    })
    .await;
}

/// The (organization, workspace, job) labels of every series in a result; `-` where absent.
fn tenants(v: &Value) -> Vec<(String, String, String)> {
    let label = |m: &Value, k: &str| m[k].as_str().unwrap_or("-").to_owned();
    v["data"]["result"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| (label(&s["metric"], "organization"), label(&s["metric"], "workspace"), label(&s["metric"], "job")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_only_its_own_series_whatever_the_promql() {
    let s = start();
    scraped(&s.prometheus).await;
    let url = s.server.url("/prometheus/api/v1/query");
    let alice = token(&s.server, "alice", "acme", &["ws-a"], &[]);

    let (status, v) = get(&url, Some(&alice), &[("query", "up")]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(tenants(&v), [("acme".into(), "ws-a".into(), "a".into())]);

    // Hostile PromQL: each answer holds only acme/ws-a series (or series without tenant labels,
    // from aggregations), and counts only them.
    let hostile = [
        r#"{__name__=~".+"}"#,
        r#"up{workspace=~".*"}"#,
        r#"up{workspace=~"ws-.*", organization=~".+"}"#,
        r#"up{workspace="ws-b"}"#,
        r#"{job="b"}"#,
        r#"up{job=~"a|b|g"}"#,
        r#"up{workspace!="ws-a"}"#,
        r#"up{organization="globex"}"#,
        "up or on() vector(1)",
        r#"up unless up{workspace="ws-b"}"#,
        "sum by (organization, workspace, job) (up)",
        r#"absent(up{workspace="ws-b"})"#,
        r#"max_over_time(up{job="g"}[1m:1s])"#,
        r#"sum by (job) (rate(scrape_samples_scraped{job!="a"}[1m]))"#,
        r#"label_replace(up, "copied", "$1", "workspace", "(.*)")"#,
    ];
    for q in hostile {
        let (status, v) = get(&url, Some(&alice), &[("query", q)]).await;
        assert_eq!(status, 200, "{q}: {v}");
        for (org, ws, job) in tenants(&v) {
            assert!(org == "acme" || org == "-", "{q} leaked organization {org}: {v}");
            assert!(ws == "ws-a" || ws == "-", "{q} leaked workspace {ws}: {v}");
            assert!(job == "a" || job == "-", "{q} leaked job {job}: {v}");
        }
    }
    // Counting: only the caller's one `up` series is counted, whatever the matchers say.
    for q in ["count(up)", r#"count({__name__="up", workspace=~".+"})"#, r#"count(up or up{organization="globex"})"#, "count(count_over_time(up[1m:1s]))"] {
        let (_, v) = get(&url, Some(&alice), &[("query", q)]).await;
        assert_eq!(v["data"]["result"][0]["value"][1], "1", "{q}: {v}");
    }
    // Writing a tenancy label is refused, with Prometheus's error shape and our code.
    for q in [r#"label_replace(up, "workspace", "ws-b", "", "")"#, r#"count_values("workspace", up)"#] {
        let (status, v) = get(&url, Some(&alice), &[("query", q)]).await;
        assert_eq!((status, v["status"].as_str(), v["code"].as_str()), (403, Some("error"), Some("forbidden")), "{q}: {v}");
    }

    // The same workspace name in another organisation is another tenant.
    let gina = token(&s.server, "gina", "globex", &["ws-a"], &[]);
    let (_, v) = get(&url, Some(&gina), &[("query", r#"{__name__="up"}"#)]).await;
    assert_eq!(tenants(&v), [("globex".into(), "ws-a".into(), "g".into())]);
    // Two workspaces: both, and nothing of the other organisation.
    let both = token(&s.server, "bob", "acme", &["ws-a", "ws-b"], &[]);
    let (_, v) = get(&url, Some(&both), &[("query", "up")]).await;
    let mut seen = tenants(&v);
    seen.sort();
    assert_eq!(seen, [("acme".into(), "ws-a".into(), "a".into()), ("acme".into(), "ws-b".into(), "b".into())]);
    // No workspace at all: empty answers, not errors.
    let nobody = token(&s.server, "nobody", "acme", &[], &[]);
    let (status, v) = get(&url, Some(&nobody), &[("query", r#"{__name__=~".+"}"#)]).await;
    assert_eq!((status, v["data"]["result"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_calls_are_answered_and_scoped() {
    let s = start();
    scraped(&s.prometheus).await;
    let api = |p: &str| s.server.url(&format!("/prometheus/api/v1/{p}"));
    let alice = token(&s.server, "alice", "acme", &["ws-a"], &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (start, end) = ((now - 60).to_string(), now.to_string());

    // Grafana's health check.
    let (status, v) = get(&api("query"), Some(&alice), &[("query", "1+1")]).await;
    assert_eq!((status, v["data"]["resultType"].as_str(), v["data"]["result"][1].as_str()), (200, Some("scalar"), Some("2")), "{v}");

    // A range query, sent as Grafana sends it (a form POST).
    let form = [("query", r#"sum by (workspace) (rate(scrape_samples_scraped{workspace=~".+"}[30s]))"#), ("start", &start), ("end", &end), ("step", "5")];
    let resp = client()
        .post(api("query_range"))
        .bearer_auth(&alice)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(tenants(&v), [("-".into(), "ws-a".into(), "-".into())], "{v}");

    // Series, label names and label values: only the caller's.
    let (status, v) = get(&api("series"), Some(&alice), &[("match[]", r#"{__name__="up"}"#), ("match[]", r#"up{job="g"}"#), ("start", &start)]).await;
    assert_eq!(status, 200, "{v}");
    let jobs: Vec<&str> = v["data"].as_array().unwrap().iter().map(|s| s["job"].as_str().unwrap()).collect();
    assert_eq!(jobs, ["a"]);
    let (_, v) = get(&api("label/job/values"), Some(&alice), &[]).await;
    assert_eq!(v["data"], serde_json::json!(["a"]));
    let (_, v) = get(&api("label/organization/values"), Some(&alice), &[("match[]", r#"{organization=~".+"}"#)]).await;
    assert_eq!(v["data"], serde_json::json!(["acme"]));
    let (_, v) = get(&api("labels"), Some(&alice), &[]).await;
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(names.contains(&"workspace") && names.contains(&"job"), "{v}");
    let (status, v) = get(&api("series"), Some(&alice), &[]).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_query")), "series needs match[]: {v}");

    // Metadata only for metric names the caller has series of: none for a caller without any.
    let (status, v) = get(&api("metadata"), Some(&alice), &[]).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"].as_object().is_some_and(|m| m.keys().any(|k| k.starts_with("dataplane_"))), "{v}");
    let nobody = token(&s.server, "nobody", "acme", &["ws-z"], &[]);
    let (_, v) = get(&api("metadata"), Some(&nobody), &[]).await;
    assert_eq!(v["data"], serde_json::json!({}), "{v}");

    // Exemplars (none stored) and build info answer in Prometheus's shape.
    let (status, v) = get(&api("query_exemplars"), Some(&alice), &[("query", "up"), ("start", &start), ("end", &end)]).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("success")), "{v}");
    let (status, v) = get(&api("status/buildinfo"), Some(&alice), &[]).await;
    assert_eq!((status, v["data"]["version"].as_str().map(|s| s.starts_with('2'))), (200, Some(true)), "{v}");
    let (_, v) = get(&api("rules"), Some(&alice), &[]).await;
    assert_eq!(v["data"]["groups"], serde_json::json!([]));

    // Every query is in the audit log, with the query as the caller wrote it and its series.
    let admin = token(&s.server, "root", "acme", &[], &["org-admin"]);
    let audit = s.server.url("/api/v1/audit/search");
    eventually(60, "Prometheus queries audited", || async {
        let (_, v) = get(&audit, Some(&admin), &[("since", "1h"), ("action", "prometheus.query_range")]).await;
        v["records"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["actor"] == "alice" && r["query"].as_str().is_some_and(|q| q.contains("scrape_samples_scraped")) && r["attributes"]["rows"] == "1")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_prometheus_shaped_errors_with_a_code() {
    let s = start_with("[query]\nmax_series = 5\n");
    let url = s.server.url("/prometheus/api/v1/query");
    let alice = token(&s.server, "alice", "acme", &["ws-a"], &[]);
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, "up".into(), 401, "unauthenticated"),
        (Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."), "up".into(), 401, "unauthenticated"),
        (Some(&alice), "sum(".into(), 400, "invalid_query"),
        (Some(&alice), r#"up{workspace=~"("}"#.into(), 400, "invalid_query"),
        (Some(&alice), vec!["up"; 2_000].join(" + "), 400, "limit_exceeded"),
        (Some(&alice), format!("{}up{}", "(".repeat(3_000), ")".repeat(3_000)), 400, "limit_exceeded"),
        (Some(&alice), "info(up)".into(), 400, "invalid_query"),
    ];
    for (tok, q, status, code) in cases {
        let (got, v) = get(&url, tok, &[("query", &q)]).await;
        assert_eq!((got, v["code"].as_str(), v["status"].as_str()), (status, Some(code), Some("error")), "{}: {v}", &q[..q.len().min(40)]);
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (status, v) =
        get(&s.server.url("/prometheus/api/v1/query_range"), Some(&alice), &[("query", "up"), ("start", "0"), ("end", "1790000000"), ("step", "1h")]).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("limit_exceeded")), "{v}");
    // Too many series in the answer: refused whole, never cut short.
    scraped(&s.prometheus).await;
    let (status, v) = get(&url, Some(&alice), &[("query", r#"{__name__=~".+"}"#)]).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("limit_exceeded")), "{v}");
    let (status, _) = get(&url, Some(&alice), &[("query", "count({__name__=~\".+\"})")]).await;
    assert_eq!(status, 200);
    // An upstream that is down is a 503 to retry, not a hang or a 500.
    drop(s.prometheus);
    let (status, v) = get(&url, Some(&alice), &[("query", "up")]).await;
    assert_eq!((status, v["code"].as_str(), v["errorType"].as_str()), (503, Some("unavailable"), Some("unavailable")), "{v}");
}

/// Compares two Prometheus `matrix` answers: the same series, the same points, values equal
/// within floating-point tolerance.
fn same_matrix(q: &str, ours: &Value, theirs: &Value) {
    let by_labels = |v: &Value| -> std::collections::BTreeMap<String, Vec<(f64, String)>> {
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{q}: no matrix in {v}"))
            .iter()
            .map(|s| {
                (s["metric"].to_string(), s["values"].as_array().unwrap().iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_owned())).collect())
            })
            .collect()
    };
    let (a, b) = (by_labels(ours), by_labels(theirs));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{q}: series differ\nours:   {ours}\ntheirs: {theirs}");
    for (k, pa) in &a {
        let pb = &b[k];
        assert_eq!(pa.iter().map(|p| p.0).collect::<Vec<_>>(), pb.iter().map(|p| p.0).collect::<Vec<_>>(), "{q}: timestamps of {k} differ");
        for ((t, x), (_, y)) in pa.iter().zip(pb) {
            let (x, y): (f64, f64) = (x.replace("+Inf", "inf").parse().unwrap(), y.replace("+Inf", "inf").parse().unwrap());
            let close = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-9);
            assert!(close, "{q}: {k} at {t}: ours {x}, Prometheus {y}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_promql_matches_a_real_prometheus_on_the_same_samples() {
    native_matches_prometheus(Server::start(ServerOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_promql_matches_a_real_prometheus_on_clickhouse() {
    let ch = ClickHouse::start();
    native_matches_prometheus(Server::start(ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() })).await;
}

/// No upstream: the data plane answers PromQL from its own stored samples, which a real
/// Prometheus remote-writes to it from its scrapes; the same Prometheus answers the same
/// queries from its own TSDB.
async fn native_matches_prometheus(server: Server) {
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dataplane\n    static_configs:\n      - targets: ['{addr}']\n        labels: {{ workspace: ws-a }}\n\
         \x20 - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels: {{ workspace: ws-a }}\n\
         remote_write:\n  - url: http://{addr}/api/v1/write\n    authorization:\n      type: Bearer\n      credentials: {token}\n    queue_config:\n      batch_send_deadline: 1s\n",
        addr = server.addr,
        token = crate::support::TOKEN_WS_A
    );
    let prometheus = Prometheus::start(port, &config, &[]);
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let ours = |p: &str| server.url(&format!("/prometheus/api/v1/{p}"));
    // 30 s of scrapes, all of them stored on our side too.
    eventually(90, "30 s of samples on both sides", || async {
        let q = [("query", "count_over_time(up{job=\"prometheus\"}[40s])")];
        let (_, theirs) = get(&prometheus.url("/api/v1/query"), None, &q).await;
        let (_, mine) = get(&ours("query"), Some(&alice), &q).await;
        let n = |v: &Value| v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        n(&theirs) >= 30.0 && n(&mine) >= 30.0
    })
    .await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    // Well behind now, so every sample of the range has been remote-written.
    let (start, end) = (format!("{:.3}", now - 28.0), format!("{:.3}", now - 8.0));
    let queries = [
        "up",
        r#"up{job="prometheus"}"#,
        "rate(prometheus_http_requests_total[10s])",
        "increase(prometheus_tsdb_head_samples_appended_total[15s])",
        "irate(process_cpu_seconds_total[10s])",
        "delta(process_resident_memory_bytes[10s])",
        "avg_over_time(scrape_samples_scraped[10s])",
        "max_over_time(scrape_duration_seconds[10s]) - min_over_time(scrape_duration_seconds[10s])",
        "count_over_time(up[10s])",
        "sum_over_time(up[5s])",
        "quantile_over_time(0.5, scrape_duration_seconds[10s])",
        "last_over_time(process_open_fds[5s])",
        "changes(process_open_fds[10s])",
        "resets(prometheus_http_requests_total[10s])",
        "sum by (job) (up)",
        "count without (instance) (up)",
        "max by (job) (process_resident_memory_bytes)",
        "avg(scrape_samples_scraped)",
        "topk(1, process_resident_memory_bytes)",
        "sum(rate(scrape_samples_scraped[10s])) by (job)",
        "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[15s])))",
        "histogram_quantile(0.5, rate(prometheus_tsdb_compaction_chunk_size_bytes_bucket[15s]))",
        "process_resident_memory_bytes / on(job, instance) process_virtual_memory_bytes",
        "process_resident_memory_bytes / ignoring(job) process_virtual_memory_bytes",
        "rate(process_cpu_seconds_total[10s]) * 100",
        "1 - up",
        "up == 1",
        "up > bool 0",
        "scrape_samples_scraped > 10",
        "up and on(job) process_open_fds",
        r#"up unless up{job="prometheus"}"#,
        r#"up{job="dataplane"} or up"#,
        "clamp_max(process_open_fds, 10)",
        "abs(-up)",
        "absent(nonexistent_metric)",
        r#"absent(up{job="nope"})"#,
        "vector(1) + 2",
        "scalar(sum(up)) * up",
        "time() - time()",
        r#"label_replace(up, "host", "$1", "instance", "(.*):.*")"#,
        r#"label_replace(up, "job", "", "job", "data.*")"#,
        r#"label_join(up, "both", "/", "job", "instance")"#,
        "process_open_fds * on(job, instance) group_left(version) prometheus_build_info",
        "up * on(job) group_right() prometheus_http_requests_total",
        "sum by (job, code) (rate(prometheus_http_requests_total[10s])) / on(job) group_left() sum by (job) (rate(prometheus_http_requests_total[10s]))",
        "max_over_time(rate(prometheus_http_requests_total[5s])[10s:1s])",
        "avg_over_time(up[10s:2s])",
        "count_over_time(scrape_duration_seconds[15s:3s] offset 2s)",
        "max_over_time(up[20s:])",
    ];
    let mut empty = Vec::new();
    for q in queries {
        let form = [("query", q), ("start", start.as_str()), ("end", end.as_str()), ("step", "2")];
        let (s1, mine) = get(&ours("query_range"), Some(&alice), &form).await;
        let (s2, theirs) = get(&prometheus.url("/api/v1/query_range"), None, &form).await;
        assert_eq!((s1, s2), (200, 200), "{q}:\nours:   {mine}\ntheirs: {theirs}");
        same_matrix(q, &mine, &theirs);
        if theirs["data"]["result"].as_array().is_none_or(Vec::is_empty) {
            empty.push(q);
        }
    }
    // The comparison means something only where there is something to compare.
    assert!(empty.len() <= 2, "empty answers: {empty:?}");
    let (status, v) = get(&ours("query"), Some(&alice), &[("query", r#"label_replace(up, "workspace", "ws-b", "", "")"#)]).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    // Instant queries answer the same too.
    for q in ["sum by (job) (rate(prometheus_http_requests_total[10s]))", "up", "vector(3)", "1 + 1"] {
        let form = [("query", q), ("time", end.as_str())];
        let (_, mine) = get(&ours("query"), Some(&alice), &form).await;
        let (_, theirs) = get(&prometheus.url("/api/v1/query"), None, &form).await;
        assert_eq!(mine["data"]["resultType"], theirs["data"]["resultType"], "{q}: {mine} {theirs}");
        let norm = |v: &Value| -> Vec<(String, f64)> {
            let mut r: Vec<(String, f64)> = match &v["data"]["result"] {
                Value::Array(a) if v["data"]["resultType"] == "vector" => {
                    a.iter().map(|s| (s["metric"].to_string(), s["value"][1].as_str().unwrap().parse().unwrap())).collect()
                }
                other => vec![(String::new(), other[1].as_str().unwrap().parse().unwrap())],
            };
            r.sort_by(|a, b| a.0.cmp(&b.0));
            r
        };
        let (a, b) = (norm(&mine), norm(&theirs));
        assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>(), "{q}: {mine} {theirs}");
        for ((_, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()), "{q}: ours {x}, Prometheus {y}");
        }
    }
    // The index endpoints, from the stored series.
    let (_, v) = get(&ours("label/job/values"), Some(&alice), &[]).await;
    assert_eq!(v["data"], serde_json::json!(["dataplane", "prometheus"]), "{v}");
    let (_, v) = get(&ours("series"), Some(&alice), &[("match[]", "up")]).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    // Another tenant sees none of it; what is not supported says so.
    let other = token(&server, "bob", "acme", &["ws-b"], &[]);
    let (_, v) = get(&ours("query"), Some(&other), &[("query", r#"{__name__=~".+"}"#)]).await;
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    let (status, v) = get(&ours("query"), Some(&alice), &[("query", "predict_linear(up[1m], 60)")]).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_query")), "{v}");
    // Hostile input gets an answer or a clear 400, never a 500 or a dropped connection.
    let deep = vec!["up"; 3_000].join("+");
    for q in [
        "up offset 100000000y",
        "rate(up[999999999y])",
        "up @ 1e30",
        "histogram_quantile(NaN, up)",
        "topk(-1, up)",
        "topk(1e30, up)",
        "up / 0",
        "count_values(\"x\", up)",
        deep.as_str(),
    ] {
        let (status, v) = get(&ours("query"), Some(&alice), &[("query", q)]).await;
        assert!(status == 200 || (status == 400 && v["code"].is_string()), "{}: {status} {v}", &q[..q.len().min(40)]);
    }
}
