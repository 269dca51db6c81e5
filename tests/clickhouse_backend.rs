//! The ClickHouse backend on the real engine: exactly once through resets, outages and caps.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use storage::Store;

use crate::durability::crash_loop;
use crate::ingest_api::{count_ids, post_logs};
use crate::support::fixtures::{Source, ndjson, vector_events};
use crate::support::{ClickHouse, Server, ServerOptions, TOKEN_ALL, client, eventually, stored_logs};

fn on(ch: &ClickHouse) -> ServerOptions {
    ServerOptions { clickhouse_url: Some(ch.url()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_clickhouse_once_even_when_an_applied_insert_loses_its_answer() {
    let ch = ClickHouse::start();
    let server = Server::start(on(&ch));
    // The schema was applied at start; applying it again is a no-op.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["migrate", "--config"])
        .arg(server.data_dir.join("test-config.toml"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // The engine applies the next inserts but the connection is reset before the answer: the
    // data plane must retry with the same deduplication token, and ClickHouse drop the copy.
    ch.fault("reset_after", 3).await;
    let a = vector_events(&Source::new("acme", "ws-a", "shop"), "a", 300);
    let b = vector_events(&Source::new("globex", "ws-g", "web"), "b", 200);
    assert_eq!(post_logs(&server, TOKEN_ALL, ndjson(&a), None).await.0, 200);
    assert_eq!(post_logs(&server, TOKEN_ALL, ndjson(&b), None).await.0, 200);
    let store = ch.store();
    eventually(60, "500 rows in ClickHouse", || async { stored_logs(&store).await.len() >= 500 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = stored_logs(&store).await;
    let ids = count_ids(&logs);
    assert_eq!(ids.len(), 500);
    assert!(ids.values().all(|n| *n == 1), "no duplicate after resets");
    assert!(
        logs.iter().filter(|l| l.message.starts_with("a-")).all(|l| (l.org_id.as_str(), l.workspace.as_str(), l.project.as_str()) == ("acme", "ws-a", "shop"))
    );
    assert!(logs.iter().filter(|l| l.message.starts_with("b-")).all(|l| (l.org_id.as_str(), l.workspace.as_str()) == ("globex", "ws-g")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_absorbed_then_drained_without_duplicates_and_the_cap_gives_503() {
    let mut ch = ClickHouse::start();
    // Memory holds at most 300 kB of rows: beyond half of that, acknowledged rows live only in
    // the write-ahead log until storage is back, so the outage is absorbed on disk.
    let server = Server::start(
        on(&ch)
            .env("DATAPLANE_INGEST__WAL_MAX_DISK_BYTES", "1500000")
            .env("DATAPLANE_INGEST__WAL_SEGMENT_BYTES", "131072")
            .env("DATAPLANE_INGEST__BUFFER_MAX_BYTES", "300000")
            .env("DATAPLANE_INGEST__LIMITS__MAX_BODY_BYTES", "200000"),
    );
    let src = Source::new("acme", "ws-a", "shop");
    assert_eq!(post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, "before", 50)), None).await.0, 200);
    ch.kill();
    // ClickHouse is down: requests are still acknowledged (the log holds them) until the cap.
    let mut acked = BTreeSet::from(["before".to_owned()]);
    let mut saw_503 = false;
    for r in 0..200 {
        let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, &format!("out{r}"), 50)), None).await;
        match s {
            200 => {
                acked.insert(format!("out{r}"));
            }
            503 => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                saw_503 = true;
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(saw_503, "the log's cap must turn into 503 while storage is down");
    assert!(acked.len() > 20, "an outage is absorbed on disk up to the cap, well past the memory buffer: {}", acked.len());
    let metrics = crate::support::client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let spilled: u64 = metrics.lines().find_map(|l| l.strip_prefix("dataplane_ingest_spilled_records_total ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    assert!(spilled > 0, "rows beyond the memory bound were kept on disk only:\n{metrics}");
    // A crash now, and a restart while ClickHouse is still down: the server starts anyway and
    // accepts into the log. The log holds far more rows than the memory buffer may, so replay
    // keeps only their heads and reads them back batch by batch once ClickHouse returns.
    let server = server.restart();
    assert_eq!(client().get(server.url("/readyz")).send().await.unwrap().status().as_u16(), 503, "over the log's cap: not ready");
    let ch = ch.restart();
    let store = ch.store();
    let want = acked.len() * 50;
    eventually(60, "the backlog drained", || async { count_ids(&stored_logs(&store).await).len() >= want }).await;
    let ids = count_ids(&stored_logs(&store).await);
    assert!(ids.values().all(|n| *n == 1), "drained without duplicates");
    let prefixes: BTreeSet<String> = ids.keys().filter_map(|k| k.split('-').next().map(str::to_owned)).collect();
    assert_eq!(prefixes, acked, "exactly the acknowledged requests are stored");
    eventually(30, "accepting again", || async { post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, "after", 5)), None).await.0 == 200 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_shipping_loses_and_duplicates_nothing_clickhouse() {
    let ch = ClickHouse::start();
    let cycles = std::env::var("CRASH_CYCLES").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(20).div_ceil(4);
    let url = ch.url();
    let store: Arc<dyn Store> = Arc::new(ch.store());
    crash_loop(ServerOptions { clickhouse_url: Some(url), ..Default::default() }, cycles, move |_| store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_finishes_and_loses_nothing() {
    let mut ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions { clickhouse_url: Some(ch.url()), data_dir: Some(dir.path().to_owned()), ..Default::default() };
    let mut server = Server::start(crate::durability::clone_options(&opts));
    let src = Source::new("acme", "ws-a", "shop");
    ch.kill();
    for r in 0..5 {
        assert_eq!(post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, &format!("s{r}"), 40)), None).await.0, 200);
    }
    // SIGTERM while storage is down: the shutdown sequence gives up after its grace period
    // (10 s in tests) instead of retrying forever, and the rows stay in the log.
    let waited = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    });
    let server = tokio::time::timeout(Duration::from_secs(60), waited).await.expect("shutdown finished").unwrap();
    drop(server);
    let ch = ch.restart();
    let _server = Server::start(opts);
    let store = ch.store();
    eventually(60, "rows stored after the restart", || async { count_ids(&stored_logs(&store).await).len() >= 200 }).await;
    assert!(count_ids(&stored_logs(&store).await).values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_storage_refuses_for_good_is_set_aside_and_ingest_goes_on() {
    let ch = ClickHouse::start();
    let server = Server::start(on(&ch));
    // The table disappears: every insert is refused with "unknown table", which no retry fixes.
    let r = crate::support::client().post(ch.url()).body("DROP TABLE hexabase.logs").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let src = Source::new("acme", "ws-a", "shop");
    assert_eq!(post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, "dl", 30)), None).await.0, 200);
    let dead = server.data_dir.join("dead-letter");
    eventually(60, "the refused batch is set aside", || async { std::fs::read_dir(&dead).map(|d| d.count() > 0).unwrap_or(false) }).await;
    let metrics = crate::support::client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dataplane_ingest_dead_lettered_rows_total 30"), "{metrics}");
    // The set-aside rows can be read back: the file holds them in the log's row encoding.
    let file = std::fs::read_dir(&dead).unwrap().next().unwrap().unwrap().path();
    let rows = schemas::codec::decode(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(rows.len(), 30);
    assert_eq!(post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, "next", 5)), None).await.0, 200, "ingest goes on");
}
