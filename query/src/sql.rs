//! SQL for Grafana's ClickHouse datasource: ClickHouse's HTTP query interface under `/sql/`,
//! a read-only `SELECT` over the caller's own rows.
//!
//! The statement is parsed (`sqlparser`, ClickHouse dialect) and checked in the tree: exactly
//! one query; tables `logs` and `metrics` only (optionally qualified by a database name), each
//! replaced by storage with a subquery scoped by query parameters (the caller's organisation,
//! workspaces and projects); no table functions, system tables or other tables, no functions that
//! reach files, the network, dictionaries or settings, no `SETTINGS` or `FORMAT` clause, no query
//! placeholders of the caller's. Request settings other than the output format are refused.

use std::ops::ControlFlow;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use schemas::{ApiError, ErrorCode};
use sqlparser::ast::{Expr, Ident, ObjectName, Statement, TableAlias, TableFactor, VisitMut, VisitorMut};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};
use storage::{SqlCatalog, SqlRead, SqlTable};

use crate::params::Params;
use crate::state::QueryState;

/// Longest statement accepted.
const MAX_SQL_BYTES: usize = 64 * 1024;
/// Output formats a client may ask for (`default_format`).
const FORMATS: [&str; 12] = [
    "TabSeparated",
    "TabSeparatedWithNames",
    "TabSeparatedWithNamesAndTypes",
    "TSV",
    "TSVWithNames",
    "CSV",
    "CSVWithNames",
    "JSON",
    "JSONEachRow",
    "JSONCompact",
    "Native",
    "RowBinaryWithNamesAndTypes",
];
/// Request parameters that are not settings (or are settings we honour by ignoring them).
const ALLOWED_PARAMS: [&str; 6] = ["query", "default_format", "database", "query_id", "compress", "enable_http_compression"];
/// Function name prefixes that reach outside the caller's rows.
const DENIED_FUNCTIONS: [&str; 22] = [
    "file",
    "url",
    "s3",
    "hdfs",
    "remote",
    "cluster",
    "input",
    "jdbc",
    "odbc",
    "mysql",
    "postgresql",
    "sqlite",
    "executable",
    "dictget",
    "dicthas",
    "joinget",
    "getsetting",
    "azureblobstorage",
    "mongodb",
    "redis",
    "iceberg",
    "deltalake",
];

pub fn routes() -> Router<QueryState> {
    use axum::routing::get;
    Router::new().route("/sql/", get(handle).post(handle)).route("/sql", get(handle).post(handle))
}

fn refused(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, m)
}

/// The statement with its tables replaced by storage's markers, and which tables it reads.
#[derive(Debug)]
pub struct Scoped {
    pub sql: String,
    pub logs: bool,
    pub metrics: bool,
}

struct Checker {
    logs: bool,
    metrics: bool,
}

impl VisitorMut for Checker {
    type Break = ApiError;

