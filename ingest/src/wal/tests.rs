//! Behaviour of a healthy log: order, numbering, group commit, release, caps, close, faults.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Every test record is 40 bytes of payload, 61 bytes on disk.
pub(super) const RECORD_LEN: u64 = 61;

pub(super) fn payload(i: u64) -> Vec<u8> {
    format!("record {i:>33}").into_bytes()
}

pub(super) fn small_segments(dir: &Path, segment_bytes: u64) -> WalConfig {
    WalConfig { segment_bytes, ..WalConfig::new(dir) }
}

pub(super) fn open(config: &WalConfig) -> (Wal, Recovered) {
    match Wal::open(config.clone()) {
        Ok(opened) => opened,
        Err(e) => panic!("open failed: {e}"),
    }
}

/// Segment files in name (= seq) order.
pub(super) fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    paths.sort();
    paths
}

/// Appends records numbered `from..from + n` one after another (one group each).
pub(super) async fn append_each(wal: &Wal, from: u64, n: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in from..from + n {
        seqs.push(wal.append(7, payload(i)).await.expect("append"));
    }
    seqs
}

fn seqs(recovered: &Recovered) -> Vec<u64> {
    recovered.records.iter().map(|r| r.seq).collect()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Wal>();
}

#[tokio::test(flavor = "multi_thread")]
async fn append_reopen_replays_in_order_and_numbering_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, recovered) = open(&config);
    assert!(recovered.records.is_empty());
    assert_eq!(append_each(&wal, 1, 10).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(wal.last_seq(), 10);
    assert_eq!(wal.disk_bytes(), 10 * RECORD_LEN);
    wal.close().await;

    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (1..=10).collect::<Vec<_>>());
    for record in &recovered.records {
        assert_eq!((record.kind, &record.payload), (7, &payload(record.seq)));
    }
    let expected = RecoveryReport { segments: 1, records: 10, ..RecoveryReport::default() };
    assert_eq!(recovered.report, expected);
    assert_eq!(wal.append(1, b"next".to_vec()).await.expect("append"), 11);
    wal.close().await;

    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (1..=11).collect::<Vec<_>>());
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_id_is_created_once_and_stable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, recovered) = open(&config);
    let id = wal.wal_id().to_owned();
    assert_eq!(recovered.wal_id, id);
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    wal.append(1, payload(1)).await.expect("append");
    wal.close().await;
    let stored = std::fs::read_to_string(dir.path().join("WAL_ID")).expect("WAL_ID");
    assert_eq!(stored.trim(), id);

    let (wal, recovered) = open(&config);
    assert_eq!((wal.wal_id(), recovered.wal_id.as_str()), (id.as_str(), id.as_str()));
    wal.close().await;

    let other = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(&WalConfig::new(other.path()));
    assert_ne!(wal.wal_id(), id);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appenders_get_distinct_seqs_and_share_fsyncs() {
    const TASKS: u64 = 50;
    const PER_TASK: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments(dir.path(), 64 << 10);
    let (wal, _) = open(&config);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..PER_TASK {
                let body = payload(task * PER_TASK + i);
                mine.push((wal.append(3, body.clone()).await.expect("append"), body));
            }
            mine
        }));
    }
    let mut written = BTreeMap::new();
    for task in tasks {
        let mine = task.await.expect("task");
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "one task's seqs increase");
        written.extend(mine);
    }
    let total = TASKS * PER_TASK;
    assert_eq!(written.len() as u64, total, "every seq is distinct");
    let fsyncs = wal.fsync_count();
    assert!(fsyncs * 5 < total, "{fsyncs} fsyncs for {total} records");
    wal.close().await;

    let (wal, recovered) = open(&config);
    assert!(recovered.report.segments > 1);
    let replayed: BTreeMap<u64, Vec<u8>> = recovered.records.into_iter().map(|r| (r.seq, r.payload)).collect();
    assert_eq!(replayed, written);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn release_deletes_whole_old_segments_and_numbering_survives_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Four records pass 200 bytes, so segments hold seqs 1-4, 5-8, ... and the 20th record
    // leaves an empty active segment named 21.
    let config = small_segments(dir.path(), 200);
    let (wal, _) = open(&config);
    append_each(&wal, 1, 20).await;
    // Rotation happens right after the reply; a sync is served after it.
    wal.sync().await.expect("sync");
    assert_eq!(segment_paths(dir.path()).len(), 6);
    assert_eq!(wal.disk_bytes(), 20 * RECORD_LEN);

    wal.release_before(1).expect("release");
    wal.release_before(8).expect("release");
    assert_eq!(segment_paths(dir.path()).len(), 5, "only seqs 1-4 were all below 8");
    wal.release_before(11).expect("release");
    assert_eq!(segment_paths(dir.path()).len(), 4);
    assert_eq!(wal.disk_bytes(), 12 * RECORD_LEN);
    wal.close().await;

    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (9..=20).collect::<Vec<_>>());
    assert_eq!(wal.disk_bytes(), 12 * RECORD_LEN);
    wal.release_before(u64::MAX).expect("release");
    let left = segment_paths(dir.path());
    assert_eq!(left.len(), 1, "the active segment always stays");
    assert!(left[0].ends_with("00000000000000000021.wal"));
    assert_eq!(wal.disk_bytes(), 0);
    wal.close().await;

    let (wal, recovered) = open(&config);
    assert!(recovered.records.is_empty());
    assert_eq!(wal.append(1, payload(0)).await.expect("append"), 21);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_over_the_disk_cap_fail_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig { max_disk_bytes: 3 * RECORD_LEN + 10, ..WalConfig::new(dir.path()) };
    let (wal, _) = open(&config);
    append_each(&wal, 1, 3).await;
    let segment = segment_paths(dir.path()).remove(0);
    let err = wal.append(1, payload(4)).await.expect_err("over the cap");
    assert!(matches!(err, WalError::Full { disk_bytes: 183, cap: 193 }), "{err:?}");
    assert!(matches!(wal.append_lazy(1, payload(4)), Err(WalError::Full { .. })));
    assert_eq!((file_len(&segment), wal.disk_bytes()), (183, 183));
    wal.close().await;

    // The writer enforces the cap for a whole group too: of ten concurrent appends into an
    // empty log, exactly as many succeed as fit.
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(&WalConfig { max_disk_bytes: 3 * RECORD_LEN + 10, ..WalConfig::new(dir.path()) });
    let results = futures_util::future::join_all((0..10).map(|i| wal.append(1, payload(i)))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let full = results.iter().filter(|r| matches!(r, Err(WalError::Full { .. }))).count();
    assert_eq!((ok, full), (3, 7));
    assert_eq!(wal.disk_bytes(), 3 * RECORD_LEN);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_payloads_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(&WalConfig::new(dir.path()));
    let err = wal.append(1, vec![0; MAX_PAYLOAD_BYTES + 1]).await.expect_err("too large");
    assert!(matches!(err, WalError::TooLarge { .. }), "{err:?}");
    assert_eq!(wal.disk_bytes(), 0);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lazy_appends_are_synced_by_the_next_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    for expected in 1..=3 {
        assert_eq!(wal.append_lazy(2, payload(expected)).expect("lazy"), expected);
    }
    assert_eq!(wal.sync().await.expect("sync"), 3);
    assert_eq!(wal.fsync_count(), 1, "lazy records alone cause no fsync");
    assert_eq!(wal.sync().await.expect("sync"), 3);
    assert_eq!(wal.fsync_count(), 1, "nothing new to sync");
    wal.append_lazy(2, payload(4)).expect("lazy");
    assert_eq!(wal.append(1, payload(5)).await.expect("append"), 5);
    assert_eq!(wal.fsync_count(), 2);
    wal.close().await;
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), vec![1, 2, 3, 4, 5]);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_syncs_refuses_later_requests_and_frees_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    let err = Wal::open(config.clone()).err().expect("second open refused");
    assert!(matches!(err, WalError::Corrupt(_)), "{err:?}");
    wal.append_lazy(1, payload(1)).expect("lazy");
    let clone = wal.clone();
    wal.close().await;
    clone.close().await;
    assert!(matches!(clone.append(1, payload(2)).await, Err(WalError::Closed)));
    assert!(matches!(clone.append_lazy(1, payload(2)), Err(WalError::Closed)));
    assert!(matches!(clone.sync().await, Err(WalError::Closed)));
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), vec![1], "close synced the lazy record");
    drop(wal);

    // Dropping every handle also stops the writer and frees the directory, shortly after.
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(opened) = Wal::open(config.clone()) {
            reopened = Some(opened);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (wal, _) = reopened.expect("directory freed after the last handle dropped");
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_is_not_acknowledged_and_is_cut_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    append_each(&wal, 1, 2).await;
    let segment = segment_paths(dir.path()).remove(0);

    wal.inject_fault(Fault::NoSpace { writes: 1 });
    let err = wal.append(1, payload(3)).await.expect_err("disk full");
    match err {
        WalError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!((file_len(&segment), wal.disk_bytes()), (2 * RECORD_LEN, 2 * RECORD_LEN));
    assert!(!wal.is_poisoned());

    // A lazy record lost the same way is simply gone.
    wal.inject_fault(Fault::NoSpace { writes: 1 });
    wal.append_lazy(1, payload(4)).expect("queued");
    assert_eq!(wal.sync().await.expect("sync"), 2, "the highest durable seq is still 2");
    assert_eq!(file_len(&segment), 2 * RECORD_LEN);

    // Space is back: the next append succeeds (seqs 3 and 4 stay unused).
    assert_eq!(wal.append(1, payload(5)).await.expect("append"), 5);
    wal.close().await;
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), vec![1, 2, 5]);
    assert_eq!(recovered.report.bytes_skipped + recovered.report.truncated_tail_bytes, 0);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fsync_poisons_the_log_until_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    append_each(&wal, 1, 1).await;
    wal.inject_fault(Fault::SyncFails);
    assert!(matches!(wal.append(1, payload(2)).await, Err(WalError::Poisoned)));
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(1, payload(3)).await, Err(WalError::Poisoned)));
    assert!(matches!(wal.append_lazy(1, payload(3)), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync().await, Err(WalError::Poisoned)));
    wal.close().await;

    // A restart replays what really is on disk and starts clean.
    let (wal, recovered) = open(&config);
    assert!(!wal.is_poisoned());
    let replayed: HashSet<u64> = seqs(&recovered).into_iter().collect();
    assert!(replayed.contains(&1));
    let next = wal.append(1, payload(4)).await.expect("append");
    assert!(next > 2);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_read_back_by_seq_across_segments_until_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments(dir.path(), RECORD_LEN * 4);
    let (wal, _) = open(&config);
    let seqs = append_each(&wal, 0, 20).await;
    assert!(segment_paths(dir.path()).len() >= 4, "several segments");
    let wanted: std::collections::BTreeSet<u64> = [seqs[1], seqs[7], seqs[19], 999].into_iter().collect();
    let read = wal.read(&wanted).expect("read");
    let got: Vec<(u64, Vec<u8>)> = read.into_iter().map(|r| (r.seq, r.payload)).collect();
    assert_eq!(got, vec![(seqs[1], payload(1)), (seqs[7], payload(7)), (seqs[19], payload(19))], "unknown seqs are simply absent");
    wal.release_before(seqs[10]).expect("release");
    let after = wal.read(&wanted).expect("read after release");
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![seqs[19]], "released records are gone");
    wal.close().await;
}
