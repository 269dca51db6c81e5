//! Opening a log directory: lock it, read or create its id, replay every segment, repair the
//! torn tail, and pick the segment new records go to.
//!
//! Replay trusts nothing it reads. A record is accepted only when its frame validates (see
//! `format`) and its sequence number is above every one accepted before it. Damage in the
//! middle of a segment is skipped by scanning forward to the next record that validates; bytes
//! at the end of the newest segment that hold no valid record are a write cut short by a crash
//! (or junk), and are cut away so that new records start on a clean boundary.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::format::{self, HEADER_LEN};
use super::writer::{SegmentEntry, create_segment, sync_dir};
use super::{Record, RecoveryReport, WalConfig, WalError};

const WAL_ID_FILE: &str = "WAL_ID";
const WAL_ID_TMP_FILE: &str = "WAL_ID.tmp";
const LOCK_FILE: &str = "LOCK";

/// Everything `Wal::open` needs to start the writer.
pub(super) struct Opened {
    pub wal_id: String,
    /// Held (locked) for as long as the writer runs, so no second writer can share the dir.
    pub lock: File,
    pub records: Vec<Record>,
    pub report: RecoveryReport,
    /// Sorted by first seq; the last one is `active`.
    pub segments: Vec<SegmentEntry>,
    pub active: File,
    pub active_len: u64,
    pub next_seq: u64,
    pub disk_bytes: u64,
}

pub(super) fn open_dir(config: &WalConfig) -> Result<Opened, WalError> {
    let dir = &config.dir;
    fs::create_dir_all(dir).map_err(|e| corrupt(dir, "cannot create the wal directory", &e))?;
    let lock = lock_dir(dir)?;
    let found = list_segments(dir)?;
    let wal_id = load_or_create_wal_id(dir, !found.is_empty())?;

    let mut replay = Replay { budget: config.replay_budget, ..Replay::default() };
    let newest = found.len().checked_sub(1);
    let mut segments = Vec::with_capacity(found.len() + 1);
    for (index, (first_seq, path)) in found.iter().enumerate() {
        let before = replay.last_seq;
        let bytes = replay.segment(path, Some(index) == newest)?;
        // Replay accepts only increasing seqs, so a segment that added none holds none that
        // will ever be delivered.
        let max_seq = if replay.last_seq > before { replay.last_seq } else { 0 };
        segments.push(SegmentEntry { first_seq: *first_seq, max_seq, bytes });
    }
    replay.report.segments = found.len();
    replay.report.records = replay.records.len();

    // Sequence numbers must never repeat, even when every segment but the newest was released
    // (its name still says where numbering stood) or when the tail was damaged (each lost byte
    // range could have held up to len / HEADER_LEN records, so step over that many numbers).
    let newest_name = found.last().map_or(0, |(first_seq, _)| *first_seq);
    let gap = replay.lost_after_last.div_ceil(HEADER_LEN as u64);
    let next_seq = replay.last_seq.max(newest_name.saturating_sub(1)).saturating_add(1).saturating_add(gap);

    // Keep appending to the newest segment unless it is full. An empty one is always reused:
    // its name may equal `next_seq`, and it is as good as a new one.
    let reuse = match (found.last(), segments.last()) {
        (Some((_, path)), Some(last)) if last.bytes < config.segment_bytes || last.bytes == 0 => Some((path.clone(), last.bytes)),
        _ => None,
    };
    let (active, active_len) = match reuse {
        Some((path, len)) => {
            let file = OpenOptions::new().write(true).open(&path).map_err(|e| corrupt(&path, "cannot open the newest segment", &e))?;
            (file, len)
        }
        None => {
            let file = create_segment(dir, next_seq).and_then(|file| sync_dir(dir).map(|()| file)).map_err(|e| corrupt(dir, "cannot create a segment", &e))?;
            segments.push(SegmentEntry { first_seq: next_seq, max_seq: u64::MAX, bytes: 0 });
            (file, 0)
        }
    };
    let disk_bytes = segments.iter().map(|s| s.bytes).sum();
    Ok(Opened { wal_id, lock, records: replay.records, report: replay.report, segments, active, active_len, next_seq, disk_bytes })
}

fn corrupt(path: &Path, what: &str, error: &io::Error) -> WalError {
    WalError::Corrupt(format!("{what} ({}): {error}", path.display()))
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| corrupt(&path, "cannot open the lock file", &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            Err(WalError::Corrupt(format!("the wal directory {} is already open (another process, or a handle not yet closed)", dir.display())))
        }
        Err(TryLockError::Error(e)) => Err(corrupt(&path, "cannot lock the wal directory", &e)),
    }
}

/// Segment files sorted by the first seq in their name; every other file is ignored.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let read_error = |e: io::Error| corrupt(dir, "cannot read the wal directory", &e);
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let Some(first_seq) = entry.file_name().to_str().and_then(format::parse_segment_file_name) else {
            continue;
        };
        if entry.file_type().map_err(read_error)?.is_file() {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(first_seq, _)| *first_seq);
    Ok(segments)
}

