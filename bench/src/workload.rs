//! The workload: Loghub's real log text shaped as Vector `kubernetes_logs` events, cut into
//! request bodies of 1,000 events in each encoding, all built before anything is timed.
//!
//! 20 workspaces (`ws-00`…`ws-19`) in 5 organisations, 3 pods each. Each pod logs one Loghub
//! system's lines in order, so a pod's messages look like one application's output. A body
//! holds 8 runs of 125 consecutive events from 8 pods spread over the workspaces, as a node's
//! shipper would batch them.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use ingest::decode::loki::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message;
use schemas::Severity;
use serde_json::json;

pub const WORKSPACES: usize = 20;
pub const ORGS: usize = 5;
const PODS_PER_WORKSPACE: usize = 3;
const RUNS_PER_BODY: usize = 8;
const PROJECTS: [&str; 5] = ["shop", "billing", "auth", "search", "media"];
const APPS: [&str; 3] = ["api", "worker", "web"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Ndjson,
    NdjsonZstd,
    LokiProto,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Ndjson, Encoding::NdjsonZstd, Encoding::LokiProto];

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Ndjson => "NDJSON",
            Encoding::NdjsonZstd => "NDJSON zstd",
            Encoding::LokiProto => "Loki protobuf",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Encoding::LokiProto => "/loki/api/v1/push",
            _ => "/ingest/v1/logs",
        }
    }

    /// (Content-Type, Content-Encoding) as the shipper sends them.
    pub fn headers(self) -> (&'static str, Option<&'static str>) {
        match self {
            Encoding::Ndjson => ("application/x-ndjson", None),
            Encoding::NdjsonZstd => ("application/x-ndjson", Some("zstd")),
            Encoding::LokiProto => ("application/x-protobuf", None),
        }
    }
}

/// One request body.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Bytes,
    pub events: usize,
    /// Size of the same events as plain NDJSON (the common "raw" measure).
    pub ndjson_bytes: usize,
}

#[derive(Debug)]
pub struct Workload {
    /// Plain NDJSON bodies; the other encodings hold the same events in the same order.
    pub ndjson: Vec<Body>,
    pub zstd: Vec<Body>,
    pub loki: Vec<Body>,
    pub mean_event_bytes: f64,
    pub loghub_systems: usize,
}

impl Workload {
    pub fn bodies(&self, e: Encoding) -> &[Body] {
        match e {
            Encoding::Ndjson => &self.ndjson,
            Encoding::NdjsonZstd => &self.zstd,
            Encoding::LokiProto => &self.loki,
        }
    }
}

struct Event {
    ts_ns: i64,
    level: &'static str,
    message: String,
    trace_id: String,
    pod: usize,
}

struct Pod {
    workspace: usize,
    project: &'static str,
    app: &'static str,
    name: String,
}

impl Pod {
    fn org(&self) -> String {
        format!("org-{}", self.workspace % ORGS)
    }
    fn workspace(&self) -> String {
        format!("ws-{:02}", self.workspace)
    }
}

/// splitmix64: deterministic, so every run sends the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn loghub_dir() -> PathBuf {
    std::env::var_os("LOGHUB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub"))
}

/// Lines of every `<system>/<system>_2k.log` under the Loghub directory, one list per system.
fn loghub_systems() -> anyhow::Result<Vec<Vec<String>>> {
    let dir = loghub_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (set LOGHUB_DIR)", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut systems = Vec::new();
    for name in names {
        let path = dir.join(&name).join(format!("{name}_2k.log"));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
        if !lines.is_empty() {
            systems.push(lines);
        }
    }
    if systems.is_empty() {
        bail!("no <system>/<system>_2k.log files under {} (set LOGHUB_DIR)", dir.display());
    }
    Ok(systems)
}

