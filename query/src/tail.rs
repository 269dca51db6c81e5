//! Live tail: the dashboard's `GET /api/v1/logs/tail` (server-sent events) and Loki's
//! `GET /loki/api/v1/tail` (WebSocket), both over the same follower.
//!
//! A [`Follow`] polls storage every second for rows from a little while back (rows can arrive
//! late: shipping and batching take time) up to now, oldest first, and passes on those it has
//! not passed on before. The scope is asked for again on every poll, so a revoked permission
//! ends the tail within the authoriser's cache time; the tail also ends when the token
//! expires, after `query.max_tail_secs`, or when the client goes away. Rows that arrive more
//! than [`LATE_NS`] after their timestamp are missed by a running tail (a search finds them).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Identity;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use schemas::{ApiError, ErrorCode, LogRecord};
use serde_json::{Value, json};
use storage::LogSearch;
use storage::search::Matcher;

use crate::params::Params;
use crate::params::{next_cursor, now_ns};
use crate::state::{QueryState, Slot, store_error};

/// How far back each poll looks for rows that arrived late.
pub const LATE_NS: i64 = 10_000_000_000;
const POLL: Duration = Duration::from_secs(1);
/// Rows read per page while polling.
const PAGE: usize = 1_000;
/// Pages one poll reads at most (a tail of a very busy stream passes on what it can, like
/// Loki's, and counts the rest as dropped).
const MAX_POLL_PAGES: usize = 20;

/// Follows a search forward in time.
pub struct Follow {
    floor: i64,
    seen: HashMap<u64, i64>,
}

fn key(r: &LogRecord) -> u64 {
    let mut h = DefaultHasher::new();
    (r.timestamp_ns, &r.workspace, &r.project, &r.pod, &r.container, &r.stream, &r.message).hash(&mut h);
    h.finish()
}

impl Follow {
    /// The newest `limit` rows of `q` (from `q.from_ns` to now), oldest first, and a follower
    /// that passes on only what comes after them.
    pub async fn start(state: &QueryState, mut q: LogSearch, limit: usize) -> Result<(Follow, Vec<LogRecord>), ApiError> {
        let start = q.from_ns;
        q.to_ns = now_ns() + 60_000_000_000;
        q.limit = limit;
        q.oldest_first = false;
        let mut rows = state.store.search(&q).await.map_err(store_error)?;
        rows.reverse();
        let mut f = Follow { floor: start.max(now_ns() - LATE_NS), seen: HashMap::new() };
        for r in &rows {
            f.seen.insert(key(r), r.timestamp_ns);
        }
        Ok((f, rows))
    }

    /// Rows of `q` not passed on before, oldest first; at most `max` (the rest are dropped and
    /// counted, as Loki's tail does).
    pub async fn poll(&mut self, state: &QueryState, mut q: LogSearch, max: usize) -> Result<(Vec<LogRecord>, usize), ApiError> {
        let now = now_ns();
        q.from_ns = self.floor;
        q.to_ns = now + 60_000_000_000;
        q.oldest_first = true;
        q.limit = PAGE;
        q.cursor = None;
        let (mut out, mut dropped) = (Vec::new(), 0);
        for pages in 1.. {
            let page = state.store.search(&q).await.map_err(store_error)?;
            let (n, next) = (page.len(), next_cursor(q.cursor, &page));
            for r in page {
                let k = key(&r);
                if self.seen.contains_key(&k) {
                    continue;
                }
                self.seen.insert(k, r.timestamp_ns);
                if out.len() < max {
                    out.push(r);
                } else {
                    dropped += 1;
                }
            }
            if n < q.limit {
                break;
            }
            if pages >= MAX_POLL_PAGES {
                dropped += 1;
                break;
            }
            q.cursor = next;
        }
        self.floor = self.floor.max(now - LATE_NS);
        let floor = self.floor;
        self.seen.retain(|_, ts| *ts >= floor);
        Ok((out, dropped))
    }
}

/// Why a tail stops by itself, or `None` to go on.
fn expired(state: &QueryState, id: &Identity, started: Instant) -> Option<&'static str> {
    if now_ns() / 1_000_000_000 >= id.expires_at() {
        return Some("the token expired; reconnect with a fresh one");
    }
    (started.elapsed().as_secs() >= state.limits.max_tail_secs).then_some("the tail reached query.max_tail_secs; reconnect to go on")
}

