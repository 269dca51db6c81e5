use super::*;
use crate::BatchId;
use crate::search::LogSearch;
use arrow::array::AsArray;
use arrow::datatypes::TimestampNanosecondType;
use schemas::{LogRecord, Rows};

fn rows(ws: &str, n: usize, t0: i64) -> Rows {
    Rows::Logs(
        (0..n)
            .map(|i| LogRecord {
                timestamp_ns: t0 + i as i64,
                org_id: "acme".into(),
                workspace: ws.into(),
                message: format!("line {i} of {ws}"),
                ..Default::default()
            })
            .collect(),
    )
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn scan_req(ws: Option<&str>) -> ScanRequest {
    ScanRequest { table: Table::Logs, org_id: Some("acme".into()), workspaces: ws.map(|w| vec![w.to_owned()]), from_ns: 0, to_ns: i64::MAX }
}

#[tokio::test]
async fn reads_skip_row_groups_and_files_outside_the_time_range_and_keep_what_is_inside() {
    let dir = tempfile::tempdir().unwrap();
    // One file of four row groups of 10 rows: timestamps 0..40.
    let batch = schemas::arrow_schema::to_record_batch(&rows("ws-a", 40, 0)).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(10))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("timestamp"), EnabledStatistics::Page)
        .build();
    let path = dir.path().join("b-x.parquet");
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().metadata().clone();
    assert_eq!(meta.num_row_groups(), 4);
    let size = fs::metadata(&path).unwrap().len();
    let table = ScopedTable::new(Table::Logs, vec![(path.clone(), size)], table::wall_of_request(&scan_req(Some("ws-a")))).unwrap();
    // (timestamps returned, rows the Parquet scan yielded before the filter above it)
    let read = |from: i64, to: i64| {
        let plan = table.plan(None, &[table.time_range(from, to)]).unwrap();
        async move {
            let batches = datafusion::physical_plan::collect(plan.clone(), Arc::new(datafusion::execution::TaskContext::default())).await.unwrap();
            let mut ts: Vec<i64> =
                batches.iter().flat_map(|b| b.column_by_name("timestamp").unwrap().as_primitive::<TimestampNanosecondType>().values().to_vec()).collect();
            ts.sort_unstable();
            let scanned = plan.children()[0].metrics().and_then(|m| m.output_rows()).unwrap_or(usize::MAX);
            (ts, scanned)
        }
    };
    assert_eq!(read(15, 25).await, ((15..25).collect::<Vec<i64>>(), 20), "row groups 1 and 2 are read, their rows filtered");
    assert_eq!(read(10, 11).await, (vec![10], 10), "a range's end is exclusive, its start inclusive");
    assert_eq!(read(100, 200).await, (vec![], 0), "no row group is read");
    assert_eq!(read(0, 40).await.1, 40);
    // Through the store: a narrow search finds exactly its rows.
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store"))).unwrap());
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows("ws-a", 1_000, 0).into() }).await.unwrap();
    let req = ScanRequest { from_ns: 500, to_ns: 510, ..scan_req(Some("ws-a")) };
    assert_eq!(count(&store.scan(&req).await.unwrap()), 10);
}

#[tokio::test]
async fn the_table_provider_returns_only_its_scope_whatever_a_query_asks() {
    use datafusion::logical_expr::{col, lit};
    // A file holding two workspaces' rows where only ws-a's belong (a misplaced file): the
    // wall above the scan keeps ws-b's rows out even when the query asks for them.
    let dir = tempfile::tempdir().unwrap();
    let mut records = match rows("ws-a", 5, 0) {
        Rows::Logs(r) => r,
        _ => unreachable!(),
    };
    records.extend(match rows("ws-b", 7, 100) {
        Rows::Logs(r) => r,
        _ => unreachable!(),
    });
    let path = dir.path().join("b-mixed.parquet");
    let batch = schemas::arrow_schema::to_record_batch(&Rows::Logs(records)).unwrap();
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let file = vec![(path.clone(), fs::metadata(&path).unwrap().len())];
    let workspaces = |table: ScopedTable, asked: Option<datafusion::logical_expr::Expr>| async move {
        let ctx = datafusion::prelude::SessionContext::new();
        let mut df = ctx.read_table(Arc::new(table)).unwrap();
        if let Some(e) = asked {
            df = df.filter(e).unwrap();
        }
        let mut out: Vec<String> = df
            .collect()
            .await
            .unwrap()
            .iter()
            .flat_map(|b| b.column_by_name("workspace").unwrap().as_string::<i32>().iter().flatten().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        out.sort();
        out.dedup_by(|a, b| a == b);
        out
    };
    let scoped = || ScopedTable::new(Table::Logs, file.clone(), table::wall_of_request(&scan_req(Some("ws-a")))).unwrap();
    assert_eq!(workspaces(scoped(), None).await, ["ws-a"]);
    assert_eq!(workspaces(scoped(), Some(col("workspace").eq(lit("ws-b")).or(lit(true)))).await, ["ws-a"]);
    assert!(workspaces(scoped(), Some(col("workspace").eq(lit("ws-b")))).await.is_empty());
    let other_org = ScanRequest { org_id: Some("globex".into()), ..scan_req(None) };
    assert!(workspaces(ScopedTable::new(Table::Logs, file.clone(), table::wall_of_request(&other_org)).unwrap(), None).await.is_empty());
    // Without a wall the same file and query give both workspaces: the wall is what held.
    let open = ScopedTable::new(Table::Logs, file.clone(), lit(true)).unwrap();
    assert_eq!(workspaces(open, Some(col("workspace").eq(lit("ws-b")).or(lit(true)))).await, ["ws-a", "ws-b"]);
}

#[tokio::test]
async fn writes_are_idempotent_per_batch_and_scans_are_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let b1 = WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows("ws-a", 10, 1_000).into() };
    store.write(&b1).await.unwrap();
    store.write(&b1).await.unwrap();
    let b2 = WriteBatch { id: BatchId { wal_id: "w".into(), seq: 2 }, rows: rows("../../etc", 5, NS_PER_DAY + 7).into() };
    store.write(&b2).await.unwrap();
    assert_eq!(count(&store.scan(&scan_req(Some("ws-a"))).await.unwrap()), 10);
    assert_eq!(count(&store.scan(&scan_req(Some("../../etc"))).await.unwrap()), 5);
    assert_eq!(count(&store.scan(&scan_req(None)).await.unwrap()), 15);
    assert_eq!(count(&store.scan(&scan_req(Some("ws-b"))).await.unwrap()), 0);
    let mut other_org = scan_req(None);
    other_org.org_id = Some("globex".into());
    assert_eq!(count(&store.scan(&other_org).await.unwrap()), 0);
    let mut narrow = scan_req(None);
    (narrow.from_ns, narrow.to_ns) = (1_002, 1_005);
    assert_eq!(count(&store.scan(&narrow).await.unwrap()), 3);
    assert!(fs::read_dir(dir.path().join("logs/org=acme")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains('/')));
}

