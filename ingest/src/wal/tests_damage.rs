//! Recovery from damaged directories: torn tails, flipped bytes, junk, strays, lost ids.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::tests::{RECORD_LEN, append_each, open, payload, segment_paths, small_segments};
use super::*;

fn seqs(recovered: &Recovered) -> Vec<u64> {
    recovered.records.iter().map(|r| r.seq).collect()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).expect("open");
    file.write_all(bytes).expect("write");
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0xFF;
    fs::write(path, bytes).expect("write");
}

/// Every record delivered is the one written under its seq, in increasing order.
fn assert_true_records(recovered: &Recovered) {
    assert!(recovered.records.windows(2).all(|w| w[0].seq < w[1].seq));
    for record in &recovered.records {
        assert_eq!(record.payload, payload(record.seq), "seq {}", record.seq);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_tail_is_cut_and_appending_resumes_cleanly() {
    // Cut inside the payload, and inside the header, of the last record.
    for cut in [10, RECORD_LEN - 5] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WalConfig::new(dir.path());
        let (wal, _) = open(&config);
        append_each(&wal, 1, 10).await;
        wal.close().await;
        let segment = segment_paths(dir.path()).remove(0);
        let torn = 10 * RECORD_LEN - cut;
        OpenOptions::new().write(true).open(&segment).expect("open").set_len(torn).expect("cut");

        let (wal, recovered) = open(&config);
        assert_eq!(seqs(&recovered), (1..=9).collect::<Vec<_>>());
        assert_eq!(recovered.report.truncated_tail_bytes, RECORD_LEN - cut);
        assert_eq!((recovered.report.corrupt_regions, recovered.report.bytes_skipped), (0, 0));
        assert_eq!(fs::metadata(&segment).expect("meta").len(), 9 * RECORD_LEN);
        let new = append_each(&wal, 11, 3).await;
        assert!(new[0] > 9 && new.windows(2).all(|w| w[0] < w[1]), "{new:?}");
        wal.close().await;

        let (wal, recovered) = open(&config);
        assert_eq!(recovered.records.len(), 12);
        assert_eq!(recovered.report.truncated_tail_bytes + recovered.report.bytes_skipped, 0);
        assert_eq!(recovered.records.iter().rev().take(3).map(|r| r.seq).min(), Some(new[0]));
        wal.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_a_middle_segment_loses_only_that_record() {
    // Magic, len, seq, kind, crc and payload bytes of the second record of the third segment.
    for offset_in_record in [0, 5, 10, 16, 18, 30, RECORD_LEN - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_segments(dir.path(), 200);
        let (wal, _) = open(&config);
        append_each(&wal, 1, 20).await;
        wal.close().await;
        let third = segment_paths(dir.path()).remove(2);
        assert!(third.ends_with("00000000000000000009.wal"));
        flip_byte(&third, RECORD_LEN + offset_in_record);

        let (wal, recovered) = open(&config);
        let expected: Vec<u64> = (1..=20).filter(|&s| s != 10).collect();
        assert_eq!(seqs(&recovered), expected, "flip at {offset_in_record}");
        assert_true_records(&recovered);
        let report = &recovered.report;
        assert_eq!((report.corrupt_regions, report.bytes_skipped), (1, RECORD_LEN));
        assert_eq!((report.segments, report.records, report.truncated_tail_bytes), (6, 19, 0));
        wal.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn damage_to_the_last_record_of_the_newest_segment_reads_as_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    append_each(&wal, 1, 5).await;
    wal.close().await;
    let segment = segment_paths(dir.path()).remove(0);
    flip_byte(&segment, 4 * RECORD_LEN + 30);
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), vec![1, 2, 3, 4]);
    assert_eq!(recovered.report.truncated_tail_bytes, RECORD_LEN);
    // Numbering steps past whatever the lost bytes could have held.
    assert!(wal.append(1, payload(9)).await.expect("append") > 5);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn junk_after_the_last_record_is_cut_or_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments(dir.path(), 200);
    let (wal, _) = open(&config);
    append_each(&wal, 1, 6).await;
    wal.close().await;
    let segments = segment_paths(dir.path());
    // Junk that even starts like a record.
    let mut junk = vec![0xC7, 0x5A, 0x1E, 0x9D, 40, 0, 0, 0];
    junk.extend(std::iter::repeat_n(0xAB, 92));
    append_bytes(&segments[0], &junk[..50]); // an older segment: skipped, left alone
    append_bytes(&segments[1], &junk); // the newest: cut away

    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (1..=6).collect::<Vec<_>>());
    let report = &recovered.report;
    assert_eq!((report.corrupt_regions, report.bytes_skipped), (1, 50));
    assert_eq!(report.truncated_tail_bytes, 100);
    let next = wal.append(1, payload(7)).await.expect("append");
    wal.close().await;

    let (wal, recovered) = open(&config);
    assert_eq!(recovered.records.last().map(|r| r.seq), Some(next));
    assert_eq!((recovered.report.corrupt_regions, recovered.report.truncated_tail_bytes), (1, 0));
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_out_of_order_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments(dir.path(), 200);
    let (wal, _) = open(&config);
    append_each(&wal, 1, 6).await;
    wal.close().await;
    let segments = segment_paths(dir.path());
    let first = fs::read(&segments[0]).expect("read");
    append_bytes(&segments[1], &first);

    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (1..=6).collect::<Vec<_>>());
    assert_eq!(recovered.report.dropped_records, 4);
    assert_eq!(wal.append(1, payload(7)).await.expect("append"), 7);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_segments_are_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_segments(dir.path(), 200);
    // A fresh log is one empty segment; reopening it changes nothing.
    let (wal, _) = open(&config);
    wal.close().await;
    let (wal, recovered) = open(&config);
    assert_eq!((recovered.report.segments, recovered.records.len()), (1, 0));
    append_each(&wal, 1, 6).await;
    wal.close().await;

    // A stray empty segment whose name falls inside another segment's range must not make
    // release delete records above it.
    fs::write(dir.path().join("00000000000000000003.wal"), b"").expect("write");
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (1..=6).collect::<Vec<_>>());
    assert_eq!(recovered.report.segments, 3);
    wal.release_before(4).expect("release");
    wal.close().await;
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), (1..=6).collect::<Vec<_>>());
    wal.release_before(5).expect("release");
    wal.close().await;
    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), vec![5, 6]);
    wal.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stray_files_are_ignored_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    append_each(&wal, 1, 3).await;
    wal.close().await;
    fs::write(dir.path().join("notes.txt"), b"hello").expect("write");
    fs::write(dir.path().join("7.wal"), b"not a segment").expect("write");
    fs::create_dir(dir.path().join("00000000000000000099.wal")).expect("mkdir");

    let (wal, recovered) = open(&config);
    assert_eq!(seqs(&recovered), vec![1, 2, 3]);
    assert_eq!(recovered.report.segments, 1);
    wal.release_before(u64::MAX).expect("release");
    assert_eq!(wal.append(1, payload(4)).await.expect("append"), 4);
    wal.close().await;
    assert!(dir.path().join("notes.txt").exists() && dir.path().join("7.wal").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_or_damaged_wal_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig::new(dir.path());
    let (wal, _) = open(&config);
    append_each(&wal, 1, 1).await;
    wal.close().await;
    let id_path = dir.path().join("WAL_ID");
    let id = fs::read(&id_path).expect("read");

    fs::write(&id_path, b"not/a valid id").expect("write");
    assert!(matches!(Wal::open(config.clone()), Err(WalError::Corrupt(_))));
    fs::remove_file(&id_path).expect("remove");
    assert!(matches!(Wal::open(config.clone()), Err(WalError::Corrupt(_))));
    fs::write(&id_path, id).expect("write");
    let (wal, recovered) = open(&config);
    assert_eq!(recovered.records.len(), 1);
    wal.close().await;
}

