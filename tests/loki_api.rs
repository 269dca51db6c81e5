//! Grafana's Loki API over HTTP, on both backends: LogQL answers compared with an oracle that
//! applies Loki's documented semantics to the fixture rows, every endpoint Grafana and Logs
//! Drilldown call, and the tenant wall under hostile LogQL.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::ingest_api::post_logs;
use crate::query_api::token;
use crate::support::fixtures::{Source, loghub_lines, ndjson, now_ns, vector_event};
use crate::support::{ClickHouse, Server, ServerOptions, TOKEN_ALL, client, eventually};

const S: i64 = 1_000_000_000;

/// One fixture row as the oracle sees it.
#[derive(Clone, Debug)]
struct Row {
    tenant: char,
    pod: String,
    ts: i64,
    level: &'static str,
    line: String,
    /// `json`, `logfmt` or `plain`.
    kind: &'static str,
    status: u32,
}

/// Rows for four tenants, 10 s apart from `t0`: acme/ws-a/shop (`a`, two pods), acme/ws-a/billing
/// (`b`), acme/ws-b/web (`c`), and globex/ws-a/shop (`g`, same workspace, project and pod names
/// as `a`). A third of the lines are JSON, a third logfmt, a third Loghub text; every line
/// carries `tenant=<x>` so a leak shows in the text.
fn rows(t0: i64) -> Vec<(Source, Row)> {
    let loghub = loghub_lines();
    let mut out = Vec::new();
    for (tenant, org, ws, project, n) in
        [('a', "acme", "ws-a", "shop", 36), ('b', "acme", "ws-a", "billing", 18), ('c', "acme", "ws-b", "web", 12), ('g', "globex", "ws-a", "shop", 24)]
    {
        for i in 0..n {
            let (app, pod) = if i % 2 == 0 { ("api", "api-1") } else { ("worker", "worker-1") };
            let status = if i % 4 == 0 { 500 } else { 200 };
            let (kind, line, level) = match i % 3 {
                // A JSON field named like a tenancy label must not pose as one.
                0 => (
                    "json",
                    json!({ "msg": format!("tenant={tenant} request done"), "status": status, "method": "GET", "latency_ms": i, "workspace": "ws-b" })
                        .to_string(),
                    if status == 500 { "error" } else { "info" },
                ),
                1 => ("logfmt", format!("tenant={tenant} msg=\"slow call\" dur={}.5 status={status}", i % 5), "warn"),
                _ => ("plain", format!("tenant={tenant} {}", loghub[i % loghub.len()]), "info"),
            };
            let src = Source { org: Some(org.into()), workspace: Some(ws.into()), project: project.into(), app: app.into(), pod: pod.into() };
            out.push((src, Row { tenant, pod: pod.into(), ts: t0 + i as i64 * 10 * S, level, line, kind, status }));
        }
    }
    out
}

async fn load(server: &Server, t0: i64) -> Vec<Row> {
    let rows = rows(t0);
    let events: Vec<Value> = rows
        .iter()
        .map(|(src, r)| {
            let mut e = vector_event(src, "x", "", r.ts);
            e["message"] = json!(r.line);
            e["level"] = json!(r.level);
            e
        })
        .collect();
    let (s, body) = post_logs(server, TOKEN_ALL, ndjson(&events), None).await;
    assert_eq!(s, 200, "{body}");
    let root = token(server, "root", "acme", &["ws-a", "ws-b"], &[]);
    let gary = token(server, "gary", "globex", &["ws-a"], &[]);
    for (tok, want) in [(root, 66), (gary, 24)] {
        eventually(60, "fixture rows queryable", || {
            let tok = tok.clone();
            async move {
                let (_, b) = loki(server, "/loki/api/v1/index/stats", &tok, &[("query", "{}"), ("start", &(t0 - 60 * S).to_string())]).await;
                b["entries"].as_u64() == Some(want)
            }
        })
        .await;
    }
    rows.into_iter().map(|(_, r)| r).collect()
}

