//! The writer thread: the only code that writes segment files.
//!
//! Group commit: the thread takes one request off the queue, then everything else already
//! queued (up to `max_batch_bytes`), encodes it all into one buffer, writes it with one call,
//! makes it durable with one `sync_data`, and only then answers each waiter. Many concurrent
//! appenders therefore share one fsync, and no one hears "durable" before the fsync returned.
//!
//! Failures:
//! - a failed write (for example ENOSPC) leaves nothing durable from that batch: the segment
//!   is cut back to where the batch began, its waiters get `WalError::Io`, and the next batch
//!   is tried normally, so ingest recovers by itself once space returns;
//! - a failed fsync poisons the log: after it the kernel may have dropped dirty pages, so what
//!   is on disk is unknown, and every request is refused until the process restarts and
//!   replays what really is on disk.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot, watch};

use super::WalError;
use super::format;

pub(super) type Reply = oneshot::Sender<Result<u64, WalError>>;

pub(super) enum Request {
    Append(Append),
    /// Fsync everything written so far; answered with the highest durable seq.
    Sync(Reply),
    /// Sync what is queued, then stop.
    Close,
}

pub(super) struct Append {
    pub seq: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
    /// `None` for lazy appends: written in order, made durable by a later fsync.
    pub reply: Option<Reply>,
}

/// One segment file, known by the first seq it may hold (its name).
#[derive(Debug, Clone, Copy)]
pub(super) struct SegmentEntry {
    pub first_seq: u64,
    /// An upper bound on the seqs in it, so release knows when all of them are done. Kept
    /// for every segment but the active one, which is never released.
    pub max_seq: u64,
    /// Size on disk; kept up to date for every segment but the active one.
    pub bytes: u64,
}

/// State shared by the writer thread and every `Wal` handle.
pub(super) struct Status {
    pub dir: PathBuf,
    pub max_disk_bytes: u64,
    pub disk_bytes: AtomicU64,
    pub poisoned: AtomicBool,
    pub fsync_count: AtomicU64,
    /// Fault injection: how many of the next writes / fsyncs fail.
    pub failing_writes: AtomicU32,
    pub failing_syncs: AtomicU32,
    pub segments: Mutex<Vec<SegmentEntry>>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these values half-updated, so the data stays usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) struct Writer {
    pub status: Arc<Status>,
    pub segment_bytes: u64,
    pub max_batch_bytes: usize,
    /// The active segment and the offset where the next batch goes.
    pub file: File,
    pub offset: u64,
    /// Highest seq written to a segment (durable or not yet).
    pub last_written_seq: u64,
    /// Highest seq known to be on disk.
    pub durable_seq: u64,
    /// Keeps the directory locked for as long as the writer runs.
    pub _dir_lock: File,
    /// Written since the last fsync.
    pub dirty: bool,
    /// A failed write could not be cut back yet; no write happens until it is.
    pub needs_truncate: bool,
}

