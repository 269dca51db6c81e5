//! A durable write-ahead log with group commit.
//!
//! Ingest answers a shipper with a 2xx only for what is durable (architecture wall 3). The
//! request path appends its records here and waits: [`Wal::append`] resolves only after the
//! `sync_data` covering the record has returned. Storage writes happen later, from the log, and
//! [`Wal::release_before`] drops what storage has confirmed. After a crash, [`Wal::open`] hands
//! back every record not yet released, so nothing acknowledged is lost; downstream
//! deduplicates redelivered records by `(wal_id, seq)`.
//!
//! # How it fits together
//!
//! - One dedicated thread owns the segment files (`writer`). Handles send requests over a
//!   bounded queue ([`QUEUE_CAPACITY`] requests: when it is full, `append` waits, which is the
//!   backpressure). The thread writes whatever is queued as one batch with one fsync.
//! - Sequence numbers are assigned when a request is queued, under a lock held only for the
//!   (non-blocking) send, so file order is seq order. They start at 1, strictly increase across
//!   restarts, and may have gaps (a refused record keeps its number).
//! - On disk: `WAL_ID` (the log's id, created once), `LOCK` (held while open), and segments
//!   `<first seq, 20 digits>.wal` of framed records (see `format`); a new segment starts once
//!   the active one passes `segment_bytes`. Other files in the directory are ignored.
//! - Recovery (`recovery`) replays every segment, skips damaged regions record by record, and
//!   cuts a torn tail off the newest segment.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), ingest::wal::WalError> {
//! use ingest::wal::{Wal, WalConfig};
//!
//! let (wal, recovered) = Wal::open(WalConfig::new("/var/lib/dataplane/wal"))?;
//! for record in recovered.records {
//!     // redeliver record.payload; it may already be stored, so dedup on (wal_id, seq)
//! }
//! let seq = wal.append(1, b"batch".to_vec()).await?; // durable from here on: answer 2xx
//! // ... once storage has confirmed everything up to `seq`:
//! wal.release_before(seq + 1)?;
//! wal.close().await;
//! # Ok(()) }
//! ```

mod format;
mod recovery;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_damage;
mod writer;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

pub use format::MAX_PAYLOAD_BYTES;
use writer::{Append, Request, Status, Writer, lock};

/// Requests that may wait in the writer's queue; beyond it, appenders wait for room.
pub const QUEUE_CAPACITY: usize = 1024;
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
pub const DEFAULT_MAX_DISK_BYTES: u64 = 4 << 30;
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;

/// Where the log lives and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A new segment starts once the active one reaches this size (it may overshoot by one
    /// batch). Smaller segments are released sooner; larger ones mean fewer files.
    pub segment_bytes: u64,
    /// Cap on all segments together. An append that would pass it fails with
    /// [`WalError::Full`] and writes nothing; releasing segments makes room again.
    pub max_disk_bytes: u64,
    /// Most bytes one group commit writes (it may overshoot by one record).
    pub max_batch_bytes: usize,
    /// Bounds the memory replay takes: see [`ReplayBudget`]. `None`: every payload is kept.
    pub replay_budget: Option<ReplayBudget>,
}

/// Replay keeps whole payloads of records of `kind` only until they add up to `bytes`; past
/// that, a record of that kind comes back with only its first `head` bytes (its full length in
/// [`Record::len`]), to be read in full later with [`Wal::read`]. Other kinds always come back
/// whole. So a log that grew large during a storage outage does not have to fit in memory to
/// be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBudget {
    pub kind: u8,
    pub bytes: usize,
    pub head: usize,
}

impl WalConfig {
    /// The defaults: 64 MiB segments, 4 GiB on disk, 8 MiB batches.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            replay_budget: None,
        }
    }
}

/// One record as replayed at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub kind: u8,
    /// The payload, or only its head when replay was over its [`ReplayBudget`].
    pub payload: Vec<u8>,
    /// The payload's full length.
    pub len: usize,
}

