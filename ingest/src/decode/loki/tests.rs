//! Loki push decoding against bodies encoded the way clients encode them.

use prost::Message;
use schemas::Severity;

use super::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use super::*;
use crate::decode::testutil;

const LABELS: &str =
    r#"{container="checkout", detected_level="warn", hexabase_ai_workspace="ws-7f3a", namespace="shop", pod="checkout-7d9f8b6c4-x2x9k", stream="stderr"}"#;

fn entry(seconds: i64, nanos: i32, line: &str, metadata: &[(&str, &str)]) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp { seconds, nanos }),
        line: line.into(),
        structured_metadata: metadata.iter().map(|(n, v)| LabelPairAdapter { name: n.to_string(), value: v.to_string() }).collect(),
    }
}

fn snappy(request: &PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap()
}

fn request() -> PushRequest {
    PushRequest {
        streams: vec![
            StreamAdapter {
                labels: LABELS.into(),
                entries: vec![
                    entry(1_714_644_930, 123_456_789, "payment declined order=8812", &[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), ("user", "u-1")]),
                    entry(1_714_644_931, 0, "retrying", &[]),
                ],
                hash: 0,
            },
            StreamAdapter { labels: r#"{agent="vector", host="node-a"}"#.into(), entries: vec![entry(1_714_644_932, 5, "plain", &[])], hash: 0 },
        ],
    }
}

