//! Tests of [`super`] (pipeline.rs).

use super::*;
use crate::logql::{Expr, parse};

fn run(q: &str, line: &str) -> Option<(String, Labels)> {
    let Ok(Expr::Log(l)) = parse(q) else { panic!("{q}") };
    let p = Pipeline::new(&l).unwrap();
    let mut labels = Labels::new();
    labels.insert("pod".into(), "api-1".into());
    let mut e = Entry { timestamp_ns: 0, line: line.into(), labels, metadata: BTreeSet::new() };
    p.process(&mut e).then_some((e.line, e.labels))
}

#[test]
fn unwrapped_samples_convert_and_group() {
    assert_eq!(duration_seconds("1m30s"), Some(90.0));
    assert_eq!(duration_seconds("250ms"), Some(0.25));
    assert_eq!(duration_seconds("1.5h"), Some(5400.0));
    assert_eq!(duration_seconds("10"), None, "a Go duration needs its unit");
    assert_eq!(bytes("5 MiB"), Some(5.0 * 1024.0 * 1024.0));
    assert_eq!(bytes("3k"), Some(3000.0));
    assert_eq!(bytes("12"), Some(12.0));
    assert_eq!(bytes("x"), None);
    let Ok(Expr::Metric(crate::logql::MetricExpr::Range { log, unwrap: Some(u), grouping, .. })) =
        parse(r#"max_over_time({a="b"} | logfmt | unwrap duration(took) | __error__="" [1m]) by (pod)"#)
    else {
        panic!("an unwrapped range")
    };
    let p = Pipeline::new(&log).unwrap().unwrapping(&u, grouping.as_ref()).unwrap();
    let entry = |line: &str| {
        let mut labels = Labels::new();
        labels.insert("pod".into(), "api-1".into());
        let mut e = Entry { timestamp_ns: 0, line: line.into(), labels, metadata: BTreeSet::new() };
        assert!(p.process(&mut e));
        e
    };
    let (l, v) = p.sample(entry("took=1.5s user=ana")).unwrap();
    assert_eq!((v, l.len(), l.get("pod").map(String::as_str)), (1.5, 1, Some("api-1")), "grouped by pod; the unwrapped label gone");
    assert!(p.sample(entry("took=fast")).is_none(), "a value that does not convert is left out by __error__=\"\"");
    let Ok(Expr::Metric(crate::logql::MetricExpr::Range { log, unwrap: Some(u), .. })) = parse(r#"sum_over_time({a="b"} | logfmt | unwrap n [1m])"#) else {
        panic!()
    };
    let p = Pipeline::new(&log).unwrap().unwrapping(&u, None).unwrap();
    let mut e = Entry { timestamp_ns: 0, line: "n=x".into(), labels: Labels::new(), metadata: BTreeSet::new() };
    assert!(p.process(&mut e));
    let (l, v) = p.sample(e).unwrap();
    assert!(v.is_nan() && l.get("__error__").map(String::as_str) == Some("SampleExtractionErr"), "{l:?}");
}

#[test]
fn regexp_pattern_and_label_format() {
    let apache = r#"10.0.0.7 - - [01/Dec/2026:10:00:00 +0000] "GET /cart/items HTTP/1.1" 503 1234"#;
    let (_, l) = run(r#"{a="b"} | pattern "<ip> - - [<_>] \"<method> <path> <_>\" <status> <size>""#, apache).unwrap();
    let got = |l: &Labels, k: &str| l.get(k).cloned().unwrap_or_default();
    assert_eq!(
        [got(&l, "ip"), got(&l, "method"), got(&l, "path"), got(&l, "status"), got(&l, "size")],
        ["10.0.0.7", "GET", "/cart/items", "503", "1234"].map(String::from)
    );
    // A leading literal must open the line; a missing literal ends the captures with the rest.
    let (_, l) = run(r#"{a="b"} | pattern "x<v>""#, "abc").unwrap();
    assert!(!l.contains_key("v"));
    let (_, l) = run(r#"{a="b"} | pattern "<a> | <b> ;""#, "one | two three").unwrap();
    assert_eq!((got(&l, "a"), got(&l, "b")), ("one".into(), "two three".into()));
    // regexp: named groups; a name of a stream label is renamed; no match, no labels.
    let (_, l) = run(r#"{a="b"} | regexp `(?P<method>[A-Z]+) (?P<pod>\S+)`"#, apache).unwrap();
    assert_eq!((got(&l, "method"), got(&l, "pod"), got(&l, "pod_extracted")), ("GET".into(), "api-1".into(), "/cart/items".into()));
    let (_, l) = run(r#"{a="b"} | regexp "(?P<x>zzz)""#, apache).unwrap();
    assert!(!l.contains_key("x"));
    // label_format: rename (the source goes) and templates (over the labels before it).
    let (_, l) = run(r#"{a="b"} | logfmt | label_format who=user, line="{{.pod}}:{{.team}}""#, "user=ana team=web").unwrap();
    assert_eq!((got(&l, "who"), got(&l, "line"), l.contains_key("user")), ("ana".into(), "api-1:web".into(), false));
    assert!(parse(r#"{a="b"} | label_format x=a, x="b""#).is_err(), "a label once per label_format");
    let (_, l) = run(r#"{a="b"} | label_format pod="{{.pod}}-x""#, "").unwrap();
    assert_eq!(got(&l, "pod"), "api-1-x", "label_format overwrites, unlike parsers");
    for bad in
        [r#"{a="b"} | label_format workspace="ws-b""#, r#"{a="b"} | label_format w=workspace"#, r#"{a="b"} | pattern "<a><b>""#, r#"{a="b"} | pattern "<_> x""#]
    {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let Ok(Expr::Log(l)) = parse(r#"{a="b"} | regexp `(\d+)`"#) else { panic!() };
    assert!(Pipeline::new(&l).err().unwrap_or_default().contains("named group"));
}

#[test]
fn stages_follow_loki_semantics() {
    // Line filters are case-sensitive; `or` alternatives; negations need none to match.
    assert!(run(r#"{a="b"} |= "Err""#, "an Err here").is_some());
    assert!(run(r#"{a="b"} |= "err""#, "an Err here").is_none());
    assert!(run(r#"{a="b"} |= "x" or "Err""#, "an Err here").is_some());
    assert!(run(r#"{a="b"} != "x" or "Err""#, "an Err here").is_none());
    assert!(run(r#"{a="b"} |~ "E[a-z]+""#, "an Err here").is_some());
    // json: nested keys joined with `_`, arrays skipped, stream-label collisions renamed.
    let (_, l) = run(r#"{a="b"} | json"#, r#"{"status":503,"req":{"method":"GET"},"tags":[1],"pod":"evil","ok":true}"#).unwrap();
    assert_eq!(l.get("status").map(String::as_str), Some("503"));
    assert_eq!(l.get("req_method").map(String::as_str), Some("GET"));
    assert_eq!(l.get("pod").map(String::as_str), Some("api-1"));
    assert_eq!(l.get("pod_extracted").map(String::as_str), Some("evil"));
    assert_eq!(l.get("ok").map(String::as_str), Some("true"));
    assert!(!l.contains_key("tags"));
    let (_, l) = run(r#"{a="b"} | json m="req.method", first="tags[0]""#, r#"{"req":{"method":"PUT"},"tags":["x"]}"#).unwrap();
    assert_eq!((l["m"].as_str(), l["first"].as_str()), ("PUT", "x"));
    // A line that is not JSON is kept, marked with __error__, and `__error__=""` drops it.
    assert_eq!(run(r#"{a="b"} | json"#, "plain").unwrap().1["__error__"], "JSONParserErr");
    assert!(run(r#"{a="b"} | json | __error__="""#, "plain").is_none());
    // logfmt, numeric filters, and/or, line_format, drop/keep.
    let line = r#"level=warn msg="slow call" dur=1.5 status=500"#;
    assert!(run(r#"{a="b"} | logfmt | status >= 500 and dur > 1"#, line).is_some());
    assert!(run(r#"{a="b"} | logfmt | status < 500 or msg="fast""#, line).is_none());
    assert!(run(r#"{a="b"} | logfmt | msg=~"slow.*""#, line).is_some());
    assert!(run(r#"{a="b"} | logfmt | msg=~"slow""#, line).is_none(), "label regexes are anchored");
    let (out, l) = run(r#"{a="b"} | logfmt | line_format "{{.pod}} {{.msg}} ({{.missing}})" | drop dur, status"#, line).unwrap();
    assert_eq!(out, "api-1 slow call ()");
    assert!(!l.contains_key("dur") && !l.contains_key("status") && l.contains_key("msg"));
    let (_, l) = run(r#"{a="b"} | logfmt | keep pod, level_extracted"#, line).unwrap();
    assert_eq!(l.keys().collect::<Vec<_>>(), vec!["level_extracted", "pod"]);
    // A non-numeric value in a numeric filter is a LabelFilterErr, not a silent match.
    assert_eq!(run(r#"{a="b"} | logfmt | msg > 3"#, line).unwrap().1["__error__"], "LabelFilterErr");
    // As Loki 3: a malformed pair is skipped and the rest read; `--strict` stops there and
    // marks the line; `--keep-empty` keeps bare keys.
    let bad = r#"a=1 "b=2 c=3 d="unclosed"#;
    let (_, l) = run(r#"{a="b"} | logfmt"#, bad).unwrap();
    assert_eq!((l.get("a").map(String::as_str), l.get("c").map(String::as_str), l.get("__error__")), (Some("1"), Some("3"), None));
    let (_, l) = run(r#"{a="b"} | logfmt --strict"#, bad).unwrap();
    assert_eq!((l.get("a").map(String::as_str), l.get("c"), l["__error__"].as_str()), (Some("1"), None, "LogfmtParserErr"));
    let (_, l) = run(r#"{a="b"} | logfmt --keep-empty --strict flag, a"#, "a=1 flag other=2").unwrap();
    assert_eq!((l.get("flag").map(String::as_str), l.get("a").map(String::as_str), l.get("other")), (Some(""), Some("1"), None));
    assert!(!run(r#"{a="b"} | logfmt"#, "a=1 flag").unwrap().1.contains_key("flag"));
    // An escaped multi-byte character is taken whole.
    assert_eq!(run(r#"{a="b"} | logfmt"#, r#"k="\é\"x" z=1"#).unwrap().1["k"], "é\"x");
    // Duration and byte-size filters read the label as one: `1m30s` is over 1.5 minutes but
    // not over 90 s; `2KiB` is 2,048 bytes, over 2KB; a plain number is not a Go duration.
    let line = r#"took=1m30s size=2KiB bare=90"#;
    assert!(run(r#"{a="b"} | logfmt | took > 89.5s and took <= 90s and took == 1.5m"#, line).is_some());
    assert!(run(r#"{a="b"} | logfmt | took > 90s"#, line).is_none());
    assert!(run(r#"{a="b"} | logfmt | size > 2KB and size < 2.1kb and size == 2KiB"#, line).is_some());
    assert!(run(r#"{a="b"} | logfmt | size >= 3KB"#, line).is_none());
    assert_eq!(run(r#"{a="b"} | logfmt | bare > 1s"#, line).unwrap().1["__error__"], "LabelFilterErr");
    assert!(run(r#"{a="b"} | logfmt | bare > 89"#, line).is_some());
    // logfmt with extractions: only the keys named, under their labels.
    let (_, l) = run(r#"{a="b"} | logfmt status, took="dur" | took > 1"#, r#"level=warn msg="slow call" dur=1.5 status=500"#).unwrap();
    assert_eq!((l.get("status").map(String::as_str), l.get("took").map(String::as_str), l.get("msg"), l.get("dur")), (Some("500"), Some("1.5"), None, None));
    // unpack: Promtail's packed lines give their labels back and `_entry` becomes the line.
    let packed = r#"{"container":"nginx","pod":"web-1","_entry":"GET /index 200","n":3}"#;
    let (line, l) = run(r#"{a="b"} | unpack | container_extracted="nginx""#, packed).unwrap();
    assert_eq!((line.as_str(), l["pod_extracted"].as_str(), l["pod"].as_str(), l.get("n")), ("GET /index 200", "web-1", "api-1", None));
    assert_eq!(run(r#"{a="b"} | unpack"#, "plain text").unwrap().1["__error__"], "JSONParserErr");
    // A JSON object Promtail did not pack (no string `_entry`) is left as it is, with no labels.
    for line in [r#"{"container":"nginx","msg":"hi"}"#, r#"{"container":"nginx","_entry":7}"#] {
        let (same, l) = run(r#"{a="b"} | unpack"#, line).unwrap();
        assert_eq!((same.as_str(), l.get("container"), l.get("__error__")), (line, None, None), "{line}");
    }
    assert_eq!(run(r#"{a="b"} | unpack"#, "").unwrap().1.get("__error__"), None);
    // ip(): addresses in the line, or a label's value.
    let line = "GET from 10.1.2.3:5123 via 2001:db8::1 peer=192.168.7.9";
    assert!(run(r#"{a="b"} |= ip("10.0.0.0/8")"#, line).is_some());
    assert!(run(r#"{a="b"} != ip("10.0.0.0/8")"#, line).is_none());
    assert!(run(r#"{a="b"} |= ip("2001:db8::/32") != ip("172.16.0.0-172.31.255.255")"#, line).is_some());
    assert!(run(r#"{a="b"} | logfmt | peer = ip("192.168.0.0/16")"#, line).is_some());
    assert!(run(r#"{a="b"} | logfmt | peer != ip("192.168.0.0/16")"#, line).is_none());
    // decolorize takes terminal colours out, then filters see the plain text.
    let coloured = "\u{1b}[31mERROR\u{1b}[0m disk \u{1b}[1;33mfull\u{1b}[m";
    assert_eq!(run(r#"{a="b"} | decolorize |= "ERROR disk full""#, coloured).unwrap().0, "ERROR disk full");
    assert!(run(r#"{a="b"} |= "ERROR disk full""#, coloured).is_none());
}

#[test]
fn pushdown_is_exact() {
    let Ok(Expr::Log(l)) = parse(r#"{project="shop", pod=~"a.*"} |= "x" !~ "y+" |= "a" or "b" | json |= "z""#) else { panic!() };
    let p = Pipeline::new(&l).unwrap();
    // `|= "z"` after `json` is not applied by storage exactly (counts per stream would be wrong
    // for the json error labels), but every line that passes holds it, so storage looks for it.
    assert_eq!(p.terms(), vec![Term::Exact("x".into()), Term::Not(Box::new(Term::Regex("y+".into()))), Term::Exact("z".into())]);
    assert_eq!(p.filters().projects, vec!["shop".to_owned()]);
    assert!(p.filters().pods.is_empty());
    assert!(!p.only_pushed());
    // Logs Drilldown's `drop __error__` before any parser keeps the query on storage's counts;
    // a drop of any other label does not.
    let pipeline = |q: &str| match parse(q).unwrap() {
        Expr::Log(l) => Pipeline::new(&l).unwrap(),
        _ => unreachable!(),
    };
    let p = pipeline(r#"{a="b"} |= "x" | drop __error__, __error_details__ |= "y""#);
    assert!(p.only_pushed());
    assert_eq!(p.terms(), vec![Term::Exact("x".into()), Term::Exact("y".into())]);
    assert!(!pipeline(r#"{a="b"} | drop __error__, level"#).only_pushed());
    assert!(!pipeline(r#"{a="b"} | logfmt | drop __error__"#).only_pushed());
    // Level filters before any parser go to storage as its level filter.
    let levels = |q: &str| {
        let p = pipeline(q);
        (p.only_pushed(), p.filters().severities)
    };
    assert_eq!(levels(r#"{a="b"} | detected_level="error" or detected_level=`warn` | drop __error__"#), (true, vec!["error".into(), "warn".into()]));
    assert_eq!(levels(r#"{level=~"e.*", level="error"} |= "x" | level="error" or level="info""#), (true, vec!["error".into()]));
    assert_eq!(levels(r#"{a="b"} | detected_level="error" | json"#), (false, vec!["error".into()]));
    // What storage's list cannot say stays in the pipeline: no level left, a regex, a filter
    // after a parser, or one on another label too.
    assert_eq!(levels(r#"{level="error"} | detected_level="warn""#), (false, vec!["error".into()]));
    assert_eq!(levels(r#"{a="b"} | detected_level=~"err.*""#), (false, vec![]));
    assert_eq!(levels(r#"{a="b"} | json | level="error""#), (false, vec![]));
    assert_eq!(levels(r#"{a="b"} | level="error" or pod="x""#), (false, vec![]));
    assert!(
        Pipeline::new(&match parse(r#"{a="b"} |~ "(a""#).unwrap() {
            Expr::Log(l) => l,
            _ => unreachable!(),
        })
        .is_err()
    );
}

/// `|>` and `!>`, Loki 3's pattern match filters, with the examples of Loki's own matcher.
#[test]
fn pattern_filters_match_as_loki_matches() {
    let keeps = |pattern: &str, line: &str| run(&format!("{{a=\"b\"}} |> `{pattern}`"), line).is_some();
    assert!(!keeps("<_> bar", "foo bar baz"), "a pattern ending in a literal must end the line");
    assert!(keeps("<_> baz", "foo bar baz"));
    assert!(keeps("foo <_>", "foo bar baz"));
    assert!(!keeps("<_> bar <_>", " bar "), "a <_> must hold something");
    assert!(keeps("<_>bar<_>", " bar "));
    assert!(keeps("foo <_>", "xfoo bar"), "Loki looks for the first literal anywhere");
    assert!(!keeps("<_> b <_> b", "a b b"), "each literal is looked for after the one before");
    assert!(keeps("héllo <_> wörld", "héllo grand wörld"));
    let line = r#"ts=2024-04-05T08:40:13.585911094Z caller=http.go:194 level=debug traceID=23e54a271db607cc orgID=3648 msg="POST /push.v1.PusherService/Push (200) 12.684035ms""#;
    let pattern = r#"<_> caller=http.go:194 level=debug <_> msg="POST /push.v1.PusherService/Push <_>"#;
    assert!(keeps(pattern, line));
    assert!(run(&format!("{{a=\"b\"}} !> `{pattern}`"), line).is_none());
    assert!(run(&format!("{{a=\"b\"}} !> `{pattern}`"), "something else").is_some());
    // `or` keeps a line any pattern matches; `!>` with `or` keeps a line none matches.
    assert!(run(r#"{a="b"} |> "x <_>" or "<_> baz""#, "foo bar baz").is_some());
    assert!(run(r#"{a="b"} !> "x <_>" or "<_> baz""#, "foo bar baz").is_none());
    // The empty pattern matches the empty line only.
    assert!(keeps("", "") && !keeps("", "a") && !keeps("<_>", ""));
    // Named captures and captures side by side are refused, with the reason.
    for (q, needle) in [(r#"{a="b"} |> "<x> y""#, "named captures are not allowed"), (r#"{a="b"} |> "<_><_>""#, "side by side")] {
        let e = parse(q).expect_err(q);
        assert!(e.contains(needle), "{q}: {e}");
    }
    // Never applied by storage (Loki's matching is neither a substring nor a regex), but
    // storage looks for the literals of a single pattern, which every matching line holds,
    // unless a stage before it changed the line; `!>` and `or` give it nothing to look for.
    let terms = |q: &str| match parse(q).unwrap() {
        Expr::Log(l) => {
            let p = Pipeline::new(&l).unwrap();
            assert!(!p.only_pushed(), "{q}");
            p.terms()
        }
        _ => unreachable!(),
    };
    assert_eq!(terms(r#"{a="b"} |= "x" |> "<_> y <_>z""#), vec![Term::Exact("x".into()), Term::Exact(" y ".into()), Term::Exact("z".into())]);
    assert_eq!(terms(r#"{a="b"} | logfmt |> "a <_>""#), vec![Term::Exact("a ".into())]);
    assert_eq!(terms(r#"{a="b"} | line_format "{{.x}}" |> "a <_>""#), vec![]);
    assert_eq!(terms(r#"{a="b"} | decolorize |= "x""#), vec![]);
    assert_eq!(terms(r#"{a="b"} !> "a <_>" |> "b <_>" or "c <_>""#), vec![]);
}

/// A stage's keyword followed by `!=` or `!~` is the stage, then a line filter, not a filter
/// on a label named like the stage.
#[test]
fn a_parser_then_a_negated_line_filter() {
    assert!(run(r#"{a="b"} | logfmt != "x""#, "x=1").is_none());
    assert!(run(r#"{a="b"} | logfmt != "y""#, "x=1").is_some_and(|(_, l)| l.get("x").map(String::as_str) == Some("1")));
    assert!(run(r#"{a="b"} | json !~ "a.c""#, r#"{"k":"abc"}"#).is_none());
    assert!(run(r#"{a="b"} | decolorize != "x""#, "x").is_none());
}

/// `distinct`, as Loki's experimental stage: the first line of each value passes, in the
/// order lines are read; a line without the label passes; values are remembered label by
/// label, even from a line a later label drops.
#[test]
fn distinct_keeps_the_first_line_of_each_value() {
    let Ok(Expr::Log(l)) = parse(r#"{a="b"} | logfmt | distinct user, host"#) else { panic!() };
    let p = Pipeline::new(&l).unwrap();
    let mut kept = Vec::new();
    for line in ["user=ann host=h1", "user=ann host=h2", "user=bob host=h1", "user=cid host=h3", "host=h1", "user=bob", "user=dan host=h4"] {
        let mut e = Entry { timestamp_ns: 0, line: line.into(), labels: Labels::new(), metadata: BTreeSet::new() };
        if p.process(&mut e) {
            kept.push(line);
        }
    }
    // `user=bob host=h1` marks bob before h1 drops it, so the later `user=bob` is dropped too;
    // `host=h1` has no user: kept.
    assert_eq!(kept, ["user=ann host=h1", "user=cid host=h3", "host=h1", "user=dan host=h4"]);
    // Storage is not told about filters after it (it must see every line the stage sees).
    let Ok(Expr::Log(l)) = parse(r#"{a="b"} |= "x" | distinct user |= "y""#) else { panic!() };
    assert_eq!(Pipeline::new(&l).unwrap().terms(), vec![Term::Exact("x".into())]);
    // Inside a metric query it would count first lines per window: refused.
    let e = parse(r#"count_over_time({a="b"} | distinct user [5m])"#).expect_err("metric");
    assert!(e.contains("log queries"), "{e}");
    assert!(parse(r#"{a="b"} | distinct"#).is_err());
}
