//! The load generator: pre-built bodies over keep-alive HTTP connections on loopback, either
//! closed-loop as fast as the server answers (peak) or open-loop at a fixed rate (latency).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::procs::TOKEN;
use crate::workload::{Body, Encoding};

/// Most requests in flight in the open-loop phase; beyond it the schedule slips (and the
/// slip counts in the latency, measured from the scheduled send time).
const MAX_IN_FLIGHT: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Target {
    client: reqwest::Client,
    url: String,
    encoding: Encoding,
    bodies: Arc<Vec<Body>>,
}

impl Target {
    pub fn new(server_url: &str, encoding: Encoding, bodies: &[Body]) -> anyhow::Result<Target> {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(MAX_IN_FLIGHT).tcp_nodelay(true).build()?;
        Ok(Target { client, url: format!("{server_url}{}", encoding.path()), encoding, bodies: Arc::new(bodies.to_vec()) })
    }

    /// Sends body `i` (round-robin); returns the HTTP status and the events the server accepted.
    async fn send(&self, i: usize) -> (Option<u16>, usize, &Body) {
        let body = &self.bodies[i % self.bodies.len()];
        let (ctype, cenc) = self.encoding.headers();
        let mut req = self.client.post(&self.url).bearer_auth(TOKEN).header("content-type", ctype).body(body.bytes.clone());
        if let Some(e) = cenc {
            req = req.header("content-encoding", e);
        }
        let Ok(resp) = req.send().await else { return (None, 0, body) };
        let status = resp.status().as_u16();
        let text = resp.bytes().await.unwrap_or_default();
        let accepted = match status {
            204 => body.events,
            200 => serde_json::from_slice::<serde_json::Value>(&text).ok().and_then(|v| v["accepted"].as_u64()).map_or(body.events, |n| n as usize),
            _ => 0,
        };
        (Some(status), accepted, body)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub requests_ok: u64,
    pub events: u64,
    pub wire_bytes: u64,
    pub ndjson_bytes: u64,
    /// Every answer that was not 2xx, by status (0: no answer at all).
    pub failures: BTreeMap<u16, u64>,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Outcome {
    fn record(&mut self, status: Option<u16>, accepted: usize, body: &Body, latency: Duration) {
        match status {
            Some(s) if (200..300).contains(&s) => {
                self.requests_ok += 1;
                self.events += accepted as u64;
                self.wire_bytes += body.bytes.len() as u64;
                // Raw bytes of the accepted events (all of them, in this workload).
                self.ndjson_bytes += (body.ndjson_bytes * accepted / body.events.max(1)) as u64;
                self.latencies.push(latency);
            }
            other => *self.failures.entry(other.unwrap_or(0)).or_default() += 1,
        }
    }

    fn merge(&mut self, o: Outcome) {
        self.requests_ok += o.requests_ok;
        self.events += o.events;
        self.wire_bytes += o.wire_bytes;
        self.ndjson_bytes += o.ndjson_bytes;
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        self.latencies.extend(o.latencies);
    }

    pub fn failures_text(&self) -> String {
        if self.failures.is_empty() {
            return "0".into();
        }
        self.failures.iter().map(|(s, n)| if *s == 0 { format!("{n}×no answer") } else { format!("{n}×{s}") }).collect::<Vec<_>>().join(" ")
    }

    /// Latency quantile `q` (0..=1), milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    }
}

/// `connections` workers, each sending its next body as soon as the previous one is answered,
/// for `duration`. A 429/503 makes that worker pause 20 ms (and is counted).
pub async fn peak(target: &Target, connections: usize, duration: Duration, start_index: usize) -> Outcome {
    let next = Arc::new(AtomicUsize::new(start_index));
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        let (t, next) = (target.clone(), next.clone());
        set.spawn(async move {
            let mut out = Outcome::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (status, accepted, body) = t.send(next.fetch_add(1, Ordering::Relaxed)).await;
                out.record(status, accepted, body, sent.elapsed());
                if !matches!(status, Some(200..=299)) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            out
        });
    }
    joined(set, start).await
}

/// Sends every body exactly once over `connections` connections, retrying a body after a
/// 429/503 (at most 100 times), so that storage ends up with each distinct event once.
pub async fn once(target: &Target, connections: usize) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..connections {
        let (t, next) = (target.clone(), next.clone());
        set.spawn(async move {
            let mut out = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= t.bodies.len() {
                    return out;
                }
                for _ in 0..100 {
                    let sent = Instant::now();
                    let (status, accepted, body) = t.send(i).await;
                    out.record(status, accepted, body, sent.elapsed());
                    if matches!(status, Some(200..=299)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    joined(set, start).await
}

/// Every worker's outcome merged, timed from `start`.
async fn joined(mut set: JoinSet<Outcome>, start: Instant) -> Outcome {
    let mut total = Outcome::default();
    while let Some(r) = set.join_next().await {
        if let Ok(o) = r {
            total.merge(o);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Open loop: request `i` is due at `start + i / rate`, whatever happened to the others; its
/// latency runs from when it was due to when it was acknowledged.
pub async fn paced(target: &Target, requests_per_sec: f64, duration: Duration, start_index: usize) -> Outcome {
    let interval = Duration::from_secs_f64(1.0 / requests_per_sec.max(0.1));
    let total_requests = (duration.as_secs_f64() * requests_per_sec).ceil().max(1.0) as usize;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    let mut total = Outcome::default();
    for i in 0..total_requests {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let t = target.clone();
        set.spawn(async move {
            let (status, accepted, body) = t.send(start_index + i).await;
            let mut out = Outcome::default();
            out.record(status, accepted, body, due.elapsed());
            drop(permit);
            out
        });
        while let Some(r) = set.try_join_next() {
            if let Ok(o) = r {
                total.merge(o);
            }
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok(o) = r {
            total.merge(o);
        }
    }
    total.elapsed = start.elapsed();
    total
}
