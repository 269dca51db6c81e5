//! The OpenAPI 3.1 document of the data plane's HTTP API, built here from the same error codes
//! the server answers with. `dataplane openapi` prints it, the server serves it at
//! `/openapi.json`, and `schemas/openapi.json` is its committed copy (a test fails when the two
//! drift apart; regenerate with `cargo run -q -- openapi > schemas/openapi.json`).
//!
//! The Loki endpoints are listed with their parameters; their answers are Loki's own JSON,
//! documented by Loki, so they are described rather than restated.

use serde_json::{Value, json};

use crate::ErrorCode;

fn param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" }, "description": description })
}

fn required(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": true, "schema": { "type": "string" }, "description": description })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": description })
}

/// The filters every dashboard log endpoint takes.
fn log_filters() -> Vec<Value> {
    vec![
        param("workspace", "Workspaces to search (repeat or comma-separate); default every workspace of the token. Naming one the caller may not read is 403."),
        param("project", "Projects (namespaces), equality."),
        param("application", "Applications, equality."),
        param("pod", "Pods, equality."),
        param("container", "Containers, equality."),
        param("level", "Levels (trace, debug, info, warn, error, fatal, unknown), equality."),
        param("from", "Start: RFC 3339 or Unix seconds, milliseconds or nanoseconds."),
        param("to", "End (exclusive); default now."),
        param("since", "Instead of `from`: a duration before `to` (15m, 1h, 7d); default 1h."),
        param("q", "Words and \"phrases\" (case-insensitive), -exclusions, /RE2 regex/; every term must hold."),
    ]
}

fn errors() -> Value {
    json!({
        "400": { "$ref": "#/components/responses/Error" },
        "401": { "$ref": "#/components/responses/Error" },
        "403": { "$ref": "#/components/responses/Error" },
        "429": { "$ref": "#/components/responses/Error" },
        "503": { "$ref": "#/components/responses/Error" },
        "504": { "$ref": "#/components/responses/Error" },
    })
}

