//! Realistic payloads: Loghub's real log text shaped as Vector's `kubernetes_logs` events.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

fn loghub_dir() -> PathBuf {
    std::env::var_os("LOGHUB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/loghub"))
}

/// Every line of several Loghub systems.
pub fn loghub_lines() -> &'static [String] {
    static LINES: OnceLock<Vec<String>> = OnceLock::new();
    LINES.get_or_init(|| {
        let mut lines = Vec::new();
        for system in ["HDFS", "Hadoop", "OpenStack", "Apache", "Zookeeper", "Spark"] {
            let path = loghub_dir().join(system).join(format!("{system}_2k.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e} (set LOGHUB_DIR)", path.display()));
            lines.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
        }
        lines
    })
}

/// Where an event comes from.
#[derive(Clone, Debug)]
pub struct Source {
    pub org: Option<String>,
    pub workspace: Option<String>,
    pub project: String,
    pub app: String,
    pub pod: String,
}

impl Source {
    pub fn new(org: &str, workspace: &str, project: &str) -> Source {
        Source { org: Some(org.into()), workspace: Some(workspace.into()), project: project.into(), app: "cart".into(), pod: format!("cart-{workspace}-7d9f8") }
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as i64
}

pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let dt = chrono::DateTime::from_timestamp(secs, nanos).expect("timestamp");
    dt.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// A Vector `kubernetes_logs` event whose message starts with `id`.
pub fn vector_event(src: &Source, id: &str, line: &str, ts_ns: i64) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), json!(src.app));
    labels.insert("pod-template-hash".into(), json!("7d9f8"));
    if let Some(o) = &src.org {
        labels.insert("hexabase.ai/organization".into(), json!(o));
    }
    if let Some(w) = &src.workspace {
        labels.insert("hexabase.ai/workspace".into(), json!(w));
    }
    labels.insert("hexabase.ai/project".into(), json!(src.project));
    json!({
        "file": format!("/var/log/pods/{}_{}_uid/app/0.log", src.project, src.pod),
        "kubernetes": {
            "container_id": "containerd://5f2c",
            "container_image": "registry.example/cart:1.4.2",
            "container_name": "app",
            "pod_ip": "10.42.0.17",
            "pod_labels": labels,
            "pod_name": src.pod,
            "pod_namespace": src.project,
            "pod_node_name": "node-1",
            "pod_owner": "ReplicaSet/cart-7d9f8",
            "pod_uid": "0b6d1c9e-8e53-4c1b-9f0e-2f3c3c1a7b11"
        },
        "message": format!("{id} {line}"),
        "source_type": "kubernetes_logs",
        "stream": "stdout",
        "timestamp": rfc3339(ts_ns),
    })
}

/// Events for `src` with ids `{prefix}-{i}` and Loghub text, timestamps one microsecond apart.
pub fn vector_events(src: &Source, prefix: &str, n: usize) -> Vec<Value> {
    let lines = loghub_lines();
    let t0 = now_ns() - 60_000_000_000;
    (0..n).map(|i| vector_event(src, &format!("{prefix}-{i}"), &lines[i % lines.len()], t0 + i as i64 * 1000)).collect()
}

pub fn ndjson(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend(serde_json::to_vec(e).expect("json"));
    }
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).expect("zstd")
}

pub fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).expect("snappy")
}

/// Nanoseconds since the epoch of an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339").timestamp_nanos_opt().expect("in range")
}
