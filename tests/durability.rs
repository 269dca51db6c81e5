//! A 2xx means durable: crashes (`kill -9`), a damaged write-ahead log and a full disk.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storage::Store;

use crate::ingest_api::{count_ids, post_logs};
use crate::support::fixtures::{Source, ndjson, vector_events};
use crate::support::{Server, ServerOptions, TOKEN_ALL, client, embedded_store, eventually, stored_logs};

/// Shippers send batches with unique ids until told to stop; the oracle keeps every id whose
/// request got a 2xx, and every id that was sent at all.
#[derive(Default)]
pub struct Oracle {
    pub acked: BTreeSet<String>,
    pub sent: BTreeSet<String>,
}

pub async fn ship_until(addr: String, shipper: usize, cycle: usize, batch: usize, oracle: Arc<Mutex<Oracle>>, stop: tokio::sync::watch::Receiver<bool>) {
    let c = client();
    let src = Source::new("acme", &format!("ws-{}", shipper % 2), "shop");
    for n in 0.. {
        if *stop.borrow() {
            return;
        }
        let prefix = format!("c{cycle}s{shipper}n{n}");
        let events = vector_events(&src, &prefix, batch);
        oracle.lock().unwrap().sent.extend((0..batch).map(|i| format!("{prefix}-{i}")));
        let sent = c.post(format!("http://{addr}/ingest/v1/logs")).bearer_auth(TOKEN_ALL).body(ndjson(&events)).timeout(Duration::from_secs(5)).send().await;
        match sent {
            Ok(r) if r.status().is_success() => oracle.lock().unwrap().acked.extend((0..batch).map(|i| format!("{prefix}-{i}"))),
            // The server died mid-request (or refused): not acknowledged, so not owed.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Checks the exactly-once promise: every acknowledged id stored once, nothing stored twice,
/// nothing stored that was never sent.
pub async fn assert_exactly_once(store: &dyn Store, oracle: &Oracle) {
    let acked = oracle.acked.len();
    eventually(60, "every acknowledged event stored", || async {
        let ids = count_ids(&stored_logs(store).await);
        oracle.acked.iter().all(|id| ids.contains_key(id))
    })
    .await;
    let ids = count_ids(&stored_logs(store).await);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let unknown: Vec<_> = ids.keys().filter(|id| !oracle.sent.contains(*id)).take(5).collect();
    assert!(unknown.is_empty(), "stored but never sent: {unknown:?}");
    assert!(acked > 0, "the shippers got no acknowledgement at all");
}

pub async fn crash_loop(options: ServerOptions, cycles: usize, store: impl Fn(&Server) -> Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions { data_dir: Some(dir.path().to_owned()), ..options };
    let oracle = Arc::new(Mutex::new(Oracle::default()));
    let mut server = Server::start(ServerOptions { env: options.env.clone(), ..clone_options(&options) });
    for cycle in 0..cycles {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shippers: Vec<_> = (0..3).map(|s| tokio::spawn(ship_until(server.addr.clone(), s, cycle, 40, oracle.clone(), stop_rx.clone()))).collect();
        // Let the shippers get going, then pull the plug at a moment that varies per cycle.
        tokio::time::sleep(Duration::from_millis(150 + (cycle as u64 * 37) % 250)).await;
        server.kill9();
        let _ = stop_tx.send(true);
        for s in shippers {
            let _ = s.await;
        }
        server = server.restart();
    }
    // A fresh event flows after the last restart.
    let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&Source::new("acme", "ws-0", "shop"), "fresh", 5)), None).await;
    assert_eq!(s, 200);
    let snapshot = {
        let mut o = oracle.lock().unwrap();
        o.acked.extend((0..5).map(|i| format!("fresh-{i}")));
        o.sent.extend((0..5).map(|i| format!("fresh-{i}")));
        Oracle { acked: o.acked.clone(), sent: o.sent.clone() }
    };
    let store = store(&server);
    assert_exactly_once(store.as_ref(), &snapshot).await;
    eprintln!("crash loop: {cycles} kill -9 cycles, {} events acknowledged, all stored exactly once", snapshot.acked.len());
}

pub fn clone_options(o: &ServerOptions) -> ServerOptions {
    ServerOptions { clickhouse_url: o.clickhouse_url.clone(), extra_toml: o.extra_toml.clone(), env: o.env.clone(), data_dir: o.data_dir.clone() }
}

