//! The tool registry: each tool declared once, its argument schema generated from its Rust
//! type, its read/write class and description fixed in code, its output bounded where it is
//! made. A request is offered a few relevant tools, not the whole catalogue (weak local models
//! choose better among few).

use std::sync::Arc;

use auth::Identity;
use futures_util::future::BoxFuture;
use query::agent::AgentQueries;
use sandbox::{ToolClass, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::ToolSpec;

/// What a tool may use: the caller's identity (never the model's choice), the query service
/// and the control database.
pub struct ToolContext<'a> {
    pub identity: &'a Identity,
    pub queries: &'a AgentQueries,
    pub control: Option<&'a control::repo::Repo>,
    pub admin_role: &'a str,
    /// The workspace and project the user is looking at, used when the model names none.
    pub workspace: Option<&'a str>,
    pub project: Option<&'a str>,
}

pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn class(&self) -> ToolClass;
    fn parameters(&self) -> Value;
    /// Words in a question that make this tool relevant.
    fn keywords(&self) -> &'static [&'static str];
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>>;
    /// A query the user can run to see the same (a dashboard API URL), for the citation.
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String>;
    /// For write tools: the exact action `args` ask for, as the user is asked to approve it,
    /// and the arguments with every default filled in (what runs once approved, with no
    /// context); an error when they do not make a valid action.
    fn action<'a>(&'a self, _ctx: &'a ToolContext<'a>, _args: &'a Value) -> BoxFuture<'a, Result<(String, Value), ToolError>> {
        Box::pin(async { Err(ToolError("this tool does not change anything".into())) })
    }
}

/// The JSON Schema of `T`, inlined (no `$ref`s: weak models and Ollama read it better).
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    let mut v = serde_json::to_value(settings.into_generator().into_root_schema_for::<T>()).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    v
}

/// `args` as `T` (whose schema is `T`'s), or an error that tells the model what was wrong:
/// a field the schema does not have is refused, not ignored.
pub fn parse_args<T: DeserializeOwned + JsonSchema>(tool: &str, args: Value) -> Result<T, ToolError> {
    let args = if args.is_null() { json!({}) } else { args };
    let Some(given) = args.as_object() else { return Err(ToolError(format!("{tool}: the arguments must be a JSON object"))) };
    let schema = schema_of::<T>();
    let known = schema["properties"].as_object();
    if let Some(unknown) = given.keys().find(|k| known.is_none_or(|p| !p.contains_key(k.as_str()))) {
        let names: Vec<&String> = known.map(|p| p.keys().collect()).unwrap_or_default();
        return Err(ToolError(format!("{tool}: no argument `{unknown}`; the arguments are {names:?}")));
    }
    serde_json::from_value(args).map_err(|e| ToolError(format!("{tool}: the arguments do not fit its schema: {e}")))
}

/// Filters every log tool takes. Tenancy names are filters the query service checks against
/// the caller's own grants; they cannot widen anything.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct LogFilter {
    /// Workspace name; default the one the user is looking at, else all of theirs.
    pub workspace: Option<String>,
    /// Project (namespace).
    pub project: Option<String>,
    /// Application (the app label).
    pub application: Option<String>,
    pub pod: Option<String>,
    /// trace, debug, info, warn, error or fatal.
    pub level: Option<String>,
    /// Words or "phrases" that must appear; -word excludes.
    pub q: Option<String>,
    /// How far back, like 15m, 1h, 1d. Default 1h.
    pub since: Option<String>,
}

impl LogFilter {
    fn params(&self, ctx: &ToolContext<'_>) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let ws = self.workspace.clone().or_else(|| ctx.workspace.map(str::to_owned));
        let project = self.project.clone().or_else(|| if self.workspace.is_none() { ctx.project.map(str::to_owned) } else { None });
        for (k, v) in [
            ("workspace", ws),
            ("project", project),
            ("application", self.application.clone()),
            ("pod", self.pod.clone()),
            ("level", self.level.clone()),
            ("q", self.q.clone()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                p.push((k, v));
            }
        }
        p.push(("since", self.since.clone().unwrap_or_else(|| "1h".into())));
        p
    }
}

fn api_error(e: schemas::ApiError) -> ToolError {
    ToolError(format!("{}: {}", e.code.as_str(), e.message))
}

fn cite_url(path: &str, params: &[(&str, String)]) -> String {
    format!("{path}?{}", serde_urlencoded::to_string(params).unwrap_or_default())
}