impl Writer {
    /// Serves requests until every handle is gone or `Close` arrives and the queue is drained,
    /// then releases the files and reports that it stopped.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>, stopped: watch::Sender<bool>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = Group::new(&self.status);
            group.add(first);
            while group.buf.len() < self.max_batch_bytes {
                match rx.try_recv() {
                    Ok(request) => group.add(request),
                    Err(_) => break,
                }
            }
            if group.close {
                // New senders now fail fast with `Closed`; what is queued is still served.
                rx.close();
            }
            self.commit(group);
        }
        if self.dirty
            && !self.status.poisoned.load(Ordering::Acquire)
            && let Err(error) = self.sync()
        {
            self.poison(&error);
        }
        drop(self);
        stopped.send_replace(true);
    }

    fn commit(&mut self, group: Group) {
        let Group { buf, last_seq, mut waiters, syncs, close, .. } = group;
        let fail_all = |waiters: Vec<(u64, Reply)>, syncs: Vec<Reply>, error: &dyn Fn() -> WalError| {
            for (_, reply) in waiters {
                let _ = reply.send(Err(error()));
            }
            for reply in syncs {
                let _ = reply.send(Err(error()));
            }
        };
        if self.status.poisoned.load(Ordering::Acquire) {
            return fail_all(waiters, syncs, &|| WalError::Poisoned);
        }
        if let Some(last_seq) = last_seq {
            match self.write(&buf) {
                Ok(()) => self.last_written_seq = last_seq,
                Err(error) => {
                    // The batch's appenders hear it failed. Syncs in the group still make
                    // earlier records durable and report the highest durable seq, which
                    // tells a lazy appender whether its record made it.
                    tracing::warn!(%error, bytes = buf.len(), waiters = waiters.len(), "wal write failed, batch not durable");
                    for (_, reply) in waiters.drain(..) {
                        let _ = reply.send(Err(WalError::Io(copy_io_error(&error))));
                    }
                }
            }
        }
        let must_sync = close || !syncs.is_empty() || !waiters.is_empty();
        if must_sync
            && self.dirty
            && let Err(error) = self.sync()
        {
            self.poison(&error);
            return fail_all(waiters, syncs, &|| WalError::Poisoned);
        }
        for (seq, reply) in waiters {
            let _ = reply.send(Ok(seq));
        }
        for reply in syncs {
            let _ = reply.send(Ok(self.durable_seq));
        }
        if self.offset >= self.segment_bytes {
            self.rotate();
        }
    }

    /// Writes one batch at the end of the active segment, or leaves the segment as it was.
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.needs_truncate {
            self.file.set_len(self.offset)?;
            self.needs_truncate = false;
        }
        if let Err(error) = self.write_at_end(buf) {
            // Part of the batch may have reached the file. Cut it away so that the next batch
            // starts on a record boundary and no record we refused is ever replayed.
            if self.file.set_len(self.offset).is_err() {
                self.needs_truncate = true;
            }
            return Err(error);
        }
        let len = buf.len() as u64;
        self.offset += len;
        self.status.disk_bytes.fetch_add(len, Ordering::AcqRel);
        self.dirty = true;
        Ok(())
    }

    fn write_at_end(&self, buf: &[u8]) -> io::Result<()> {
        if take_one(&self.status.failing_writes) {
            // Like a disk filling up mid-batch: half the bytes land, then ENOSPC.
            let half = buf.get(..buf.len() / 2).unwrap_or_default();
            self.file.write_all_at(half, self.offset)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_all_at(buf, self.offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        if take_one(&self.status.failing_syncs) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()?;
        self.status.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
        self.durable_seq = self.last_written_seq;
        Ok(())
    }

    fn poison(&self, error: &io::Error) {
        self.status.poisoned.store(true, Ordering::Release);
        tracing::error!(%error, "wal fsync failed, refusing every request until restart");
    }

    /// Closes the full active segment (durably) and starts the next one. If the new file
    /// cannot be created the current one simply keeps growing, and rotation is tried again
    /// after the next batch.
    fn rotate(&mut self) {
        if self.needs_truncate {
            return;
        }
        if self.dirty
            && let Err(error) = self.sync()
        {
            return self.poison(&error);
        }
        // Above every seq in the closing segment, at most the next seq to arrive.
        let first_seq = self.last_written_seq.saturating_add(1);
        let file = match create_segment(&self.status.dir, first_seq) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error, "wal could not start a new segment, growing the current one");
                return;
            }
        };
        if let Err(error) = sync_dir(&self.status.dir) {
            // The new name may not survive a crash, so records put in it could vanish.
            return self.poison(&error);
        }
        let mut segments = lock(&self.status.segments);
        if let Some(closing) = segments.last_mut() {
            closing.bytes = self.offset;
            closing.max_seq = self.last_written_seq;
        }
        segments.push(SegmentEntry { first_seq, max_seq: u64::MAX, bytes: 0 });
        drop(segments);
        self.file = file;
        self.offset = 0;
    }
}

/// The requests of one group commit, with the appends already encoded.
struct Group {
    status: Arc<Status>,
    buf: Vec<u8>,
    last_seq: Option<u64>,
    waiters: Vec<(u64, Reply)>,
    syncs: Vec<Reply>,
    close: bool,
}

impl Group {
    fn new(status: &Arc<Status>) -> Self {
        Group { status: Arc::clone(status), buf: Vec::new(), last_seq: None, waiters: Vec::new(), syncs: Vec::new(), close: false }
    }

    fn add(&mut self, request: Request) {
        let append = match request {
            Request::Append(append) => append,
            Request::Sync(reply) => return self.syncs.push(reply),
            Request::Close => {
                self.close = true;
                return;
            }
        };
        if self.status.poisoned.load(Ordering::Acquire) {
            return answer(append.reply, Err(WalError::Poisoned));
        }
        // Only this thread adds to `disk_bytes`, so the check cannot be raced past.
        let disk_bytes = self.status.disk_bytes.load(Ordering::Acquire);
        let cap = self.status.max_disk_bytes;
        let len = format::encoded_len(append.payload.len()) as u64;
        if disk_bytes.saturating_add(self.buf.len() as u64).saturating_add(len) > cap {
            return answer(append.reply, Err(WalError::Full { disk_bytes, cap }));
        }
        format::encode_into(&mut self.buf, append.seq, append.kind, &append.payload);
        self.last_seq = Some(append.seq);
        if let Some(reply) = append.reply {
            self.waiters.push((append.seq, reply));
        }
    }
}

fn answer(reply: Option<Reply>, result: Result<u64, WalError>) {
    if let Some(reply) = reply {
        // The waiter may have been cancelled; the outcome stands either way.
        let _ = reply.send(result);
    }
}

fn take_one(counter: &AtomicU32) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
}

/// `io::Error` is not `Clone`; every waiter of a failed batch gets an equal copy.
fn copy_io_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

/// Creates an empty segment named after `first_seq`. Its name is durable only after
/// [`sync_dir`], which must happen before anything written to it is acknowledged.
pub(super) fn create_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(dir.join(format::segment_file_name(first_seq)))
}

/// Makes a directory's entries (a created or removed file) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