fn cycles() -> usize {
    std::env::var("CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_shipping_loses_and_duplicates_nothing_embedded() {
    crash_loop(ServerOptions::default(), cycles(), |s| embedded_store(&s.data_dir)).await;
}

/// Finds the write-ahead log segment files of a data directory.
fn wal_segments(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(data_dir.join("wal")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wal")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_write_ahead_log_still_starts_and_delivers_every_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing is flushed to storage while the records are written, so all of them live only in
    // the log when it is damaged.
    let hold = ServerOptions { data_dir: Some(dir.path().to_owned()), ..Default::default() }
        .env("DATAPLANE_INGEST__BATCH_MAX_AGE_MS", "3600000")
        .env("DATAPLANE_INGEST__BATCH_MAX_ROWS", "1000000");
    let mut server = Server::start(hold);
    let src = Source::new("acme", "ws-a", "shop");
    for r in 0..10 {
        let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, &format!("r{r}"), 50)), None).await;
        assert_eq!(s, 200);
    }
    server.kill9();
    let segments = wal_segments(dir.path());
    let last = segments.last().expect("a segment");
    let mut bytes = std::fs::read(last).unwrap();
    let len = bytes.len();
    // Flip bytes inside one record in the middle, and leave a torn record at the end.
    for b in &mut bytes[len / 2..len / 2 + 8] {
        *b ^= 0x5a;
    }
    let torn = bytes[100..400].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(last, &bytes).unwrap();

    let server = Server::start(ServerOptions { data_dir: Some(dir.path().to_owned()), ..Default::default() });
    let (s, _) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, "after", 5)), None).await;
    assert_eq!(s, 200, "a fresh event is accepted after recovery");
    let store = embedded_store(dir.path());
    eventually(30, "intact records stored", || async { count_ids(&stored_logs(store.as_ref()).await).len() >= 9 * 50 + 5 }).await;
    let ids = count_ids(&stored_logs(store.as_ref()).await);
    assert!(ids.values().all(|n| *n == 1));
    let requests: BTreeSet<&str> = ids.keys().filter_map(|id| id.split('-').next()).filter(|r| r.starts_with('r')).collect();
    assert_eq!(requests.len(), 9, "exactly the damaged record is lost, every other request delivered: {requests:?}");
    assert!(ids.keys().filter(|id| id.starts_with("after-")).count() == 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_before_acknowledging_and_recovers_when_space_returns() {
    let mount = SmallDisk::mount("8m");
    let data = mount.path().join("data");
    let server = Server::start(
        ServerOptions { data_dir: Some(data.clone()), ..Default::default() }
            .env("DATAPLANE_INGEST__WAL_SEGMENT_BYTES", "262144")
            // No headroom: the write-ahead log itself meets ENOSPC, the harder path.
            .env("DATAPLANE_INGEST__DISK_HEADROOM_BYTES", "0"),
    );
    // Fill the disk, leaving a little room.
    let filler = mount.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let src = Source::new("acme", "ws-a", "shop");
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    for r in 0..60 {
        let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&src, &format!("d{r}"), 100)), None).await;
        match s {
            200 => {
                acked.insert(r);
            }
            429 | 503 => {
                assert!(body["error"]["code"].is_string(), "{body}");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(refused > 0, "a full disk must refuse requests");
    std::fs::remove_file(&filler).unwrap();
    let mut after = 0;
    eventually(30, "accepting again once space returns", || {
        after += 1;
        let n = after;
        let server = &server;
        let src = src.clone();
        async move { post_logs(server, TOKEN_ALL, ndjson(&vector_events(&src, &format!("back{n}"), 10)), None).await.0 == 200 }
    })
    .await;
    let store = embedded_store(&data);
    let want: BTreeSet<String> = acked.iter().flat_map(|r| (0..100).map(move |i| format!("d{r}-{i}"))).collect();
    eventually(60, "acknowledged rows stored", || async {
        let ids = count_ids(&stored_logs(store.as_ref()).await);
        want.iter().all(|id| ids.contains_key(id))
    })
    .await;
    let ids = count_ids(&stored_logs(store.as_ref()).await);
    assert!(ids.values().all(|n| *n == 1), "nothing stored twice");
    let refused_ids = ids.keys().filter(|id| id.starts_with('d')).filter(|id| !want.contains(*id)).count();
    assert_eq!(refused_ids, 0, "nothing of a refused request was stored");
}

/// A small tmpfs, unmounted on drop: a disk that really fills up.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "this test needs to mount a small tmpfs (run as root, as CI does)");
        SmallDisk(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_refused_below_the_disk_headroom_before_the_disk_is_full() {
    let mount = SmallDisk::mount("8m");
    let server = Server::start(
        ServerOptions { data_dir: Some(mount.path().join("data")), ..Default::default() }.env("DATAPLANE_INGEST__DISK_HEADROOM_BYTES", "16777216"),
    );
    let (s, body) = post_logs(&server, TOKEN_ALL, ndjson(&vector_events(&Source::new("acme", "ws-a", "shop"), "h", 10)), None).await;
    assert_eq!((s, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(client().get(server.url("/readyz")).send().await.unwrap().status().as_u16(), 503);
}