// ---- logs.search

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    #[serde(flatten)]
    pub filter: LogFilter,
    /// Lines, newest first; at most 100.
    pub limit: Option<u32>,
}

/// Lines returned at most; more asked for is clamped and the model told.
pub const MAX_LINES: u32 = 100;

pub struct LogsSearch;

impl Tool for LogsSearch {
    fn name(&self) -> &'static str {
        "logs.search"
    }
    fn description(&self) -> &'static str {
        "Search the user's workload log lines (newest first, at most 100). Prefer logs.patterns or logs.histogram to get an overview first."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<SearchArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["log", "error", "crash", "fail", "line", "message", "why", "exception", "timeout"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: SearchArgs = parse_args(self.name(), args)?;
            let asked = a.limit.unwrap_or(50);
            let limit = asked.clamp(1, MAX_LINES);
            let mut params = a.filter.params(ctx);
            params.push(("limit", limit.to_string()));
            let found = ctx.queries.search(ctx.identity, &params).await.map_err(api_error)?;
            let lines: Vec<Value> = found["lines"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|l| json!({ "time": l["timestamp"], "workspace": l["workspace"], "project": l["project"], "pod": l["pod"], "level": l["level"], "message": l["message"] }))
                        .collect()
                })
                .unwrap_or_default();
            let mut out = json!({ "lines": lines, "from": found["from"], "to": found["to"] });
            if asked > MAX_LINES {
                out["note"] = json!(format!("asked for {asked} lines; at most {MAX_LINES} are returned"));
            }
            Ok(out)
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let a: SearchArgs = serde_json::from_value(args.clone()).ok()?;
        Some(cite_url("/api/v1/logs/search", &a.filter.params(ctx)))
    }
}

// ---- logs.histogram

pub struct LogsHistogram;

impl Tool for LogsHistogram {
    fn name(&self) -> &'static str {
        "logs.histogram"
    }
    fn description(&self) -> &'static str {
        "Count the user's log lines by level over time: totals per level and counts per time bucket. Use it to see when errors spiked."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<LogFilter>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["spike", "when", "rate", "count", "how many", "trend", "increase", "error"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let f: LogFilter = parse_args(self.name(), args)?;
            let h = ctx.queries.histogram(ctx.identity, &f.params(ctx)).await.map_err(api_error)?;
            // Buckets are bounded by the query service (`query.max_buckets`); keep the last 60.
            let buckets = h["buckets"].as_array().map(|b| b.iter().rev().take(60).rev().cloned().collect::<Vec<_>>()).unwrap_or_default();
            Ok(json!({ "totals": h["totals"], "buckets": buckets, "from": h["from"], "to": h["to"], "step": h["step"] }))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let f: LogFilter = serde_json::from_value(args.clone()).ok()?;
        Some(cite_url("/api/v1/logs/histogram", &f.params(ctx)))
    }
}

// ---- logs.patterns

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PatternArgs {
    #[serde(flatten)]
    pub filter: LogFilter,
    /// Patterns, most frequent first; at most 50.
    pub top: Option<u32>,
}

pub struct LogsPatterns;

impl Tool for LogsPatterns {
    fn name(&self) -> &'static str {
        "logs.patterns"
    }
    fn description(&self) -> &'static str {
        "Group the user's recent log lines (up to 1000) into templates with counts and an example each. The best first look at what a service is logging."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<PatternArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["log", "error", "crash", "pattern", "why", "what", "happen", "fail"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: PatternArgs = parse_args(self.name(), args)?;
            let mut params = a.filter.params(ctx);
            params.push(("limit", "1000".into()));
            ctx.queries.patterns(ctx.identity, &params, a.top.unwrap_or(20).clamp(1, 50) as usize).await.map_err(api_error)
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let a: PatternArgs = serde_json::from_value(args.clone()).ok()?;
        Some(cite_url("/api/v1/logs/search", &a.filter.params(ctx)))
    }
}

// ---- workspace.describe

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DescribeArgs {
    /// Workspace name; default the one the user is looking at.
    pub workspace: Option<String>,
}

pub struct WorkspaceDescribe;

