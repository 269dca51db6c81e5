//! From an accepted request to stored rows, exactly once.
//!
//! 1. [`Pipeline::submit`] appends the request's rows to the write-ahead log as one record and
//!    returns once it is fsynced: that is the acknowledgement. The rows also go to an in-memory
//!    buffer per table. Memory is bounded: above half of `buffer_max_bytes`, new records are
//!    kept only in the log and read back when their batch is cut, so a storage outage is
//!    absorbed on disk up to `wal_max_disk_bytes` (then [`SubmitError::DiskCap`], a 503); the
//!    buffer itself full is [`SubmitError::Backpressure`], a 429.
//! 2. The flusher cuts a buffer into a batch when it reaches its row or byte limit or its age
//!    limit. Before writing, it logs a *batch marker* naming the records the batch is made of;
//!    the marker's log position is the batch's identity ([`BatchId`]).
//! 3. The batch is written to the store (retried with backoff until it succeeds; stores are
//!    idempotent per batch id). Then a *done* note is logged, without waiting for fsync: losing
//!    it only means the batch is written again under the same id, which the store drops.
//! 4. Log segments whose records are all stored are deleted.
//!
//! After a crash, recovery rebuilds every marked-but-not-done batch exactly as it was (same
//! records, same id), and buffers records no marker named. So every acknowledged record is
//! stored, and stored once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use schemas::{Rows, Table, codec};
use storage::{BatchId, Store, WriteBatch};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::IngestMetrics;
use crate::wal::{RecoveryReport, Wal, WalConfig, WalError};

mod recovery;

use recovery::encode_marker;

const KIND_ROWS: u8 = 1;
const KIND_BATCH: u8 = 2;
const KIND_DONE: u8 = 3;

/// Permanent refusals by storage before a batch is set aside in the dead-letter directory.
const REFUSALS_BEFORE_DEAD_LETTER: u32 = 5;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub batch_max_rows: usize,
    pub batch_max_bytes: usize,
    pub batch_max_age: Duration,
    /// Acknowledged bytes not yet stored, at most. Above it, submits get a 429.
    pub buffer_max_bytes: usize,
    /// Write-ahead log size on disk, at most. Above it (a long storage outage, a full disk),
    /// submits get a 503.
    pub wal_max_disk_bytes: u64,
    /// Batches written to storage at the same time.
    pub flush_concurrency: usize,
    pub retry_max_backoff: Duration,
    /// Where batches storage refuses for good are set aside.
    pub dead_letter_dir: std::path::PathBuf,
    /// Rows are refused (503) when the file system holding the log has less free space than
    /// this, so batch markers and done notes (which must never fail for lack of space, or
    /// nothing could ever be released) always find room.
    pub disk_headroom_bytes: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max_rows: 100_000,
            batch_max_bytes: 32 << 20,
            batch_max_age: Duration::from_secs(1),
            buffer_max_bytes: 512 << 20,
            wal_max_disk_bytes: 8 << 30,
            flush_concurrency: 2,
            retry_max_backoff: Duration::from_secs(5),
            dead_letter_dir: std::path::PathBuf::from("dead-letter"),
            disk_headroom_bytes: 256 << 20,
        }
    }
}