impl Record {
    /// Whether `payload` is the whole payload.
    pub fn is_whole(&self) -> bool {
        self.payload.len() == self.len
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub wal_id: String,
    /// Every intact record not yet released, in seq order. They are all held in memory, which
    /// `max_disk_bytes` bounds.
    pub records: Vec<Record>,
    pub report: RecoveryReport,
}

/// Counts from replay. Anything but `segments` and `records` being non-zero means damage (or
/// a crash mid-write, for `truncated_tail_bytes`) and is worth a warning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Records delivered in [`Recovered::records`].
    pub records: usize,
    /// Damaged byte ranges skipped (each may have held several records).
    pub corrupt_regions: usize,
    pub bytes_skipped: u64,
    /// Bytes cut from the end of the newest segment: a write cut short by a crash, or junk.
    pub truncated_tail_bytes: u64,
    /// Intact records dropped because their seq was not above the previous one.
    pub dropped_records: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Over the disk cap; nothing was written. Shed load (429/503) until segments are
    /// released.
    #[error("the write-ahead log is full ({disk_bytes} of {cap} bytes); retry once storage catches up")]
    Full { disk_bytes: u64, cap: u64 },
    /// A payload above [`MAX_PAYLOAD_BYTES`]; nothing was written.
    #[error("a record of {bytes} bytes is over the write-ahead log's {max}-byte limit; send smaller batches")]
    TooLarge { bytes: usize, max: usize },
    /// Writing failed (for example ENOSPC). The failed records are not durable and were cut
    /// from the file, so a retry may succeed once the cause is gone.
    #[error("writing to the write-ahead log failed and nothing of the batch is durable; retry later")]
    Io(#[source] io::Error),
    /// An fsync failed earlier, so what is durable is unknown; every request is refused until
    /// the process restarts and replays the log.
    #[error("the write-ahead log stopped after a failed fsync; restart the process")]
    Poisoned,
    /// Only from [`Wal::append_lazy`]: the writer's queue is full and lazy appends never wait.
    #[error("the write-ahead log's queue is full; retry later")]
    QueueFull,
    #[error("the write-ahead log is closed")]
    Closed,
    /// At open: the directory cannot be used (unreadable, locked by another writer, id lost).
    #[error("the write-ahead log cannot be opened: {0}")]
    Corrupt(String),
}

/// A failure to inject into the writer, for tests of the paths real disks rarely take.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next `writes` batch writes put half their bytes on disk, then fail with ENOSPC.
    NoSpace { writes: u32 },
    /// The next fsync of a segment fails with EIO, which poisons the log.
    SyncFails,
}

/// A handle to an open log. Cheap to clone; every clone talks to the same writer thread, which
/// stops after [`Wal::close`] or once every handle is dropped.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    wal_id: String,
    tx: mpsc::Sender<Request>,
    /// The next seq to hand out; locked across the queue send so that queue order is seq order.
    next_seq: Mutex<u64>,
    status: Arc<Status>,
    stopped: watch::Receiver<bool>,
}