impl Tool for WorkspaceDescribe {
    fn name(&self) -> &'static str {
        "workspace.describe"
    }
    fn description(&self) -> &'static str {
        "Describe one of the user's workspaces: plan, status, and its projects with their status."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<DescribeArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["workspace", "project", "plan", "status", "describe"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: DescribeArgs = parse_args(self.name(), args)?;
            let Some(repo) = ctx.control else { return Err(ToolError("workspaces are not managed by this server".into())) };
            let Some(name) = a.workspace.or_else(|| ctx.workspace.map(str::to_owned)) else {
                return Err(ToolError("say which workspace (the user is not looking at one)".into()));
            };
            let (ws, _) = repo.visible_workspace(ctx.identity, ctx.admin_role, &name).await.map_err(|e| ToolError(e.to_string()))?;
            let projects = repo.projects(&ws, "", 200).await.map_err(|e| ToolError(e.to_string()))?;
            Ok(json!({
                "workspace": ws.name, "plan": ws.plan, "status": ws.status, "status_reason": ws.status_reason,
                "projects": projects.items.iter().map(|p| json!({ "name": p.name, "status": p.status })).collect::<Vec<_>>(),
            }))
        })
    }
    fn cite(&self, ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let name = args.get("workspace").and_then(Value::as_str).or(ctx.workspace)?;
        Some(format!("/api/v1/workspaces/{name}"))
    }
}

// ---- metrics.query

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MetricsArgs {
    /// A PromQL query, like sum by (pod) (rate(http_requests_total{project="shop"}[5m])). Only
    /// the user's own series are read, whatever it names.
    pub query: String,
    /// How far back, like 15m, 1h, 1d. Default 1h.
    pub since: Option<String>,
    /// Only the value now (an instant query) instead of a series over time.
    pub instant: Option<bool>,
}

/// Series in a metrics result at most; points per series at most.
pub const MAX_SERIES: usize = 50;
const POINTS: i64 = 60;

impl MetricsArgs {
    /// The Prometheus API's parameters: `query` and, for a range, `start`, `end` and a `step`
    /// giving about 60 points.
    fn params(&self, now_s: i64) -> Result<Vec<(&'static str, String)>, ToolError> {
        let mut p = vec![("query", self.query.clone())];
        if self.instant == Some(true) {
            p.push(("time", now_s.to_string()));
            return Ok(p);
        }
        let since = self.since.as_deref().unwrap_or("1h");
        let Some(ns) = query::params::parse_duration_ns(since).filter(|n| *n > 0) else {
            return Err(ToolError(format!("metrics.query: since `{since}` is not a duration like 15m, 1h or 1d")));
        };
        let secs = (ns / 1_000_000_000).max(60);
        p.push(("start", (now_s - secs).to_string()));
        p.push(("end", now_s.to_string()));
        p.push(("step", (secs / POINTS).max(15).to_string()));
        Ok(p)
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A series as the model reads it: its labels, min, max, mean and last, and its points.
fn series_summary(s: &Value) -> (f64, Value) {
    let points: Vec<(f64, f64)> =
        s["values"].as_array().map(|v| v.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse::<f64>().ok()?))).collect()).unwrap_or_default();
    let values: Vec<f64> = points.iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
    let last = points.last().map_or(f64::NAN, |p| p.1);
    let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let mean = if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 };
    let num = |v: f64| if v.is_finite() { json!((v * 1e4).round() / 1e4) } else { Value::Null };
    let out = json!({
        "metric": s["metric"], "last": num(last), "min": num(min), "max": num(max), "mean": num(mean),
        "points": points.iter().map(|(t, v)| json!([*t as i64, num(*v)])).collect::<Vec<_>>(),
    });
    (if last.is_finite() { last } else { f64::NEG_INFINITY }, out)
}

pub struct MetricsQuery;

