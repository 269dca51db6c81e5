//! The index and Logs Drilldown endpoints: label names and values, series, index statistics
//! and volumes (answered from per-stream counts), detected labels and fields and patterns
//! (from a sample of the query's lines), Drilldown's limits and the build information.

use super::*;

/// The streams (with entries and bytes) in range, matching an optional selector, in scope.
async fn stream_list(
    state: &QueryState,
    id: &Identity,
    sel: Option<&LogExpr>,
    from: i64,
    to: i64,
    step: Option<i64>,
) -> Result<Vec<(StreamCount, Labels)>, ApiError> {
    let pl = sel.map(compile).transpose()?;
    let scope = scope_for(state, id, pl.as_ref()).await?;
    let mut q = search(scope, from, to, pl.as_ref(), false);
    // Index endpoints answer from the selector only, as Loki's index does.
    q.terms.clear();
    let list = state.store.streams(&q, StreamsBy { step_ns: step, ..StreamsBy::ALL }).await.map_err(store_error)?;
    Ok(list
        .into_iter()
        .map(|s| {
            let l = labels::of_stream(&s);
            (s, l)
        })
        .filter(|(_, l)| pl.as_ref().is_none_or(|p| p.selects(l)))
        .collect())
}

/// The streams an index endpoint answers from: in range, matching the optional `query`
/// selector, in scope; audited as `action`.
async fn index_streams(state: &QueryState, headers: &HeaderMap, raw: Option<&str>, body: &Bytes, action: &str) -> Result<Vec<(StreamCount, Labels)>, ApiError> {
    let p = params(raw, headers, body)?;
    let id = state.identify(headers).await?;
    let (start, end) = time_range(state, &p)?;
    let sel = log_query(&p, "query")?;
    state
        .bounded(&id, action, p.one("query").unwrap_or_default(), stream_list(state, &id, sel.as_ref(), start, end.saturating_add(1), None), |l| l.len() as u64)
        .await
}

pub(super) async fn label_names(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let list = index_streams(&state, &headers, raw.as_deref(), &body, "loki.labels").await?;
    let names: BTreeSet<&str> = list.iter().flat_map(|(_, l)| l.keys().map(String::as_str)).collect();
    Ok(axum::Json(json!({ "status": "success", "data": names })))
}

pub(super) async fn label_values(State(state): State<QueryState>, Path(name): Path<String>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let list = index_streams(&state, &headers, raw.as_deref(), &body, "loki.label_values").await?;
    let values: BTreeSet<&str> = list.iter().filter_map(|(_, l)| l.get(&name).map(String::as_str)).collect();
    Ok(axum::Json(json!({ "status": "success", "data": values })))
}

pub(super) async fn series(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let p = params(raw.as_deref(), &headers, &body)?;
    let id = state.identify(&headers).await?;
    let (start, end) = time_range(&state, &p)?;
    let selectors: Vec<&str> = p.all("match[]").into_iter().chain(p.all("match")).collect();
    if selectors.is_empty() {
        return Err(invalid("at least one `match[]` selector is required").into());
    }
    let text = selectors.join(" ");
    let out = state
        .bounded(
            &id,
            "loki.series",
            &text,
            async {
                let mut out: BTreeSet<Labels> = BTreeSet::new();
                for s in &selectors {
                    let Expr::Log(l) = crate::logql::parse(s).map_err(|m| invalid(format!("match[]: {m}")))? else {
                        return Err(invalid("match[] must be a stream selector"));
                    };
                    out.extend(stream_list(&state, &id, Some(&l), start, end.saturating_add(1), None).await?.into_iter().map(|(_, l)| l));
                    if out.len() > state.limits.max_series {
                        return Err(ApiError::new(
                            ErrorCode::LimitExceeded,
                            format!("more than {} series match; narrow the selectors", state.limits.max_series),
                        ));
                    }
                }
                Ok(out)
            },
            |o| o.len() as u64,
        )
        .await?;
    Ok(axum::Json(json!({ "status": "success", "data": out })))
}

pub(super) async fn index_stats(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let list = index_streams(&state, &headers, raw.as_deref(), &body, "loki.index_stats").await?;
    let streams = list.len();
    let (entries, bytes) = list.iter().fold((0u64, 0u64), |(e, b), (s, _)| (e + s.entries, b + s.bytes));
    // Storage has no chunks; each stream counts as one.
    Ok(axum::Json(json!({ "streams": streams, "chunks": streams, "entries": entries, "bytes": bytes })))
}

