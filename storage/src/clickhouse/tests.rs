//! Against the real ClickHouse engine: `tests/support/clickhouse_adapter.py` serves
//! ClickHouse's HTTP interface over chdb, so the real client and SQL are exercised.

use super::*;
use crate::BatchId;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const DAY_NS: i64 = 86_400 * 1_000_000_000;

struct Adapter {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Adapter {
    /// `None` (the test is skipped) only when Python's `chdb` is missing.
    fn start() -> Option<Adapter> {
        let chdb = Command::new("python3").args(["-c", "import chdb"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !chdb.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: `python3 -c 'import chdb'` failed; install chdb-core to run the ClickHouse tests");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/clickhouse_adapter.py"))
            .args(["--data".as_ref(), dir.path().join("data").as_os_str(), "--port-file".as_ref(), port_file.as_os_str()])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the adapter");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse::<u16>().ok()) {
                return Some(Adapter { child, url: format!("http://127.0.0.1:{port}"), _dir: dir });
            }
            if let Some(status) = child.try_wait().expect("poll the adapter") {
                panic!("the adapter exited early: {status}");
            }
            assert!(Instant::now() < deadline, "the adapter did not start within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn store(&self, database: &str) -> ClickHouseStore {
        ClickHouseStore::new(config(&self.url, database, None)).expect("valid config")
    }

