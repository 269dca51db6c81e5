//! JSON log events: Vector's `http` sink (NDJSON, or one JSON array) and the body of a
//! ClickHouse `INSERT … FORMAT JSONEachRow` (Vector's `clickhouse` sink: one object per line).
//!
//! Framing: a body whose first non-blank byte is `[` is an array, anything else NDJSON.
//! Either way each event is parsed on its own, so one bad event is one reject and the rest
//! still count:
//! - NDJSON: blank lines are skipped; a line longer than twice `max_line_bytes` is rejected
//!   (`LineTooLong`) without being parsed; a line that is not a JSON object, has trailing
//!   data, holds invalid UTF-8 or nests deeper than `max_json_depth` is `MalformedEvent`.
//! - Array: the elements are found by a byte scan (`json_scan`), then parsed like lines. An
//!   array that is itself broken (truncated, trailing data) fails the whole body.
//!
//! What each event becomes is described in `json_fields` (field routing) and `checks`
//! (limits, NUL handling). Tenancy: fields in the event that look like tenancy (`org_id`,
//! `workspace`, `project`, `application`, `tenant`, `X-Scope-OrgID`, …) are trusted nowhere
//! and stored nowhere: tenancy is resolved on the server from the credential and pod labels,
//! and a row already shaped like ours (`project` column) still does not get to pick its own.

use super::checks::Budget;
use super::{json_fields, json_scan};
use crate::event::{BodyError, DecodeLimits, Decoded, RawLog, RejectReason};