impl Wal {
    /// Opens (creating if needed) the log in `config.dir`, replays it, and starts the writer
    /// thread. Blocking: reads every segment, so call it at startup or from `spawn_blocking`.
    /// Fails with [`WalError::Corrupt`] when the directory cannot be used, including when
    /// another open handle (in this process or another) holds it.
    pub fn open(config: WalConfig) -> Result<(Wal, Recovered), WalError> {
        let opened = recovery::open_dir(&config)?;
        tracing::info!(
            dir = %config.dir.display(),
            segments = opened.report.segments,
            records = opened.report.records,
            corrupt_regions = opened.report.corrupt_regions,
            bytes_skipped = opened.report.bytes_skipped,
            truncated_tail_bytes = opened.report.truncated_tail_bytes,
            next_seq = opened.next_seq,
            "wal opened"
        );
        let status = Arc::new(Status {
            dir: config.dir.clone(),
            max_disk_bytes: config.max_disk_bytes,
            disk_bytes: AtomicU64::new(opened.disk_bytes),
            poisoned: AtomicBool::new(false),
            fsync_count: AtomicU64::new(0),
            failing_writes: AtomicU32::new(0),
            failing_syncs: AtomicU32::new(0),
            segments: Mutex::new(opened.segments),
        });
        let last_seq = opened.next_seq.saturating_sub(1);
        let writer = Writer {
            status: Arc::clone(&status),
            segment_bytes: config.segment_bytes,
            max_batch_bytes: config.max_batch_bytes,
            file: opened.active,
            offset: opened.active_len,
            last_written_seq: last_seq,
            durable_seq: last_seq,
            _dir_lock: opened.lock,
            dirty: false,
            needs_truncate: false,
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (stopped_tx, stopped) = watch::channel(false);
        std::thread::Builder::new()
            .name("wal-writer".to_owned())
            .spawn(move || writer.run(rx, stopped_tx))
            .map_err(|e| WalError::Corrupt(format!("cannot start the wal writer thread: {e}")))?;
        let wal = Wal { inner: Arc::new(Inner { wal_id: opened.wal_id.clone(), tx, next_seq: Mutex::new(opened.next_seq), status, stopped }) };
        let recovered = Recovered { wal_id: opened.wal_id, records: opened.records, report: opened.report };
        Ok((wal, recovered))
    }

    /// Appends one record and waits until it is fsynced. `Ok(seq)` means durable.
    ///
    /// Waits while the queue is full. Cancelling (dropping the future) after the record was
    /// queued does not take it back: it is still written, and replayed after a restart.
    pub async fn append(&self, kind: u8, payload: Vec<u8>) -> Result<u64, WalError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(kind, payload, Some(reply)).await?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Appends without waiting for the fsync: the record is written in order and made durable
    /// by the next group commit (or [`Wal::sync`], or close). Only for records whose loss is
    /// harmless, such as "batch done" notes. Never waits: when the queue is full it fails with
    /// [`WalError::QueueFull`]. Returns the seq the record gets; if writing it later fails,
    /// nobody is told (it is logged).
    pub fn append_lazy(&self, kind: u8, payload: Vec<u8>) -> Result<u64, WalError> {
        self.check_append(payload.len())?;
        let permit = self.inner.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => WalError::QueueFull,
            mpsc::error::TrySendError::Closed(()) => WalError::Closed,
        })?;
        Ok(self.send_append(permit, kind, payload, None))
    }

    /// The highest seq handed out so far (0 before the first). Any append that starts after
    /// this call gets a larger seq.
    pub fn last_seq(&self) -> u64 {
        lock(&self.inner.next_seq).saturating_sub(1)
    }

    /// Fsyncs everything appended so far (lazy records included) and returns the highest
    /// durable seq. A lazy record whose write failed is not durable, though later ones may
    /// be; the writer logs such failures.
    pub async fn sync(&self) -> Result<u64, WalError> {
        self.check_poisoned()?;
        let (reply, answer) = oneshot::channel();
        self.inner.tx.send(Request::Sync(reply)).await.map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Deletes every whole segment whose records all have a seq below `seq`; the active
    /// segment is never deleted (its name keeps numbering monotonic). Call it with one past
    /// the highest seq storage has confirmed. Blocking, but only unlinks files.
    pub fn release_before(&self, seq: u64) -> Result<(), WalError> {
        let status = &self.inner.status;
        let mut segments = lock(&status.segments);
        let active = segments.len().saturating_sub(1);
        let mut result = Ok(());
        let mut index = 0;
        segments.retain(|segment| {
            let keep = index >= active || segment.max_seq >= seq || result.is_err();
            index += 1;
            if keep {
                return true;
            }
            let path = status.dir.join(format::segment_file_name(segment.first_seq));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(WalError::Io(e));
                    return true;
                }
            }
            let _ = status.disk_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| Some(bytes.saturating_sub(segment.bytes)));
            false
        });
        result
    }

    /// Reads back the records with the given seqs (those still on disk), in seq order.
    /// Blocking: it reads whole segment files, so call it from `spawn_blocking`. Only records
    /// that were acknowledged (fsynced) are certain to be found; the pipeline uses it to load
    /// rows it dropped from memory while storage was slow or down.
    pub fn read(&self, seqs: &std::collections::BTreeSet<u64>) -> Result<Vec<Record>, WalError> {
        let (Some(&lowest), Some(&highest)) = (seqs.first(), seqs.last()) else { return Ok(Vec::new()) };
        let status = &self.inner.status;
        let ranges: Vec<(u64, u64)> = {
            let segments = lock(&status.segments);
            let last = segments.len().saturating_sub(1);
            segments.iter().enumerate().map(|(i, s)| (s.first_seq, if i == last { u64::MAX } else { s.max_seq })).collect()
        };
        let mut out = Vec::with_capacity(seqs.len());
        for (first, max) in ranges {
            if max < lowest || first > highest || seqs.range(first..=max).next().is_none() {
                continue;
            }
            let path = status.dir.join(format::segment_file_name(first));
            let buf = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(WalError::Io(e)),
            };
            let mut pos = 0;
            while pos < buf.len() {
                match format::decode_at(&buf, pos) {
                    Some(r) => {
                        if seqs.contains(&r.seq) {
                            out.push(Record { seq: r.seq, kind: r.kind, payload: r.payload.to_vec(), len: r.payload.len() });
                        }
                        pos = r.end;
                    }
                    None => match format::find_next_record(&buf, pos + 1) {
                        Some(next) => pos = next,
                        None => break,
                    },
                }
            }
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    /// The log's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.status.dir
    }

    /// Bytes all segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.status.disk_bytes.load(Ordering::Acquire)
    }

    /// True once an fsync has failed; from then on every request fails with
    /// [`WalError::Poisoned`] and the process should restart.
    pub fn is_poisoned(&self) -> bool {
        self.inner.status.poisoned.load(Ordering::Acquire)
    }

    /// The log's id: created with the directory, stable across restarts.
    pub fn wal_id(&self) -> &str {
        &self.inner.wal_id
    }

    /// Segment fsyncs done since open. Far below the number of appends under concurrency;
    /// that is the point of group commit.
    pub fn fsync_count(&self) -> u64 {
        self.inner.status.fsync_count.load(Ordering::Relaxed)
    }

    /// Syncs what is queued, stops the writer thread and releases the directory. Appends
    /// after it fail with [`WalError::Closed`]. Safe to call more than once, from any clone.
    pub async fn close(&self) {
        // Fails only when the writer is already stopping, which is what we want anyway.
        let _ = self.inner.tx.send(Request::Close).await;
        let mut stopped = self.inner.stopped.clone();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Makes the writer fail on purpose. For tests only.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        let status = &self.inner.status;
        match fault {
            Fault::NoSpace { writes } => status.failing_writes.store(writes, Ordering::Release),
            Fault::SyncFails => {
                status.failing_syncs.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    /// Refuses early what the writer would refuse anyway.
    fn check_append(&self, payload_len: usize) -> Result<(), WalError> {
        self.check_poisoned()?;
        if payload_len > MAX_PAYLOAD_BYTES {
            return Err(WalError::TooLarge { bytes: payload_len, max: MAX_PAYLOAD_BYTES });
        }
        let disk_bytes = self.disk_bytes();
        let cap = self.inner.status.max_disk_bytes;
        if disk_bytes.saturating_add(format::encoded_len(payload_len) as u64) > cap {
            return Err(WalError::Full { disk_bytes, cap });
        }
        Ok(())
    }

    /// Queues one append and returns its seq.
    async fn enqueue(&self, kind: u8, payload: Vec<u8>, reply: Option<writer::Reply>) -> Result<u64, WalError> {
        self.check_append(payload.len())?;
        let permit = self.inner.tx.reserve().await.map_err(|_| WalError::Closed)?;
        Ok(self.send_append(permit, kind, payload, reply))
    }

    /// Numbers the record and queues it in one step, so queue order is seq order. Nothing
    /// here blocks: the queue slot is already reserved.
    fn send_append(&self, permit: mpsc::Permit<'_, Request>, kind: u8, payload: Vec<u8>, reply: Option<writer::Reply>) -> u64 {
        let mut next_seq = lock(&self.inner.next_seq);
        let seq = *next_seq;
        *next_seq = seq.saturating_add(1);
        permit.send(Request::Append(Append { seq, kind, payload, reply }));
        seq
    }
}