/// GET with Loki parameters.
async fn loki(server: &Server, path: &str, tok: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let resp = client().get(server.url(&format!("{path}?{}", qs(params)))).bearer_auth(tok).send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn qs(params: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(params).expect("encode")
}

/// Every `tenant=<x>` in a response.
fn tenants_in(v: &Value) -> BTreeSet<char> {
    let text = v.to_string();
    text.match_indices("tenant=").filter_map(|(i, _)| text[i + 7..].chars().next()).collect()
}

/// The entries of a `streams` result: (stream labels, timestamp, line).
fn entries(body: &Value) -> Vec<(BTreeMap<String, String>, i64, String)> {
    let mut out = Vec::new();
    for s in body["data"]["result"].as_array().unwrap_or(&Vec::new()) {
        let labels: BTreeMap<String, String> = serde_json::from_value(s["stream"].clone()).unwrap();
        for v in s["values"].as_array().unwrap() {
            out.push((labels.clone(), v[0].as_str().unwrap().parse().unwrap(), v[1].as_str().unwrap().to_owned()));
        }
    }
    out
}

/// A matrix result as series labels → (seconds, value) points.
fn matrix(body: &Value) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
    assert_eq!(body["data"]["resultType"], "matrix", "{body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = serde_json::from_value(s["metric"].clone()).unwrap();
            let points = s["values"].as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_str().unwrap().parse().unwrap())).collect();
            (labels, points)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn loki_api(server: Server) {
    // Minute-aligned, well inside the last hour.
    let t0 = (now_ns() - 30 * 60 * S) / (60 * S) * (60 * S);
    let all = load(&server, t0).await;
    let alice = token(&server, "alice", "acme", &["ws-a"], &[]);
    let (start, end) = ((t0 - 60 * S).to_string(), (t0 + 10 * 60 * S).to_string());
    let range =
        |q: &str| -> Vec<(&'static str, String)> { vec![("query", q.to_owned()), ("start", start.clone()), ("end", end.clone()), ("limit", "1000".into())] };
    let ask = |params: Vec<(&'static str, String)>| {
        let alice = alice.clone();
        let server = &server;
        async move {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            loki(server, "/loki/api/v1/query_range", &alice, &p).await
        }
    };
    let visible: Vec<&Row> = all.iter().filter(|r| r.tenant == 'a' || r.tenant == 'b').collect();
    let shop: Vec<&Row> = all.iter().filter(|r| r.tenant == 'a').collect();

    // Log queries against the oracle.
    type Pred = Box<dyn Fn(&Row) -> bool>;
    let cases: Vec<(&'static str, Pred)> = vec![
        (r#"{project="shop"}"#, Box::new(|r: &Row| r.tenant == 'a')),
        (r#"{workspace="ws-a"}"#, Box::new(|r: &Row| r.tenant == 'a' || r.tenant == 'b')),
        (r#"{project=~"shop|billing", pod="api-1"}"#, Box::new(|r: &Row| (r.tenant == 'a' || r.tenant == 'b') && r.pod == "api-1")),
        (r#"{project!="shop"}"#, Box::new(|r: &Row| r.tenant == 'b')),
        (r#"{project="shop"} |= "slow call""#, Box::new(|r: &Row| r.tenant == 'a' && r.line.contains("slow call"))),
        // Line filters are case-sensitive.
        (r#"{project="shop"} |= "SLOW CALL""#, Box::new(|r: &Row| r.tenant == 'a' && r.line.contains("SLOW CALL"))),
        (
            r#"{project="shop"} != "tenant=a msg" |~ "request|slow""#,
            Box::new(|r: &Row| r.tenant == 'a' && !r.line.contains("tenant=a msg") && (r.line.contains("request") || r.line.contains("slow"))),
        ),
        (r#"{project="shop"} | json | status >= 500"#, Box::new(|r: &Row| r.tenant == 'a' && r.kind == "json" && r.status >= 500)),
        (
            r#"{project="shop"} | logfmt | dur > 2 and status == 200"#,
            Box::new(|r: &Row| {
                r.tenant == 'a' && r.kind == "logfmt" && r.status == 200 && r.line.contains("dur=") && {
                    let d: f64 = r.line.split("dur=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
                    d > 2.0
                }
            }),
        ),
        (r#"{project="shop"} | json | __error__="""#, Box::new(|r: &Row| r.tenant == 'a' && r.kind == "json")),
        // logfmt reads JSON lines leniently (Loki 3: malformed pairs skipped, no error);
        // `--strict` marks them.
        (r#"{project="shop"} |= "request done" | logfmt | __error__="""#, Box::new(|r: &Row| r.tenant == 'a' && r.kind == "json")),
        (r#"{project="shop"} |= "request done" | logfmt --strict | __error__="LogfmtParserErr""#, Box::new(|r: &Row| r.tenant == 'a' && r.kind == "json")),
        (r#"{project="shop"} |= "tenant=a msg" | logfmt --strict --keep-empty | __error__="""#, Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt")),
        // logfmt with extractions: only `status`, as `code`; `msg` is not extracted.
        (
            r#"{project="shop"} | logfmt code="status", dur | code="500" and msg="" | __error__="""#,
            Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt" && r.status == 500),
        ),
        // unpack reads Promtail's packed lines only (a JSON object with `_entry`): the fixture's
        // JSON lines are not packed, so they give no labels (packed ones are checked below).
        (r#"{project="shop"} | unpack | method="GET""#, Box::new(|_: &Row| false)),
        (r#"{project="shop"} | unpack | workspace="ws-b""#, Box::new(|_: &Row| false)),
        // Pattern match filters (Loki 3, what Logs Drilldown's pattern view adds): a pattern
        // ending in a literal must end the line; `!>` keeps the lines it does not match.
        (
            r#"{project="shop"} |> "tenant=<_> msg=\"slow call\" dur=<_> status=500""#,
            Box::new(|r: &Row| {
                r.tenant == 'a' && r.line.starts_with("tenant=") && r.line.contains(" msg=\"slow call\" dur=") && r.line.ends_with(" status=500")
            }),
        ),
        // sprig's arithmetic in label_format (the label's text read as a number).
        (
            r#"{project="shop"} | logfmt | label_format next=`{{ add .status 1 }}`, half=`{{ round (divf .status 4) 1 }}` | next="501" and half="125""#,
            Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt" && r.status == 500),
        ),
        // A function that fails while rendering (a division by zero) marks the line, as Loki does.
        (
            r#"{project="shop"} |= "slow call" | logfmt | label_format q=`{{ div .status 0 }}` | __error__="TemplateFormatErr""#,
            Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt"),
        ),
        // toDate reads a Go layout.
        (
            r#"{project="shop"} | json | label_format day=`{{ toDate "2006-01-02T15:04:05Z07:00" "2024-03-05T23:30:00-02:00" | date "Jan 2" }}` | day="Mar 6""#,
            Box::new(|r: &Row| r.tenant == 'a'),
        ),
        // Ending in a literal that the line goes on after: no match (Loki's rule, not a search).
        (r#"{project="shop"} |> "tenant=a msg=<_> dur=<_>.5""#, Box::new(|_: &Row| false)),
        (
            r#"{project="shop"} |= "tenant=a msg" !> "<_> status=200""#,
            Box::new(|r: &Row| {
                r.tenant == 'a' && r.line.contains("tenant=a msg") && !r.line.find(" status=200").is_some_and(|j| j > 0 && j + 11 == r.line.len())
            }),
        ),
        // ip(): lines holding an address of 10.251.0.0/16 (the HDFS lines' data nodes).
        (
            r#"{project="shop"} |= ip("10.251.0.0/16")"#,
            Box::new(|r: &Row| {
                r.tenant == 'a' && r.line.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|w| w.starts_with("10.251.") && w.matches('.').count() == 3)
            }),
        ),
        (
            r#"{project="shop"} |= "blk_" != ip("10.251.0.0-10.251.255.255")"#,
            Box::new(|r: &Row| {
                r.tenant == 'a'
                    && r.line.contains("blk_")
                    && !r.line.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|w| w.starts_with("10.251.") && w.matches('.').count() == 3)
            }),
        ),
        // A duration filter reads the label as a Go duration (`3.5s` > `2.5s`); a value that is
        // not one (`s`, where the line has no `dur`) is a LabelFilterErr, kept as in Loki.
        (
            r#"{project="shop"} | logfmt | label_format took="{{.dur}}s" | took > 2.5s and took <= 4500ms | __error__="""#,
            Box::new(|r: &Row| {
                r.tenant == 'a' && r.kind == "logfmt" && {
                    let d: f64 = r.line.split("dur=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
                    d > 2.5
                }
            }),
        ),
        (r#"{project="shop"} | level="error""#, Box::new(|r: &Row| r.tenant == 'a' && r.level == "error")),
        // The JSON field `workspace` becomes `workspace_extracted`; the stream label is ws-a.
        (r#"{project="shop"} | json | workspace="ws-b""#, Box::new(|_: &Row| false)),
        (r#"{project="shop"} | json | workspace_extracted="ws-b""#, Box::new(|r: &Row| r.tenant == 'a' && r.kind == "json")),
        // pattern: a leading literal must open the line (JSON and plain lines extract nothing).
        (
            r#"{project="shop"} | pattern "tenant=<t> msg=\"<m>\" dur=<_> status=<st>" | st="500" and m="slow call""#,
            Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt" && r.status == 500),
        ),
        (
            r#"{project="shop"} | regexp `dur=(?P<d>[0-9]+)\.5` | d >= 3"#,
            Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt" && r.line.split("dur=").nth(1).unwrap().starts_with(['3', '4'])),
        ),
        (
            r#"{project="shop"} | logfmt | label_format code=status | code="500" | status="""#,
            Box::new(|r: &Row| r.tenant == 'a' && r.kind == "logfmt" && r.status == 500),
        ),
    ];
    for (q, want) in &cases {
        let (s, body) = ask(range(q)).await;
        assert_eq!(s, 200, "{q}: {body}");
        assert_eq!(body["status"], "success");
        assert_eq!(body["data"]["resultType"], "streams");
        let got: BTreeSet<(i64, String)> = entries(&body).into_iter().map(|(_, t, l)| (t, l)).collect();
        let expected: BTreeSet<(i64, String)> = all.iter().filter(|r| want(r)).map(|r| (r.ts, r.line.clone())).collect();
        assert_eq!(got, expected, "{q}");
        assert!(tenants_in(&body).is_subset(&BTreeSet::from(['a', 'b'])), "{q} leaked: {body}");
    }

    // unpack on packed lines (packed here by line_format, as Promtail's `pack` writes them):
    // the string fields come back as labels, a `workspace` field cannot pose as the stream's
    // (`workspace_extracted`), and `_entry` becomes the line.
    let packed = r#"{project="shop"} |= "request done" | json | line_format `{"_entry":"{{.msg}}","workspace":"ws-b","verb":"{{.method}}"}` | unpack | verb="GET" and workspace_extracted="ws-b" and workspace="ws-a""#;
    let (s, body) = ask(range(packed)).await;
    assert_eq!(s, 200, "{body}");
    let got: BTreeSet<(i64, String)> = entries(&body).into_iter().map(|(_, t, l)| (t, l)).collect();
    let want: BTreeSet<(i64, String)> = shop.iter().filter(|r| r.kind == "json").map(|r| (r.ts, "tenant=a request done".to_owned())).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "{body}");

    // distinct: the first line of each status, in the query's direction (backward: newest).
    for (direction, newest) in [("backward", true), ("forward", false)] {
        let mut p = range(r#"{project="shop"} |= "slow call" | logfmt | distinct status"#);
        p.push(("direction", direction.into()));
        let (s, body) = ask(p).await;
        assert_eq!(s, 200, "{body}");
        let got: BTreeSet<i64> = entries(&body).into_iter().map(|(_, t, _)| t).collect();
        let mut want = BTreeMap::new();
        for r in shop.iter().filter(|r| r.kind == "logfmt") {
            let e = want.entry(r.status).or_insert(r.ts);
            *e = if newest { (*e).max(r.ts) } else { (*e).min(r.ts) };
        }
        assert_eq!(want.len(), 2);
        assert_eq!(got, want.into_values().collect::<BTreeSet<_>>(), "{direction}: {body}");
    }

    // A pattern filter is checked here, but storage looks for its literals: only the lines
    // holding all of them are read.
    let (_, body) = ask(range(r#"{project="shop"} |> "tenant=<_> msg=\"slow call\" dur=<_> status=500""#)).await;
    let holding = shop.iter().filter(|r| ["tenant=", " msg=\"slow call\" dur=", " status=500"].iter().all(|l| r.line.contains(l))).count();
    assert!(holding > 0 && holding < shop.len());
    assert_eq!(body["data"]["stats"]["summary"]["totalLinesProcessed"], holding, "{body}");

    // Stream labels come from columns; direction and limit; line_format; drop.
    let (_, body) = ask(range(r#"{project="shop", pod="api-1"}"#)).await;
    let e = entries(&body);
    let l = &e[0].0;
    assert_eq!((l["workspace"].as_str(), l["project"].as_str(), l["application"].as_str(), l["service_name"].as_str()), ("ws-a", "shop", "api", "api"));
    assert!(e.iter().all(|(l, _, _)| l["pod"] == "api-1" && l["container"] == "app"));
    let mut p = range(r#"{project="shop"}"#);
    p[3].1 = "5".into();
    let (_, back) = ask(p.clone()).await;
    let newest: Vec<i64> = shop.iter().map(|r| r.ts).rev().take(5).collect();
    let mut got: Vec<i64> = entries(&back).iter().map(|(_, t, _)| *t).collect();
    got.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got, newest, "backward: the newest five");
    p.push(("direction", "forward".into()));
    let (_, fwd) = ask(p).await;
    let mut got: Vec<i64> = entries(&fwd).iter().map(|(_, t, _)| *t).collect();
    got.sort_unstable();
    assert_eq!(got, shop.iter().map(|r| r.ts).take(5).collect::<Vec<_>>(), "forward: the oldest five");
    // Forward paging through a pipeline that filters most rows (pages past the first).
    let (_, body) = ask(vec![
        ("query", r#"{workspace="ws-a"} | json | status >= 500"#.into()),
        ("start", start.clone()),
        ("end", end.clone()),
        ("limit", "4".into()),
        ("direction", "forward".into()),
    ])
    .await;
    let mut want: Vec<i64> = visible.iter().filter(|r| r.kind == "json" && r.status >= 500).map(|r| r.ts).collect();
    want.sort_unstable();
    let mut got: Vec<i64> = entries(&body).iter().map(|(_, t, _)| *t).collect();
    got.sort_unstable();
    assert_eq!(got, want[..4.min(want.len())].to_vec());
    let (_, body) = ask(range(r#"{project="shop"} | json | line_format "{{.method}} {{.status}} {{.pod}}" | drop latency_ms"#)).await;
    let e = entries(&body);
    assert!(e.iter().any(|(_, _, line)| line == "GET 500 api-1"), "{body}");
    assert!(e.iter().all(|(l, _, _)| !l.contains_key("latency_ms")) && e.iter().any(|(l, _, _)| l.contains_key("method")), "{body}");
    // Template functions, pipelines and conditions, as Go's templates render them.
    let (s, body) = ask(range(
        r#"{project="shop"} | json | __error__="" | line_format `{{ if eq .status "500" }}{{ .method | lower }} FAILED{{ else }}{{ printf "%s ok in %03d" .method (len .msg) }}{{ end }}`"#,
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    let mut got: Vec<(i64, String)> = entries(&body).into_iter().map(|(_, t, l)| (t, l)).collect();
    got.sort();
    let want: Vec<(i64, String)> = shop
        .iter()
        .filter(|r| r.kind == "json")
        .map(|r| (r.ts, if r.status == 500 { "get FAILED".to_owned() } else { format!("GET ok in {:03}", "tenant=a request done".len()) }))
        .collect();
    assert_eq!(got, want, "{body}");
    // decolorize: colours a line_format put around each line are taken out again.
    let coloured = format!(r#"{{project="shop"}} |= "slow call" | line_format "{esc}[1;31m{{{{__line__}}}}{esc}[0m" | decolorize"#, esc = '\u{1b}');
    let (s, body) = ask(range(&coloured)).await;
    assert_eq!(s, 200, "{body}");
    let got: BTreeSet<String> = entries(&body).into_iter().map(|(_, _, l)| l).collect();
    let want: BTreeSet<String> = shop.iter().filter(|r| r.line.contains("slow call")).map(|r| r.line.clone()).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "{body}");
    // Times in templates: the line's time through a Go layout.
    let (s, body) = ask(range(r#"{project="shop", pod="api-1"} |= "slow call" | line_format `{{ __timestamp__ | date "15:04:05" }} {{ .pod }}`"#)).await;
    assert_eq!(s, 200, "{body}");
    let got: BTreeSet<String> = entries(&body).into_iter().map(|(_, _, l)| l).collect();
    let clock = |ns: i64| {
        let s = (ns / S).rem_euclid(86_400);
        format!("{:02}:{:02}:{:02} api-1", s / 3600, s / 60 % 60, s % 60)
    };
    let want: BTreeSet<String> = shop.iter().filter(|r| r.pod == "api-1" && r.line.contains("slow call")).map(|r| clock(r.ts)).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "{body}");
    // A template that fails while rendering (a string compared with a number) leaves the line
    // and marks it, as Loki's TemplateFormatErr.
    let (_, body) = ask(range(r#"{project="shop"} | json | __error__="" | line_format `{{ if gt .status 400 }}bad{{ end }}`"#)).await;
    let e = entries(&body);
    assert!(!e.is_empty() && e.iter().all(|(l, _, line)| l["__error__"] == "TemplateFormatErr" && line.starts_with('{')), "{body}");

    // Metric queries: counts per minute by level, against the oracle ((t - 1m, t] windows).
    let mp = |q: &str, step: &str| vec![("query", q.to_owned()), ("start", t0.to_string()), ("end", (t0 + 6 * 60 * S).to_string()), ("step", step.to_owned())];
    let (s, body) = ask(mp(r#"sum by (level) (count_over_time({workspace="ws-a"}[1m]))"#, "60s")).await;
    assert_eq!(s, 200, "{body}");
    let m = matrix(&body);
    let mut want: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
    for k in 0..=6 {
        let t = t0 + k * 60 * S;
        let mut by: BTreeMap<&str, f64> = BTreeMap::new();
        for r in visible.iter().filter(|r| r.ts > t - 60 * S && r.ts <= t) {
            *by.entry(r.level).or_default() += 1.0;
        }
        for (level, n) in by {
            want.entry(labels(&[("level", level)])).or_default().push((t / S, n));
        }
    }
    assert_eq!(m, want, "{body}");
    // stddev and stdvar across the levels' counts (population, as Prometheus and Loki).
    let (_, body) = ask(mp(r#"stdvar(sum by (level) (count_over_time({workspace="ws-a"}[1m])))"#, "60s")).await;
    let mut spread = Vec::new();
    for k in 0..=6 {
        let t = (t0 + k * 60 * S) / S;
        let xs: Vec<f64> = want.values().filter_map(|p| p.iter().find(|(pt, _)| *pt == t).map(|(_, v)| *v)).collect();
        if !xs.is_empty() {
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            spread.push((t, xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / xs.len() as f64));
        }
    }
    assert_eq!(matrix(&body), BTreeMap::from([(labels(&[]), spread)]), "{body}");
    // Comparisons filter (keeping the value), or give 1/0 with `bool`.
    let (_, body) = ask(mp(r#"sum by (level) (count_over_time({workspace="ws-a"}[1m])) > 1"#, "60s")).await;
    let over_one: BTreeMap<_, Vec<(i64, f64)>> =
        want.iter().map(|(l, p)| (l.clone(), p.iter().filter(|(_, v)| *v > 1.0).copied().collect::<Vec<_>>())).filter(|(_, p)| !p.is_empty()).collect();
    assert_eq!(matrix(&body), over_one, "{body}");
    let (_, body) = ask(mp(r#"sum by (level) (count_over_time({workspace="ws-a"}[1m])) > bool 1"#, "60s")).await;
    let as_bool: BTreeMap<_, Vec<(i64, f64)>> =
        want.iter().map(|(l, p)| (l.clone(), p.iter().map(|(t, v)| (*t, if *v > 1.0 { 1.0 } else { 0.0 })).collect())).collect();
    assert_eq!(matrix(&body), as_bool, "{body}");
    // absent_over_time: 1 at each step whose window holds no line, labelled by the selector's
    // equality matchers (a name also matched otherwise, or twice, left out, as Loki does).
    let silent = |pred: &dyn Fn(&Row) -> bool| -> Vec<(i64, f64)> {
        (0..=6).map(|k| t0 + k * 60 * S).filter(|t| !visible.iter().any(|r| pred(r) && r.ts > t - 60 * S && r.ts <= *t)).map(|t| (t / S, 1.0)).collect()
    };
    let billing = silent(&|r: &Row| r.tenant == 'b');
    assert!(!billing.is_empty() && billing.len() < 7, "the fixture has billing lines in some windows only: {billing:?}");
    let (s, body) = ask(mp(r#"absent_over_time({project="billing", pod=~".+"}[1m])"#, "60s")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(matrix(&body), BTreeMap::from([(labels(&[("project", "billing")]), billing)]), "{body}");
    let (_, body) = ask(mp(r#"absent_over_time({project="billing", level="warn", level="info"}[1m])"#, "60s")).await;
    assert_eq!(matrix(&body), BTreeMap::from([(labels(&[("project", "billing")]), silent(&|_: &Row| false))]), "{body}");
    // Lines in every window: nothing is absent, so there is no series at all.
    let (_, body) = ask(mp(r#"absent_over_time({workspace="ws-a"}[10m])"#, "60s")).await;
    assert_eq!(body["data"]["result"], json!([]), "{body}");
    // Another workspace's lines (ws-b has some in the first two windows) are absent for alice
    // in every window: the answer is the same whatever that workspace holds.
    let (_, body) = ask(mp(r#"absent_over_time({workspace="ws-b"}[1m])"#, "60s")).await;
    assert_eq!(matrix(&body), BTreeMap::from([(labels(&[("workspace", "ws-b")]), silent(&|_: &Row| false))]), "{body}");
    // Logs Drilldown groups and filters by `detected_level`, structured metadata every line
    // carries (the stored level), and ends its queries with `drop __error__`.
    let (s, body) = ask(mp(r#"sum by (detected_level) (count_over_time({service_name="api"} | drop __error__ [1m]))"#, "60s")).await;
    assert_eq!(s, 200, "{body}");
    let mut by_level: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
    for k in 0..=6 {
        let t = t0 + k * 60 * S;
        for level in ["error", "info", "warn"] {
            let n = visible.iter().filter(|r| r.pod == "api-1" && r.level == level && r.ts > t - 60 * S && r.ts <= t).count();
            if n > 0 {
                by_level.entry(labels(&[("detected_level", level)])).or_default().push((t / S, n as f64));
            }
        }
    }
    assert_eq!(matrix(&body), by_level, "{body}");
    // Counted by storage per stream, not read line by line (so not bounded by the scan limit).
    assert_eq!(body["data"]["stats"]["summary"]["totalBytesProcessed"], 0, "{body}");
    // With Drilldown's level filter too: storage filters by level and counts.
    let (s, body) = ask(mp(
        r#"sum by (detected_level) (count_over_time({service_name="api"} | detected_level="error" or detected_level=`warn` | drop __error__ [1m]))"#,
        "60s",
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    let kept: BTreeMap<_, _> = by_level.iter().filter(|(l, _)| l["detected_level"] != "info").map(|(l, p)| (l.clone(), p.clone())).collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(matrix(&body), kept, "{body}");
    assert_eq!(body["data"]["stats"]["summary"]["totalBytesProcessed"], 0, "{body}");
    let (s, body) = ask(range(r#"{service_name="api"} | detected_level="error" | drop __error__"#)).await;
    assert_eq!(s, 200, "{body}");
    let e = entries(&body);
    let errors: BTreeSet<i64> = visible.iter().filter(|r| r.pod == "api-1" && r.level == "error").map(|r| r.ts).collect();
    assert!(!errors.is_empty());
    assert_eq!(e.iter().map(|(_, t, _)| *t).collect::<BTreeSet<_>>(), errors, "{body}");
    assert!(e.iter().all(|(l, _, _)| l.get("detected_level").map(String::as_str) == Some("error")), "{body}");
    // Vector matching and set operators, against the oracle: per-minute counts over
    // (t - 1m, t] of the lines a predicate picks, keyed by what `key` names.
    let steps: Vec<i64> = (0..=6).map(|k| t0 + k * 60 * S).collect();
    let count = |t: i64, pred: &dyn Fn(&Row) -> bool| visible.iter().filter(|r| pred(r) && r.ts > t - 60 * S && r.ts <= t).count() as f64;
    let pods = ["api-1", "worker-1"];
    type Series = BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>>;
    // The expected matrix: the points `at(t, pod)` gives at each step for each pod.
    type Points = Vec<(BTreeMap<String, String>, f64)>;
    let expected = |at: &dyn Fn(i64, &str) -> Points| -> Series {
        let mut out = Series::new();
        for &t in &steps {
            for pod in pods {
                for (l, v) in at(t, pod) {
                    out.entry(l).or_default().push((t / S, v));
                }
            }
        }
        out
    };
    let levels = ["error", "info", "warn"];
    // Each level's share of its pod's lines: many (pod, level) to one pod, `group_left`.
    let (s, body) = ask(mp(
        r#"sum by (pod, level) (count_over_time({workspace="ws-a"}[1m])) / ignoring(level) group_left sum by (pod) (count_over_time({workspace="ws-a"}[1m]))"#,
        "60s",
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    let expect = expected(&|t, pod| {
        let all = count(t, &|r: &Row| r.pod == pod);
        levels
            .iter()
            .map(|l| (labels(&[("level", l), ("pod", pod)]), count(t, &|r: &Row| r.pod == pod && r.level == *l) / all))
            .filter(|(_, v)| *v > 0.0)
            .collect()
    });
    assert_eq!(matrix(&body), expect, "{body}");
    // `on(pod) group_right(project)`: the one side's label copied onto the many side's series.
    let (s, body) = ask(mp(
        r#"sum by (pod, project) (count_over_time({project="billing"}[1m])) * on(pod) group_right(project) sum by (pod, level) (count_over_time({project="shop"}[1m]))"#,
        "60s",
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    let expect = expected(&|t, pod| {
        let b = count(t, &|r: &Row| r.tenant == 'b' && r.pod == pod);
        levels
            .iter()
            .map(|l| (labels(&[("level", l), ("pod", pod), ("project", "billing")]), b * count(t, &|r: &Row| r.tenant == 'a' && r.pod == pod && r.level == *l)))
            .filter(|(_, v)| *v > 0.0)
            .collect()
    });
    assert!(!expect.is_empty());
    assert_eq!(matrix(&body), expect, "{body}");
    // Without a group modifier, two levels of one pod matching one pod is an error, not a pick.
    let (s, body) =
        ask(mp(r#"sum by (pod, level) (count_over_time({workspace="ws-a"}[1m])) / on(pod) sum by (pod) (count_over_time({workspace="ws-a"}[1m]))"#, "60s"))
            .await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    // and / unless / or, step by step: shop's counts per pod where (or where not) the pod logged
    // a slow call in the same window; billing's counts, else shop's.
    let shop_pod = |t: i64, pod: &str| count(t, &|r: &Row| r.tenant == 'a' && r.pod == pod);
    let slow = |t: i64, pod: &str| count(t, &|r: &Row| r.tenant == 'a' && r.pod == pod && r.line.contains("slow call"));
    let billing_pod = |t: i64, pod: &str| count(t, &|r: &Row| r.tenant == 'b' && r.pod == pod);
    for (op, keep) in [("and", true), ("unless", false)] {
        let q = format!(
            r#"sum by (pod) (count_over_time({{project="shop"}}[1m])) {op} on(pod) sum by (pod, level) (count_over_time({{project="shop"}} |= "slow call" [1m]))"#
        );
        let (s, body) = ask(mp(&q, "60s")).await;
        assert_eq!(s, 200, "{body}");
        let expect = expected(&|t, pod| {
            if shop_pod(t, pod) > 0.0 && (slow(t, pod) > 0.0) == keep { vec![(labels(&[("pod", pod)]), shop_pod(t, pod))] } else { vec![] }
        });
        assert!(!expect.is_empty(), "{op}");
        assert_eq!(matrix(&body), expect, "{op}: {body}");
    }
    let (s, body) = ask(mp(r#"sum by (pod) (count_over_time({project="billing"}[1m])) or sum by (pod) (count_over_time({project="shop"}[1m]))"#, "60s")).await;
    assert_eq!(s, 200, "{body}");
    let expect = expected(&|t, pod| {
        let v = if billing_pod(t, pod) > 0.0 { billing_pod(t, pod) } else { shop_pod(t, pod) };
        if v > 0.0 { vec![(labels(&[("pod", pod)]), v)] } else { vec![] }
    });
    assert_eq!(matrix(&body), expect, "{body}");
    // `or on(pod)`: shop's series (other labels) only at steps where billing has none for the pod.
    let (s, body) = ask(mp(
        r#"sum by (pod, project) (count_over_time({project="billing"}[1m])) or on(pod) sum by (pod, project) (count_over_time({project="shop"}[1m]))"#,
        "60s",
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    let expect = expected(&|t, pod| {
        let (project, v) = if billing_pod(t, pod) > 0.0 { ("billing", billing_pod(t, pod)) } else { ("shop", shop_pod(t, pod)) };
        if v > 0.0 { vec![(labels(&[("pod", pod), ("project", project)]), v)] } else { vec![] }
    });
    assert!(expect.keys().any(|l| l["project"] == "shop") && expect.keys().any(|l| l["project"] == "billing"));
    assert_eq!(matrix(&body), expect, "{body}");
    // sort_desc and approx_topk (exact here) in an instant query: the levels by count.
    let at = (t0 + 6 * 60 * S).to_string();
    for (q, k) in [
        (r#"sort_desc(sum by (level) (count_over_time({workspace="ws-a"}[10m])))"#, 3),
        (r#"approx_topk(2, sum by (level) (count_over_time({workspace="ws-a"}[10m])))"#, 2),
    ] {
        let (s, body) = loki(&server, "/loki/api/v1/query", &alice, &[("query", q), ("time", &at)]).await;
        assert_eq!(s, 200, "{body}");
        let got: Vec<(String, f64)> = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["metric"]["level"].as_str().unwrap().to_owned(), r["value"][1].as_str().unwrap().parse().unwrap()))
            .collect();
        let mut want_counts: Vec<f64> = ["error", "info", "warn"]
            .iter()
            .map(|l| visible.iter().filter(|r| r.level == *l && r.ts > t0 - 4 * 60 * S && r.ts <= t0 + 6 * 60 * S).count() as f64)
            .collect();
        want_counts.sort_by(|a, b| b.total_cmp(a));
        want_counts.truncate(k);
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), want_counts, "{q}: {body}");
        for (level, v) in &got {
            assert_eq!(*v, visible.iter().filter(|r| r.level == level.as_str() && r.ts > t0 - 4 * 60 * S && r.ts <= t0 + 6 * 60 * S).count() as f64, "{q}");
        }
    }
    // label_replace: a label made from another by a regex, as Prometheus's.
    let (s, body) = ask(mp(r#"label_replace(sum by (pod) (count_over_time({project="shop"}[1m])), "app", "$1", "pod", "(.*)-1")"#, "60s")).await;
    assert_eq!(s, 200, "{body}");
    let expect = expected(&|t, pod| {
        let v = shop_pod(t, pod);
        if v > 0.0 { vec![(labels(&[("app", pod.trim_end_matches("-1")), ("pod", pod)]), v)] } else { vec![] }
    });
    assert_eq!(matrix(&body), expect, "{body}");
    // Two series relabelled alike with points at the same step are an error; onto a tenancy
    // label, a refusal.
    for q in [
        r#"label_replace(sum by (pod) (count_over_time({project="shop"}[1m])), "pod", "x", "pod", ".*")"#,
        r#"label_replace(sum by (pod) (count_over_time({project="shop"}[1m])), "workspace", "ws-b", "pod", ".*")"#,
    ] {
        let (s, body) = ask(mp(q, "60s")).await;
        assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{q}: {body}");
    }
    // A set operator reads each side in the caller's scope: ws-b, which alice may not read,
    // holds nothing for her, so `or vector(0)` answers 0 at every step.
    let (_, body) = ask(mp(r#"sum(count_over_time({workspace="ws-b"}[1m])) or vector(0)"#, "60s")).await;
    assert_eq!(matrix(&body), BTreeMap::from([(labels(&[]), steps.iter().map(|t| (t / S, 0.0)).collect())]), "{body}");
    // Unwrapped values: sums, maxima and medians of `dur` per pod over (t - range, t].
    let dur = |r: &Row| -> f64 { r.line.split("dur=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap() };
    let window = |pod: &str, t: i64, range: i64| -> Vec<f64> {
        shop.iter().filter(|r| r.kind == "logfmt" && r.pod == pod && r.ts > t * S - range * S && r.ts <= t * S).map(|r| dur(r)).collect()
    };
    for (q, range, f) in [
        (r#"sum by (pod) (sum_over_time({project="shop"} |= "dur=" | logfmt | unwrap dur | __error__="" [2m]))"#, 120, "sum"),
        (r#"max_over_time({project="shop"} |= "dur=" | logfmt | unwrap dur [10m]) by (pod)"#, 600, "max"),
        (r#"quantile_over_time(0.5, {project="shop"} |= "dur=" | logfmt | unwrap dur [10m]) by (pod)"#, 600, "median"),
    ] {
        let (s, body) = ask(mp(q, "60s")).await;
        assert_eq!(s, 200, "{q}: {body}");
        let m = matrix(&body);
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), vec![labels(&[("pod", "api-1")]), labels(&[("pod", "worker-1")])], "{q}: {body}");
        for (l, points) in &m {
            for (t, v) in points {
                let mut w = window(&l["pod"], *t, range);
                w.sort_by(f64::total_cmp);
                let want = match f {
                    "sum" => w.iter().sum::<f64>(),
                    "max" => w[w.len() - 1],
                    _ if w.len() % 2 == 1 => w[w.len() / 2],
                    _ => (w[w.len() / 2 - 1] + w[w.len() / 2]) / 2.0,
                };
                assert!((v - want).abs() < 1e-9, "{q} {l:?} at {t}: {v} vs {want}");
            }
            assert_eq!(
                points.len(),
                (0..=6).filter(|k| !window(&l["pod"], t0 / S + k * 60, range).is_empty()).count(),
                "{q}: a point where the window has samples"
            );
        }
    }
    // rate_counter: `dur` taken as a counter per pod (each drop a reset), per second over the
    // range, as Loki computes it (its extrapolation adds the range in seconds to the sampled
    // span in microseconds).
    let (s, body) = ask(mp(r#"rate_counter({project="shop"} |= "dur=" | logfmt | keep pod, dur | unwrap dur [3m])"#, "60s")).await;
    assert_eq!(s, 200, "{body}");
    let m = matrix(&body);
    assert_eq!(m.len(), 2, "{body}");
    for (l, points) in &m {
        assert_eq!(points.len(), (0..=6).filter(|k| !window(&l["pod"], t0 / S + k * 60, 180).is_empty()).count(), "{body}");
        for (t, v) in points {
            let w: Vec<(i64, f64)> =
                shop.iter().filter(|r| r.kind == "logfmt" && r.pod == l["pod"] && r.ts > t * S - 180 * S && r.ts <= t * S).map(|r| (r.ts, dur(r))).collect();
            let want = if w.len() < 2 {
                0.0
            } else {
                let (first, last) = (w[0], w[w.len() - 1]);
                let resets: f64 = w.windows(2).filter(|p| p[1].1 < p[0].1).map(|p| p[0].1).sum();
                let increase = last.1 - first.1 + resets;
                let sampled = (last.0 - first.0) as f64 / 1000.0;
                let average = sampled / (w.len() - 1) as f64;
                let to_start = if increase > 0.0 { 180.0f64.min(sampled * first.1 / increase) } else { 180.0 };
                let span = sampled + if to_start < average * 1.1 { to_start } else { average / 2.0 };
                increase * span / sampled / 180.0
            };
            assert!((v - want).abs() <= 1e-12 * want.abs().max(1.0), "rate_counter {l:?} at {t}: {v} vs {want}");
        }
    }
    assert!(m.values().flatten().any(|(_, v)| *v > 0.0), "{body}");
    // A value that is not of the conversion's kind is a pipeline error, as in Loki.
    let (s, body) = ask(mp(r#"sum(sum_over_time({project="shop"} |= "dur=" | logfmt | unwrap duration(dur) [1m]))"#, "60s")).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("SampleExtractionErr"), "{body}");
    // label_format never renames or sets a tenancy label.
    let (s, body) = ask(range(r#"{project="shop"} | label_format workspace="ws-b""#)).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    // The same through the pipeline path (a parser stage), which must agree.
    let (_, body) = ask(mp(r#"sum by (level) (count_over_time({workspace="ws-a"} | logfmt | drop __error__, __error_details__ [1m]))"#, "60s")).await;
    assert_eq!(matrix(&body), want, "pipeline and storage counts agree: {body}");
    // rate, bytes_over_time, topk, arithmetic, a range longer than the step.
    let (_, body) = ask(mp(r#"sum(rate({project="shop"}[2m]))"#, "60s")).await;
    for (t, v) in matrix(&body).values().next().unwrap() {
        let n = shop.iter().filter(|r| r.ts > t * S - 120 * S && r.ts <= t * S).count() as f64;
        assert!((v - n / 120.0).abs() < 1e-9, "rate at {t}: {v} vs {n}/120");
    }
    let (_, body) = ask(mp(r#"sum by (pod) (bytes_over_time({project="shop"}[1m]))"#, "60s")).await;
    for (l, points) in matrix(&body) {
        for (t, v) in points {
            let b: usize = shop.iter().filter(|r| r.pod == l["pod"] && r.ts > t * S - 60 * S && r.ts <= t * S).map(|r| r.line.len()).sum();
            assert_eq!(v, b as f64, "{l:?} at {t}");
        }
    }
    let (_, body) = ask(mp(r#"topk(1, sum by (pod) (count_over_time({workspace="ws-a"}[10m]))) * 2"#, "120s")).await;
    let m = matrix(&body);
    for points in m.values() {
        for (t, v) in points {
            let per_pod = |pod: &str| visible.iter().filter(|r| r.pod == pod && r.ts > t * S - 600 * S && r.ts <= t * S).count() as f64;
            assert_eq!(*v, 2.0 * per_pod("api-1").max(per_pod("worker-1")), "at {t}: {body}");
        }
    }
    // `count` counts streams, so storage must not merge them first (only `sum` may).
    let (_, body) = ask(mp(r#"count by (level) (count_over_time({project="shop"}[10m]))"#, "120s")).await;
    for (l, points) in matrix(&body) {
        for (t, v) in points {
            let streams: BTreeSet<&str> =
                shop.iter().filter(|r| r.level == l["level"] && r.ts > t * S - 600 * S && r.ts <= t * S).map(|r| r.pod.as_str()).collect();
            assert_eq!(v, streams.len() as f64, "{l:?} at {t}: {body}");
        }
    }
    // Instant queries, including Grafana's health check.
    let at = (t0 + 5 * 60 * S).to_string();
    let (s, body) =
        loki(&server, "/loki/api/v1/query", &alice, &[("query", r#"count_over_time({project="shop"} | json | __error__="" [5m])"#), ("time", &at)]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "vector");
    let total: f64 = body["data"]["result"].as_array().unwrap().iter().map(|v| v["value"][1].as_str().unwrap().parse::<f64>().unwrap()).sum();
    let t = t0 + 5 * 60 * S;
    assert_eq!(total, shop.iter().filter(|r| r.kind == "json" && r.ts > t - 300 * S && r.ts <= t).count() as f64);
    let (s, body) = loki(&server, "/loki/api/v1/query", &alice, &[("query", "vector(1)+vector(1)")]).await;
    assert_eq!((s, body["data"]["result"][0]["value"][1].as_str()), (200, Some("2")), "{body}");
    // A metric over lines that fail to parse is an error, as in Loki, with the way out named.
    let (s, body) = ask(mp(r#"count_over_time({project="shop"} | json [1m])"#, "60s")).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("__error__"), "{body}");

    // Index and Drilldown endpoints.
    let win = [("start", start.as_str()), ("end", end.as_str())];
    let (s, body) = loki(&server, "/loki/api/v1/labels", &alice, &win).await;
    assert_eq!(s, 200, "{body}");
    let names: Vec<&str> = body["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(["workspace", "project", "pod", "level", "service_name"].iter().all(|n| names.contains(n)), "{body}");
    let (_, body) = loki(&server, "/loki/api/v1/label/project/values", &alice, &win).await;
    assert_eq!(body["data"], json!(["billing", "shop"]));
    let (_, body) = loki(&server, "/loki/api/v1/label/workspace/values", &alice, &win).await;
    assert_eq!(body["data"], json!(["ws-a"]));
    let (_, body) = loki(&server, "/loki/api/v1/label/pod/values", &alice, &[("query", r#"{project="billing"}"#), ("start", &start), ("end", &end)]).await;
    assert_eq!(body["data"], json!(["api-1", "worker-1"]));
    let (_, body) = loki(
        &server,
        "/loki/api/v1/series",
        &alice,
        &[("match[]", r#"{project="shop"}"#), ("match[]", r#"{pod="worker-1"}"#), ("start", &start), ("end", &end)],
    )
    .await;
    let series: BTreeSet<(String, String)> =
        body["data"].as_array().unwrap().iter().map(|s| (s["project"].as_str().unwrap().to_owned(), s["pod"].as_str().unwrap().to_owned())).collect();
    assert_eq!(series.iter().map(|(p, _)| p.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["billing", "shop"]), "{body}");
    assert!(!series.contains(&("billing".into(), "api-1".into())));
    let (_, body) = loki(&server, "/loki/api/v1/index/stats", &alice, &[("query", r#"{project="shop"}"#), ("start", &start), ("end", &end)]).await;
    assert_eq!(body["entries"].as_u64(), Some(shop.len() as u64));
    assert_eq!(body["bytes"].as_u64(), Some(shop.iter().map(|r| r.line.len() as u64).sum()));
    let (_, body) = loki(
        &server,
        "/loki/api/v1/index/volume",
        &alice,
        &[("query", r#"{workspace="ws-a"}"#), ("targetLabels", "project"), ("start", &start), ("end", &end)],
    )
    .await;
    let vols: BTreeMap<String, u64> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["metric"]["project"].as_str().unwrap().to_owned(), v["value"][1].as_str().unwrap().parse().unwrap()))
        .collect();
    let bytes = |t: char| all.iter().filter(|r| r.tenant == t).map(|r| r.line.len() as u64).sum::<u64>();
    assert_eq!(vols, BTreeMap::from([("billing".into(), bytes('b')), ("shop".into(), bytes('a'))]), "{body}");
    let (_, body) =
        loki(&server, "/loki/api/v1/index/volume_range", &alice, &[("query", r#"{project="shop"}"#), ("step", "60s"), ("start", &start), ("end", &end)]).await;
    let total: u64 = body["data"]["result"][0]["values"].as_array().unwrap().iter().map(|p| p[1].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, bytes('a'), "{body}");
    let (_, body) = loki(&server, "/loki/api/v1/detected_labels", &alice, &[("query", "{}"), ("start", &start), ("end", &end)]).await;
    let card: BTreeMap<String, u64> =
        body["detectedLabels"].as_array().unwrap().iter().map(|l| (l["label"].as_str().unwrap().to_owned(), l["cardinality"].as_u64().unwrap())).collect();
    assert_eq!((card.get("project"), card.get("pod"), card.get("workspace")), (Some(&2), Some(&2), Some(&1)), "{body}");
    let (_, body) = loki(&server, "/loki/api/v1/detected_fields", &alice, &[("query", r#"{project="shop"}"#), ("start", &start), ("end", &end)]).await;
    let fields: BTreeMap<String, Value> = body["fields"].as_array().unwrap().iter().map(|f| (f["label"].as_str().unwrap().to_owned(), f.clone())).collect();
    assert_eq!(fields["status"]["type"], "int", "{body}");
    assert_eq!(fields["dur"]["type"], "float", "{body}");
    assert!(fields["method"]["parsers"].as_array().unwrap().contains(&json!("json")), "{body}");
    let (_, body) =
        loki(&server, "/loki/api/v1/detected_field/status/values", &alice, &[("query", r#"{project="shop"}"#), ("start", &start), ("end", &end)]).await;
    assert_eq!(body["values"], json!(["200", "500"]), "{body}");
    let (_, body) = loki(&server, "/loki/api/v1/patterns", &alice, &[("query", r#"{project="shop"}"#), ("start", &start), ("end", &end)]).await;
    let counted: u64 = body["data"].as_array().unwrap().iter().flat_map(|p| p["samples"].as_array().unwrap().iter().map(|s| s[1].as_u64().unwrap())).sum();
    assert_eq!(counted, shop.len() as u64, "{body}");
    assert!(body["data"].as_array().unwrap().iter().any(|p| p["pattern"].as_str().unwrap().contains("slow call")), "{body}");
    assert!(!tenants_in(&body).contains(&'g'), "{body}");
    let (s, body) = loki(&server, "/loki/api/v1/drilldown-limits", &alice, &[]).await;
    assert_eq!(s, 200);
    assert!(body["limits"]["retention_period"].is_string() && body["version"].is_string() && body["pattern_ingester_enabled"].is_boolean(), "{body}");
    let (s, body) = loki(&server, "/loki/api/v1/status/buildinfo", &alice, &[]).await;
    assert!(s == 200 && body["version"].is_string(), "{body}");

    // POST with a form body, as Grafana sends it when configured for POST.
    let resp = client()
        .post(server.url("/loki/api/v1/query_range"))
        .bearer_auth(&alice)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(qs(&[("query", r#"{project="shop"} |= "slow call""#), ("start", &start), ("end", &end), ("limit", "1000")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(entries(&body).len(), shop.iter().filter(|r| r.kind == "logfmt").count());

    // The tenant wall: hostile LogQL and headers never reach another tenant's rows, counts or
    // label values, on every endpoint.
    let hostile = [
        r#"{workspace=~".*"}"#,
        r#"{workspace=~".+", project=~".+"}"#,
        r#"{workspace!="ws-a"}"#,
        r#"{workspace="ws-b"}"#,
        r#"{workspace=~"ws-a|ws-b"}"#,
        r#"{project="web"}"#,
        r#"{project=~".*"} |~ ".*""#,
        r#"{workspace="ws-a\") OR 1=1 --"}"#,
        r#"{project="shop' OR '1'='1"}"#,
        r#"{org_id="globex"}"#,
        r#"{project="shop"} | json | workspace=~".*""#,
        "{}",
    ];
    let headers = [("x-scope-orgid", "globex"), ("impersonate-user", "root"), ("impersonate-group", "system:masters")];
    for q in hostile {
        for (path, extra) in [
            ("/loki/api/v1/query_range", vec![("limit", "1000")]),
            ("/loki/api/v1/labels", vec![]),
            ("/loki/api/v1/label/project/values", vec![]),
            ("/loki/api/v1/label/workspace/values", vec![]),
            ("/loki/api/v1/index/stats", vec![]),
            ("/loki/api/v1/index/volume", vec![]),
            ("/loki/api/v1/detected_labels", vec![]),
            ("/loki/api/v1/patterns", vec![]),
        ] {
            let mut params = vec![("query", q), ("start", start.as_str()), ("end", end.as_str())];
            params.extend(extra);
            let mut req = client().get(server.url(&format!("{path}?{}", qs(&params)))).bearer_auth(&alice);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            let s = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert!(s == 200 || s == 400, "{path} {q}: {s} {body}");
            assert!(tenants_in(&body).is_subset(&BTreeSet::from(['a', 'b'])), "{path} {q} leaked: {body}");
            let text = body.to_string();
            for other in ["\"web\"", "ws-b\"]", "globex"] {
                if path.contains("values") || path.contains("labels") {
                    assert!(!text.contains(other), "{path} {q} shows {other}: {text}");
                }
            }
            if path.ends_with("stats") && s == 200 {
                assert!(body["entries"].as_u64().unwrap() <= visible.len() as u64, "{q}: counted other tenants: {body}");
            }
            if path.ends_with("query_range") && s == 200 {
                for (l, _, _) in entries(&body) {
                    assert_eq!(l["workspace"], "ws-a", "{q}");
                    assert!(l["project"] == "shop" || l["project"] == "billing", "{q}");
                }
            }
        }
        let metric = format!("sum(count_over_time({q}[10m]))");
        let (s, body) = ask(vec![("query", metric), ("start", t0.to_string()), ("end", (t0 + 10 * 60 * S).to_string()), ("step", "60s".into())]).await;
        if s == 200 {
            for (_, points) in matrix(&body) {
                assert!(points.iter().all(|(_, v)| *v <= visible.len() as f64), "{q}: counted other tenants: {body}");
            }
        }
    }
    // A property: random LogQL built from selector, filter and aggregation fragments (tenancy
    // labels and hostile values among them) never shows or counts another tenant's rows.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let matchers = [
        r#"workspace=~".*""#,
        r#"workspace!="ws-a""#,
        r#"workspace=~"ws-[ab]""#,
        r#"workspace="ws-b""#,
        r#"project=~".+""#,
        r#"project!="shop""#,
        r#"project="web""#,
        r#"pod=~"api.*""#,
        r#"level="error""#,
        r#"service_name=~".+""#,
        r#"org_id="globex""#,
        r#"workspace=~"(?i)WS-.*""#,
        r#"project=~"shop|web|billing""#,
        r#"container!~"x""#,
    ];
    let stages = [
        "",
        r#" |= "tenant""#,
        r#" != "tenant=a""#,
        r#" |~ "tenant=[a-z]""#,
        " | json",
        " | logfmt",
        r#" | json | workspace_extracted="ws-b""#,
        r#" | logfmt | tenant="c""#,
        r#" | json | __error__="""#,
        r#" | line_format "{{.workspace}} {{.project}}""#,
        " | drop workspace",
        " | keep project, pod",
        r#" | pattern "tenant=<tenant> <_>""#,
        r#" | regexp `tenant=(?P<workspace>\w)`"#,
        r#" | logfmt | label_format pod="{{.tenant}}", owner=pod"#,
        " | unpack",
        " | decolorize",
        r#" |= ip("10.0.0.0/8")"#,
        r#" !> "<_> status=200""#,
        r#" |> "<_>workspace<_>" or "tenant=<_>""#,
        r#" | detected_level="error" or detected_level="info""#,
        r#" | line_format `{{ if eq .workspace "ws-b" }}{{ .workspace }}{{ else }}{{ printf "%s/%s" .workspace .project | ToUpper }}{{ end }}`"#,
        r#" | label_format copy=`{{ .workspace | replace "a" "b" }}`"#,
        " | logfmt | dur > 1s",
    ];
    let aggs = [
        "sum by (workspace) ({})",
        "count by (project) ({})",
        "sum({})",
        "topk(3, sum by (pod, workspace) ({}))",
        "{}",
        "sum by (workspace) ({}) > 0",
        "{} >= bool 1",
        r#"{} or on() sum(count_over_time({workspace="ws-b"}[10m]))"#,
        r#"label_replace({}, "copied", "$1", "workspace", "(.*)")"#,
        "sum by (workspace, pod) ({}) / ignoring(pod) group_left sum by (workspace) ({})",
        "sort_desc({}) unless on() vector(1) < 0",
    ];
    for _ in 0..60 {
        let mut sel: Vec<&str> = (0..1 + next(3)).map(|_| matchers[next(matchers.len())]).collect();
        sel.dedup();
        let log = format!("{{{}}}{}{}", sel.join(", "), stages[next(stages.len())], stages[next(stages.len())]);
        let (s, body) = ask(vec![("query", log.clone()), ("start", start.clone()), ("end", end.clone()), ("limit", "1000".into())]).await;
        assert!(s == 200 || s == 400, "{log}: {s} {body}");
        assert!(tenants_in(&body).is_subset(&BTreeSet::from(['a', 'b'])), "{log} leaked: {body}");
        if s == 200 {
            for (l, _, _) in entries(&body) {
                assert_eq!(l.get("workspace").map_or("ws-a", String::as_str), "ws-a", "{log}");
            }
            assert!(entries(&body).len() <= visible.len(), "{log}");
        }
        let metric = aggs[next(aggs.len())].replace("{}", &format!("count_over_time({log} | drop __error__, __error_details__ [10m])"));
        let (s, body) = ask(vec![("query", metric.clone()), ("start", t0.to_string()), ("end", (t0 + 10 * 60 * S).to_string()), ("step", "60s".into())]).await;
        assert!(s == 200 || s == 400, "{metric}: {s} {body}");
        if s == 200 {
            for (l, points) in matrix(&body) {
                assert!(l.get("workspace").is_none_or(|w| w == "ws-a"), "{metric}: {l:?}");
                assert!(points.iter().all(|(_, v)| *v <= visible.len() as f64), "{metric}: counted other tenants: {body}");
            }
        }
    }

    // Another organisation's user with the same workspace name sees only its own rows.
    let gary = token(&server, "gary", "globex", &["ws-a"], &[]);
    let (_, body) =
        loki(&server, "/loki/api/v1/query_range", &gary, &[("query", r#"{project="shop"}"#), ("start", &start), ("end", &end), ("limit", "1000")]).await;
    assert_eq!(tenants_in(&body), BTreeSet::from(['g']), "{body}");
    assert_eq!(entries(&body).len(), 24);

    // Bad requests get a 400 with a message Grafana shows and a stable code.
    for (q, code) in [
        (r#"{project="shop""#, "invalid_query"),
        (r#"{project="shop"} | regexp "(\\w+)""#, "invalid_query"),
        (r#"{project="shop"} | pattern "<a><b>""#, "invalid_query"),
        (r#"sum_over_time({project="shop"} | json [1m])"#, "invalid_query"),
        (r#"sum_over_time({project="shop"} | json | unwrap latency_ms [1m]) by (pod)"#, "invalid_query"),
        (r#"{project=~"(\\w{100}){100}"}"#, "invalid_query"),
        (r#"{project="shop"} |~ "(a""#, "invalid_query"),
        (r#"absent_over_time({project="shop"} | logfmt | unwrap dur [1m])"#, "invalid_query"),
        (r#"count_over_time({project="shop"}[1m]) and on(pod) group_left count_over_time({project="shop"}[1m])"#, "invalid_query"),
        (r#"count_over_time({project="shop"}[1m]) / on(pod) 2"#, "invalid_query"),
        (r#"vector(1) or 2"#, "invalid_query"),
        (r#"{project="shop"} |> "<x> y""#, "invalid_query"),
        (r#"{project="shop"} !> "<_><_>""#, "invalid_query"),
        (r#"count_over_time({project="shop"} | distinct pod [1m])"#, "invalid_query"),
        (r#"{project="shop"} | distinct"#, "invalid_query"),
        (r#"{project="shop"} | line_format "{{ round 1 }}""#, "invalid_query"),
        (r#"{project="shop"} | line_format "{{ count .x \"a\" }}""#, "invalid_query"),
    ] {
        let (s, body) = ask(range(q)).await;
        assert_eq!((s, body["error"]["code"].as_str()), (400, Some(code)), "{q}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    let (s, body) = ask(vec![
        ("query", r#"count_over_time({project="shop"}[1m])"#.into()),
        ("start", t0.to_string()),
        ("end", (t0 + 86_400 * S).to_string()),
        ("step", "1s".into()),
    ])
    .await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("limit_exceeded")), "{body}");
    let (s, body) = loki(&server, "/loki/api/v1/query", &alice, &[("query", r#"{project="shop"}"#)]).await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = loki(&server, "/loki/api/v1/series", &alice, &[]).await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = loki(&server, "/loki/api/v1/labels", "not-a-token", &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");

    // A regex's `.` stops at a line break, as in Loki (and RE2's default), whichever part runs
    // it: a negated regex storage applies (leading, or looked for after a parser, or counted
    // per stream) keeps a multi-line entry whose match would have to cross the break.
    let src = Source { org: Some("initech".into()), workspace: Some("ws-m".into()), project: "multi".into(), app: "api".into(), pod: "api-1".into() };
    let mut e = vector_event(&src, "x", "", t0);
    e["message"] = json!("level=error msg=\"error happened\"\nretry ok timeout=false");
    let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&[e]), None).await;
    assert_eq!(s, 200, "{body}");
    let peter = token(&server, "peter", "initech", &["ws-m"], &[]);
    let q = |query: &'static str| {
        let (server, peter, start, end) = (&server, peter.clone(), start.clone(), end.clone());
        async move { loki(server, "/loki/api/v1/query_range", &peter, &[("query", query), ("start", &start), ("end", &end), ("limit", "10")]).await.1 }
    };
    eventually(60, "the multi-line entry queryable", || async { entries(&q(r#"{project="multi"}"#).await).len() == 1 }).await;
    for query in
        [r#"{project="multi"} !~ "error.*timeout""#, r#"{project="multi"} | logfmt !~ "error.*timeout""#, r#"{project="multi"} |~ "(?s)error.*timeout""#]
    {
        assert_eq!(entries(&q(query).await).len(), 1, "{query}");
    }
    assert!(entries(&q(r#"{project="multi"} |~ "error.*timeout""#).await).is_empty());
    let counted = q(r#"sum(count_over_time({project="multi"} !~ "error.*timeout" [1h]))"#).await;
    assert_eq!(counted["data"]["stats"]["summary"]["totalBytesProcessed"], 0, "counted by storage: {counted}");
    let total: f64 =
        counted["data"]["result"][0]["values"].as_array().into_iter().flatten().map(|p| p[1].as_str().unwrap().parse::<f64>().unwrap()).fold(0.0, f64::max);
    assert_eq!(total, 1.0, "{counted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_api_on_the_embedded_store() {
    loki_api(Server::start(ServerOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_api_on_clickhouse() {
    let ch = ClickHouse::start();
    loki_api(Server::start(ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() })).await;
}
