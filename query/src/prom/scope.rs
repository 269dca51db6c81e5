//! Scoping PromQL to the caller: the query is parsed, every selector in the tree (inside
//! subqueries, binary operations, `or`/`unless`, function arguments) gets the caller's tenant
//! matchers, and the tree is printed again for the upstream. Nothing is done to the query text.
//!
//! Per selector, the caller's own matchers on the workspace label only choose among the
//! workspaces the caller may read, and are then replaced by the service's: a regex or an empty
//! matcher on the tenant label can narrow, never widen. A selector that matches none of them
//! gets a matcher pair no series can satisfy, so the answer is empty rather than an error
//! (`absent()` then says "absent", which is true for this caller).
//!
//! Functions that write a tenancy label (`label_replace`, `label_join`, `count_values` onto
//! `workspace` or the project label) are refused: their output would look like another
//! tenant's series. `info()` is refused because it reads series its arguments do not name.

use auth::{Namespaces, TenantScope};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};
use schemas::{ApiError, ErrorCode};

/// The labels that carry tenancy in the upstream's series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLabels {
    /// The organisation of a series. Empty: the upstream holds one organisation's series only
    /// (workspace names are unique per organisation, so a shared upstream needs this label).
    pub organization: String,
    /// The workspace of a series.
    pub workspace: String,
    /// The project (namespace) of a series.
    pub project: String,
}

impl Default for TenantLabels {
    fn default() -> Self {
        TenantLabels { organization: "organization".into(), workspace: "workspace".into(), project: "namespace".into() }
    }
}

/// Longest query accepted (as VictoriaMetrics' default).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Most operators and brackets outside selectors: the parser and the tree are recursive, and a
/// query like `x+x+…+x` nests as deep as it is long.
pub const MAX_NESTING: usize = 256;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, m)
}

/// Parses `query`, refusing what would be too deep to handle safely.
pub fn parse(query: &str) -> Result<Expr, ApiError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("the query is longer than {MAX_QUERY_BYTES} bytes; shorten it")));
    }
    if nesting(query) > MAX_NESTING {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("the query has more than {MAX_NESTING} operators and brackets; split it")));
    }
    parser::parse(query).map_err(|e| invalid(format!("cannot parse the PromQL query: {e}")))
}