    fn pre_visit_query(&mut self, q: &mut sqlparser::ast::Query) -> ControlFlow<ApiError> {
        if q.settings.is_some() {
            return ControlFlow::Break(refused("SETTINGS are not allowed; the service sets them"));
        }
        if q.format_clause.is_some() {
            return ControlFlow::Break(refused("FORMAT in the statement is not allowed; use the default_format parameter"));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<ApiError> {
        match t {
            TableFactor::Table { name, alias, args, .. } => {
                if args.is_some() {
                    return ControlFlow::Break(refused(format!("table functions are not allowed: `{name}`")));
                }
                let parts: Vec<String> = name.0.iter().map(|p| p.to_string().trim_matches(|c| c == '`' || c == '"').to_ascii_lowercase()).collect();
                let catalog = match parts.as_slice() {
                    [db, t] if db == "system" => match t.as_str() {
                        "databases" => Some(SqlCatalog::Databases),
                        "tables" => Some(SqlCatalog::Tables),
                        "columns" => Some(SqlCatalog::Columns),
                        _ => return ControlFlow::Break(refused(format!("system tables are not allowed (but databases, tables and columns): `{name}`"))),
                    },
                    _ => None,
                };
                let marker = match (catalog, parts.last().map(String::as_str)) {
                    (Some(c), _) => c.marker(),
                    (None, Some("logs")) if parts.len() <= 2 && parts[0] != "information_schema" => {
                        self.logs = true;
                        SqlTable::Logs.marker()
                    }
                    (None, Some("metrics")) if parts.len() <= 2 && parts[0] != "information_schema" => {
                        self.metrics = true;
                        SqlTable::Metrics.marker()
                    }
                    _ => return ControlFlow::Break(refused(format!("only the tables `logs` and `metrics` can be read, not `{name}`"))),
                };
                let short = parts.last().cloned().unwrap_or_default();
                *name = ObjectName::from(vec![Ident::new(marker)]);
                if alias.is_none() {
                    *alias = Some(TableAlias { name: Ident::new(short), columns: Vec::new() });
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => ControlFlow::Continue(()),
            other => ControlFlow::Break(refused(format!("this FROM item is not allowed: `{other}`"))),
        }
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<ApiError> {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            let name = name.trim_matches(|c| c == '`' || c == '"');
            if DENIED_FUNCTIONS.iter().any(|d| name.starts_with(d)) {
                return ControlFlow::Break(refused(format!("the function `{}` is not allowed here", f.name)));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Checks `sql` and replaces its tables with storage's markers.
pub fn scope(sql: &str) -> Result<Scoped, ApiError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::new(ErrorCode::LimitExceeded, format!("the statement is longer than {MAX_SQL_BYTES} bytes")));
    }
    let dialect = ClickHouseDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().map_err(|e| refused(format!("cannot read the SQL: {e}")))?;
    // `{name:Type}` query placeholders are the service's own; markers are too.
    if tokens.iter().any(|t| matches!(t, Token::LBrace | Token::RBrace)) {
        return Err(refused("query placeholders `{name:Type}` are not allowed"));
    }
    if sql.to_ascii_lowercase().contains("__hx_") {
        return Err(refused("`__hx_` is reserved"));
    }
    let mut statements =
        Parser::new(&dialect).with_recursion_limit(64).with_tokens(tokens).parse_statements().map_err(|e| refused(format!("cannot parse the SQL: {e}")))?;
    let mut st = match (statements.pop(), statements.is_empty()) {
        (Some(s), true) => s,
        (None, _) => return Err(refused("no statement")),
        (Some(_), false) => return Err(refused("one statement per request")),
    };
    // Grafana's query builder browses with SHOW and DESC: the same answers from the catalog.
    let browse = match &st {
        Statement::ShowDatabases { .. } => Some(format!("SELECT name FROM {}", SqlCatalog::Databases.marker())),
        Statement::ShowTables { .. } => Some(format!("SELECT name FROM {} ORDER BY name", SqlCatalog::Tables.marker())),
        Statement::ExplainTable { table_name, .. } => {
            let last = table_name.0.last().map(|p| p.to_string().trim_matches(|c| c == '`' || c == '"').to_ascii_lowercase());
            let table = match last.as_deref() {
                Some("logs") => "logs",
                Some("metrics") => "metrics",
                _ => return Err(refused(format!("only the tables `logs` and `metrics` can be described, not `{table_name}`"))),
            };
            Some(format!(
                "SELECT name, type, default_kind AS default_type, default_expression, comment, compression_codec AS codec_expression, '' AS ttl_expression \
                 FROM {} WHERE table = '{table}' ORDER BY position",
                SqlCatalog::Columns.marker()
            ))
        }
        Statement::Query(_) => None,
        _ => return Err(refused("only SELECT queries (and SHOW DATABASES, SHOW TABLES, DESC TABLE) are allowed")),
    };
    if let Some(sql) = browse {
        return Ok(Scoped { sql, logs: false, metrics: false });
    }
    let mut checker = Checker { logs: false, metrics: false };
    if let ControlFlow::Break(e) = st.visit(&mut checker) {
        return Err(e);
    }
    Ok(Scoped { sql: st.to_string(), logs: checker.logs, metrics: checker.metrics })
}

async fn handle(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    match run(&state, &headers, raw.as_deref(), &body).await {
        Ok(r) => r,
        Err(e) => crate::state::error_response(&e, serde_json::json!({ "error": { "code": e.code.as_str(), "message": e.message } })),
    }
}

async fn run(state: &QueryState, headers: &HeaderMap, raw: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let params = Params::parse(raw)?;
    if let Some(k) = params.keys().find(|k| !ALLOWED_PARAMS.contains(k) && !k.starts_with("param_")) {
        return Err(refused(format!("the setting `{k}` is not allowed; the service sets them")));
    }
    if params.keys().any(|k| k.starts_with("param_")) {
        return Err(refused("query parameters (param_*) are not allowed"));
    }
    let id = state.identify(headers).await?;
    // As ClickHouse does: the `query` parameter, then the body.
    let body = std::str::from_utf8(body).map_err(|_| refused("the SQL is not UTF-8"))?;
    let sql = [params.one("query").unwrap_or_default(), body].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("\n");
    let format = params.one("default_format").unwrap_or("TabSeparated");
    if !FORMATS.contains(&format) {
        return Err(refused(format!("the format `{format}` is not offered; use one of {FORMATS:?}")));
    }
    let scoped = scope(&sql)?;
    let logs = match scoped.logs {
        true => Some(state.gate.logs(&id, None, None).await?),
        false => None,
    };
    let metrics = match scoped.metrics {
        true => Some(state.gate.metrics(&id).await?),
        false => None,
    };
    let read = SqlRead { sql: scoped.sql, logs, metrics, format: format.to_owned(), timeout_secs: state.limits.timeout_secs };
    let fetch = async {
        for s in read.logs.iter().chain(&read.metrics) {
            crate::audit::covered(s);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(state.limits.timeout_secs.max(1)), state.store.sql(&read)).await {
            Ok(Ok(b)) => Ok(b),
            // The statement's own error (the engine's message, or what storage needs).
            Ok(Err(storage::StoreError::Rejected(m))) => Err(refused(m)),
            Ok(Err(e)) => Err(crate::state::store_error(e)),
            Err(_) => Err(crate::state::timed_out(state)),
        }
    };
    let rows = |b: &Bytes| rows_in(format, b);
    let bytes = state.bounded(&id, "sql.query", &sql, fetch, rows).await?;
    let ct = match format {
        "JSON" | "JSONCompact" => "application/json; charset=UTF-8",
        "JSONEachRow" => "application/x-ndjson; charset=UTF-8",
        f if f.starts_with("CSV") => "text/csv; charset=UTF-8",
        f if f.starts_with("T") => "text/tab-separated-values; charset=UTF-8",
        _ => "application/octet-stream",
    };
    let mut r = Response::new(axum::body::Body::from(bytes));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(r)
}

/// Rows in an answer, for the audit record (0 where the format does not say cheaply).
fn rows_in(format: &str, b: &[u8]) -> u64 {
    let lines = memchr::memchr_iter(b'\n', b).count() as u64;
    match format {
        "JSON" | "JSONCompact" => memchr::memmem::rfind(b, br#""rows":"#)
            .and_then(|i| std::str::from_utf8(&b[i + 7..]).ok())
            .and_then(|t| t.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()))
            .unwrap_or(0),
        "TabSeparatedWithNamesAndTypes" => lines.saturating_sub(2),
        f if f.ends_with("WithNames") => lines.saturating_sub(1),
        "TabSeparated" | "TSV" | "CSV" | "JSONEachRow" => lines,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_replaced_and_everything_else_refused() {
        let s = scope("SELECT level, count() FROM logs WHERE message LIKE '%x?%' GROUP BY level").unwrap();
        assert!(s.logs && !s.metrics);
        assert!(s.sql.contains("FROM __hx_scoped_logs AS logs"), "{}", s.sql);
        let s = scope("SELECT * FROM hexabase.logs l JOIN (SELECT * FROM metrics) m ON l.workspace = m.workspace").unwrap();
        assert!(s.logs && s.metrics && !s.sql.contains("hexabase."), "{}", s.sql);
        for bad in [
            "SELECT * FROM system.users",
            "SELECT * FROM system.logs",
            "SELECT * FROM audit_logs",
            "SELECT * FROM file('/etc/passwd')",
            "SELECT * FROM url('http://x', CSV)",
            "SELECT file('/etc/passwd')",
            "SELECT * FROM remote('127.0.0.1', hexabase.logs)",
            "SELECT dictGet('d', 'a', 1) FROM logs",
            "SELECT getSetting('readonly')",
            "SELECT 1; DROP TABLE logs",
            "DROP TABLE logs",
            "INSERT INTO logs VALUES (1)",
            "SELECT * FROM logs SETTINGS readonly = 0",
            "SELECT * FROM logs FORMAT JSON",
            "SELECT * FROM logs WHERE org_id = {org:String}",
            "SELECT * FROM __hx_scoped_logs",
            "SELECT '__hx_scoped_logs' FROM logs",
            "SELECT * FROM logs, system.users",
            "SELECT (SELECT count() FROM system.users)",
            "SELECT * FROM merge('hexabase', '.*')",
            "SELECT * FROM hexabase.logs_local",
            "SELECT count() FROM logs WHERE workspace IN hexabase.audit_logs",
            "WITH x AS (SELECT * FROM system.tables) SELECT * FROM x",
            "SELECT * FROM logs UNION ALL SELECT * FROM system.users",
            "SELECT * FROM logs WHERE workspace IN (SELECT name FROM system.users)",
            "SHOW GRANTS",
            "DESC TABLE system.users",
            "SELECT * FROM system.users",
        ] {
            assert!(scope(bad).is_err(), "{bad}");
        }
        assert_eq!(rows_in("TabSeparated", b"a\t1\nb\t2\n"), 2);
        assert_eq!(rows_in("CSVWithNames", b"x\n1\n"), 1);
        assert_eq!(rows_in("JSON", br#"{"meta":[],"data":[],"rows": 12,"statistics":{}}"#), 12);
        for browse in [
            "SHOW DATABASES",
            "SHOW TABLES FROM \"hexabase\"",
            "DESC TABLE \"hexabase\".\"logs\"",
            "SELECT name, type, table FROM system.columns WHERE database IN ('hexabase')",
        ] {
            let s = scope(browse).unwrap();
            assert!(s.sql.contains("__hx_catalog_") && !s.logs && !s.metrics, "{browse}: {}", s.sql);
        }
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(scope(&deep).is_err());
    }
}
