//! Loki clients and a real Prometheus, shipping to the data plane.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use ingest::decode::loki::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message;
use schemas::Table;
use serde_json::json;
use storage::{ScanRequest, Store};

use crate::ingest_api::count_ids;
use crate::support::fixtures::{gzip, loghub_lines, now_ns, snappy};
use crate::support::{ClickHouse, Prometheus, Server, ServerOptions, TOKEN_ALL, TOKEN_WS_A, client, embedded_store, eventually, free_port, stored_logs};

fn loki_push(prefix: &str, n: usize) -> PushRequest {
    let lines = loghub_lines();
    let t0 = now_ns() - 5_000_000_000;
    let stream = |labels: &str, offset: usize| StreamAdapter {
        labels: labels.into(),
        entries: (0..n)
            .map(|i| {
                let ts = t0 + (offset + i) as i64 * 1000;
                EntryAdapter {
                    timestamp: Some(Timestamp { seconds: ts.div_euclid(1_000_000_000), nanos: ts.rem_euclid(1_000_000_000) as i32 }),
                    line: format!("{prefix}-{}-{} {}", offset / n, i, lines[i % lines.len()]),
                    structured_metadata: vec![LabelPairAdapter { name: "trace_id".into(), value: format!("{i:032x}") }],
                }
            })
            .collect(),
        hash: 0,
    };
    PushRequest {
        streams: vec![
            stream(r#"{app="cart", namespace="shop", pod="cart-1", workspace="ws-a", hexabase_organization="acme", level="error"}"#, 0),
            stream(r#"{app="web", namespace="front", pod="web-1", workspace="ws-b", hexabase_organization="acme"}"#, n),
        ],
    }
}

async fn check_loki(store: &dyn Store, server: &Server) {
    let body = snappy(&loki_push("p", 100).encode_to_vec());
    let r =
        client().post(server.url("/loki/api/v1/push")).bearer_auth(TOKEN_ALL).header("content-type", "application/x-protobuf").body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());
    // The JSON form, gzip-compressed, as Grafana Alloy or a script would send it.
    let ts = now_ns().to_string();
    let push = json!({ "streams": [{ "stream": { "app": "cart", "namespace": "shop", "workspace": "ws-a", "hexabase_organization": "acme" },
                                      "values": [[ts, "j-0-0 json line", { "trace_id": "abc" }], [ts, "j-0-1 second json line"]] }] });
    let r = client()
        .post(server.url("/loki/api/v1/push"))
        .bearer_auth(TOKEN_ALL)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&serde_json::to_vec(&push).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());

    eventually(30, "202 Loki lines stored", || async { stored_logs(store).await.len() >= 202 }).await;
    let logs = stored_logs(store).await;
    assert_eq!(count_ids(&logs).len(), 202);
    for l in &logs {
        let id = l.message.split(' ').next().unwrap();
        let expected = if id.starts_with("p-1-") { ("acme", "ws-b", "front", "web") } else { ("acme", "ws-a", "shop", "cart") };
        assert_eq!((l.org_id.as_str(), l.workspace.as_str(), l.project.as_str(), l.application.as_str()), expected, "{l:?}");
        if id.starts_with("p-0-") {
            assert_eq!(l.severity, "error", "the level stream label sets the severity");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_push_protobuf_and_json_are_stored_with_tenancy_embedded() {
    let server = Server::start(ServerOptions::default());
    let store = embedded_store(&server.data_dir);
    check_loki(store.as_ref(), &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_push_protobuf_and_json_are_stored_with_tenancy_clickhouse() {
    let ch = ClickHouse::start();
    let server = Server::start(ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() });
    check_loki(&ch.store(), &server).await;
}

/// (metric, org, workspace, job label) of every stored sample.
async fn stored_samples(store: &dyn Store) -> Vec<(String, String, String, String)> {
    let req = ScanRequest { table: Table::Metrics, org_id: None, workspaces: None, from_ns: 0, to_ns: i64::MAX };
    let mut out = Vec::new();
    for b in store.scan(&req).await.expect("scan") {
        let col = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (metric, org, ws) = (col("metric"), col("org_id"), col("workspace"));
        let labels = b.column_by_name("labels").unwrap().as_map();
        for i in 0..b.num_rows() {
            let entries = labels.value(i);
            let (k, v) = (entries.column(0).as_string::<i32>(), entries.column(1).as_string::<i32>());
            let job = (0..k.len()).find(|j| k.value(*j) == "job").map(|j| v.value(j).to_owned()).unwrap_or_default();
            out.push((metric.value(i).to_owned(), org.value(i).to_owned(), ws.value(i).to_owned(), job));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_remote_writes_its_scrapes() {
    let server = Server::start(ServerOptions::default());
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: dataplane\n    static_configs:\n      - targets: ['{addr}']\n\
         remote_write:\n  - url: http://{addr}/api/v1/write\n    authorization:\n      type: Bearer\n      credentials: {TOKEN_WS_A}\n    queue_config:\n      batch_send_deadline: 1s\n      max_samples_per_send: 200\n",
        addr = server.addr
    );
    let _prometheus = Prometheus::start(free_port(), &config, &[]);
    let store = embedded_store(&server.data_dir);
    eventually(90, "Prometheus samples stored", || async {
        let s = stored_samples(store.as_ref()).await;
        s.iter().any(|(m, ..)| m == "up") && s.iter().any(|(m, ..)| m.starts_with("dataplane_ingest_"))
    })
    .await;
    let samples = stored_samples(store.as_ref()).await;
    assert!(samples.iter().all(|(_, org, ws, _)| org == "acme" && ws == "ws-a"), "the credential's tenant is attached to every sample");
    assert!(samples.iter().any(|(m, _, _, job)| m == "up" && job == "dataplane"));
    tokio::time::sleep(Duration::from_millis(10)).await;
}