/// An upper bound on the depth of the tree `query` parses to: operators, brackets and the
/// word operators, counted outside string literals and `{…}` selectors.
fn nesting(query: &str) -> usize {
    let b = query.as_bytes();
    let (mut i, mut n, mut braces) = (0, 0, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' && q != b'`' { 2 } else { 1 };
                }
            }
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            b'(' | b'[' | b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' if braces == 0 => n += 1,
            c if braces == 0 && c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if matches!(&query[start..i], "and" | "or" | "unless" | "atan2") {
                    n += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    n
}

/// One workspace the caller may read, and which of its projects.
#[derive(Debug, Clone, Copy)]
struct Grant<'a> {
    workspace: &'a str,
    namespaces: &'a Namespaces,
}

/// What is written into every selector: the organisation and the workspace grants.
struct Scoper<'a> {
    org: Option<&'a str>,
    grants: Vec<Grant<'a>>,
    labels: &'a TenantLabels,
}

impl<'a> Scoper<'a> {
    fn new(scope: &'a TenantScope, labels: &'a TenantLabels) -> Scoper<'a> {
        let grants = scope.grants().unwrap_or_default().iter().map(|g| Grant { workspace: g.workspace(), namespaces: g.namespaces() }).collect();
        Scoper { org: scope.org_id(), grants, labels }
    }
}

/// Adds the scope's matchers to every selector of `expr`.
pub fn scope_expr(expr: &mut Expr, scope: &TenantScope, labels: &TenantLabels) -> Result<(), ApiError> {
    walk(expr, &Scoper::new(scope, labels))
}

/// A selector standing alone (`match[]` of `series`, `labels`, `label/…/values`), scoped.
pub fn scope_selector_text(text: &str, scope: &TenantScope, labels: &TenantLabels) -> Result<String, ApiError> {
    let mut expr = parse(text)?;
    match &mut expr {
        Expr::VectorSelector(vs) => scope_selector(vs, &Scoper::new(scope, labels))?,
        _ => return Err(invalid(format!("`match[]` must be a series selector such as up{{job=\"x\"}}, not `{text}`"))),
    }
    Ok(expr.to_string())
}

/// The selector that matches every series the scope covers (for requests without `match[]`).
pub fn scope_only(scope: &TenantScope, labels: &TenantLabels) -> Result<String, ApiError> {
    let mut vs = VectorSelector::default();
    scope_selector(&mut vs, &Scoper::new(scope, labels))?;
    Ok(vs.to_string())
}

fn walk(expr: &mut Expr, s: &Scoper<'_>) -> Result<(), ApiError> {
    match expr {
        Expr::VectorSelector(vs) => scope_selector(vs, s),
        Expr::MatrixSelector(ms) => scope_selector(&mut ms.vs, s),
        Expr::Aggregate(a) => {
            if a.op.to_string() == "count_values"
                && let Some(Expr::StringLiteral(l)) = a.param.as_deref()
            {
                refuse_tenant_label(&l.val, "count_values", s.labels)?;
            }
            if let Some(p) = a.param.as_deref_mut() {
                walk(p, s)?;
            }
            walk(&mut a.expr, s)
        }
        Expr::Unary(u) => walk(&mut u.expr, s),
        Expr::Binary(b) => {
            walk(&mut b.lhs, s)?;
            walk(&mut b.rhs, s)
        }
        Expr::Paren(p) => walk(&mut p.expr, s),
        Expr::Subquery(q) => walk(&mut q.expr, s),
        Expr::Call(c) => {
            let name = c.func.name;
            if name == "info" {
                return Err(invalid("`info()` is not supported here: it reads series its arguments do not name"));
            }
            if matches!(name, "label_replace" | "label_join")
                && let Some(Expr::StringLiteral(dst)) = c.args.args.get(1).map(|a| a.as_ref())
            {
                refuse_tenant_label(&dst.val, name, s.labels)?;
            }
            c.args.args.iter_mut().try_for_each(|a| walk(a, s))
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err(invalid("this expression is not supported")),
    }
}

fn refuse_tenant_label(label: &str, func: &str, labels: &TenantLabels) -> Result<(), ApiError> {
    if label == labels.workspace || label == labels.project || (!labels.organization.is_empty() && label == labels.organization) {
        return Err(ApiError::new(ErrorCode::Forbidden, format!("`{func}` may not write the tenancy label `{label}`; name another output label")));
    }
    Ok(())
}

fn scope_selector(vs: &mut VectorSelector, s: &Scoper<'_>) -> Result<(), ApiError> {
    if vs.matchers.or_matchers.is_empty() {
        scope_group(&mut vs.matchers.matchers, s)
    } else {
        vs.matchers.or_matchers.iter_mut().try_for_each(|g| scope_group(g, s))
    }
}

/// One conjunction of matchers: its matchers on the organisation and workspace labels choose
/// among what the caller may read and are then replaced by the service's own.
fn scope_group(group: &mut Vec<Matcher>, s: &Scoper<'_>) -> Result<(), ApiError> {
    let (ws, org) = (s.labels.workspace.as_str(), s.labels.organization.as_str());
    let org_ok = org.is_empty() || group.iter().filter(|m| m.name == org).all(|m| s.org.is_some_and(|o| m.is_match(o)));
    let chosen: Vec<Grant<'_>> = match org_ok {
        true => {
            s.grants.iter().copied().filter(|g| !g.namespaces.is_empty() && group.iter().filter(|m| m.name == ws).all(|m| m.is_match(g.workspace))).collect()
        }
        false => Vec::new(),
    };
    group.retain(|m| m.name != ws && (org.is_empty() || m.name != org));
    if !org.is_empty() {
        group.push(Matcher::new(MatchOp::Equal, org, s.org.unwrap_or_default()));
    }
    group.extend(tenant_matchers(&chosen, s.labels)?);
    Ok(())
}

fn tenant_matchers(chosen: &[Grant<'_>], labels: &TenantLabels) -> Result<Vec<Matcher>, ApiError> {
    let ws = labels.workspace.as_str();
    let restricted = chosen.iter().filter(|g| matches!(g.namespaces, Namespaces::Only(_))).count();
    Ok(match (chosen, restricted) {
        // Nothing the caller may read: a pair no series satisfies.
        ([], _) => vec![Matcher::new(MatchOp::Equal, ws, ""), Matcher::new(MatchOp::NotEqual, ws, "")],
        ([one], 0) => vec![Matcher::new(MatchOp::Equal, ws, one.workspace)],
        (many, 0) => vec![one_of(ws, many.iter().map(|g| g.workspace))?],
        ([Grant { workspace, namespaces: Namespaces::Only(set) }], _) => {
            let project = match set.len() {
                1 => Matcher::new(MatchOp::Equal, &labels.project, set.iter().next().map(String::as_str).unwrap_or_default()),
                _ => one_of(&labels.project, set.iter().map(String::as_str))?,
            };
            vec![Matcher::new(MatchOp::Equal, ws, workspace), project]
        }
        (many, _) => {
            let names: Vec<&str> = many.iter().map(|g| g.workspace).collect();
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "you may read only some projects of some of the workspaces {names:?}, so one selector cannot cover them all; add {ws}=\"<one of them>\" to each selector"
                ),
            ));
        }
    })
}

/// `label=~"a|b|c"`, each value escaped (Go's RE2 takes Rust's escapes).
fn one_of<'a>(label: &str, values: impl Iterator<Item = &'a str>) -> Result<Matcher, ApiError> {
    let alternation = values.map(regex::escape).collect::<Vec<_>>().join("|");
    let re = regex::Regex::new(&format!("^(?:{alternation})$")).map_err(|_| ApiError::new(ErrorCode::Internal, "the tenant matcher could not be built"))?;
    Ok(Matcher::new(MatchOp::Re(re), label, &alternation))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    type Scope = Vec<(String, Namespaces)>;

    fn scope_of(grants: &[(&str, Option<&[&str]>)]) -> Scope {
        grants
            .iter()
            .map(|(w, ns)| (w.to_string(), ns.map_or(Namespaces::All, |ns| Namespaces::Only(ns.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>()))))
            .collect()
    }

    fn scoped(q: &str, scope: &Scope) -> Result<String, ApiError> {
        let mut e = parse(q)?;
        let grants: Vec<Grant<'_>> = scope.iter().map(|(w, n)| Grant { workspace: w, namespaces: n }).collect();
        let labels = TenantLabels { organization: String::new(), ..TenantLabels::default() };
        walk(&mut e, &Scoper { org: Some("acme"), grants, labels: &labels })?;
        Ok(e.to_string())
    }

    #[test]
    fn every_selector_gets_the_tenant_and_tenant_matchers_only_narrow() {
        let a = scope_of(&[("ws-a", None)]);
        let ab = scope_of(&[("ws-a", None), ("ws.b", None)]);
        for (q, want) in [
            ("up", r#"up{workspace="ws-a"}"#),
            (r#"{__name__=~".+"}"#, r#"{__name__=~".+",workspace="ws-a"}"#),
            (r#"up{workspace=~".*"}"#, r#"up{workspace="ws-a"}"#),
            (r#"up{workspace="ws-b"}"#, r#"up{workspace!="",workspace=""}"#),
            (r#"up{workspace!="ws-a"}"#, r#"up{workspace!="",workspace=""}"#),
            (
                "sum(rate(x[5m])) / on() group_left() count(up offset 1h)",
                r#"sum(rate(x{workspace="ws-a"}[5m])) / on () group_left () count(up{workspace="ws-a"} offset 1h)"#,
            ),
            ("max_over_time(up[10m:1m]) or vector(1)", r#"max_over_time(up{workspace="ws-a"}[10m:1m]) or vector(1)"#),
            ("absent(nope)", r#"absent(nope{workspace="ws-a"})"#),
            (r#"up unless up{job="x"}"#, r#"up{workspace="ws-a"} unless up{job="x",workspace="ws-a"}"#),
            (r#"label_replace(up, "x", "$1", "job", "(.*)")"#, r#"label_replace(up{workspace="ws-a"}, "x", "$1", "job", "(.*)")"#),
            (r#"{a="1" or b="2"}"#, r#"{a="1", workspace="ws-a" or b="2", workspace="ws-a"}"#),
        ] {
            assert_eq!(scoped(q, &a).unwrap(), want, "{q}");
        }
        assert_eq!(scoped("up", &ab).unwrap(), r#"up{workspace=~"ws\\-a|ws\\.b"}"#);
        assert_eq!(scoped(r#"up{workspace=~"ws\\..*"}"#, &ab).unwrap(), r#"up{workspace="ws.b"}"#);
    }

    #[test]
    fn printed_queries_parse_back_to_the_same_tree() {
        let a = scope_of(&[("ws-a", None), ("w\"s\\b", None)]);
        for q in [
            r#"histogram_quantile(0.9, sum by (le) (rate(http_bucket{job=~"a|b", code!~"5.."}[5m] @ 100 offset -1m)))"#,
            "-x ^ 2 + (-x) ^ 2 > bool 0.5",
            r#"topk(3, x) by (a) and ignoring(b) y / on(c) group_right(d) z"#,
            "quantile_over_time(0.5, x[1h30m:])",
        ] {
            let once = scoped(q, &a).unwrap();
            let again = scoped(&once, &a).unwrap();
            assert_eq!(parse(&once).unwrap(), parse(&again).unwrap(), "{q} → {once}");
        }
    }

    #[test]
    fn partial_grants_add_the_project_and_refuse_mixing() {
        let shop = scope_of(&[("ws-a", Some(&["shop"][..]))]);
        assert_eq!(scoped("up", &shop).unwrap(), r#"up{namespace="shop",workspace="ws-a"}"#);
        let two = scope_of(&[("ws-a", Some(&["a", "b"][..]))]);
        assert_eq!(scoped("up", &two).unwrap(), r#"up{namespace=~"a|b",workspace="ws-a"}"#);
        let mixed = scope_of(&[("ws-a", Some(&["a"][..])), ("ws-b", None)]);
        assert_eq!(scoped("up", &mixed).unwrap_err().code, ErrorCode::InvalidQuery);
        assert_eq!(scoped(r#"up{workspace="ws-b"}"#, &mixed).unwrap(), r#"up{workspace="ws-b"}"#);
    }

    #[test]
    fn the_organisation_label_is_always_the_callers() {
        let grants_of = scope_of(&[("ws-a", None)]);
        let grants: Vec<Grant<'_>> = grants_of.iter().map(|(w, n)| Grant { workspace: w, namespaces: n }).collect();
        let labels = TenantLabels::default();
        let s = Scoper { org: Some("acme"), grants, labels: &labels };
        for (q, want) in [
            ("up", r#"up{organization="acme",workspace="ws-a"}"#),
            (r#"up{organization=~".*"}"#, r#"up{organization="acme",workspace="ws-a"}"#),
            (r#"up{organization="globex"}"#, r#"up{organization="acme",workspace!="",workspace=""}"#),
        ] {
            let mut e = parse(q).unwrap();
            walk(&mut e, &s).unwrap();
            assert_eq!(e.to_string(), want, "{q}");
        }
        let mut e = parse(r#"label_replace(up, "organization", "globex", "", "")"#).unwrap();
        assert_eq!(walk(&mut e, &s).unwrap_err().code, ErrorCode::Forbidden);
    }

    #[test]
    fn writing_a_tenancy_label_and_hidden_reads_are_refused() {
        let a = scope_of(&[("ws-a", None)]);
        for q in
            [r#"label_replace(up, "workspace", "ws-b", "", "")"#, r#"label_join(up, "namespace", ",", "job")"#, r#"count_values("workspace", up)"#, "info(up)"]
        {
            assert!(scoped(q, &a).is_err(), "{q}");
        }
    }

    #[test]
    fn deep_or_long_queries_are_refused_before_parsing() {
        let a = scope_of(&[("ws-a", None)]);
        for q in [
            vec!["x"; 5_000].join("+"),
            format!("{}x{}", "(".repeat(5_000), ")".repeat(5_000)),
            "-".repeat(5_000) + "x",
            "x".repeat(20_000),
            vec!["x"; 400].join(" or "),
        ] {
            assert_eq!(scoped(&q, &a).unwrap_err().code, ErrorCode::LimitExceeded);
        }
        // Right under the bound is still handled (on a test thread's 2 MiB stack).
        assert!(scoped(&vec!["x"; MAX_NESTING].join("+"), &a).is_ok());
        // Matchers inside selectors do not count.
        let wide = format!("up{{{}}}", (0..300).map(|i| format!("l{i}!=\"v\"")).collect::<Vec<_>>().join(","));
        assert!(scoped(&wide, &a).is_ok());
    }
}