#[tokio::test]
async fn compaction_keeps_rows_once_and_survives_replay_of_compacted_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.compact_min_files = 3;
    let store = Arc::new(EmbeddedStore::open(config.clone()).unwrap());
    let today = now_ns().div_euclid(NS_PER_DAY);
    let batches: Vec<WriteBatch> = (1..=4)
        .map(|s| WriteBatch { id: BatchId { wal_id: "w".into(), seq: s }, rows: rows("ws-a", 100, today * NS_PER_DAY + s as i64 * 1000).into() })
        .collect();
    for b in &batches {
        store.write(b).await.unwrap();
    }
    store.maintain().await.unwrap();
    let part = dir.path().join(format!("logs/org=acme/ws=ws-a/day={today}"));
    let names: Vec<String> = fs::read_dir(&part).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".parquet")).count(), 1, "{names:?}");
    // A replay after a crash writes the same batches again: nothing doubles.
    let reopened = Arc::new(EmbeddedStore::open(config).unwrap());
    for b in &batches {
        reopened.write(b).await.unwrap();
    }
    assert_eq!(count(&reopened.scan(&scan_req(Some("ws-a"))).await.unwrap()), 400);
}

#[tokio::test]
async fn a_batch_rebuilt_from_fewer_records_is_still_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let id = BatchId { wal_id: "w".into(), seq: 9 };
    let Rows::Logs(mut both) = rows("ws-a", 3, 0) else { unreachable!() };
    let Rows::Logs(b) = rows("ws-b", 2, 0) else { unreachable!() };
    both.extend(b.clone());
    store.write(&WriteBatch { id: id.clone(), rows: Rows::Logs(both).into() }).await.unwrap();
    // After damage, the same batch is rebuilt with only the ws-b records.
    store.write(&WriteBatch { id, rows: Rows::Logs(b).into() }).await.unwrap();
    assert_eq!(count(&store.scan(&scan_req(None)).await.unwrap()), 5);
}

#[tokio::test]
async fn an_interrupted_compaction_is_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows("ws-a", 10, 0).into() }).await.unwrap();
    let part = dir.path().join("logs/org=acme/ws=ws-a/day=0");
    // Crash after the merged file was renamed but before the sources were deleted.
    fs::copy(part.join("b-w-1.parquet"), part.join("c-w-1.parquet")).unwrap();
    fs::write(part.join("c-w-1.ids"), "b-w-1.parquet").unwrap();
    fs::write(part.join(".tmp-junk.parquet"), "half").unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    assert_eq!(count(&store.scan(&scan_req(None)).await.unwrap()), 10);
    assert!(!part.join(".tmp-junk.parquet").exists());
}

#[tokio::test]
async fn retention_drops_old_days_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let now = now_ns();
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows("ws-a", 3, now - 100 * NS_PER_DAY).into() }).await.unwrap();
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 2 }, rows: rows("ws-a", 2, now - 1_000).into() }).await.unwrap();
    store.maintain().await.unwrap();
    assert_eq!(count(&store.scan(&scan_req(None)).await.unwrap()), 2);
}