/// The directory's id names every batch downstream for deduplication, so it is created once,
/// made durable before any segment exists, and never replaced.
fn load_or_create_wal_id(dir: &Path, has_segments: bool) -> Result<String, WalError> {
    let path = dir.join(WAL_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            let valid = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if valid { Ok(id.to_owned()) } else { Err(WalError::Corrupt(format!("{} does not hold a valid wal id; restore it from a backup", path.display()))) }
        }
        // The id is written before the first segment, so segments without it mean someone
        // removed it; a new id would make downstream take replayed records for new ones.
        Err(e) if e.kind() == io::ErrorKind::NotFound && has_segments => Err(WalError::Corrupt(format!(
            "{} is missing but the directory holds segments; restore it, or move the \
                 segments away to start a new log",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = generate_wal_id(dir);
            write_wal_id(dir, &id).map_err(|e| corrupt(&path, "cannot write the wal id", &e))?;
            Ok(id)
        }
        Err(e) => Err(corrupt(&path, "cannot read the wal id", &e)),
    }
}

/// 16 hex digits from a randomly seeded hasher over the time, the process id and the path.
fn generate_wal_id(dir: &Path) -> String {
    let mut hasher = RandomState::new().build_hasher();
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()).hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    dir.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn write_wal_id(dir: &Path, id: &str) -> io::Result<()> {
    let tmp = dir.join(WAL_ID_TMP_FILE);
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(WAL_ID_FILE))?;
    sync_dir(dir)
}

#[derive(Default)]
struct Replay {
    records: Vec<Record>,
    report: RecoveryReport,
    /// Highest seq accepted so far.
    last_seq: u64,
    /// Bytes skipped or cut since the last accepted record.
    lost_after_last: u64,
    budget: Option<super::ReplayBudget>,
    /// Payload bytes of the budgeted kind kept whole so far.
    kept: usize,
}

impl Replay {
    /// Replays one segment and returns its size afterwards (after any tail repair).
    fn segment(&mut self, path: &Path, newest: bool) -> Result<u64, WalError> {
        let buf = fs::read(path).map_err(|e| corrupt(path, "cannot read a segment", &e))?;
        let mut pos = 0;
        while pos < buf.len() {
            if let Some(record) = format::decode_at(&buf, pos) {
                self.accept(record.seq, record.kind, record.payload);
                pos = record.end;
                continue;
            }
            let skipped = match format::find_next_record(&buf, pos.saturating_add(1)) {
                Some(next) => next - pos,
                None if newest => {
                    // Nothing valid follows: a write cut short, or junk. Cut it away so that
                    // the next append starts on a record boundary.
                    let cut = (buf.len() - pos) as u64;
                    self.report.truncated_tail_bytes += cut;
                    self.lost_after_last += cut;
                    tracing::warn!(path = %path.display(), offset = pos, bytes = cut, "wal truncating a torn tail");
                    settle_newest(path, Some(pos as u64))?;
                    return Ok(pos as u64);
                }
                None => buf.len() - pos,
            };
            self.report.corrupt_regions += 1;
            self.report.bytes_skipped += skipped as u64;
            self.lost_after_last += skipped as u64;
            tracing::warn!(path = %path.display(), offset = pos, bytes = skipped, "wal skipped a corrupt region");
            pos += skipped;
        }
        if newest {
            settle_newest(path, None)?;
        }
        Ok(buf.len() as u64)
    }

    fn accept(&mut self, seq: u64, kind: u8, payload: &[u8]) {
        if seq <= self.last_seq {
            // Only damage or a foreign file can do this; the first copy wins.
            self.report.dropped_records += 1;
            return;
        }
        self.last_seq = seq;
        self.lost_after_last = 0;
        let keep = match self.budget {
            Some(b) if b.kind == kind => {
                if self.kept.saturating_add(payload.len()) <= b.bytes {
                    self.kept += payload.len();
                    payload.len()
                } else {
                    b.head.min(payload.len())
                }
            }
            _ => payload.len(),
        };
        self.records.push(Record { seq, kind, payload: payload[..keep].to_vec(), len: payload.len() });
    }
}

/// Cuts the newest segment to `cut_at` (when given) and fsyncs it. The fsync matters even
/// without a cut: records a crashed process wrote but never synced are replayed now, and must
/// not vanish in a later power loss once newer records are appended after them.
fn settle_newest(path: &Path, cut_at: Option<u64>) -> Result<(), WalError> {
    let settle = || -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        if let Some(len) = cut_at {
            file.set_len(len)?;
        }
        file.sync_data()
    };
    settle().map_err(|e| corrupt(path, "cannot repair and sync the newest segment", &e))
}
