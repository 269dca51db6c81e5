use super::*;
use crate::BatchId;
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
    assert_eq!(row_groups_in(&meta, 15, 25), vec![1, 2]);
    assert_eq!(row_groups_in(&meta, 10, 11), vec![1], "a range's end is exclusive, its start inclusive");
    assert!(row_groups_in(&meta, 40, 50).is_empty());
    let read = |range| {
        let mut ts = Vec::new();
        each_stored_batch(dir.path(), range, |b| {
            let a = b.column_by_name("timestamp").unwrap().as_primitive::<TimestampNanosecondType>();
            ts.extend(a.values().iter().copied());
            Ok(())
        })
        .unwrap();
        ts
    };
    assert_eq!(read(Some((15, 25))), (10..30).collect::<Vec<i64>>(), "whole row groups around the range; callers filter rows");
    assert!(read(Some((100, 200))).is_empty());
    assert_eq!(read(None).len(), 40);
    // Through the store: a narrow search finds exactly its rows.
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store"))).unwrap());
    store.write(&WriteBatch { id: BatchId { wal_id: "w".into(), seq: 1 }, rows: rows("ws-a", 1_000, 0).into() }).await.unwrap();
    let req = ScanRequest { from_ns: 500, to_ns: 510, ..scan_req(Some("ws-a")) };
    assert_eq!(count(&store.scan(&req).await.unwrap()), 10);
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