fn rfc3339(ns: i64) -> String {
    let dt = chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32).unwrap_or_default();
    dt.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn ndjson_line(e: &Event, p: &Pod) -> Vec<u8> {
    let v = json!({
        "timestamp": rfc3339(e.ts_ns),
        "level": e.level,
        "message": e.message,
        "trace_id": e.trace_id,
        "stream": "stdout",
        "kubernetes": {
            "pod_namespace": p.project,
            "pod_name": p.name,
            "container_name": p.app,
            "pod_labels": { "app": p.app, "hexabase.ai/organization": p.org(), "hexabase.ai/workspace": p.workspace() },
        },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The same events as a Loki push: one stream per (pod, level), Loki-style label names
/// (`hexabase_organization`, `hexabase_workspace`), the trace id as structured metadata.
fn loki_push(events: &[Event], pods: &[Pod]) -> PushRequest {
    let mut streams: Vec<StreamAdapter> = Vec::new();
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    for e in events {
        let p = &pods[e.pod];
        let i = *index.entry((e.pod, e.level)).or_insert_with(|| {
            streams.push(StreamAdapter {
                labels: format!(
                    r#"{{app="{}", container="{}", hexabase_organization="{}", hexabase_workspace="{}", level="{}", namespace="{}", pod="{}", stream="stdout"}}"#,
                    p.app,
                    p.app,
                    p.org(),
                    p.workspace(),
                    e.level,
                    p.project,
                    p.name
                ),
                entries: Vec::new(),
                hash: 0,
            });
            streams.len() - 1
        });
        streams[i].entries.push(EntryAdapter {
            timestamp: Some(Timestamp { seconds: e.ts_ns.div_euclid(1_000_000_000), nanos: e.ts_ns.rem_euclid(1_000_000_000) as i32 }),
            line: e.message.clone(),
            structured_metadata: vec![LabelPairAdapter { name: "trace_id".into(), value: e.trace_id.clone() }],
        });
    }
    PushRequest { streams }
}

/// Builds `n_bodies` bodies of `per_body` events in every encoding. Timestamps start five
/// minutes ago, one millisecond apart, so they stay acceptable for the whole run.
pub fn build(n_bodies: usize, per_body: usize) -> anyhow::Result<Workload> {
    let systems = loghub_systems()?;
    let mut rng = Rng(0x4865_7861_6261_7365);
    let pods: Vec<Pod> = (0..WORKSPACES * PODS_PER_WORKSPACE)
        .map(|i| {
            let app = APPS[i % PODS_PER_WORKSPACE];
            let r = rng.next();
            Pod {
                workspace: i / PODS_PER_WORKSPACE,
                project: PROJECTS[(i / PODS_PER_WORKSPACE) % PROJECTS.len()],
                app,
                name: format!("{app}-{:08x}-{:05x}", r >> 32, r & 0xfffff),
            }
        })
        .collect();
    let mut cursor = vec![0usize; pods.len()];
    let t0 = crate::workload::now_ns() - 300_000_000_000;
    let run = per_body.div_ceil(RUNS_PER_BODY).max(1);
    let (mut ndjson, mut zstd, mut loki) = (Vec::new(), Vec::new(), Vec::new());
    let mut total_events = 0usize;
    for b in 0..n_bodies {
        let mut events = Vec::with_capacity(per_body);
        for i in 0..per_body {
            // Runs of consecutive events from one pod; 23 is coprime with 60 pods.
            let pod = ((b * RUNS_PER_BODY + i / run) * 23) % pods.len();
            let lines = &systems[pod % systems.len()];
            let line = &lines[cursor[pod] % lines.len()];
            cursor[pod] += 1;
            let level = match Severity::detect(line) {
                Severity::Unknown => "info",
                s => s.as_str(),
            };
            events.push(Event {
                ts_ns: t0 + ((b * per_body + i) as i64) * 1_000_000,
                level,
                message: line.clone(),
                trace_id: format!("{:016x}{:016x}", rng.next(), rng.next()),
                pod,
            });
        }
        let mut body = Vec::new();
        for e in &events {
            body.extend(ndjson_line(e, &pods[e.pod]));
            body.push(b'\n');
        }
        let n = events.len();
        total_events += n;
        let raw = body.len();
        let z = zstd::encode_all(&body[..], zstd::DEFAULT_COMPRESSION_LEVEL).context("zstd")?;
        let proto = loki_push(&events, &pods).encode_to_vec();
        let snappy = snap::raw::Encoder::new().compress_vec(&proto).context("snappy")?;
        ndjson.push(Body { bytes: Bytes::from(body), events: n, ndjson_bytes: raw });
        zstd.push(Body { bytes: Bytes::from(z), events: n, ndjson_bytes: raw });
        loki.push(Body { bytes: Bytes::from(snappy), events: n, ndjson_bytes: raw });
    }
    let raw: usize = ndjson.iter().map(|b| b.ndjson_bytes).sum();
    Ok(Workload { ndjson, zstd, loki, mean_event_bytes: raw as f64 / total_events.max(1) as f64, loghub_systems: systems.len() })
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
