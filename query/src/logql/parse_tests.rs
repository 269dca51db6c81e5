//! Tests of [`super`] (parse.rs).

use super::*;

fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
    Matcher { name: name.into(), op, value: value.into() }
}

#[test]
fn log_queries_parse() {
    let e = parse(r#"{project="shop", pod=~"api-.*"} |= "error" or "fatal" != `timeout` | json | status >= 500 and method="GET" | line_format "{{.pod}}: {{__line__}}" | drop trace_id"#).unwrap();
    let Expr::Log(l) = e else { panic!("not a log query") };
    assert_eq!(l.selector, vec![m("project", MatchOp::Eq, "shop"), m("pod", MatchOp::Re, "api-.*")]);
    assert_eq!(l.stages[0], Stage::Line { op: LineOp::Contains, values: vec!["error".into(), "fatal".into()] });
    assert_eq!(l.stages[1], Stage::Line { op: LineOp::NotContains, values: vec!["timeout".into()] });
    assert_eq!(l.stages[2], Stage::Json(vec![]));
    assert_eq!(
        l.stages[3],
        Stage::Labels(LabelPred::And(
            Box::new(LabelPred::Num { name: "status".into(), op: CmpOp::Ge, value: 500.0, conversion: Conversion::Number }),
            Box::new(LabelPred::Str(m("method", MatchOp::Eq, "GET")))
        ))
    );
    assert_eq!(l.stages[4], Stage::LineFormat(vec![TemplatePart::Label("pod".into()), TemplatePart::Text(": ".into()), TemplatePart::Line]));
    assert_eq!(l.stages[5], Stage::Drop(vec![m("trace_id", MatchOp::Re, ".*")]));
}

#[test]
fn metric_queries_parse_with_precedence() {
    let e = parse(r#"sum by (level) (count_over_time({project="shop"} |= "x" [5m])) / 2 + 1"#).unwrap();
    let Expr::Metric(MetricExpr::Binary { op: BinOp::Add, lhs, .. }) = e else { panic!("expected + at the top: {e:?}") };
    let MetricExpr::Binary { op: BinOp::Div, lhs: agg, .. } = *lhs else { panic!("expected /") };
    let MetricExpr::Agg { op: AggOp::Sum, grouping: Some(g), inner, .. } = *agg else { panic!("expected sum by") };
    assert_eq!(g.labels, vec!["level"]);
    assert!(matches!(*inner, MetricExpr::Range { func: RangeFn::CountOverTime, range_ns: 300_000_000_000, .. }));
    // Grouping after the arguments, topk, offset, vector literals.
    assert!(matches!(
        parse("sum(rate({a=\"b\"}[1m] offset 5m)) without (pod)").unwrap(),
        Expr::Metric(MetricExpr::Agg { grouping: Some(Grouping { without: true, .. }), .. })
    ));
    assert!(matches!(parse("topk(3, bytes_rate({a=\"b\"}[30s]))").unwrap(), Expr::Metric(MetricExpr::Agg { op: AggOp::Topk, param: Some(3.0), .. })));
    assert!(matches!(parse("vector(1)+vector(1)").unwrap(), Expr::Metric(MetricExpr::Binary { .. })));
    // Comparisons sit below arithmetic: `a + 1 > 2` is `(a + 1) > 2`.
    let Expr::Metric(MetricExpr::Compare { op: CmpOp::Gt, bool_mod: false, lhs, .. }) = parse("count_over_time({a=\"b\"}[5m]) + 1 > 2").unwrap() else {
        panic!("expected > at the top")
    };
    assert!(matches!(*lhs, MetricExpr::Binary { op: BinOp::Add, .. }));
    assert!(matches!(parse("sum(rate({a=\"b\"}[1m])) >= bool 0.5").unwrap(), Expr::Metric(MetricExpr::Compare { bool_mod: true, op: CmpOp::Ge, .. })));
    assert!(parse("1 > 2").is_err(), "numbers need bool");
    assert!(parse("1 > bool 2").is_ok());
    // Vector matching after the operator (and after `bool`).
    let Expr::Metric(MetricExpr::Binary { op: BinOp::Div, matching, .. }) =
        parse("sum by (pod, app) (rate({a=\"b\"}[1m])) / on(app) group_left(team) sum by (app, team) (rate({a=\"b\"}[1m]))").unwrap()
    else {
        panic!("expected / at the top")
    };
    assert_eq!(matching, Matching { labels: LabelMatch::On(vec!["app".into()]), card: Card::ManyToOne(vec!["team".into()]) });
    let Expr::Metric(MetricExpr::Compare { bool_mod: true, matching, .. }) =
        parse("rate({a=\"b\"}[1m]) > bool ignoring(pod) group_right rate({a=\"b\"}[1m])").unwrap()
    else {
        panic!("expected a comparison")
    };
    assert_eq!(matching, Matching { labels: LabelMatch::Ignoring(vec!["pod".into()]), card: Card::OneToMany(vec![]) });
    // Set operators bind loosest, `or` below `and`: `a or b and c > 1` is `a or (b and (c > 1))`.
    let Expr::Metric(MetricExpr::Set { op: SetOp::Or, rhs, .. }) = parse("vector(1) or vector(2) and on() rate({a=\"b\"}[1m]) > 1").unwrap() else {
        panic!("expected or at the top")
    };
    let MetricExpr::Set { op: SetOp::And, matching, rhs, .. } = *rhs else { panic!("expected and under or") };
    assert_eq!(matching.labels, LabelMatch::On(vec![]));
    assert!(matches!(*rhs, MetricExpr::Compare { .. }));
    assert!(matches!(parse("(vector(1) unless vector(2)) * 2").unwrap(), Expr::Metric(MetricExpr::Binary { op: BinOp::Mul, .. })));
    assert!(matches!(parse(r#"label_replace(rate({a="b"}[1m]), "dst", "$1", "pod", "(.*)-[0-9]+")"#).unwrap(), Expr::Metric(MetricExpr::LabelReplace { .. })));
    assert!(parse(r#"label_replace(rate({a="b"}[1m]), "project", "x", "pod", ".*")"#).unwrap_err().contains("tenancy"));
    assert!(parse(r#"label_replace(rate({a="b"}[1m]), "1x", "x", "pod", ".*")"#).unwrap_err().contains("destination"));
    assert!(parse(r#"label_replace(rate({a="b"}[1m]), "x", "x", "pod", "(")"#).unwrap_err().contains("regex"));
    assert!(matches!(parse(r#"sort_desc(rate({a="b"}[1m]))"#).unwrap(), Expr::Metric(MetricExpr::Sort { desc: true, .. })));
    assert!(matches!(parse(r#"approx_topk(3, rate({a="b"}[1m]))"#).unwrap(), Expr::Metric(MetricExpr::Agg { op: AggOp::Topk, .. })));
    assert!(parse(r#"approx_topk(3, rate({a="b"}[1m])) by (pod)"#).unwrap_err().contains("no by/without"));
    // Inside a pipeline, `or` still joins label filters.
    assert!(matches!(parse("count_over_time({a=\"b\"} | level=\"x\" or level=\"y\" [1m])").unwrap(), Expr::Metric(MetricExpr::Range { .. })));
}

#[test]
fn unsupported_and_malformed_queries_are_named() {
    for (q, needle) in [
        ("", "empty"),
        ("{a=\"b\"", "expected"),
        ("{a=b}", "quoted string"),
        ("{a=\"b\"} | unwrap latency", "unexpected"),
        ("sum_over_time({a=\"b\"}[1m])", "unwrap"),
        ("bytes_rate({a=\"b\"} | unwrap x [1m])", "no unwrap"),
        ("sum_over_time({a=\"b\"} | unwrap x [1m]) by (pod)", "not supported"),
        ("avg_over_time({a=\"b\"} | unwrap x | json [1m])", "only label filters"),
        ("vector(1) + bool vector(1)", "bool modifier can only follow a comparison"),
        ("{a=\"b\"} | logfmt --lenient", "--strict and --keep-empty"),
        ("vector(1) * group_left vector(1)", "needs on(…) or ignoring(…)"),
        ("vector(1) and on(a) group_left vector(1)", "cannot follow a set operator"),
        ("vector(1) / on(a) group_left(a) vector(1)", "both on(…) and the group modifier"),
        ("vector(1) / on(a vector(1)", "expected"),
        ("count_over_time({a=\"b\"})", "`[`"),
        ("{a=\"b\"} |~ ip(\"1.2.3.4\")", "not supported"),
        ("{a=\"b\"} |= ip(\"1.2.3.4/40\")", "longer than the address"),
        ("{a=\"b\"} | line_format \"{{ range .x }}{{ end }}\"", "not supported"),
        ("{a=\"b\"} | x > 5zz", "neither a number, a duration"),
        ("{a=\"b\"} | x =~ 5s", "cannot compare with a number"),
        ("\"unterminated", "unterminated"),
        ("{a=\"\\q\"}", "escape"),
    ] {
        let e = parse(q).expect_err(q);
        assert!(e.contains(needle), "{q}: {e}");
    }
    let deep = format!("{}vector(1){}", "(".repeat(500), ")".repeat(500));
    assert!(parse(&deep).unwrap_err().contains("nests"));
    assert!(parse(&"a".repeat(MAX_QUERY_BYTES + 1)).unwrap_err().contains("longer"));
}