impl Tool for MetricsQuery {
    fn name(&self) -> &'static str {
        "metrics.query"
    }
    fn description(&self) -> &'static str {
        "Run a PromQL query over the user's metrics: over time (about 60 points per series, with min, max, mean and last) or, with instant, the value now. At most 50 series: aggregate with sum by (...) or topk."
    }
    fn class(&self) -> ToolClass {
        ToolClass::Read
    }
    fn parameters(&self) -> Value {
        schema_of::<MetricsArgs>()
    }
    fn keywords(&self) -> &'static [&'static str] {
        &["metric", "cpu", "memory", "latency", "throughput", "usage", "prometheus", "promql", "slow", "requests per", "saturat"]
    }
    fn run<'a>(&'a self, ctx: &'a ToolContext<'a>, args: Value) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let a: MetricsArgs = parse_args(self.name(), args)?;
            let data = ctx.queries.metrics(ctx.identity, &a.params(now_s())?).await.map_err(api_error)?;
            let result = data["result"].as_array().cloned().unwrap_or_default();
            let total = result.len();
            let mut out = match data["resultType"].as_str() {
                Some("matrix") => {
                    let mut series: Vec<(f64, Value)> = result.iter().map(series_summary).collect();
                    // The largest last values first: what an operator looks at.
                    series.sort_by(|a, b| b.0.total_cmp(&a.0));
                    json!({ "series": series.into_iter().take(MAX_SERIES).map(|s| s.1).collect::<Vec<_>>() })
                }
                Some("vector") => {
                    json!({ "samples": result.iter().take(MAX_SERIES).map(|s| json!({ "metric": s["metric"], "value": s["value"][1] })).collect::<Vec<_>>() })
                }
                _ => json!({ "value": data["result"] }),
            };
            out["result_type"] = data["resultType"].clone();
            if total > MAX_SERIES {
                out["note"] = json!(format!("{total} series; the {MAX_SERIES} with the largest values are shown: aggregate (sum by, topk) to see the rest"));
            }
            if total == 0 {
                out["note"] = json!("no series: the metric may not exist for this user's workspaces, or the selectors match nothing");
            }
            Ok(out)
        })
    }
    fn cite(&self, _ctx: &ToolContext<'_>, args: &Value) -> Option<String> {
        let a: MetricsArgs = serde_json::from_value(args.clone()).ok()?;
        let params = a.params(now_s()).ok()?;
        let path = if a.instant == Some(true) { "/prometheus/api/v1/query" } else { "/prometheus/api/v1/query_range" };
        Some(cite_url(path, &params))
    }
}

/// Every tool there is.
#[derive(Clone)]
pub struct Registry {
    tools: Vec<Arc<dyn Tool>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { tools: vec![Arc::new(LogsPatterns), Arc::new(LogsHistogram), Arc::new(LogsSearch), Arc::new(WorkspaceDescribe), Arc::new(MetricsQuery)] }
    }
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// Adds a tool to the catalogue.
    pub fn push(&mut self, tool: Arc<dyn Tool>) {
        self.tools.push(tool);
    }

    /// The tools offered for `question`: the read tools whose keywords it mentions most, filled
    /// up to `at_most` in the registry's order (the log overview tools first), and the write
    /// tools whose keywords it mentions (a call of one only proposes the action).
    pub fn offer(&self, question: &str, at_most: usize) -> Vec<Arc<dyn Tool>> {
        let q = question.to_lowercase();
        let score = |t: &Arc<dyn Tool>| t.keywords().iter().filter(|k| q.contains(*k)).count();
        let mut scored: Vec<(usize, &Arc<dyn Tool>)> = self.tools.iter().filter(|t| t.class() == ToolClass::Read).map(|t| (score(t), t)).collect();
        // Stable: equal scores keep the registry's order.
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut out: Vec<Arc<dyn Tool>> = scored.into_iter().take(at_most).map(|(_, t)| Arc::clone(t)).collect();
        // A write tool only when the question asks for what it does; calling it proposes.
        out.extend(self.tools.iter().filter(|t| t.class() == ToolClass::Write && score(t) > 0).cloned());
        out
    }

    pub fn specs(tools: &[Arc<dyn Tool>]) -> Vec<ToolSpec> {
        tools.iter().map(|t| ToolSpec { name: t.name().into(), description: t.description().into(), parameters: t.parameters() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_come_from_the_types_and_forbid_extra_arguments() {
        let s = schema_of::<SearchArgs>();
        assert_eq!(s["type"], "object");
        for field in ["workspace", "project", "level", "q", "since", "limit"] {
            assert!(s["properties"].get(field).is_some(), "{field} in {s}");
        }
        assert!(!s.to_string().contains("$ref"), "{s}");
        assert!(parse_args::<SearchArgs>("logs.search", json!({ "limit": 5, "org_id": "other" })).is_err());
        assert!(parse_args::<SearchArgs>("logs.search", json!({ "limit": "lots" })).is_err());
        assert!(parse_args::<SearchArgs>("logs.search", Value::Null).is_ok());
    }

    #[test]
    fn a_few_relevant_tools_are_offered() {
        let r = Registry::default();
        let names = |q: &str| r.offer(q, 3).iter().map(|t| t.name()).collect::<Vec<_>>();
        assert!(names("why is checkout crashing with errors?").contains(&"logs.patterns"));
        assert_eq!(names("describe the workspace plan")[0], "workspace.describe");
        assert_eq!(names("hello").len(), 3);
    }
}