/// Deterministic pseudo-random numbers (xorshift64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_damage_never_panics_and_never_invents_records() {
    let template = tempfile::tempdir().expect("tempdir");
    let config = small_segments(template.path(), 300);
    let (wal, _) = open(&config);
    append_each(&wal, 1, 30).await;
    wal.close().await;
    let files: Vec<(String, Vec<u8>)> =
        segment_paths(template.path()).iter().map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), fs::read(p).expect("read"))).collect();
    let wal_id = fs::read(template.path().join("WAL_ID")).expect("id");

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..40 {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("WAL_ID"), &wal_id).expect("id");
        for (name, bytes) in &files {
            let mut bytes = bytes.clone();
            for _ in 0..rng.below(4) {
                let len = bytes.len() as u64;
                match rng.below(4) {
                    0 if len > 0 => bytes[rng.below(len) as usize] ^= 1 << rng.below(8),
                    1 => bytes.truncate(rng.below(len + 1) as usize),
                    2 => bytes.extend((0..rng.below(80)).map(|_| rng.below(256) as u8)),
                    _ if len > 0 => bytes[rng.below(len) as usize] = rng.below(256) as u8,
                    _ => {}
                }
            }
            fs::write(dir.path().join(name), bytes).expect("write");
        }
        let config = small_segments(dir.path(), 300);
        let (wal, recovered) = open(&config);
        assert_true_records(&recovered);
        let last = recovered.records.last().map_or(0, |r| r.seq);
        let next = wal.append(1, payload(1000)).await.expect("append");
        assert!(next > last, "round {round}: {next} after {last}");
        wal.close().await;
        let (wal, again) = open(&config);
        assert_eq!(again.records.last().map(|r| r.seq), Some(next), "round {round}");
        wal.close().await;
    }
}