/// The labels `index/volume` groups by: `targetLabels`, else those the selector names (Loki's
/// default), else `service_name`.
fn volume_labels(p: &Params, sel: &LogExpr) -> Vec<String> {
    if let Some(t) = p.one("targetLabels") {
        return t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    }
    let named: Vec<String> = sel.selector.iter().map(|m| m.name.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    if named.is_empty() { vec!["service_name".into()] } else { named }
}

async fn volumes(state: &QueryState, headers: &HeaderMap, p: &Params, step: Option<i64>) -> Result<(Vec<(Labels, BTreeMap<i64, u64>)>, i64, i64), ApiError> {
    let id = state.identify(headers).await?;
    let (start, end) = time_range(state, p)?;
    let sel = log_query(p, "query")?.ok_or_else(|| invalid("`query` (a stream selector) is required"))?;
    let by = volume_labels(p, &sel);
    let series_level = p.one("aggregateBy") == Some("series");
    let action = if step.is_some() { "loki.volume_range" } else { "loki.volume" };
    let list = state
        .bounded(&id, action, p.one("query").unwrap_or_default(), stream_list(state, &id, Some(&sel), start, end.saturating_add(1), step), |l| l.len() as u64)
        .await?;
    let mut groups: BTreeMap<Labels, BTreeMap<i64, u64>> = BTreeMap::new();
    for (s, l) in list {
        let key: Labels = if series_level { l } else { l.into_iter().filter(|(k, _)| by.contains(k)).collect() };
        *groups.entry(key).or_default().entry(s.start_ns).or_default() += s.bytes;
    }
    let mut out: Vec<(Labels, BTreeMap<i64, u64>)> = groups.into_iter().collect();
    out.sort_by_key(|(_, v)| std::cmp::Reverse(v.values().sum::<u64>()));
    out.truncate(p.usize("limit")?.unwrap_or(100).min(state.limits.max_series));
    Ok((out, start, end))
}

pub(super) async fn volume(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let p = params(raw.as_deref(), &headers, &body)?;
    let (groups, _, end) = volumes(&state, &headers, &p, None).await?;
    let result: Vec<Value> = groups.into_iter().map(|(l, v)| json!({ "metric": l, "value": [secs(end), v.values().sum::<u64>().to_string()] })).collect();
    Ok(axum::Json(json!({ "status": "success", "data": { "resultType": "vector", "result": result } })))
}

pub(super) async fn volume_range(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let p = params(raw.as_deref(), &headers, &body)?;
    let (start, end) = time_range(&state, &p)?;
    let step = step_of(&p, start, end)?;
    let (groups, _, _) = volumes(&state, &headers, &p, Some(step)).await?;
    let result: Vec<Value> = groups
        .into_iter()
        .map(|(l, v)| json!({ "metric": l, "values": v.into_iter().map(|(t, b)| json!([secs(t), b.to_string()])).collect::<Vec<_>>() }))
        .collect();
    Ok(axum::Json(json!({ "status": "success", "data": { "resultType": "matrix", "result": result } })))
}

pub(super) async fn detected_labels(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let list = index_streams(&state, &headers, raw.as_deref(), &body, "loki.detected_labels").await?;
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, l) in &list {
        for (k, v) in l {
            values.entry(k.as_str()).or_default().insert(v.as_str());
        }
    }
    let out: Vec<Value> = STREAM_LABELS.iter().filter_map(|k| values.get(k).map(|v| json!({ "label": k, "cardinality": v.len() }))).collect();
    Ok(axum::Json(json!({ "detectedLabels": out })))
}

/// The type Loki reports for a field's values.
fn field_type(values: &BTreeSet<String>) -> &'static str {
    let all = |f: fn(&str) -> bool| values.iter().all(|v| f(v));
    if all(|v| v.parse::<i64>().is_ok()) {
        "int"
    } else if all(|v| v.parse::<f64>().is_ok()) {
        "float"
    } else if all(|v| v == "true" || v == "false") {
        "boolean"
    } else if all(|v| crate::logql::pipeline::duration_seconds(v).is_some() && v.ends_with(|c: char| c.is_ascii_alphabetic())) {
        // Go's durations, as Loki detects them (`1.5s`, `250ms`, `1h2m`).
        "duration"
    } else if all(|v| crate::logql::pipeline::bytes(v).is_some() && v.ends_with(|c: char| c.is_ascii_alphabetic())) {
        "bytes"
    } else {
        "string"
    }
}

