//! Hostile and broken input: each gets a clear status and a JSON error body, or a per-event
//! reject count, and never a panic, a hang or a partial write.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ingest_api::{count_ids, post_logs};
use crate::support::fixtures::{Source, gzip, ndjson, now_ns, rfc3339, vector_event, vector_events};
use crate::support::{Server, ServerOptions, TOKEN_ACME, TOKEN_ALL, TOKEN_WS_A, client, embedded_store, eventually, stored_logs};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_body_problems_get_a_status_and_a_stable_code() {
    let server = Server::start(ServerOptions::default());
    let big = vec![b' '; 300 * 1024];
    // TOKEN_ACME allows 256 KiB bodies.
    let (s, b) = post_logs(&server, TOKEN_ACME, big, None).await;
    assert_eq!((s, error_code(&b)), (413, "payload_too_large"), "{b}");
    // A gzip bomb: 16 MiB of zeros in a few KiB, 64 times the credential's limit.
    let bomb = gzip(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 256 * 1024);
    let (s, b) = post_logs(&server, TOKEN_ACME, bomb, Some("gzip")).await;
    assert_eq!((s, error_code(&b)), (413, "payload_too_large"), "{b}");
    let (s, b) = post_logs(&server, TOKEN_ALL, b"\x1f\x8b\x08garbage".to_vec(), Some("gzip")).await;
    assert_eq!((s, error_code(&b)), (400, "malformed_body"), "{b}");
    let (s, b) = post_logs(&server, TOKEN_ALL, b"{}".to_vec(), Some("br")).await;
    assert_eq!((s, error_code(&b)), (415, "unsupported_media_type"), "{b}");
    let (s, b) = post_logs(&server, TOKEN_ALL, b"[{\"message\": \"x\"}".to_vec(), None).await;
    assert_eq!((s, error_code(&b)), (400, "malformed_body"), "{b}");

    // Snappy whose header claims 4 GiB: refused without allocating it.
    let mut claim = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    claim.extend_from_slice(&[0u8; 64]);
    for path in ["/loki/api/v1/push", "/api/v1/write"] {
        let r =
            client().post(server.url(path)).bearer_auth(TOKEN_ALL).header("content-type", "application/x-protobuf").body(claim.clone()).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert!(status == 413 || status == 400, "{path}: {status} {body}");
        assert!(matches!(error_code(&body), "payload_too_large" | "malformed_body"), "{body}");
        let r = client()
            .post(server.url(path))
            .bearer_auth(TOKEN_ALL)
            .header("content-type", "application/x-protobuf")
            .body(b"not snappy at all".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
    }
    // The server is still healthy after all that.
    assert_eq!(client().get(server.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_counted_and_good_ones_in_the_same_request_stored() {
    let server = Server::start(ServerOptions::default());
    let src = Source::new("acme", "ws-a", "shop");
    let now = now_ns();
    let ok = |id: &str| vector_event(&src, id, "INFO fine", now);
    let mut deep = String::from("{\"message\":\"deep\",\"a\":");
    deep.push_str(&"[".repeat(200));
    deep.push_str(&"]".repeat(200));
    deep.push('}');
    let mut too_many_labels = ok("labels");
    for i in 0..20 {
        too_many_labels["kubernetes"]["pod_labels"][format!("l{i}")] = json!("v");
    }
    let mut long_label = ok("longlabel");
    long_label["kubernetes"]["pod_labels"]["big"] = json!("v".repeat(5000));
    let mut lines: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&ok("good-0")).unwrap(),
        b"{not json".to_vec(),
        deep.into_bytes(),
        b"{\"message\": \"bad utf8 \xff\xfe\"}".to_vec(),
        serde_json::to_vec(&vector_event(&src, "old", "x", now - 400 * 86_400 * 1_000_000_000)).unwrap(),
        serde_json::to_vec(&vector_event(&src, "future", "x", now + 86_400 * 1_000_000_000)).unwrap(),
        serde_json::to_vec(&too_many_labels).unwrap(),
        serde_json::to_vec(&long_label).unwrap(),
        serde_json::to_vec(&vector_event(&src, "nul", "a\u{0}b", now)).unwrap(),
        b"[1, 2]".to_vec(),
        serde_json::to_vec(&ok("good-1")).unwrap(),
    ];
    let mut huge = ok("huge");
    huge["message"] = json!(format!("huge {}", "x".repeat(20_000)));
    lines.push(serde_json::to_vec(&huge).unwrap());
    let body = lines.join(&b'\n');
    // TOKEN_ACME: 8 labels at most; a 16 KiB line limit is set below through the default
    // credential limits? No: use the per-credential limits of TOKEN_ACME (max_labels = 8).
    let (s, b) = post_logs(&server, TOKEN_ACME, body, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["accepted"], 4, "good-0, good-1, nul and huge are accepted: {b}");
    let reasons = &b["reasons"];
    assert_eq!(reasons["malformed_event"], 4, "{b}");
    assert_eq!(reasons["timestamp_too_old"], 1, "{b}");
    assert_eq!(reasons["timestamp_in_future"], 1, "{b}");
    assert_eq!(reasons["too_many_labels"], 1, "{b}");
    assert_eq!(reasons["label_too_long"], 1, "{b}");

    // Payload fields that try to set the tenant are overwritten by the credential's.
    let mut forged = vector_event(&src, "forged", "hello", now);
    forged["org_id"] = json!("globex");
    forged["workspace"] = json!("ws-g");
    forged["kubernetes"]["pod_labels"]["hexabase.ai/organization"] = json!("globex");
    let (s, b) = post_logs(&server, TOKEN_WS_A, ndjson(&[forged]), None).await;
    assert_eq!(s, 200, "{b}");
    // Hostile strings as tenancy labels are data, never paths or statements.
    let hostile = Source::new("acme", "'; DROP TABLE logs; --", "../../etc");
    let (s, b) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&hostile, "hostile", 2)), None).await;
    assert_eq!(s, 200, "{b}");

    let store = embedded_store(&server.data_dir);
    eventually(30, "rows stored", || async { stored_logs(store.as_ref()).await.len() >= 7 }).await;
    let logs = stored_logs(store.as_ref()).await;
    let ids = count_ids(&logs);
    assert_eq!(ids.keys().cloned().collect::<Vec<_>>(), ["forged", "good-0", "good-1", "hostile-0", "hostile-1", "huge", "nul"]);
    let forged = logs.iter().find(|l| l.message.starts_with("forged")).unwrap();
    assert_eq!((forged.org_id.as_str(), forged.workspace.as_str()), ("acme", "ws-a"));
    let hostile = logs.iter().find(|l| l.message.starts_with("hostile")).unwrap();
    assert_eq!((hostile.workspace.as_str(), hostile.project.as_str()), ("'; DROP TABLE logs; --", "../../etc"));
    assert!(!server.data_dir.join("etc").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let server = Server::start(ServerOptions { extra_toml: "header_timeout_secs = 1".into(), ..Default::default() });
    let addr = server.addr.clone();
    tokio::task::spawn_blocking(move || {
        // A body that never finishes: 408 after the body timeout (2 s in tests).
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "POST /ingest/v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_ALL}\r\nContent-Length: 1000\r\n\r\n{{\"message\":").unwrap();
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 408"), "{response}");
        assert!(response.contains("\"timeout\""), "{response}");
        // Headers that never finish: the connection is closed.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "POST /ingest/v1/logs HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut buf = Vec::new();
        let n = s.read_to_end(&mut buf).unwrap_or(0);
        assert!(n == 0 || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&buf));
    })
    .await
    .unwrap();
    let _ = rfc3339(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_remote_write_body_that_would_expand_past_the_limit_is_refused() {
    use ingest::decode::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
    use prost::Message;
    let server = Server::start(ServerOptions::default());
    let now_ms = now_ns() / 1_000_000;
    // One series with 7 long labels and 2,000 samples: about 50 kB on the wire (TOKEN_ACME
    // allows 256 kB), but every sample would carry all the labels: about 15 MB of rows.
    let mut labels: Vec<Label> = (0..7).map(|i| Label { name: format!("label_{i:02}"), value: "v".repeat(1000) }).collect();
    labels.push(Label { name: "__name__".into(), value: "wide".into() });
    let series = TimeSeries { labels, samples: (0..2000).map(|i| Sample { value: 1.0, timestamp: now_ms - i }).collect() };
    let body = crate::support::fixtures::snappy(&WriteRequest { timeseries: vec![series], metadata: vec![] }.encode_to_vec());
    assert!(body.len() < 262_144);
    let r =
        client().post(server.url("/api/v1/write")).bearer_auth(TOKEN_ACME).header("content-type", "application/x-protobuf").body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!((status, error_code(&body)), (413, "payload_too_large"), "{body}");
}
