//! Tests of [`super`] (templates).

use super::*;

/// Repeatable draws below `n` (xorshift from `seed`), for the property tests.
fn draws(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

fn out(src: &str) -> Result<String, String> {
    let labels: super::super::labels::Labels = [("msg", "Slow call to /api/users"), ("status", "500"), ("path", "/api/users"), ("empty", ""), ("n", "7")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    render(&template(src)?, &Scope { labels: &labels, line: "the line", timestamp_ns: 0 })
}

#[test]
fn functions_pipelines_and_conditions_render_as_go_templates_do() {
    for (src, want) in [
        ("{{.status}} {{ .msg | ToUpper }}", "500 SLOW CALL TO /API/USERS"),
        ("{{ lower .msg | trunc 4 }}|{{ trunc -5 .msg }}", "slow|users"),
        ("{{ .path | TrimPrefix \"/api\" }}", "/api"),
        ("{{ TrimPrefix .path \"/api\" }}", "/users"),
        ("{{ .path | trimPrefix \"/api\" }}", "/users"),
        ("{{ Replace .msg \"/\" \"_\" -1 }} {{ .msg | replace \"call\" \"hop\" }}", "Slow call to _api_users Slow hop to /api/users"),
        ("{{ regexReplaceAll \"(\\\\w+)/(\\\\w+)$\" .path \"${2}@${1}\" }}", "/users@api"),
        ("{{ regexReplaceAllLiteral \"u.\" .path \"$1\" }}", "/api/$1ers"),
        ("{{ .empty | default \"-\" }}{{ default \"-\" .status }}", "-500"),
        ("[{{ alignLeft 6 .status }}][{{ alignRight 6 .status }}][{{ alignLeft 2 .status }}]", "[500   ][   500][50]"),
        ("{{ printf \"%s=%5.2f|%-4d|%q|%03d\" .status 3.14159 12 .n 7 }}", "500= 3.14|12  |\"7\"|007"),
        ("{{ printf \"%d\" .status }}", "%!d(string=500)"),
        ("{{ substr 5 9 .msg }}{{ len .msg }}", "call23"),
        ("{{ if eq .status \"500\" }}ERR{{ else if eq .status \"404\" }}MISS{{ else }}ok{{ end }}", "ERR"),
        ("{{ if and (hasPrefix \"/api\" .path) (not (contains \"fast\" .msg)) }}slow api{{ end }}", "slow api"),
        ("{{ if or .empty .missing }}x{{ else }}{{ or .empty .status }}{{ end }}", "500"),
        ("{{ if gt (len .msg) 10 }}long{{ end }}{{ if lt \"a\" \"b\" }}<{{ end }}", "long<"),
        ("a  {{- .status -}}  b {{/* a comment */}}c", "a500b c"),
        ("{{ title \"hello wide world\" }} {{ __line__ | upper }}", "Hello Wide World THE LINE"),
        ("{{ \"x\" }}{{ 2 }}{{ true }}", "x2true"),
    ] {
        assert_eq!(out(src).as_deref(), Ok(want), "{src}");
    }
    // Times: `__timestamp__` prints as Go prints a time; `date` takes Go layouts.
    let at = |src: &str, ns: i64| -> String {
        let labels = super::super::labels::Labels::from([("epoch".to_owned(), "1700000000123".to_owned())]);
        render(&template(src).unwrap(), &Scope { labels: &labels, line: "", timestamp_ns: ns }).unwrap()
    };
    let t = 1_700_000_000_120_000_000; // 2023-11-14 22:13:20.12 UTC, a Tuesday
    assert_eq!(at("{{__timestamp__}}", t), "2023-11-14 22:13:20.12 +0000 UTC");
    assert_eq!(at("{{__timestamp__}}", t - 120_000_000), "2023-11-14 22:13:20 +0000 UTC");
    for (layout, want) in [
        ("2006-01-02T15:04:05.000Z07:00", "2023-11-14T22:13:20.120Z"),
        ("Mon Jan _2 03:04:05 PM MST 2006", "Tue Nov 14 10:13:20 PM UTC 2023"),
        ("Monday, 2 January 06 15h04 -0700 ,999999", "Tuesday, 14 November 23 22h13 +0000 ,12"),
        ("002 é 1/2 3:4:5pm", "318 é 11/14 10:13:20pm"),
    ] {
        assert_eq!(at(&format!("{{{{ __timestamp__ | date \"{layout}\" }}}}"), t), want, "{layout}");
    }
    assert_eq!(
        at("{{ unixEpoch __timestamp__ }} {{ unixEpochMillis __timestamp__ }} {{ __timestamp__ | unixEpochNanos }}", t),
        "1700000000 1700000000120 1700000000120000000"
    );
    assert_eq!(at("{{ .epoch | unixToTime | date \"15:04:05.000\" }}", 0), "22:13:20.123");
    assert_eq!(out("{{ if lt (unixEpoch __timestamp__) 1800000000 }}before{{ end }}").as_deref(), Ok("before"));
}

#[test]
fn what_cannot_run_is_refused_when_parsed_and_what_fails_is_an_error() {
    for (src, needle) in [
        ("{{ range .x }}{{ end }}", "not supported"),
        ("{{ template \"a\" }}", "not supported"),
        ("{{ define \"a\" }}{{ end }}", "not supported"),
        ("{{ exec .x }}", "function `exec` is not supported"),
        ("{{ .a | }}", "comes a function"),
        ("{{ Replace .a \"x\" }}", "takes 4 argument(s), given 2"),
        ("{{ if .a }}open", "without its `{{end}}`"),
        ("{{ end }}", "without its"),
        ("{{ regexReplaceAll .re .a \"x\" }}", "as a quoted string"),
        ("{{ regexReplaceAll \"(\" .a \"x\" }}", "regex"),
        ("{{ .a", "without `}}`"),
        (&format!("{}x{}", "{{ if .a }}".repeat(20), "{{ end }}".repeat(20)), "deeper than 16"),
    ] {
        assert!(template(src).is_err_and(|e| e.contains(needle)), "{src}: {:?}", template(src));
    }
    // `and`/`or` stop at the argument that decides, as Go's do; `len` counts bytes; a long
    // `else if` chain is not a deep nesting.
    assert_eq!(out("{{ and false (eq 1 \"a\") }}{{ or .status (eq 1 \"a\") }}{{ len \"é\" }}").as_deref(), Ok("false5002"));
    let chain = format!(
        "{{{{ if eq .n \"0\" }}}}0{}{{{{ else }}}}none{{{{ end }}}}",
        (1..40).map(|i| format!("{{{{ else if eq .n \"{i}\" }}}}{i}")).collect::<String>()
    );
    assert_eq!(out(&chain).as_deref(), Ok("7"));
    // A replacement that would grow past the bound fails as it grows, not after.
    assert!(out("{{ replace \" \" (alignLeft 65536 \"\") (alignLeft 65536 \"\") }}").unwrap_err().contains("larger than"));
    assert!(out("{{ regexReplaceAll \"\" (alignLeft 60000 \"\") \"xx\" }}").unwrap_err().contains("larger than"));
    // Failures while rendering: comparing a string with a number, a value grown too large.
    assert!(out("{{ if eq .status 500 }}x{{ end }}").unwrap_err().contains("incompatible types"));
    let grow = format!("{}.msg{}", "(replace \"\" \"xxxxxxxx\" ".repeat(6), ")".repeat(6));
    assert!(out(&format!("{{{{ {grow} }}}}")).unwrap_err().contains("larger than"));
    assert!(out("{{ printf \"%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s%2000s\" }}").is_ok(), "widths are capped at 1024, missing args are noted");
}

#[test]
fn hostile_templates_never_panic() {
    // Random templates, structured (values, functions with any number of arguments,
    // pipelines, parentheses, conditions) and not, over multi-byte text and extreme
    // times: every one parses or is refused, renders or fails, and none panics.
    let values = [".a", ".msg", "__line__", "__timestamp__", "\"x\"", "`é日`", "\"\"", "-1", "3", "0.5", "1e300", "true", "\"%-9.3f%q%d%s%\"", "\"(a+)+$\""];
    let funcs: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
    let mut next = draws(0x9e37_79b9_7f4a_7c15);
    let pipe = |next: &mut dyn FnMut(usize) -> usize| {
        let mut p = values[next(values.len())].to_owned();
        for _ in 0..next(4) {
            let args: Vec<&str> = (0..next(4)).map(|_| values[next(values.len())]).collect();
            p = format!("{p} | {} {}", funcs[next(funcs.len())], args.join(" "));
        }
        if next(3) == 0 { format!("({p})") } else { p }
    };
    let pieces = ["{{", "}}", "{{-", "-}}", "|", "(", ")", "if", "else", "end", "é", "/*", "*/"];
    let (mut piped, mut failed) = (0, 0);
    for i in 0..20_000 {
        let src = if i % 4 == 0 {
            (0..1 + next(12)).map(|_| pieces[next(pieces.len())]).collect::<Vec<_>>().join(" ")
        } else {
            let (a, b) = (pipe(&mut next), pipe(&mut next));
            match next(3) {
                0 => format!("é{{{{ {a} }}}}日{{{{- {b} -}}}}"),
                1 => format!("{{{{ if {a} }}}}{{{{ {b} }}}}{{{{ else if not {b} }}}}x{{{{ else }}}}{{{{ {a} }}}}{{{{ end }}}}"),
                _ => format!("{{{{ printf \"%s|%5.1f|%-3d|%q\" {a} {b} }}}}"),
            }
        };
        let Ok(t) = template(&src) else { continue };
        let labels: super::super::labels::Labels = [("a", "é1日"), ("msg", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let ts = [i64::MIN, -1, 0, i64::MAX][next(4)];
        piped += usize::from(t.iter().any(|p| matches!(p, TemplatePart::Pipe(_) | TemplatePart::If { .. })));
        failed += usize::from(render(&t, &Scope { labels: &labels, line: "é日本 line", timestamp_ns: ts }).is_err());
    }
    // Enough of them ran functions and conditions, and some failed while running.
    assert!(piped > 1_000 && failed > 100, "{piped} with functions or conditions, {failed} failed");
    for layout in ["", ".", ",9", ".00é", "é.9", "Z07:0", "-07:0", "__", "_", "2006é01"] {
        let _ = go_time(i64::MAX.into(), layout);
        let _ = go_time(i64::MIN.into(), layout);
        let _ = go_time(i128::MAX, layout);
        let _ = go_time(i128::MIN, layout);
    }
}

/// sprig's arithmetic, conversions, string helpers and encodings, as Loki registers them.
#[test]
fn sprig_functions_compute_as_sprig_does() {
    for (src, want) in [
        ("{{ add 1 2 3 }} {{ add \"2\" .n }} {{ sub 10 \"3\" }} {{ mul 2 3 4 }}", "6 9 7 24"),
        ("{{ div 7 2 }} {{ mod 7 2 }} {{ div -7 2 }} {{ max 1 5 3 }} {{ min 4 \"2\" }}", "3 1 -3 5 2"),
        // Text as Go reads integer literals: a zero fraction allowed, otherwise 0.
        ("{{ int \"12.0\" }} {{ int \"1.5\" }} {{ int \"0x1f\" }} {{ int \"010\" }} {{ int \"x\" }} {{ int 2.9 }}", "12 0 31 8 0 2"),
        ("{{ float64 \"1.5\" }} {{ float64 \"x\" }}", "1.5 0"),
        // Decimal arithmetic: 0.1 + 0.2 is 0.3.
        ("{{ addf 0.1 0.2 }} {{ subf 1 0.9 }} {{ mulf 1.1 1.1 }} {{ divf 1 4 }} {{ addf 1 2 3.5 }}", "0.3 0.1 1.21 0.25 6.5"),
        ("{{ maxf 1.5 \"2.5\" }} {{ minf 1.5 -2 }} {{ ceil 1.2 }} {{ floor 1.8 }}", "2.5 -2 2 1"),
        ("{{ round 3.14159 2 }} {{ round 2.5 0 }} {{ round 2.4 0 0.3 }} {{ round -2.5 0 }}", "3.14 3 3 -3"),
        ("{{ repeat 3 \"ab\" }}|{{ indent 2 \"a\\nb\" }}|{{ nindent 1 \"c\" }}", "ababab|  a\n  b|\n c"),
        ("{{ b64enc \"hello\" }} {{ b64dec \"aGVsbG8=\" }}", "aGVsbG8= hello"),
        ("{{ urlencode \"a b&c=d/é\" }} {{ urldecode \"a+b%26c%3Dd%2F%C3%A9\" }}", "a+b%26c%3Dd%2F%C3%A9 a b&c=d/é"),
        ("{{ count \"a\" \"banana\" }} {{ count \"[0-9]+\" .msg }}", "3 0"),
        ("{{ bytes \"1KiB\" }} {{ duration \"1m30s\" }} {{ duration_seconds \"250ms\" }}", "1024 90 0.25"),
        ("{{ .status | add 1 }} {{ .n | mul 6 | sub 50 }}", "501 8"),
    ] {
        assert_eq!(out(src).as_deref(), Ok(want), "{src}");
    }
    // `b64dec` answers the error's text, as sprig does; the others fail the line.
    assert!(out("{{ b64dec \"!!\" }}").is_ok_and(|s| !s.is_empty() && s != "!!"));
    for src in [
        "{{ div 1 0 }}",
        "{{ mod 1 \"0\" }}",
        "{{ divf 1 0 }}",
        "{{ urldecode \"%zz\" }}",
        "{{ bytes \"lots\" }}",
        "{{ repeat -1 \"a\" }}",
        "{{ repeat 100000 \"ab\" }}",
    ] {
        assert!(out(src).is_err(), "{src}");
    }
    // `now` is a time near now.
    let now: i64 = out("{{ now | unixEpoch }}").unwrap().parse().unwrap();
    assert!((now - chrono::Utc::now().timestamp()).abs() < 5, "{now}");
    // Argument counts are checked when the query is read.
    for (src, needle) in [
        ("{{ round 1 }}", "2 to 3 arguments"),
        ("{{ now 1 }}", "takes 0 argument"),
        ("{{ add }}", "at least 1"),
        ("{{ count .msg \"a\" }}", "regex as a quoted string"),
    ] {
        let e = template(src).expect_err(src);
        assert!(e.contains(needle), "{src}: {e}");
    }
}

/// sprig's `toDate` and Loki's `toDateInZone`: text read by a Go layout, Go's zero time when it
/// does not fit.
#[test]
fn to_date_reads_go_layouts() {
    for (src, want) in [
        (r#"{{ toDate "2006-01-02" "2024-03-05" | unixEpoch }}"#, "1709596800"),
        (r#"{{ toDate "2006-01-02T15:04:05Z07:00" "2024-03-05T10:20:30+02:00" | unixEpoch }}"#, "1709626830"),
        (r#"{{ toDate "2006-01-02T15:04:05Z07:00" "2024-03-05T10:20:30Z" | unixEpoch }}"#, "1709634030"),
        // A fraction after the seconds is read even when the layout does not show one.
        (r#"{{ toDate "2006-01-02 15:04:05" "2024-03-05 10:20:30.25" | unixEpochMillis }}"#, "1709634030250"),
        // `Z07:00` wants a colon in the offset.
        (r#"{{ toDate "2006-01-02T15:04:05.000Z07:00" "2024-03-05T10:20:30.500-0000" | unixEpoch }}"#, "-62135596800"),
        (r#"{{ toDate "2006-01-02T15:04:05.000Z0700" "2024-03-05T10:20:30.500-0130" | unixEpochNanos }}"#, "1709639430500000000"),
        (r#"{{ toDate "Jan 2, 2006 at 3:04pm (MST)" "Feb 3, 2013 at 7:54pm (PST)" | date "2006-01-02 15:04" }}"#, "2013-02-03 19:54"),
        (r#"{{ toDate "Monday 02/01/06 15.04.05,999" "friday 31/12/99 23.59.58" | date "Jan 2 2006 15:04:05.000" }}"#, "Dec 31 1999 23:59:58.000"),
        // Text that does not fit (or a day that does not exist) is Go's zero time.
        (r#"{{ toDate "2006-01-02" "nope" | unixEpoch }}"#, "-62135596800"),
        (r#"{{ toDate "2006-01-02" "2023-02-30" | date "2006-01-02" }}"#, "0001-01-01"),
        (r#"{{ toDate "2006-01-02" "2023-02-03 extra" | date "2006" }}"#, "0001"),
        (r#"{{ toDateInZone "2006-01-02" "UTC" "2024-03-05" | unixEpoch }}"#, "1709596800"),
        (r#"{{ if gt (toDate "2006" "2024" | unixEpoch) (toDate "2006" "2023" | unixEpoch) }}later{{ end }}"#, "later"),
    ] {
        assert_eq!(out(src).as_deref(), Ok(want), "{src}");
    }
    assert!(out(r#"{{ toDateInZone "2006" "Europe/Paris" "2024" }}"#).is_err_and(|e| e.contains("only UTC")));
}

#[test]
fn go_layout_parsing_never_panics() {
    let pieces = [
        "2006", "06", "01", "1", "Jan", "January", "02", "_2", "2", "15", "03", "3", "04", "05", ".000", ",999", ".9", "PM", "pm", "Mon", "Monday", "MST",
        "Z07:00", "-0700", "-07", " ", "-", ":", "T", "é", "日",
    ];
    let texts = [
        "2024",
        "24",
        "12",
        "1",
        "Feb",
        "février",
        "é",
        "日本",
        "31",
        " 5",
        "23",
        "11",
        "59",
        "58.123456789",
        ",5",
        "PM",
        "am",
        "Tue",
        "Tuesday",
        "CEST",
        "Z",
        "+05:30",
        "-0130",
        "-07",
        " ",
        "-",
        ":",
        "T",
        "",
        "9999999999",
    ];
    let mut next = draws(0x2545_f491_4f6c_dd1d);
    for _ in 0..50_000 {
        let layout: String = (0..1 + next(6)).map(|_| pieces[next(pieces.len())]).collect();
        let value: String = (0..next(7)).map(|_| texts[next(texts.len())]).collect();
        if let Some(ns) = gotime::go_parse(&layout, &value) {
            // Whatever reads, formats back.
            let _ = go_time(ns, &layout);
        }
    }
}