impl PipelineConfig {
    /// The byte size at which a batch is cut. Batches being written hold their rows in memory
    /// (spilled ones are read back), so together they may take at most a quarter of the
    /// buffer: with at most half of it for rows waiting, memory stays under
    /// `buffer_max_bytes` even during a long storage outage.
    fn batch_bytes(&self) -> usize {
        self.batch_max_bytes.min(self.buffer_max_bytes / (4 * self.flush_concurrency.max(1))).max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("ingest buffer is full ({buffered} bytes waiting for storage)")]
    Backpressure { buffered: usize },
    #[error("write-ahead log cannot take more: {0}")]
    Unavailable(#[from] WalError),
    #[error("write-ahead log is over its {cap} byte cap: storage is not keeping up or is down")]
    DiskCap { cap: u64 },
    #[error("the disk holding the write-ahead log has {free} bytes free, under the {headroom} byte headroom")]
    DiskFull { free: u64, headroom: u64 },
}

struct Entry {
    seq: u64,
    table: Table,
    rows_len: usize,
    /// `None`: kept only in the log (spilled); read back when the batch is cut.
    rows: Option<Rows>,
    bytes: usize,
}

impl Entry {
    fn new(seq: u64, rows: Rows, bytes: usize) -> Entry {
        Entry { seq, table: rows.table(), rows_len: rows.len(), rows: Some(rows), bytes }
    }
}

#[derive(Default)]
struct Buffer {
    entries: Vec<Entry>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
}

#[derive(Default)]
struct State {
    buffers: BTreeMap<Table, Buffer>,
    /// Log positions of row records not yet stored.
    unstored: BTreeSet<u64>,
    /// Log positions below which appends in progress may land (see `submit`).
    appending: BTreeMap<u64, usize>,
    /// Batches rebuilt by recovery, flushed before anything else.
    recovered: Vec<(u64, Vec<u64>, Rows, usize)>,
}

struct Inner {
    wal: Wal,
    store: Arc<dyn Store>,
    config: PipelineConfig,
    metrics: Arc<IngestMetrics>,
    state: Mutex<State>,
    buffered_bytes: AtomicUsize,
    wake: Notify,
    /// Set when the shutdown deadline passes: retry loops give up (the log keeps their rows).
    abandon: AtomicBool,
}

/// The ingest pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl Pipeline {
    /// Opens the log, recovers what it holds, and returns the pipeline with the recovery report.
    /// Call [`Pipeline::run_flusher`] to start writing to storage.
    pub fn open(
        mut wal: WalConfig,
        store: Arc<dyn Store>,
        config: PipelineConfig,
        metrics: Arc<IngestMetrics>,
    ) -> Result<(Pipeline, RecoveryReport), WalError> {
        // Replay keeps at most half the buffer of rows whole; the rest is read back per batch.
        wal.replay_budget = Some(crate::wal::ReplayBudget { kind: KIND_ROWS, bytes: config.buffer_max_bytes / 2, head: 16 });
        let (wal, recovered) = Wal::open(wal)?;
        let inner = Inner {
            wal,
            store,
            config,
            metrics,
            state: Mutex::new(State::default()),
            buffered_bytes: AtomicUsize::new(0),
            wake: Notify::new(),
            abandon: AtomicBool::new(false),
        };
        let pipeline = Pipeline { inner: Arc::new(inner) };
        pipeline.recover(recovered.records);
        Ok((pipeline, recovered.report))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that loses
        // acknowledged data (the log has it), so keep going with the inner value.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `rows` durable and queues them for storage. `Ok` is the acknowledgement.
    ///
    /// The work runs in its own task: if the client goes away mid-way, the record is still
    /// either fully registered or not logged at all.
    pub async fn submit(&self, rows: Rows) -> Result<u64, SubmitError> {
        let this = self.clone();
        match tokio::spawn(async move { this.submit_inner(rows).await }).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "submit task failed");
                Err(SubmitError::Unavailable(WalError::Closed))
            }
        }
    }

    async fn submit_inner(&self, rows: Rows) -> Result<u64, SubmitError> {
        let inner = &self.inner;
        let cap = inner.config.wal_max_disk_bytes;
        if inner.wal.disk_bytes() > cap {
            return Err(SubmitError::DiskCap { cap });
        }
        let headroom = inner.config.disk_headroom_bytes;
        if let Some(free) = free_bytes(inner.wal.dir()).filter(|free| *free < headroom) {
            return Err(SubmitError::DiskFull { free, headroom });
        }
        let payload = codec::encode(&rows);
        let bytes = payload.len();
        let before = inner.buffered_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > inner.config.buffer_max_bytes {
            inner.buffered_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(SubmitError::Backpressure { buffered: before });
        }
        // Until this record is registered as unstored, no segment at or after `floor` may be
        // released: the record lands there.
        let floor = inner.wal.last_seq() + 1;
        *self.state().appending.entry(floor).or_default() += 1;
        let appended = inner.wal.append(KIND_ROWS, payload).await;
        let mut state = self.state();
        if let Some(n) = state.appending.get_mut(&floor) {
            *n -= 1;
            if *n == 0 {
                state.appending.remove(&floor);
            }
        }
        let seq = match appended {
            Ok(seq) => seq,
            Err(e) => {
                inner.buffered_bytes.fetch_sub(bytes, Ordering::AcqRel);
                return Err(e.into());
            }
        };
        state.unstored.insert(seq);
        let entry = self.maybe_spill(Entry::new(seq, rows, bytes));
        let full = push(&mut state, entry);
        self.update_gauges(&state);
        drop(state);
        if full.is_some_and(|t| self.due(t, false)) {
            inner.wake.notify_one();
        }
        Ok(seq)
    }

    /// Keeps the entry's rows only in the log when memory is over half the buffer.
    fn maybe_spill(&self, mut entry: Entry) -> Entry {
        let inner = &self.inner;
        if inner.buffered_bytes.load(Ordering::Acquire) > inner.config.buffer_max_bytes / 2 && entry.rows.take().is_some() {
            inner.buffered_bytes.fetch_sub(entry.bytes, Ordering::AcqRel);
            inner.metrics.spilled.inc();
        }
        entry
    }

    /// Reads back the rows of spilled entries and joins a batch's rows, in log order. Retries
    /// read errors until they pass (or shutdown gives up: `None`, the rows stay in the log).
    async fn load(&self, entries: Vec<Entry>) -> Option<(Vec<u64>, Rows, usize)> {
        let inner = &self.inner;
        let missing: BTreeSet<u64> = entries.iter().filter(|e| e.rows.is_none()).map(|e| e.seq).collect();
        let mut loaded: HashMap<u64, Rows> = HashMap::new();
        let mut backoff = Duration::from_millis(50);
        while !missing.is_empty() {
            let (wal, wanted) = (inner.wal.clone(), missing.clone());
            match tokio::task::spawn_blocking(move || wal.read(&wanted)).await {
                Ok(Ok(records)) => {
                    for r in records {
                        match codec::decode(&r.payload) {
                            Ok(rows) => {
                                inner.buffered_bytes.fetch_add(r.payload.len(), Ordering::AcqRel);
                                loaded.insert(r.seq, rows);
                            }
                            Err(e) => tracing::error!(seq = r.seq, error = %e, "spilled record does not decode"),
                        }
                    }
                    break;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read spilled records back from the write-ahead log; retrying"),
                Err(e) => tracing::warn!(error = %e, "spilled record reader failed; retrying"),
            }
            if inner.abandon.load(Ordering::Acquire) {
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(inner.config.retry_max_backoff);
        }
        let (mut seqs, mut lost, mut bytes) = (Vec::with_capacity(entries.len()), Vec::new(), 0);
        let mut parts = Vec::with_capacity(entries.len());
        for e in entries {
            match e.rows.or_else(|| loaded.remove(&e.seq)) {
                Some(r) => {
                    seqs.push(e.seq);
                    bytes += e.bytes;
                    parts.push((r, 0));
                }
                None => lost.push(e.seq),
            }
        }
        if !lost.is_empty() {
            // The log was read, and these records are not in it (damage on disk): nothing can
            // bring them back, so they must not hold the log's segments forever.
            tracing::error!(records = lost.len(), first = lost[0], "acknowledged records could not be read back from the write-ahead log; they are lost");
            let mut state = self.state();
            for s in &lost {
                state.unstored.remove(s);
            }
        }
        let (rows, _) = concat(parts.into_iter())?;
        Some((seqs, rows, bytes))
    }

    fn due(&self, table: Table, force: bool) -> bool {
        let c = &self.inner.config;
        let state = self.state();
        state.buffers.get(&table).is_some_and(|b| {
            !b.entries.is_empty()
                && (force || b.rows >= c.batch_max_rows || b.bytes >= c.batch_bytes() || b.oldest.is_some_and(|t| t.elapsed() >= c.batch_max_age))
        })
    }

    /// Takes the next batch of `table` from its buffer (at most the batch limits, at least one
    /// record).
    fn cut(&self, table: Table) -> Option<Vec<Entry>> {
        let c = &self.inner.config;
        let max_bytes = c.batch_bytes();
        let mut state = self.state();
        let buffer = state.buffers.get_mut(&table)?;
        let (mut n, mut rows, mut bytes) = (0, 0, 0);
        for e in &buffer.entries {
            if n > 0 && (rows + e.rows_len > c.batch_max_rows || bytes + e.bytes > max_bytes) {
                break;
            }
            n += 1;
            rows += e.rows_len;
            bytes += e.bytes;
        }
        let taken: Vec<Entry> = buffer.entries.drain(..n).collect();
        buffer.rows -= rows;
        buffer.bytes -= bytes;
        buffer.oldest = if buffer.entries.is_empty() { None } else { Some(Instant::now()) };
        Some(taken)
    }

    /// Writes batches to storage until `stop` is notified, then stores what is buffered until
    /// `drain_deadline`; what is not stored by then stays in the log for the next start.
    pub async fn run_flusher(&self, stop: Arc<Notify>, drain_deadline: Duration) {
        let inner = &self.inner;
        let permits = Arc::new(Semaphore::new(inner.config.flush_concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let recovered = std::mem::take(&mut self.state().recovered);
        for (marker, seqs, rows, bytes) in recovered {
            // The permit is taken inside the task, so a storage outage at start cannot keep
            // the loop below from seeing the stop signal.
            let (this, permits) = (self.clone(), permits.clone());
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else { return };
                this.store_batch(marker, seqs, rows, bytes).await;
            });
        }
        let tick = (inner.config.batch_max_age / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
        let stopped = stop.notified();
        tokio::pin!(stopped);
        'run: loop {
            tokio::select! {
                _ = &mut stopped => break 'run,
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            while tasks.try_join_next().is_some() {}
            for table in Table::ALL {
                while self.due(table, false) {
                    let permit = tokio::select! {
                        p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                        _ = &mut stopped => break 'run,
                    };
                    let Some(entries) = self.cut(table) else { break };
                    tasks.spawn(self.clone().flush(table, entries, permit));
                }
            }
        }

        // Draining: cut everything buffered, as permits allow, until done or the deadline.
        let deadline = tokio::time::sleep(drain_deadline);
        tokio::pin!(deadline);
        loop {
            for table in Table::ALL {
                while self.due(table, true) {
                    let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                    let Some(entries) = self.cut(table) else { break };
                    tasks.spawn(self.clone().flush(table, entries, permit));
                }
            }
            let idle = Table::ALL.iter().all(|t| !self.due(*t, true));
            if tasks.is_empty() && idle {
                break;
            }
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)), if tasks.is_empty() => {}
                _ = &mut deadline => {
                    tracing::warn!(pending = tasks.len(), unstored = self.unstored_records(), "shutdown deadline passed with rows unstored; they stay in the write-ahead log");
                    inner.abandon.store(true, Ordering::Release);
                    tasks.abort_all();
                    break;
                }
            }
        }
        if let Err(e) = inner.wal.sync().await {
            tracing::warn!(error = %e, "final write-ahead log sync failed");
        }
    }

    /// One batch: read back spilled rows, log the marker, write, log done.
    async fn flush(self, table: Table, entries: Vec<Entry>, permit: tokio::sync::OwnedSemaphorePermit) {
        let _permit = permit;
        let Some((seqs, rows, bytes)) = self.load(entries).await else { return };
        if let Some(marker) = self.mark(table, &seqs).await {
            self.store_batch(marker, seqs, rows, bytes).await;
        }
    }

    /// Logs the batch marker durably; its position is the batch id. `None` if the log refuses
    /// for good (poisoned, closed, or shutting down): the records stay unstored in the log and
    /// are batched again on the next start.
    async fn mark(&self, table: Table, seqs: &[u64]) -> Option<u64> {
        let payload = encode_marker(table, seqs);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.inner.wal.append(KIND_BATCH, payload.clone()).await {
                Ok(seq) => return Some(seq),
                Err(WalError::Poisoned | WalError::Closed) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot log batch marker; retrying");
                    if self.inner.abandon.load(Ordering::Acquire) {
                        return None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.inner.config.retry_max_backoff);
                }
            }
        }
    }

    async fn store_batch(&self, marker: u64, seqs: Vec<u64>, rows: Rows, bytes: usize) {
        let inner = &self.inner;
        let batch = WriteBatch { id: BatchId { wal_id: inner.wal.wal_id().to_owned(), seq: marker }, rows: rows.into() };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut refusals = 0;
        loop {
            match inner.store.write(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    let kind = if e.is_transient() { "transient" } else { "rejected" };
                    inner.metrics.flush_errors.get_or_create(&vec![("kind", kind)]).inc();
                    if inner.abandon.load(Ordering::Acquire) {
                        return;
                    }
                    if !e.is_transient() {
                        refusals += 1;
                        // Storage refuses this batch for good: keep it aside rather than let one
                        // batch stop every tenant's ingest.
                        if refusals >= REFUSALS_BEFORE_DEAD_LETTER && self.dead_letter(&batch, &e) {
                            break;
                        }
                    }
                    tracing::warn!(error = %e, batch = marker, rows = batch.rows.len(), retry_in_ms = backoff.as_millis() as u64, "storage write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(inner.config.retry_max_backoff);
                }
            }
        }
        inner.metrics.flush_rows.observe(batch.rows.len() as f64);
        inner.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        inner.metrics.stored_rows.inc_by(batch.rows.len() as u64);
        // The done note is made durable before any segment is released: a batch whose records
        // were released must never be rebuilt (from the records still left) after a restart.
        let done_durable = inner.wal.append(KIND_DONE, marker.to_le_bytes().to_vec()).await.is_ok();
        inner.buffered_bytes.fetch_sub(bytes, Ordering::AcqRel);
        let release = {
            let mut state = self.state();
            for s in &seqs {
                state.unstored.remove(s);
            }
            self.update_gauges(&state);
            let lowest_unstored = state.unstored.first().copied().unwrap_or(u64::MAX);
            let lowest_appending = state.appending.keys().next().copied().unwrap_or(u64::MAX);
            // Read under the lock: an append registered after this point gets a larger seq, so
            // its segment is never released by this stale value.
            let next = inner.wal.last_seq().saturating_add(1);
            lowest_unstored.min(lowest_appending).min(next)
        };
        if !done_durable {
            tracing::warn!(batch = marker, "could not log batch done; keeping its write-ahead log segments");
            return;
        }
        if let Err(e) = inner.wal.release_before(release) {
            tracing::warn!(error = %e, "could not delete stored write-ahead log segments");
        }
    }

    /// Writes a batch storage refuses for good to `dead_letter_dir`, so an operator can look
    /// at it and replay it. `false` if that fails too (the batch is then retried).
    fn dead_letter(&self, batch: &WriteBatch, error: &storage::StoreError) -> bool {
        let dir = &self.inner.config.dead_letter_dir;
        let path = dir.join(format!("{}-{}.rows", batch.id.wal_id, batch.id.seq));
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &codec::encode(&batch.rows))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        });
        match written {
            Ok(()) => {
                self.inner.metrics.dead_lettered_rows.inc_by(batch.rows.len() as u64);
                tracing::error!(error = %error, rows = batch.rows.len(), path = %path.display(), "storage refuses this batch for good; its rows were set aside in the dead-letter directory");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot write the dead-letter file");
                false
            }
        }
    }

    fn update_gauges(&self, state: &State) {
        let m = &self.inner.metrics;
        m.buffer_bytes.set(self.inner.buffered_bytes.load(Ordering::Relaxed) as i64);
        m.buffer_rows.set(state.buffers.values().map(|b| b.rows).sum::<usize>() as i64);
        m.wal_disk_bytes.set(self.inner.wal.disk_bytes() as i64);
    }

    /// Ready to acknowledge: the log is healthy and under its caps.
    pub fn ready(&self) -> Result<(), String> {
        let inner = &self.inner;
        if inner.wal.is_poisoned() {
            return Err("write-ahead log fsync failed; restart after checking the disk".into());
        }
        if inner.wal.disk_bytes() > inner.config.wal_max_disk_bytes {
            return Err("write-ahead log is over its cap; storage is not keeping up".into());
        }
        if free_bytes(inner.wal.dir()).is_some_and(|free| free < inner.config.disk_headroom_bytes) {
            return Err("the disk holding the write-ahead log is nearly full; free space or raise the disk".into());
        }
        Ok(())
    }

    /// Rows acknowledged and not yet stored.
    pub fn unstored_records(&self) -> usize {
        self.state().unstored.len()
    }

    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
}

/// Free bytes (for unprivileged users) on the file system holding `path`; `None` if unknown.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Adds an entry to its table's buffer; returns the table.
fn push(state: &mut State, entry: Entry) -> Option<Table> {
    let table = entry.table;
    let b = state.buffers.entry(table).or_default();
    b.rows += entry.rows_len;
    b.bytes += entry.bytes;
    b.oldest.get_or_insert_with(Instant::now);
    b.entries.push(entry);
    Some(table)
}

fn concat(parts: impl Iterator<Item = (Rows, usize)>) -> Option<(Rows, usize)> {
    // Sized once: growing a batch of 100,000 rows by doubling moves every row several times.
    let parts: Vec<(Rows, usize)> = parts.collect();
    let total: usize = parts.iter().map(|(r, _)| r.len()).sum();
    let mut out: Option<Rows> = None;
    let mut bytes = 0;
    for (mut rows, b) in parts {
        if out.is_none() {
            rows.reserve(total - rows.len());
        }
        bytes += b;
        match &mut out {
            None => out = Some(rows),
            Some(all) => {
                if all.append(rows).is_err() {
                    tracing::error!("records of two tables in one batch; this is a bug");
                }
            }
        }
    }
    out.map(|r| (r, bytes))
}