/// Fields in a sample of the query's lines: what `json` and `logfmt` would extract, and the
/// structured metadata, each with its values.
async fn sample_fields(state: &QueryState, headers: &HeaderMap, p: &Params) -> Result<BTreeMap<String, (BTreeSet<&'static str>, BTreeSet<String>)>, ApiError> {
    use crate::logql::Stage;
    let id = state.identify(headers).await?;
    let (start, end) = time_range(state, p)?;
    let l = log_query(p, "query")?.ok_or_else(|| invalid("`query` (a LogQL log query) is required"))?;
    let n = p.usize("line_limit")?.or(p.usize("limit")?).unwrap_or(SAMPLE_LINES).clamp(1, state.limits.max_lines);
    let parser = |stage: Stage| compile(&LogExpr { selector: Vec::new(), stages: vec![stage] });
    let (json_pl, logfmt_pl) = (parser(Stage::Json(Vec::new()))?, parser(Stage::Logfmt(Default::default()))?);
    let (result, _, _) =
        state.bounded(&id, "loki.detected_fields", p.one("query").unwrap_or_default(), streams(state, &id, &l, start, end, n, false), |r| r.2 as u64).await?;
    let mut fields: BTreeMap<String, (BTreeSet<&'static str>, BTreeSet<String>)> = BTreeMap::new();
    let base: BTreeSet<&str> = STREAM_LABELS.into_iter().collect();
    for (stream_labels, entries) in result {
        for (k, v) in &stream_labels {
            if !base.contains(k.as_str()) && !k.starts_with("__") {
                let f = fields.entry(k.clone()).or_default();
                f.1.insert(v.clone());
            }
        }
        for (_, line) in &entries {
            for (parser, pl) in [("json", &json_pl), ("logfmt", &logfmt_pl)] {
                let mut e = Entry { timestamp_ns: 0, line: line.to_owned(), labels: Labels::new(), metadata: BTreeSet::new() };
                pl.process(&mut e);
                if e.labels.contains_key("__error__") {
                    continue;
                }
                for (k, v) in e.labels {
                    let f = fields.entry(k).or_default();
                    f.0.insert(parser);
                    if f.1.len() < 1_000 {
                        f.1.insert(v);
                    }
                }
            }
        }
    }
    Ok(fields)
}

pub(super) async fn detected_fields(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let p = params(raw.as_deref(), &headers, &body)?;
    let fields = sample_fields(&state, &headers, &p).await?;
    let limit = p.usize("field_limit")?.unwrap_or(1_000);
    let out: Vec<Value> = fields
        .iter()
        .take(limit)
        .map(|(k, (parsers, values))| json!({ "label": k, "type": field_type(values), "cardinality": values.len(), "parsers": if parsers.is_empty() { Value::Null } else { json!(parsers) } }))
        .collect();
    Ok(axum::Json(json!({ "fields": out, "limit": limit })))
}

pub(super) async fn detected_field_values(
    State(state): State<QueryState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Reply {
    let p = params(raw.as_deref(), &headers, &body)?;
    let fields = sample_fields(&state, &headers, &p).await?;
    let values: Vec<&String> = fields.get(&name).map(|(_, v)| v.iter().collect()).unwrap_or_default();
    Ok(axum::Json(json!({ "values": values })))
}

pub(super) async fn patterns_handler(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let p = params(raw.as_deref(), &headers, &body)?;
    let id = state.identify(&headers).await?;
    let (start, end) = time_range(&state, &p)?;
    let l = log_query(&p, "query")?.ok_or_else(|| invalid("`query` (a LogQL log query) is required"))?;
    let step = match p.one("step") {
        Some(s) => parse_duration_ns(s).ok_or_else(|| invalid(format!("`step`: `{s}` is not a duration")))?,
        None => ((end - start) / 100).max(1_000_000_000),
    };
    let n = p.usize("line_limit")?.unwrap_or(state.limits.max_lines).clamp(1, state.limits.max_lines);
    let (result, _, _) =
        state.bounded(&id, "loki.patterns", p.one("query").unwrap_or_default(), streams(&state, &id, &l, start, end, n, false), |r| r.2 as u64).await?;
    let lines = result.values().flatten().map(|(ts, line)| (*ts, line.as_str()));
    let groups = patterns::group(lines, start, step, 50);
    let data: Vec<Value> = groups
        .into_iter()
        .map(|g| json!({ "pattern": g.pattern, "samples": g.samples.into_iter().map(|(t, c)| json!([t / 1_000_000_000, c])).collect::<Vec<_>>() }))
        .collect();
    Ok(axum::Json(json!({ "status": "success", "data": data })))
}

pub(super) async fn drilldown_limits(State(state): State<QueryState>, headers: HeaderMap) -> Reply {
    state.identify(&headers).await?;
    let l = &state.limits;
    Ok(axum::Json(json!({
        "limits": {
            "discover_log_levels": true,
            "discover_service_name": ["application", "container"],
            "log_level_fields": ["level"],
            "max_entries_limit_per_query": l.max_lines,
            "max_query_length": format!("{}h", l.max_range_secs / 3600),
            "max_query_series": l.max_series,
            "query_timeout": format!("{}s", l.timeout_secs),
            "retention_period": "0s",
            "volume_enabled": true,
            "volume_max_series": l.max_series,
            "pattern_persistence_enabled": false,
        },
        "pattern_ingester_enabled": true,
        "version": COMPATIBLE_LOKI_VERSION,
    })))
}

pub(super) async fn buildinfo() -> axum::Json<Value> {
    axum::Json(
        json!({ "version": COMPATIBLE_LOKI_VERSION, "revision": env!("CARGO_PKG_VERSION"), "branch": "", "buildUser": "", "buildDate": "", "goVersion": "" }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_types_follow_the_values() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(field_type(&set(&["1", "200"])), "int");
        assert_eq!(field_type(&set(&["1", "2.5"])), "float");
        assert_eq!(field_type(&set(&["true", "false"])), "boolean");
        assert_eq!(field_type(&set(&["35ms", "1s", "1.5h"])), "duration");
        assert_eq!(field_type(&set(&["10KB", "5 MiB", "3B"])), "bytes");
        assert_eq!(field_type(&set(&["GET", "1"])), "string");
    }
}
