//! Loki push (`POST /loki/api/v1/push`): JSON `{"streams":[…]}` and snappy-compressed
//! protobuf `logproto.PushRequest` (what Vector's `loki` sink, promtail and Grafana Alloy send).
//!
//! Each stream has one label set shared by its entries:
//! - every stream label is kept in `labels` (tenancy labels are looked up there later);
//! - `namespace` → namespace, `pod`/`pod_name` → pod, `container`/`container_name` →
//!   container, `node`/`node_name`/`host` → node, `stream` → stream, and the first of
//!   `level`/`severity`/`detected_level` that [`Severity::parse`] knows → severity;
//! - structured metadata → attributes, except `trace_id`/`traceID` and `span_id`/`spanID`,
//!   which fill the trace and span ids.
//!
//! A stream whose labels break a limit rejects each of its entries with that reason. Label
//! text that cannot be parsed (protobuf), or JSON that does not have the push shape, fails the
//! whole body: it means a broken client, and Loki answers it the same way. An entry whose
//! timestamp is not a nanosecond integer (JSON) or not a valid `Timestamp` (protobuf) is one
//! `MalformedEvent`; a protobuf entry without a timestamp has none (the server's clock is used).
//! Invalid UTF-8 in a protobuf line or metadata becomes U+FFFD (Loki stores such lines too);
//! label text must be valid UTF-8.

mod json;
pub mod proto;

use prost::Message;
use schemas::Severity;

use super::checks::{self, Budget};
use super::{label_text, snappy_block};
use crate::event::{BodyError, DecodeLimits, Decoded, RawLog, RejectReason};

pub use json::decode_loki_json;

/// Decodes a Loki protobuf push body: snappy block compression always, whatever
/// `Content-Encoding` said.
pub fn decode_loki_protobuf(snappy_body: &[u8], limits: &DecodeLimits) -> Result<Decoded<RawLog>, BodyError> {
    let raw = snappy_block(snappy_body, limits.max_body_bytes)?;
    let request = proto::LenientPushRequest::decode(&raw[..]).map_err(|e| BodyError::Malformed(format!("Loki push protobuf: {e}")))?;
    let mut out = Decoded::default();
    let mut budget = Budget::new(limits);
    for stream in request.streams {
        let labels = label_text::parse(&stream.labels).map_err(|e| BodyError::Malformed(format!("Loki stream labels: {e}")))?;
        let base = stream_base(labels, limits);
        for entry in stream.entries {
            let ts = match entry.timestamp {
                None => Ts::Absent,
                Some(t) => proto_ts(t),
            };
            let metadata = entry.structured_metadata.into_iter().map(|p| (lossy(p.name), lossy(p.value))).collect();
            push_entry(&base, Entry { ts, line: lossy(entry.line), metadata }, &mut out, &mut budget, limits)?;
        }
    }
    Ok(out)
}

/// An entry's timestamp as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ts {
    At(i64),
    Absent,
    Invalid,
}

/// One entry before it is joined with its stream.
struct Entry {
    ts: Ts,
    line: String,
    metadata: Vec<(String, String)>,
}

fn proto_ts(t: proto::Timestamp) -> Ts {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Ts::Invalid;
    }
    match t.seconds.checked_mul(1_000_000_000).and_then(|s| s.checked_add(i64::from(t.nanos))) {
        Some(ns) => Ts::At(ns),
        None => Ts::Invalid,
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    let s = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    checks::scrub(s)
}

/// What every entry of a stream starts from: its labels and the fields they name; or why
/// every entry of the stream is rejected.
fn stream_base(labels: Vec<(String, String)>, limits: &DecodeLimits) -> Result<RawLog, RejectReason> {
    // Checked before the lookups below, which are linear in the number of labels.
    if labels.len() > limits.max_labels {
        return Err(RejectReason::TooManyLabels);
    }
    let mut labels: Vec<(String, String)> = labels.into_iter().map(|(k, v)| (checks::scrub(k), checks::scrub(v))).collect();
    let get = |labels: &[(String, String)], names: &[&str]| -> Option<(String, String)> {
        names.iter().find_map(|n| labels.iter().find(|(k, v)| k == n && !v.is_empty()).cloned())
    };
    let level = ["level", "severity", "detected_level"]
        .iter()
        .find_map(|n| labels.iter().find(|(k, _)| k == n).and_then(|(k, v)| Severity::parse(v).map(|s| (k.clone(), s))));
    let (namespace, pod, container, node, stream) = (
        get(&labels, &["namespace"]),
        get(&labels, &["pod", "pod_name"]),
        get(&labels, &["container", "container_name"]),
        get(&labels, &["node", "node_name", "host"]),
        get(&labels, &["stream"]),
    );
    // A label that became a column is not kept again as an attribute: the column holds it
    // (and the Loki API gives it back under its usual name).
    let consumed: Vec<String> =
        [&namespace, &pod, &container, &node, &stream].into_iter().flatten().map(|(k, _)| k.clone()).chain(level.as_ref().map(|(k, _)| k.clone())).collect();
    labels.retain(|(k, _)| !consumed.contains(k));
    let mut base = RawLog {
        namespace: namespace.map(|(_, v)| v),
        pod: pod.map(|(_, v)| v),
        container: container.map(|(_, v)| v),
        node: node.map(|(_, v)| v),
        stream: stream.map(|(_, v)| v),
        severity: level.map(|(_, s)| s),
        ..RawLog::default()
    };
    base.labels = labels;
    checks::finish(&mut base, limits)?;
    Ok(base)
}

/// Joins an entry with its stream, applies the limits, and records the event or the reject.
fn push_entry(
    base: &Result<RawLog, RejectReason>,
    entry: Entry,
    out: &mut Decoded<RawLog>,
    budget: &mut Budget,
    limits: &DecodeLimits,
) -> Result<(), BodyError> {
    let base = match base {
        Ok(base) => base,
        Err(reason) => {
            out.rejected.push(*reason);
            return Ok(());
        }
    };
    let timestamp_ns = match entry.ts {
        Ts::At(ns) => Some(ns),
        Ts::Absent => None,
        Ts::Invalid => {
            out.rejected.push(RejectReason::MalformedEvent);
            return Ok(());
        }
    };
    // Charged before the stream's labels are copied: the copy is where a small body could
    // fan out (thousands of tiny entries under one big label set).
    let metadata_bytes: usize = entry.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    budget.charge(Budget::log_cost(base) + entry.line.len() + metadata_bytes)?;
    let mut ev = base.clone();
    ev.timestamp_ns = timestamp_ns;
    ev.message = entry.line;
    for (name, value) in entry.metadata {
        match name.as_str() {
            "trace_id" | "traceID" | "traceId" => ev.trace_id = Some(value),
            "span_id" | "spanID" | "spanId" => ev.span_id = Some(value),
            _ => ev.attributes.push((name, value)),
        }
    }
    match checks::finish(&mut ev, limits) {
        Ok(()) => out.events.push(ev),
        Err(reason) => out.rejected.push(reason),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests;