    /// Arms the adapter's fault injection for the next `count` INSERTs.
    fn fault(&self, mode: &str, count: u32) {
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the adapter");
        write!(s, "POST /__fault?mode={mode}&count={count} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

fn config(url: &str, database: &str, cluster: Option<&str>) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.into(),
        user: String::new(),
        password: String::new(),
        database: database.into(),
        cluster: cluster.map(Into::into),
        retention: Retention::default(),
        insert_timeout: Duration::from_secs(20),
    }
}

/// Start of yesterday (UTC), so rows are inside every retention TTL.
fn yesterday() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
    now.div_euclid(DAY_NS) * DAY_NS - DAY_NS
}

/// 20 rows over two days and two workspaces of `org`, unique timestamps, awkward text.
fn logs(org: &str, base: i64) -> Vec<LogRecord> {
    let shift = if org == "o2" { 29 } else { 0 };
    let mut out = Vec::new();
    for (d, ws, k) in (0..4).flat_map(|i| (0..5i64).map(move |k| (i % 2, ["a", "b"][i as usize / 2], k))) {
        out.push(LogRecord {
            timestamp_ns: base + d * DAY_NS + k * 1_000_000_007 + if ws == "b" { 13 } else { 0 } + shift,
            observed_ns: base + d * DAY_NS + k * 1_000_000_007 + 5,
            org_id: org.into(),
            workspace: ws.into(),
            pod: format!("pod-{k}"),
            severity: [Severity::Info, Severity::Error, Severity::Unknown][k as usize % 3],
            message: format!("line {k} in {ws} with 'quotes', \"dq\", \\ and é\n"),
            attributes: vec![("app".into(), format!("x{k}")), ("zone".into(), "z'1".into())],
            trace_id: format!("{k:032x}"),
            ..Default::default()
        });
    }
    out
}

fn batch(seq: u64, rows: Rows) -> WriteBatch {
    WriteBatch { id: BatchId { wal_id: "wal-test".into(), seq }, rows: rows.into() }
}

#[test]
fn errors_are_classified_and_identifiers_validated() {
    assert_eq!(exception_code("bad response: Code: 999. DB::Exception: injected fault"), Some(999));
    assert_eq!(exception_code("500 Internal Server Error"), None);
    assert!(matches!(classify(ChError::BadResponse("Code: 117. DB::Exception: x".into())), StoreError::Rejected(_)));
    assert!(matches!(classify(ChError::BadResponse("Code: 241. DB::Exception: memory".into())), StoreError::Unavailable(_)));
    assert!(matches!(classify(ChError::TimedOut), StoreError::Unavailable(_)));
    let new = |db, cluster| ClickHouseStore::new(config("http://127.0.0.1:1", db, cluster));
    assert!(matches!(new("db; DROP", None), Err(StoreError::Rejected(m)) if m.contains("clickhouse.database")));
    assert!(matches!(new("db", Some("c`x")), Err(StoreError::Rejected(m)) if m.contains("clickhouse.cluster")));
    assert!(new("db", Some("main")).is_ok());
}

#[tokio::test]
async fn migrations_and_writes_are_idempotent() {
    let Some(adapter) = Adapter::start() else { return };
    let store = adapter.store("dp_test");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate again");
    let recorded: u64 = store.client.query("SELECT count() FROM dp_test.schema_migrations").fetch_one().await.expect("count");
    assert_eq!(recorded, migrations::all(&store.target).len() as u64);

    let rows = logs("o1", yesterday());
    let n = rows.len() as u64;
    let first = batch(1, Rows::Logs(rows.clone()));
    store.write(&first).await.expect("write");
    store.write(&first).await.expect("write the same batch again");
    assert_eq!(store.count(Table::Logs).await.expect("count"), n, "a replayed batch is stored once");
    // Identical rows under another batch id are new data, not a replay.
    store.write(&batch(2, Rows::Logs(rows.clone()))).await.expect("write");
    assert_eq!(store.count(Table::Logs).await.expect("count"), 2 * n);
    // And the token, not the content, identifies a partition: batch 1 replayed with other
    // bytes (say, re-encoded) is still a replay.
    let changed = rows.into_iter().map(|r| LogRecord { message: "changed".into(), ..r }).collect();
    store.write(&batch(1, Rows::Logs(changed))).await.expect("write");
    assert_eq!(store.count(Table::Logs).await.expect("count"), 2 * n, "deduplicated by token");

    // Every table's row type matches its DDL (the client validates against DESCRIBE TABLE).
    let ts = yesterday();
    let attrs = vec![("k".to_owned(), "v".to_owned())];
    let audit = AuditRecord { timestamp_ns: ts, org_id: "o1".into(), action: "delete".into(), attributes: attrs.clone(), ..Default::default() };
    let system = SystemRecord { timestamp_ns: ts, component: "ingest".into(), severity: Severity::Warn, attributes: attrs.clone(), ..Default::default() };
    let metric = MetricSample { timestamp_ms: ts / 1_000_000, org_id: "o1".into(), metric: "up".into(), labels: attrs, value: 1.5, ..Default::default() };
    for (seq, rows) in [(3, Rows::AuditLogs(vec![audit])), (4, Rows::SystemLogs(vec![system])), (5, Rows::Metrics(vec![metric]))] {
        let table = rows.table();
        store.write(&batch(seq, rows)).await.expect("write");
        assert_eq!(store.count(table).await.expect("count"), 1, "{}", table.name());
    }
    assert!(store.disk_bytes().await.expect("disk bytes").is_some_and(|b| b > 0));
    assert!(store.uncompressed_bytes().await.expect("uncompressed bytes") > 0);
}

#[tokio::test]
async fn failed_inserts_retry_without_duplicates() {
    let Some(adapter) = Adapter::start() else { return };
    let store = adapter.store("dp_faults");
    store.migrate().await.expect("migrate");
    let base = yesterday();
    let mut expected = 0;
    // `reset_after`: the first partition lands but its answer is lost, the key exactly-once
    // case; `refuse_before`: the connection dies before anything is applied; `error_500`:
    // the server refuses transiently. Each time the write fails and a retry stores all once.
    for (seq, mode, count) in [(1, "reset_after", 1), (2, "reset_after", 3), (3, "refuse_before", 2), (4, "error_500", 1)] {
        let rows = logs("o1", base + seq as i64 * 1_000);
        expected += rows.len() as u64;
        let b = batch(seq, Rows::Logs(rows));
        adapter.fault(mode, count);
        let err = store.write(&b).await.expect_err(mode);
        assert!(matches!(err, StoreError::Unavailable(_)), "{mode}: {err}");
        let mut attempts = 0;
        while let Err(e) = store.write(&b).await {
            attempts += 1;
            assert!(e.is_transient() && attempts < count, "{mode}: retry {attempts} failed: {e}");
        }
        assert_eq!(store.count(Table::Logs).await.expect("count"), expected, "{mode}: every row exactly once");
    }

    // Errors that can never succeed are `Rejected`: here, a database that was never migrated.
    let missing = adapter.store("dp_missing");
    let err = missing.write(&batch(9, Rows::Logs(logs("o1", base)))).await.expect_err("no such database");
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn scans_apply_every_filter() {
    let Some(adapter) = Adapter::start() else { return };
    let store = adapter.store("dp_scan");
    store.migrate().await.expect("migrate");
    let base = yesterday();
    let (o1, o2) = (logs("o1", base), logs("o2", base));
    store.write(&batch(1, Rows::Logs([o1.clone(), o2.clone()].concat()))).await.expect("write");
    let scan = |org: Option<&str>, ws: Option<&[&str]>, from_ns: i64, to_ns: i64| ScanRequest {
        table: Table::Logs,
        org_id: org.map(Into::into),
        workspaces: ws.map(|w| w.iter().map(|s| s.to_string()).collect()),
        from_ns,
        to_ns,
    };
    let expect = |mut rows: Vec<LogRecord>| {
        rows.sort_by_key(|r| r.timestamp_ns);
        schemas::arrow_schema::to_record_batch(&Rows::Logs(rows)).expect("arrow")
    };
    let all = (base - DAY_NS, base + 3 * DAY_NS);

    let got = store.scan(&scan(Some("o1"), Some(&["a"]), all.0, all.1)).await.expect("scan");
    assert_eq!(got, vec![expect(o1.iter().filter(|r| r.workspace == "a").cloned().collect())], "org and workspace filters");
    let got = store.scan(&scan(Some("o2"), None, all.0, all.1)).await.expect("scan");
    assert_eq!(got, vec![expect(o2.clone())], "organisation filter");
    let got = store.scan(&scan(None, None, base + DAY_NS, base + 2 * DAY_NS)).await.expect("scan");
    let second_day: Vec<LogRecord> = o1.iter().chain(&o2).filter(|r| r.timestamp_ns >= base + DAY_NS).cloned().collect();
    assert_eq!(got, vec![expect(second_day)], "time range, upper bound exclusive");
    let first = o1.iter().map(|r| r.timestamp_ns).min().expect("rows");
    let got = store.scan(&scan(Some("o1"), None, first, first + 1)).await.expect("scan");
    assert_eq!(got[0].num_rows(), 1, "lower bound inclusive, to the nanosecond");

    for evil in ["x' OR 1=1 --", "a') OR ('1'='1", "\\'; DROP TABLE dp_scan.logs; --"] {
        let got = store.scan(&scan(Some("o1"), Some(&[evil]), all.0, all.1)).await.expect("scan");
        assert_eq!(got[0].num_rows(), 0, "{evil}");
        let got = store.scan(&scan(Some(evil), None, all.0, all.1)).await.expect("scan");
        assert_eq!(got[0].num_rows(), 0, "{evil}");
    }
    assert_eq!(store.scan(&scan(Some("o1"), Some(&[]), all.0, all.1)).await.expect("scan")[0].num_rows(), 0);
    assert_eq!(store.count(Table::Logs).await.expect("count"), (o1.len() + o2.len()) as u64, "nothing broke");

    // Metrics are stored in milliseconds; nanosecond bounds still cut exactly.
    let ms = base / 1_000_000 + 1_000;
    let sample = MetricSample { timestamp_ms: ms, org_id: "o1".into(), metric: "up".into(), value: 2.0, ..Default::default() };
    store.write(&batch(2, Rows::Metrics(vec![sample.clone()]))).await.expect("write metrics");
    let ns = ms * 1_000_000;
    for (from, to, n) in [(ns, ns + 1, 1), (ns + 1, ns + 2_000_000, 0), (ns - 5, ns, 0), (ns - 1_000_000, ns + 1, 1)] {
        let req = ScanRequest { table: Table::Metrics, org_id: Some("o1".into()), workspaces: None, from_ns: from, to_ns: to };
        let got = store.scan(&req).await.expect("scan metrics");
        assert_eq!(got[0].num_rows(), n, "[{from}, {to})");
        if n == 1 {
            assert_eq!(got[0], schemas::arrow_schema::to_record_batch(&Rows::Metrics(vec![sample.clone()])).expect("arrow"));
        }
    }
    // Audit rows scan by organisation; system logs are not read through scan.
    let audit =
        |org: &str| schemas::AuditRecord { timestamp_ns: base, org_id: org.into(), actor: "alice".into(), action: "logs.search".into(), ..Default::default() };
    store.write(&batch(3, Rows::AuditLogs(vec![audit("o1"), audit("o2")]))).await.expect("write audit");
    let req = ScanRequest { table: Table::AuditLogs, org_id: Some("o1".into()), workspaces: None, from_ns: base, to_ns: base + 1 };
    let got = store.scan(&req).await.expect("scan audit");
    assert_eq!(got[0], schemas::arrow_schema::to_record_batch(&Rows::AuditLogs(vec![audit("o1")])).expect("arrow"));
    let req = ScanRequest { table: Table::SystemLogs, org_id: None, workspaces: None, from_ns: 0, to_ns: 1 };
    assert!(matches!(store.scan(&req).await, Err(StoreError::Rejected(_))));
}