#[test]
fn protobuf_push_as_vector_sends_it() {
    let d = decode_loki_protobuf(&snappy(&request()), &DecodeLimits::default()).unwrap();
    assert_eq!(d.rejected, vec![]);
    assert_eq!(d.events.len(), 3);
    let first = &d.events[0];
    assert_eq!(first.timestamp_ns, Some(1_714_644_930_123_456_789));
    assert_eq!(first.message, "payment declined order=8812");
    assert_eq!(first.namespace.as_deref(), Some("shop"));
    assert_eq!(first.pod.as_deref(), Some("checkout-7d9f8b6c4-x2x9k"));
    assert_eq!(first.container.as_deref(), Some("checkout"));
    assert_eq!(first.stream.as_deref(), Some("stderr"));
    assert_eq!(first.severity, Some(Severity::Warn));
    assert_eq!(first.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(first.attributes, vec![("user".into(), "u-1".into())]);
    // Labels that became columns are not kept twice; the others are, as labels.
    assert_eq!(first.labels, vec![("hexabase_ai_workspace".into(), "ws-7f3a".into())], "only the labels no column holds");
    assert_eq!(d.events[1].labels, first.labels);
    assert_eq!(d.events[2].node.as_deref(), Some("node-a"));
    assert_eq!(d.events[2].severity, None);
}

#[test]
fn json_push_matches_protobuf() {
    let body = format!(
        r#"{{"streams":[{{"values":[["1714644930123456789","payment declined order=8812",{{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","user":"u-1"}}],["1714644931000000000","retrying"]],"stream":{}}},{{"stream":{{"agent":"vector","host":"node-a"}},"values":[["1714644932000000005","plain"]]}}]}}"#,
        r#"{"container":"checkout","detected_level":"warn","hexabase_ai_workspace":"ws-7f3a","namespace":"shop","pod":"checkout-7d9f8b6c4-x2x9k","stream":"stderr"}"#
    );
    let json = decode_loki_json(body.as_bytes(), &DecodeLimits::default()).unwrap();
    let proto = decode_loki_protobuf(&snappy(&request()), &DecodeLimits::default()).unwrap();
    assert_eq!(json.events, proto.events);
    assert_eq!(json.rejected, vec![]);
}

#[test]
fn per_entry_rejects() {
    let body = r#"{"streams":[{"stream":{"app":"a"},"values":[["abc","bad ts"],["-5","negative"],[1714644930000000000,"number ok"],["1714644930000000000","ok"],[true,"bool"]]}]}"#;
    let d = decode_loki_json(body.as_bytes(), &DecodeLimits::default()).unwrap();
    assert_eq!(d.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["number ok", "ok"]);
    assert_eq!(d.rejected, vec![RejectReason::MalformedEvent; 3]);

    let mut req = request();
    req.streams[0].entries[1].timestamp = Some(Timestamp { seconds: 1, nanos: -1 });
    req.streams[1].entries[0].timestamp = None;
    let d = decode_loki_protobuf(&snappy(&req), &DecodeLimits::default()).unwrap();
    assert_eq!(d.rejected, vec![RejectReason::MalformedEvent]);
    assert_eq!(d.events[1].timestamp_ns, None, "absent timestamp: the server's clock decides");
}

#[test]
fn stream_limits_reject_every_entry_of_the_stream() {
    let limits = DecodeLimits { max_labels: 3, max_label_bytes: 10, max_line_bytes: 20, ..DecodeLimits::default() };
    let mut req = request();
    let d = decode_loki_protobuf(&snappy(&req), &limits).unwrap();
    assert_eq!(d.rejected, vec![RejectReason::TooManyLabels, RejectReason::TooManyLabels]);
    assert_eq!(d.events.len(), 1);
    req.streams[1].labels = r#"{host="a-very-long-node-name"}"#.into();
    let d = decode_loki_protobuf(&snappy(&req), &limits).unwrap();
    assert_eq!(d.rejected[2], RejectReason::LabelTooLong);
    req.streams[1].labels = r#"{host="a"}"#.into();
    req.streams[1].entries[0].line = "x".repeat(21);
    let d = decode_loki_protobuf(&snappy(&req), &limits).unwrap();
    assert_eq!(d.rejected[2], RejectReason::LineTooLong);
}

#[test]
fn label_text_problems_fail_the_body() {
    for labels in [r#"{app="x"} namespace="victim""#, r#"{app="x", app="y"}"#, "app=x", r#"{app="\x41"}"#] {
        let mut req = request();
        req.streams[0].labels = labels.into();
        let r = decode_loki_protobuf(&snappy(&req), &DecodeLimits::default());
        assert!(matches!(r, Err(BodyError::Malformed(_))), "{labels}: {r:?}");
    }
    // An escaped quote is data, not a second label.
    let mut req = request();
    req.streams[0].labels = r#"{app="x\", namespace=\"victim"}"#.into();
    let d = decode_loki_protobuf(&snappy(&req), &DecodeLimits::default()).unwrap();
    assert_eq!(d.events[0].namespace, None);
    assert_eq!(d.events[0].labels, vec![("app".into(), r#"x", namespace="victim"#.into())]);
}

#[test]
fn invalid_utf8_and_nul_in_lines() {
    // Encoded with raw bytes, as a Go client that does not check UTF-8 would.
    let mut req = proto::LenientPushRequest::default();
    req.streams.push(proto::LenientStream {
        labels: r#"{app="a"}"#.into(),
        entries: vec![proto::LenientEntry { timestamp: None, line: b"bad \xff\xfe and \0 nul".to_vec(), structured_metadata: vec![] }],
    });
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let d = decode_loki_protobuf(&body, &DecodeLimits::default()).unwrap();
    assert_eq!(d.events[0].message, "bad \u{fffd}\u{fffd} and \u{fffd} nul");
    let json = decode_loki_json(br#"{"streams":[{"stream":{"a":"\u0000"},"values":[["1","x\u0000"]]}]}"#, &DecodeLimits::default()).unwrap();
    assert_eq!(json.events[0].message, "x\u{fffd}");
    assert_eq!(json.events[0].labels, vec![("a".into(), "\u{fffd}".into())]);
}

#[test]
fn malformed_bodies() {
    for body in [
        &b"not json"[..],
        b"{\"streams\":{}}",
        b"{\"streams\":[{\"values\":[[\"1\"]]}]}",
        b"{\"streams\":[{\"values\":[[\"1\",\"a\",{},4]]}]}",
        b"{\"streams\":[]} x",
        b"{\"streams\":[{\"stream\":{\"a\":1}}]}",
    ] {
        let r = decode_loki_json(body, &DecodeLimits::default());
        assert!(matches!(r, Err(BodyError::Malformed(_))), "{:?}: {r:?}", String::from_utf8_lossy(body));
    }
    assert_eq!(decode_loki_json(b"{}", &DecodeLimits::default()).unwrap().events, vec![]);
    assert!(matches!(decode_loki_protobuf(b"\x05garbage", &DecodeLimits::default()), Err(BodyError::Malformed(_))));
    // Valid snappy, invalid protobuf.
    let body = snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff\xff\x0f").unwrap();
    assert!(matches!(decode_loki_protobuf(&body, &DecodeLimits::default()), Err(BodyError::Malformed(_))));
    // Errors do not quote the input.
    match decode_loki_json(br#"{"streams":[{"stream":{"a":"secret-token"},"values":7}]}"#, &DecodeLimits::default()) {
        Err(BodyError::Malformed(m)) => assert!(!m.contains("secret"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shared_labels_cannot_fan_out_without_bound() {
    // 64 labels of 1000 bytes each, shared by ~20,000 two-byte entries.
    let labels: Vec<String> = (0..64).map(|i| format!("l{i}=\"{}\"", "v".repeat(1000))).collect();
    let req =
        PushRequest { streams: vec![StreamAdapter { labels: format!("{{{}}}", labels.join(",")), entries: vec![EntryAdapter::default(); 20_000], hash: 0 }] };
    let limits = DecodeLimits { max_body_bytes: 200 << 10, ..DecodeLimits::default() };
    let body = snappy(&req);
    assert_eq!(decode_loki_protobuf(&body, &limits).unwrap_err(), BodyError::TooLarge { limit: 200 << 10 });
}

#[test]
fn mutated_bodies_never_panic() {
    let limits = DecodeLimits::default();
    let raw = request().encode_to_vec();
    testutil::mutations(&raw, 1000, |m| {
        let _ = decode_loki_protobuf(&snap::raw::Encoder::new().compress_vec(m).unwrap(), &limits);
    });
    testutil::mutations(&snappy(&request()), 500, |m| {
        let _ = decode_loki_protobuf(m, &limits);
    });
    let json = br#"{"streams":[{"stream":{"app":"a","level":"error"},"values":[["1714644930123456789","line",{"trace_id":"t"}],["1","x"]]}]}"#;
    testutil::mutations(json, 1000, |m| {
        let _ = decode_loki_json(m, &limits);
    });
}