#[test]
fn escaping_neutralises_paths_and_bounds_length() {
    let long = "ü".repeat(300);
    let mut seen = std::collections::HashSet::new();
    for s in ["", "ws-a", "../x", "a/b", "ü%", ".", "%", long.as_str(), &format!("{long}x")] {
        let e = escape(s);
        assert!(!e.contains('/') && e != "." && e != ".." && e.len() <= MAX_ESCAPED, "{e}");
        assert!(seen.insert(e), "distinct names stay distinct");
    }
}

#[tokio::test]
async fn a_tenant_name_too_long_for_a_path_is_stored_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
    let ws = "w".repeat(1000);
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows(&ws, 4, 0).into() }).await.unwrap();
    assert_eq!(count(&store.scan(&scan_req(Some(&ws))).await.unwrap()), 4);
    assert_eq!(count(&store.scan(&scan_req(Some(&"w".repeat(999)))).await.unwrap()), 0);
}

/// Alice's scope: organisation acme, workspace ws-a, every namespace.
async fn alice_scope(dir: &Path) -> auth::TenantScope {
    use auth::{AuthConfig, DevClaims, DevIssuer, Gate, StaticPolicy, TokenVerifier};
    let verifier = TokenVerifier::new(AuthConfig::default().validate(dir).unwrap()).unwrap();
    let issuer = DevIssuer::load_or_create(&dir.join("dev-token-secret"), "dataplane").unwrap();
    let token =
        issuer.mint(&DevClaims { user: "alice".into(), org: "acme".into(), workspaces: vec!["ws-a".into()], ttl_secs: 60, ..Default::default() }).unwrap();
    let alice = verifier.verify(&token, None).await.unwrap();
    Gate::new(Arc::new(StaticPolicy::members_read_all()), "platform-operator", vec![]).logs(&alice, None, None).await.unwrap()
}

#[tokio::test]
async fn search_pages_are_whole_lines_in_order_with_every_column_an_answer_shows() {
    // Lines with attributes, observed times and span ids, many sharing a timestamp, in several
    // files; paged through 7 at a time, newest first, with and without a word.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store"))).unwrap());
    let base = now_ns() - 3_600_000_000_000;
    let line = |i: i64| LogRecord {
        timestamp_ns: base + (i / 3) * 1_000,
        observed_ns: base + i,
        org_id: "acme".into(),
        workspace: if i % 5 == 4 { "ws-b".into() } else { "ws-a".into() },
        pod: format!("pod-{}", i % 2),
        message: format!("{} line {i}", if i % 4 == 0 { "Packet" } else { "other" }),
        attributes: vec![("app".into(), format!("a{i}"))],
        trace_id: format!("t{:03}", 999 - i),
        span_id: format!("s{i}"),
        ..Default::default()
    };
    for (seq, chunk) in (0..120).collect::<Vec<i64>>().chunks(40).enumerate() {
        let rows = Rows::Logs(chunk.iter().map(|&i| line(i)).collect());
        store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: seq as u64 }, rows: rows.into() }).await.unwrap();
    }
    let scope = alice_scope(dir.path()).await;
    for terms in [vec![], vec![crate::Term::Contains("packet".into())]] {
        let mut expected: Vec<LogRecord> =
            (0..120).map(line).filter(|l| l.workspace == "ws-a" && (terms.is_empty() || l.message.starts_with("Packet"))).collect();
        // Every column an answer shows; the observed time and span id are not read.
        for l in &mut expected {
            (l.observed_ns, l.span_id) = (0, String::new());
        }
        expected.sort_by(crate::search::newest_first);
        let mut pages = Vec::new();
        let mut cursor: Option<crate::Cursor> = None;
        loop {
            let q = LogSearch {
                scope: scope.clone(),
                from_ns: base,
                to_ns: base + 3_600_000_000_000,
                filters: Default::default(),
                terms: terms.clone(),
                limit: 7,
                cursor,
                oldest_first: false,
            };
            let page = store.search(&q).await.unwrap();
            let Some(last) = page.last() else { break };
            let skip = page.iter().filter(|l| l.timestamp_ns == last.timestamp_ns).count() as u32
                + cursor.filter(|c| c.timestamp_ns == last.timestamp_ns).map_or(0, |c| c.skip);
            cursor = Some(crate::Cursor { timestamp_ns: last.timestamp_ns, skip });
            pages.extend(page);
            assert!(pages.len() <= expected.len(), "paging does not end");
        }
        assert_eq!(pages, expected, "terms {terms:?}");
    }
}

#[tokio::test]
async fn a_store_under_a_relative_path_is_read() {
    // The default data directory is `./data`: reads must not depend on an absolute root.
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
    let relative = up.join(dir.path().strip_prefix("/").unwrap()).join("store");
    assert!(relative.is_relative());
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(&relative)).unwrap());
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows("ws-a", 10, 1_000).into() }).await.unwrap();
    assert_eq!(count(&store.scan(&scan_req(Some("ws-a"))).await.unwrap()), 10);
    let scope = alice_scope(dir.path()).await;
    let q = LogSearch { scope, from_ns: 0, to_ns: i64::MAX, filters: Default::default(), terms: vec![], limit: 100, cursor: None, oldest_first: false };
    assert_eq!(store.search(&q).await.unwrap().len(), 10);
}