/// Decodes an NDJSON / JSON-array / `JSONEachRow` body (already decompressed).
pub fn decode_json_events(body: &[u8], limits: &DecodeLimits) -> Result<Decoded<RawLog>, BodyError> {
    if body.len() > limits.max_body_bytes {
        return Err(BodyError::TooLarge { limit: limits.max_body_bytes });
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let mut out = Decoded::default();
    // One path buffer for all events: the visitor builds dotted keys in it.
    let mut path = String::with_capacity(64);
    let mut budget = Budget::new(limits);
    let mut one = |raw: &[u8], out: &mut Decoded<RawLog>| -> Result<(), BodyError> {
        if raw.len() > limits.max_line_bytes.saturating_mul(2) {
            out.rejected.push(RejectReason::LineTooLong);
            return Ok(());
        }
        match json_fields::parse_event(raw, limits, &mut path) {
            Ok(ev) => {
                budget.charge(Budget::log_cost(&ev))?;
                out.events.push(ev);
            }
            Err(reason) => out.rejected.push(reason),
        }
        Ok(())
    };
    if body.iter().find(|b| !json_scan::is_ws(**b)) == Some(&b'[') {
        for element in json_scan::array_elements(body)? {
            one(element, &mut out)?;
        }
    } else {
        for line in body.split(|b| *b == b'\n') {
            let line = json_scan::trim(line);
            if !line.is_empty() {
                one(line, &mut out)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use schemas::Severity;

    use super::*;
    use crate::decode::testutil;

    /// A Vector `kubernetes_logs` event as Vector's `http` sink serialises it (the field set
    /// of Vector's documented output, values from a realistic pod).
    const VECTOR_EVENT: &str = r#"{"file":"/var/log/pods/shop_checkout-7d9f8b6c4-x2x9k_0b6f3c1e-5d1a-4a57-9a0e-8d2f7c1b9e21/checkout/0.log","kubernetes":{"container_id":"containerd://4f1c2b9d8e7a","container_image":"ghcr.io/acme/checkout:1.4.2","container_image_id":"ghcr.io/acme/checkout@sha256:9f86d081884c7d65","container_name":"checkout","namespace_labels":{"kubernetes.io/metadata.name":"shop"},"node_labels":{"kubernetes.io/hostname":"node-a","topology.kubernetes.io/zone":"eu-west-1a"},"pod_annotations":{"kubectl.kubernetes.io/restartedAt":"2024-05-01T08:00:00Z"},"pod_ip":"10.244.1.17","pod_ips":["10.244.1.17"],"pod_labels":{"app.kubernetes.io/name":"checkout","hexabase.ai/workspace":"ws-7f3a","pod-template-hash":"7d9f8b6c4"},"pod_name":"checkout-7d9f8b6c4-x2x9k","pod_namespace":"shop","pod_node_name":"node-a","pod_owner":"ReplicaSet/checkout-7d9f8b6c4","pod_uid":"0b6f3c1e-5d1a-4a57-9a0e-8d2f7c1b9e21"},"message":"2024-05-02T10:15:30.123Z ERROR payment declined order=8812","source_type":"kubernetes_logs","stream":"stderr","timestamp":"2024-05-02T10:15:30.123456789Z"}"#;

    fn decode(body: &str) -> Decoded<RawLog> {
        decode_json_events(body.as_bytes(), &DecodeLimits::default()).unwrap()
    }

    fn one(body: &str) -> RawLog {
        let d = decode(body);
        assert_eq!(d.rejected, vec![], "{body}");
        assert_eq!(d.events.len(), 1, "{body}");
        d.events.into_iter().next().unwrap()
    }

    fn attr<'a>(ev: &'a RawLog, key: &str) -> Option<&'a str> {
        ev.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn vector_kubernetes_event() {
        let ev = one(VECTOR_EVENT);
        assert_eq!(ev.timestamp_ns, Some(1_714_644_930_123_456_789));
        assert_eq!(ev.message, "2024-05-02T10:15:30.123Z ERROR payment declined order=8812");
        assert_eq!(ev.namespace.as_deref(), Some("shop"));
        assert_eq!(ev.pod.as_deref(), Some("checkout-7d9f8b6c4-x2x9k"));
        assert_eq!(ev.container.as_deref(), Some("checkout"));
        assert_eq!(ev.node.as_deref(), Some("node-a"));
        assert_eq!(ev.stream.as_deref(), Some("stderr"));
        assert_eq!(ev.severity, None, "no explicit level field");
        let labels: Vec<_> = ev.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels, [("app.kubernetes.io/name", "checkout"), ("hexabase.ai/workspace", "ws-7f3a"), ("pod-template-hash", "7d9f8b6c4")]);
        assert_eq!(attr(&ev, "kubernetes.pod_ips"), None, "per-pod constants are dropped");
        assert_eq!(attr(&ev, "kubernetes.node_labels.topology.kubernetes.io/zone"), None, "node labels are dropped");
        assert_eq!(attr(&ev, "kubernetes.pod_annotations.kubectl.kubernetes.io/restartedAt"), None);
        assert_eq!(attr(&ev, "kubernetes.container_image"), Some("ghcr.io/acme/checkout:1.4.2"));
        assert_eq!(attr(&ev, "source_type"), None);
        assert!(ev.attributes.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
        assert!(attr(&ev, "kubernetes.pod_name").is_none(), "routed fields are not repeated as attributes");
    }

    #[test]
    fn ndjson_array_and_json_each_row_agree() {
        let ndjson = format!("{VECTOR_EVENT}\n{VECTOR_EVENT}");
        let each_row = format!("{VECTOR_EVENT}\r\n\n  \n{VECTOR_EVENT}\n");
        let array = format!("[{VECTOR_EVENT},\n {VECTOR_EVENT}]");
        let a = decode(&ndjson);
        assert_eq!(a.events.len(), 2);
        assert_eq!(a.events, decode(&each_row).events);
        assert_eq!(a.events, decode(&array).events);
        assert!(decode("").events.is_empty());
        assert!(decode(" [ ] ").events.is_empty());
    }

    #[test]
    fn flattened_dotted_keys_and_column_shape() {
        let dotted = one(r#"{"kubernetes.pod_namespace":"shop","kubernetes.pod_labels.app":"web","message":"hi","http.status":200}"#);
        assert_eq!(dotted.namespace.as_deref(), Some("shop"));
        assert_eq!(dotted.labels, vec![("app".into(), "web".into())]);
        assert_eq!(attr(&dotted, "http.status"), Some("200"));

        let row = one(
            r#"{"timestamp":"2024-05-02 10:15:30.5","namespace":"shop","pod":"p","container":"c","node":"n","stream":"stdout","severity":"WARNING","message":"m","attributes":{"http":{"status":503},"retry":true},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","labels":{"app":"web"}}"#,
        );
        assert_eq!(row.timestamp_ns, Some(1_714_644_930_500_000_000));
        assert_eq!((row.pod.as_deref(), row.container.as_deref(), row.node.as_deref()), (Some("p"), Some("c"), Some("n")));
        assert_eq!(row.severity, Some(Severity::Warn));
        assert_eq!(row.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(row.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(row.attributes, vec![("http.status".into(), "503".into()), ("retry".into(), "true".into())]);
        assert_eq!(row.labels, vec![("app".into(), "web".into())]);

        // The Vector name wins over the column name, in either order.
        let both = one(r#"{"namespace":"col","kubernetes":{"pod_namespace":"k8s"},"message":"x"}"#);
        assert_eq!(both.namespace.as_deref(), Some("k8s"));
        let both = one(r#"{"kubernetes":{"pod_namespace":"k8s"},"namespace":"col","message":"x"}"#);
        assert_eq!(both.namespace.as_deref(), Some("k8s"));
    }

    #[test]
    fn levels_and_trace_ids_by_any_name() {
        assert_eq!(one(r#"{"message":"x","level":"err"}"#).severity, Some(Severity::Error));
        assert_eq!(one(r#"{"message":"x","log":{"level":"debug"}}"#).severity, Some(Severity::Debug));
        let odd = one(r#"{"message":"x","level":"loud"}"#);
        assert_eq!((odd.severity, attr(&odd, "level")), (None, Some("loud")));
        assert_eq!(one(r#"{"message":"x","traceId":"abc","spanId":"def"}"#).trace_id.as_deref(), Some("abc"));
        assert_eq!(one(r#"{"message":"x","trace":{"id":"abc"},"span":{"id":"def"}}"#).span_id.as_deref(), Some("def"));
    }

    #[test]
    fn tenancy_fields_are_dropped() {
        let ev = one(
            r#"{"message":"x","org_id":"victim","workspace":"w","project":"p","application":"a","tenant":"t","X-Scope-OrgID":"o","attributes":{"org_id":"v"},"http":{"org_id":"kept"}}"#,
        );
        assert_eq!(ev.attributes, vec![("http.org_id".into(), "kept".into())]);
        assert_eq!(ev.namespace, None, "`project` does not become the namespace");
        assert!(ev.labels.is_empty());
    }

    #[test]
    fn message_fallbacks_and_coercion() {
        assert_eq!(one(r#"{"message":5}"#).message, "5");
        assert_eq!(one(r#"{"message":{"b": [1, 2]}}"#).message, r#"{"b":[1,2]}"#);
        assert_eq!(one(r#"{"message":["a"]}"#).message, r#"["a"]"#);
        let msg = one(r#"{"msg":"from msg","log":"from log"}"#);
        assert_eq!((msg.message.as_str(), attr(&msg, "log")), ("from msg", Some("from log")));
        assert_eq!(one(r#"{"log":"from log"}"#).message, "from log");
        // No message at all: the event itself, compact.
        assert_eq!(one(r#"{ "user" : "ann", "n" : [1, 2] }"#).message, r#"{"user":"ann","n":[1,2]}"#);
        assert_eq!(one("[{}]").message, "{}");
        // null means absent.
        let null = one(r#"{"message":null,"pod":null,"k":null}"#);
        assert_eq!((null.message.as_str(), null.pod, null.attributes.len()), (r#"{"message":null,"pod":null,"k":null}"#, None, 0));
    }

    #[test]
    fn wrong_types_for_timestamp_are_kept_as_attributes() {
        let ev = one(r#"{"message":"x","timestamp":true}"#);
        assert_eq!((ev.timestamp_ns, attr(&ev, "timestamp")), (None, Some("true")));
        let ev = one(r#"{"message":"x","timestamp":"yesterday"}"#);
        assert_eq!((ev.timestamp_ns, attr(&ev, "timestamp")), (None, Some("yesterday")));
        assert_eq!(one(r#"{"message":"x","timestamp":1714644930123}"#).timestamp_ns, Some(1_714_644_930_123_000_000));
        assert_eq!(one(r#"{"message":"x","timestamp":1714644930.5}"#).timestamp_ns, Some(1_714_644_930_500_000_000));
        assert_eq!(one(r#"{"message":"x","timestamp":1e300}"#).timestamp_ns, None);
    }

    #[test]
    fn bad_lines_are_rejected_one_by_one() {
        let body =
            [r#"{"message":"ok 1"}"#, "not json", r#""a string""#, "[1,2]", r#"{"message":"trailing"} x"#, r#"{"message":"truncated"#, r#"{"message":"ok 2"}"#]
                .join("\n");
        let d = decode(&body);
        assert_eq!(d.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["ok 1", "ok 2"]);
        assert_eq!(d.rejected, vec![RejectReason::MalformedEvent; 5]);
        // In an array, a bad element is one reject too.
        let d = decode(r#"[{"message":"a"}, 7, {"message":{"deep":[[[]]]}}, {"message":"b"}]"#);
        assert_eq!((d.events.len(), d.rejected.len()), (3, 1));
        // A broken array is a broken body.
        assert!(decode_json_events(br#"[{"message":"a"}"#, &DecodeLimits::default()).is_err());
        assert!(decode_json_events(br#"[{"message":"a"}] {}"#, &DecodeLimits::default()).is_err());
    }

    #[test]
    fn invalid_utf8_and_nul() {
        let mut body = br#"{"message":"bad "#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(b"\"}\n{\"message\":\"a\\u0000b\",\"k\\u0000\":\"v\\u0000\"}");
        let d = decode_json_events(&body, &DecodeLimits::default()).unwrap();
        assert_eq!(d.rejected, vec![RejectReason::MalformedEvent]);
        assert_eq!(d.events[0].message, "a\u{fffd}b");
        assert_eq!(d.events[0].attributes, vec![("k\u{fffd}".into(), "v\u{fffd}".into())]);
    }

    #[test]
    fn limits_are_enforced_per_event() {
        let limits = DecodeLimits { max_line_bytes: 100, max_labels: 3, max_label_bytes: 8, max_json_depth: 4, ..DecodeLimits::default() };
        let run = |s: &str| decode_json_events(s.as_bytes(), &limits).unwrap();
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(101));
        assert_eq!(run(&long).rejected, vec![RejectReason::LineTooLong]);
        let huge = format!(r#"{{"message":"{}"}}"#, "x".repeat(1000));
        assert_eq!(run(&huge).rejected, vec![RejectReason::LineTooLong]);
        assert_eq!(run(r#"{"message":"m","a":1,"b":2,"c":3,"d":4}"#).rejected, vec![RejectReason::TooManyLabels]);
        assert_eq!(run(r#"{"message":"m","a":1,"a":2,"a":3,"a":4}"#).rejected, vec![], "duplicates collapse before counting");
        assert_eq!(run(r#"{"message":"m","labels":{"a":"123456789"}}"#).rejected, vec![RejectReason::LabelTooLong]);
        assert_eq!(run(r#"{"message":"m","pod":"123456789"}"#).rejected, vec![RejectReason::LabelTooLong]);
        assert_eq!(run(r#"{"message":"m","a":{"b":{"c":{"d":1}}}}"#).rejected, vec![]);
        assert_eq!(run(r#"{"message":"m","a":{"b":{"c":{"d":{"e":1}}}}}"#).rejected, vec![RejectReason::MalformedEvent]);
        assert_eq!(run(r#"{"message":{"b":{"c":{"d":{"e":1}}}}}"#).rejected, vec![RejectReason::MalformedEvent]);
        assert_eq!(run(r#"{"message":"m","a":[[[1]]]}"#).rejected, vec![]);
        assert_eq!(run(r#"{"message":"m","a":[[[[1]]]]}"#).rejected, vec![RejectReason::MalformedEvent]);
        // Far past serde_json's own recursion limit: still one reject, in both framings.
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
        assert_eq!(run(&format!("{deep}\n{{\"message\":\"ok\"}}")).rejected, vec![RejectReason::LineTooLong]);
        let d = decode(&format!("{deep}\n{{\"message\":\"ok\"}}"));
        assert_eq!((d.events.len(), d.rejected.clone()), (1, vec![RejectReason::MalformedEvent]));
        let d = decode(&format!("[{deep}, {{\"message\":\"ok\"}}]"));
        assert_eq!((d.events.len(), d.rejected), (1, vec![RejectReason::MalformedEvent]));
    }

    #[test]
    fn body_over_the_limit_is_too_large() {
        let limits = DecodeLimits { max_body_bytes: 10, ..DecodeLimits::default() };
        assert_eq!(decode_json_events(&[b' '; 11], &limits).unwrap_err(), BodyError::TooLarge { limit: 10 });
    }

    #[test]
    fn tiny_events_cannot_fan_out_without_bound() {
        let limits = DecodeLimits { max_body_bytes: 64 << 10, ..DecodeLimits::default() };
        let body = "{}\n".repeat((64 << 10) / 3);
        assert_eq!(decode_json_events(body.as_bytes(), &limits).unwrap_err(), BodyError::TooLarge { limit: 64 << 10 });
    }

    #[test]
    fn mutated_bodies_never_panic() {
        let ndjson = format!("{VECTOR_EVENT}\n{{\"message\":\"a\\u0000\\\"b\",\"n\":[1,{{\"x\":null}}],\"timestamp\":1.5e9}}\n");
        let array = format!("[{VECTOR_EVENT},{{\"msg\":{{\"k\":[true,false]}}}}]");
        let limits = DecodeLimits { max_json_depth: 4, ..DecodeLimits::default() };
        for seed in [ndjson, array] {
            testutil::mutations(seed.as_bytes(), 1000, |m| {
                let _ = decode_json_events(m, &limits);
            });
        }
    }
}