fn get(summary: &str, params: Vec<Value>, ok: Value) -> Value {
    let mut responses = errors();
    responses["200"] = ok;
    json!({ "get": { "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses } })
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn loki(summary: &str, mut params: Vec<Value>) -> Value {
    params.extend([
        param("start", "Start: Unix s/ms/ns or RFC 3339; default an hour before `end`."),
        param("end", "End; default now."),
        param("since", "Instead of `start`: a duration before `end`."),
    ]);
    let op = json!({ "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": {
        "200": json_ok("Loki's JSON for this endpoint.", json!({ "type": "object" })),
        "400": { "$ref": "#/components/responses/LokiError" },
        "401": { "$ref": "#/components/responses/LokiError" },
        "403": { "$ref": "#/components/responses/LokiError" },
        "429": { "$ref": "#/components/responses/LokiError" },
        "504": { "$ref": "#/components/responses/LokiError" },
    }});
    json!({ "get": op.clone(), "post": { "requestBody": { "content": { "application/x-www-form-urlencoded": { "schema": { "type": "object" } } } }, "summary": summary, "security": [{ "bearer": [] }], "responses": op["responses"] } })
}

/// A Prometheus API operation (GET, and a form POST where Prometheus takes one).
fn prom(summary: &str, params: Vec<Value>, post: bool) -> Value {
    let responses = json!({
        "200": json_ok("Prometheus's JSON for this endpoint, as the upstream answered.", json!({ "type": "object" })),
        "400": { "$ref": "#/components/responses/PromError" },
        "401": { "$ref": "#/components/responses/PromError" },
        "403": { "$ref": "#/components/responses/PromError" },
        "429": { "$ref": "#/components/responses/PromError" },
        "503": { "$ref": "#/components/responses/PromError" },
        "504": { "$ref": "#/components/responses/PromError" },
    });
    let get = json!({ "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses });
    match post {
        true => {
            json!({ "get": get, "post": { "summary": summary, "security": [{ "bearer": [] }], "requestBody": { "content": { "application/x-www-form-urlencoded": { "schema": { "type": "object" } } } }, "responses": responses } })
        }
        false => json!({ "get": get }),
    }
}

fn line_schema() -> Value {
    json!({ "type": "object", "properties": {
        "timestamp": { "type": "string", "format": "date-time" },
        "timestamp_ns": { "type": "string", "description": "Unix nanoseconds, as a string (exact in JavaScript)." },
        "workspace": { "type": "string" }, "project": { "type": "string" }, "application": { "type": "string" },
        "pod": { "type": "string" }, "container": { "type": "string" }, "node": { "type": "string" }, "stream": { "type": "string" },
        "level": { "type": "string" }, "message": { "type": "string" }, "trace_id": { "type": "string" },
        "attributes": { "type": "object", "additionalProperties": { "type": "string" } },
        "highlights": { "type": "array", "items": { "type": "array", "items": { "type": "integer" }, "minItems": 2, "maxItems": 2 }, "description": "Byte ranges of the message the terms matched." },
    }})
}

/// The document.
pub fn document() -> Value {
    let lines = json!({ "type": "array", "items": { "$ref": "#/components/schemas/Line" } });
    let mut paths = serde_json::Map::new();
    let mut add = |p: &str, v: Value| {
        paths.insert(p.to_owned(), v);
    };
    let mut search_params = log_filters();
    search_params.push(param("limit", "Lines per page, 1..=query.max_lines (default query.default_lines)."));
    search_params.push(param("cursor", "The previous page's `next_cursor`, to page back in time."));
    add(
        "/api/v1/logs/search",
        get(
            "Search the caller's workload logs, newest first",
            search_params,
            json_ok(
                "A page of lines.",
                json!({ "type": "object", "properties": {
                "lines": lines, "next_cursor": { "type": ["string", "null"] }, "from": { "type": "string" }, "to": { "type": "string" },
                "workspaces": { "type": ["array", "null"], "items": { "type": "string" } }, "stats": { "type": "object" } } }),
            ),
        ),
    );
    let mut hist = log_filters();
    hist.push(param("step", "Bucket width, a duration; default the range ÷ 60, at least 1 s."));
    add(
        "/api/v1/logs/histogram",
        get(
            "Counts per time bucket and level",
            hist,
            json_ok(
                "Buckets and totals.",
                json!({ "type": "object", "properties": {
                "step_seconds": { "type": "number" },
                "buckets": { "type": "array", "items": { "type": "object", "properties": { "start": { "type": "string" }, "start_ns": { "type": "string" }, "counts": { "type": "object", "additionalProperties": { "type": "integer" } } } } },
                "totals": { "type": "object", "additionalProperties": { "type": "integer" } } } }),
            ),
        ),
    );
    let mut ctx = log_filters();
    ctx.retain(|p| p["name"] != "q" && p["name"] != "from" && p["name"] != "to" && p["name"] != "since");
    ctx.extend([
        required("timestamp", "The hit's `timestamp_ns`."),
        param("before", "Lines before (default 20, at most 500)."),
        param("after", "Lines from the hit on (default 20, at most 500)."),
    ]);
    add(
        "/api/v1/logs/context",
        get(
            "Lines around a hit",
            ctx,
            json_ok(
                "The lines just before the hit and from it on, each in time order.",
                json!({ "type": "object", "properties": { "before": lines, "after": lines } }),
            ),
        ),
    );
    let mut tail = log_filters();
    tail.push(param("limit", "Initial lines (the newest, oldest first)."));
    add(
        "/api/v1/logs/tail",
        get(
            "Live tail as server-sent events",
            tail,
            json!({ "description": "`event: lines` with `{\"lines\": [...]}`, then each new line once; `event: error` before the stream ends.", "content": { "text/event-stream": { "schema": { "type": "string" } } } }),
        ),
    );
    add(
        "/api/v1/audit/search",
        get(
            "The caller's organisation's audit log (audit roles only), newest first",
            vec![
                param("actor", "Equality."),
                param("action", "Equality, e.g. loki.query_range."),
                param("initiated_by", "user, agent or system."),
                param("workspace", "Equality."),
                param("outcome", "ok or an error code."),
                param("q", "Words in the query text."),
                param("from", "Start."),
                param("to", "End; default now."),
                param("since", "Default 1d."),
                param("limit", "At most query.max_lines."),
            ],
            json_ok(
                "Records.",
                json!({ "type": "object", "properties": { "records": { "type": "array", "items": { "type": "object", "properties": {
                "timestamp": { "type": "string" }, "timestamp_ns": { "type": "string" }, "workspace": { "type": "string" }, "actor": { "type": "string" },
                "initiated_by": { "type": "string" }, "action": { "type": "string" }, "resource": { "type": "string" }, "outcome": { "type": "string" },
                "query": { "type": "string" }, "attributes": { "type": "object", "additionalProperties": { "type": "string" } } } } } } }),
            ),
        ),
    );
    let logql = required("query", "LogQL.");
    add(
        "/loki/api/v1/query_range",
        loki(
            "LogQL over a range: streams or matrix",
            vec![
                logql.clone(),
                param("limit", "Lines, default 100."),
                param("direction", "backward (default) or forward."),
                param("step", "Duration or seconds."),
            ],
        ),
    );
    add("/loki/api/v1/query", loki("LogQL metric query at an instant: vector or scalar", vec![logql.clone(), param("time", "Default now.")]));
    add("/loki/api/v1/labels", loki("Stream label names", vec![param("query", "Optional stream selector.")]));
    add(
        "/loki/api/v1/label/{name}/values",
        loki("Values of one stream label", vec![path_param("name", "Label name."), param("query", "Optional stream selector.")]),
    );
    add("/loki/api/v1/series", loki("Label sets of matching streams", vec![required("match[]", "Stream selector (repeat).")]));
    add("/loki/api/v1/index/stats", loki("Streams, chunks, entries and bytes", vec![param("query", "Stream selector.")]));
    add(
        "/loki/api/v1/index/volume",
        loki(
            "Bytes per group of labels",
            vec![
                required("query", "Stream selector."),
                param("targetLabels", "Comma-separated labels to group by."),
                param("aggregateBy", "series or labels."),
                param("limit", "Groups."),
            ],
        ),
    );
    add(
        "/loki/api/v1/index/volume_range",
        loki(
            "Bytes per group of labels per step",
            vec![required("query", "Stream selector."), param("step", "Duration."), param("targetLabels", "Labels to group by.")],
        ),
    );
    add("/loki/api/v1/detected_labels", loki("Stream labels with their cardinality", vec![param("query", "Optional stream selector.")]));
    add(
        "/loki/api/v1/detected_fields",
        loki("Fields json and logfmt extract, with type and cardinality", vec![logql.clone(), param("line_limit", "Lines sampled, default 1000.")]),
    );
    add("/loki/api/v1/detected_field/{name}/values", loki("Values of one detected field", vec![path_param("name", "Field name."), logql.clone()]));
    add("/loki/api/v1/patterns", loki("The most frequent line templates with counts per step", vec![logql.clone(), param("step", "Duration.")]));
    add(
        "/loki/api/v1/tail",
        json!({ "get": { "summary": "Live tail over WebSocket (Loki's tail messages)", "security": [{ "bearer": [] }], "parameters": [logql, param("limit", "Initial entries, default 100."), param("start", "Default an hour ago.")], "responses": { "101": { "description": "Switching to WebSocket." }, "400": { "$ref": "#/components/responses/LokiError" }, "401": { "$ref": "#/components/responses/LokiError" } } } }),
    );
    add(
        "/loki/api/v1/drilldown-limits",
        json!({ "get": { "summary": "Limits for Logs Drilldown", "security": [{ "bearer": [] }], "responses": { "200": json_ok("Limits.", json!({ "type": "object" })) } } }),
    );
    add(
        "/loki/api/v1/status/buildinfo",
        json!({ "get": { "summary": "The Loki version features are detected by", "responses": { "200": json_ok("Build information.", json!({ "type": "object" })) } } }),
    );
    let promql = required("query", "PromQL; every selector in it is scoped to the caller.");
    let (pstart, pend) = (param("start", "Unix seconds or RFC 3339."), param("end", "Unix seconds or RFC 3339."));
    let matches = param("match[]", "Series selector (repeat); default: every series the caller may read.");
    add(
        "/prometheus/api/v1/query",
        prom("PromQL at an instant", vec![promql.clone(), param("time", "Default now."), param("timeout", "At most query.timeout_secs.")], true),
    );
    add(
        "/prometheus/api/v1/query_range",
        prom(
            "PromQL over a range",
            vec![promql.clone(), pstart.clone(), pend.clone(), required("step", "Duration or seconds."), param("timeout", "At most query.timeout_secs.")],
            true,
        ),
    );
    add("/prometheus/api/v1/query_exemplars", prom("Exemplars of the series a query selects", vec![promql, pstart.clone(), pend.clone()], true));
    add(
        "/prometheus/api/v1/series",
        prom("Label sets of matching series", vec![required("match[]", "Series selector (repeat)."), pstart.clone(), pend.clone()], true),
    );
    add("/prometheus/api/v1/labels", prom("Label names", vec![matches.clone(), pstart.clone(), pend.clone()], true));
    add("/prometheus/api/v1/label/{name}/values", prom("Values of one label", vec![path_param("name", "Label name."), matches, pstart, pend], false));
    add(
        "/prometheus/api/v1/metadata",
        prom("Metric metadata, for the metric names the caller has series of", vec![param("metric", "One metric name."), param("limit", "Metrics.")], false),
    );
    add("/prometheus/api/v1/rules", prom("Recording and alerting rules: none are a tenant's, so none are listed", vec![], false));
    add("/prometheus/api/v1/alerts", prom("Active alerts: none are a tenant's, so none are listed", vec![], false));
    add("/prometheus/api/v1/status/buildinfo", prom("The upstream's version (Grafana's feature detection)", vec![], false));
    add(
        "/sql/",
        json!({
            "get": { "summary": "SQL for Grafana's ClickHouse datasource (`query`, `default_format`): one SELECT over the caller's `logs` and `metrics`", "security": [{ "bearer": [] }],
                "parameters": [param("query", "The SELECT (or in the body)."), param("default_format", "TabSeparated (default), JSON, JSONEachRow, CSV, Native, …")],
                "responses": { "200": { "description": "The rows in the format asked for." }, "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" } } },
            "post": { "summary": "The same, the statement as the body", "security": [{ "bearer": [] }],
                "requestBody": { "content": { "text/plain": { "schema": { "type": "string" } } } },
                "responses": { "200": { "description": "The rows in the format asked for." }, "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" }, "403": { "$ref": "#/components/responses/Error" } } }
        }),
    );
    let ingest = |summary: &str, content: &str| {
        json!({ "post": { "summary": summary, "security": [{ "ingest": [] }], "requestBody": { "required": true, "content": { content: { "schema": { "type": "string" } } } },
            "responses": { "200": json_ok("Accepted events, and rejects by reason.", json!({ "type": "object", "properties": { "accepted": { "type": "integer" }, "rejected": { "type": "integer" }, "reasons": { "type": "object" } } })),
                "204": { "description": "All accepted." }, "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" }, "413": { "$ref": "#/components/responses/Error" },
                "415": { "$ref": "#/components/responses/Error" }, "429": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" } } } })
    };
    add("/ingest/v1/logs", ingest("Vector http sink: NDJSON or a JSON array (gzip, zstd, deflate, snappy)", "application/x-ndjson"));
    add("/loki/api/v1/push", ingest("Loki push: snappy protobuf or JSON", "application/x-protobuf"));
    add("/api/v1/write", ingest("Prometheus remote_write 1.0", "application/x-protobuf"));
    add(
        "/clickhouse/",
        ingest("ClickHouse HTTP insert (`INSERT INTO <db>.logs FORMAT JSONEachRow`), as Vector's clickhouse sink sends it", "application/json"),
    );
    add("/healthz", json!({ "get": { "summary": "Liveness", "responses": { "200": json_ok("ok", json!({ "type": "object" })) } } }));
    add(
        "/readyz",
        json!({ "get": { "summary": "Readiness", "responses": { "200": { "description": "Ready." }, "503": { "description": "The write-ahead log failed an fsync or is over its cap." } } } }),
    );
    add(
        "/metrics",
        json!({ "get": { "summary": "The service's own metrics (OpenMetrics text)", "responses": { "200": { "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } } } } }),
    );
    add("/openapi.json", json!({ "get": { "summary": "This document", "responses": { "200": json_ok("OpenAPI 3.1.", json!({ "type": "object" })) } } }));

    for (p, v) in crate::openapi_control::paths() {
        add(p, v);
    }

    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Hexabase data plane", "version": env!("CARGO_PKG_VERSION"), "description": "Ingest, tenant-scoped log search, Grafana's Loki, Prometheus and ClickHouse APIs, the audit log, and the control API (workspaces, projects, tasks). Identity comes from the bearer token only." },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An OIDC issuer's token (auth.issuer), or the development issuer's (`dataplane token`)." },
                "ingest": { "type": "http", "scheme": "bearer", "description": "An ingest credential's token (basic auth with the token as password also works)." },
            },
            "schemas": {
                "Line": line_schema(),
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                    "code": { "type": "string", "enum": codes }, "message": { "type": "string" } } } } },
            },
            "responses": {
                "Error": json_ok("An error with a stable code; 429 and 503 carry Retry-After.", json!({ "$ref": "#/components/schemas/Error" })),
                "PromError": json_ok("An error in Prometheus's shape (`status`, `errorType`, `error`) with the stable `code`.", json!({ "type": "object", "properties": { "status": { "const": "error" }, "errorType": { "type": "string" }, "error": { "type": "string" }, "code": { "type": "string" } }, "required": ["status", "errorType", "error", "code"] })),
                "LokiError": json_ok("An error: `message` (what Grafana shows) beside the stable `error.code`.", json!({ "allOf": [{ "$ref": "#/components/schemas/Error" }, { "type": "object", "properties": { "status": { "const": "error" }, "message": { "type": "string" } } }] })),
            },
        },
    });
    for (name, schema) in crate::openapi_control::schemas() {
        doc["components"]["schemas"][name] = schema;
    }
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let committed: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).expect("schemas/openapi.json is JSON");
        assert!(committed == super::document(), "schemas/openapi.json is out of date; regenerate it with `cargo run -q -- openapi > schemas/openapi.json`");
    }
}