/// `GET /api/v1/logs/tail`: the search's filters and terms, live, as server-sent events
/// (`lines` with `{"lines": [...]}`, `error` with `{"error": {...}}` before closing).
pub async fn dashboard(State(state): State<QueryState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let id = state.identify(&headers).await?;
    let limit = p.usize("limit")?.unwrap_or(state.limits.default_lines).clamp(1, state.limits.max_lines);
    let slot = state.slot(id.user())?;
    let (q, matcher) = crate::api::tail_search(&state, &id, &p).await?;
    let (follow, initial) =
        state.audited(&id, "logs.tail", raw.as_deref().unwrap_or(""), Follow::start(&state, q.clone(), limit), |r| r.1.len() as u64).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    let matcher = Arc::new(matcher);
    let event = |lines: &[LogRecord], m: &Matcher| Event::default().event("lines").data(json!({ "lines": crate::api::Lines(lines, m) }).to_string());
    let first = event(&initial, &matcher);
    tokio::spawn(async move {
        let _slot = slot;
        let (mut follow, started) = (follow, Instant::now());
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(why) = expired(&state, &id, started) {
                let _ = tx.send(Event::default().event("error").data(json!({ "error": { "code": "limit_exceeded", "message": why } }).to_string())).await;
                return;
            }
            let polled = match crate::api::tail_search(&state, &id, &p).await {
                Ok((q, _)) => follow.poll(&state, q, state.limits.max_lines).await,
                Err(e) => Err(e),
            };
            match polled {
                Ok((lines, _)) if lines.is_empty() => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Ok((lines, _)) => {
                    if tx.send(event(&lines, &matcher)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ =
                        tx.send(Event::default().event("error").data(json!({ "error": { "code": e.code.as_str(), "message": e.message } }).to_string())).await;
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Loki's tail message for `entries`.
fn loki_message(entries: Vec<(crate::logql::labels::Labels, i64, String)>, dropped: usize) -> String {
    let mut streams: std::collections::BTreeMap<crate::logql::labels::Labels, Vec<Value>> = std::collections::BTreeMap::new();
    for (labels, ts, line) in entries {
        streams.entry(labels).or_default().push(json!([ts.to_string(), line]));
    }
    let streams: Vec<Value> = streams.into_iter().map(|(l, v)| json!({ "stream": l, "values": v })).collect();
    let mut m = json!({ "streams": streams });
    if dropped > 0 {
        m["dropped_entries"] = json!([{ "labels": {}, "timestamp": now_ns().to_string() }]);
    }
    m.to_string()
}

/// `GET /loki/api/v1/tail` (WebSocket): `query` (a log query), `limit` (initial entries,
/// default 100), `start` (default an hour ago), as Grafana's live tail calls it.
pub async fn loki(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, crate::loki::LokiError> {
    let p = Params::parse(raw.as_deref())?;
    let id = state.identify(&headers).await?;
    let limit = p.usize("limit")?.unwrap_or(100).clamp(1, state.limits.max_lines);
    let start = p.time("start")?.unwrap_or_else(|| now_ns() - 3_600_000_000_000);
    let text = p.one("query").unwrap_or_default().to_owned();
    let crate::logql::Expr::Log(expr) = crate::logql::parse(&text).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, format!("parse error: {m}")))? else {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "tail needs a log query, not a metric query").into());
    };
    let pl = crate::logql::pipeline::Pipeline::new(&expr).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    let slot = state.slot(id.user())?;
    let pl = Arc::new(pl);
    let setup = async {
        let q = crate::loki::tail_search(&state, &id, &pl, start).await?;
        Follow::start(&state, q, limit).await
    };
    let (follow, initial) = state.audited(&id, "loki.tail", &text, setup, |r| r.1.len() as u64).await?;
    Ok(ws.on_upgrade(move |socket| follow_socket(socket, state, id, pl, follow, initial, start, slot)))
}

#[allow(clippy::too_many_arguments)]
async fn follow_socket(
    mut socket: WebSocket,
    state: QueryState,
    id: Arc<Identity>,
    pl: Arc<crate::logql::pipeline::Pipeline>,
    mut follow: Follow,
    initial: Vec<LogRecord>,
    start: i64,
    _slot: Slot,
) {
    let started = Instant::now();
    let mut batch = initial;
    let mut dropped = 0;
    loop {
        let entries = crate::loki::run_pipeline(&pl, batch);
        if (!entries.is_empty() || dropped > 0) && socket.send(Message::Text(loki_message(entries, dropped).into())).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
        if let Some(why) = expired(&state, &id, started) {
            let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1000, reason: why.into() }))).await;
            return;
        }
        let polled = match crate::loki::tail_search(&state, &id, &pl, start).await {
            Ok(q) => follow.poll(&state, q, state.limits.max_lines).await,
            Err(e) => Err(e),
        };
        match polled {
            Ok((rows, d)) => {
                batch = rows;
                dropped = d;
            }
            Err(e) => {
                let reason = format!("{}: {}", e.code.as_str(), e.message);
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1011, reason: reason.chars().take(120).collect::<String>().into() })))
                    .await;
                return;
            }
        }
    }
}
