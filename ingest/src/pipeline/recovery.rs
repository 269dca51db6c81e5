//! Recovery after a restart: the log's records become buffers again, unfinished batches
//! exactly as they were marked (same records, same id), and the batch marker's encoding.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use schemas::{Rows, Table, codec};

use super::{Entry, KIND_BATCH, KIND_DONE, KIND_ROWS, Pipeline, concat, push};
use crate::wal::Record;

impl Pipeline {
    /// Rebuilds the buffers from what the log replayed: unfinished batches exactly as they
    /// were marked, and records no marker named.
    pub(super) fn recover(&self, records: Vec<Record>) {
        /// A row record as replay returned it: whole, or only its head (over the replay
        /// budget), to be read back from the log when batched.
        enum Replayed {
            Whole(Rows),
            Head { table: Table, rows_len: usize },
        }
        let mut rows: BTreeMap<u64, (Replayed, usize)> = BTreeMap::new();
        let mut markers: Vec<(u64, Vec<u64>)> = Vec::new();
        let mut done: HashSet<u64> = HashSet::new();
        for r in records {
            match r.kind {
                KIND_ROWS => {
                    let replayed = if r.is_whole() {
                        codec::decode(&r.payload).map(Replayed::Whole)
                    } else {
                        codec::peek(&r.payload).map(|(table, rows_len)| Replayed::Head { table, rows_len })
                    };
                    match replayed {
                        Ok(replayed) => {
                            rows.insert(r.seq, (replayed, r.len));
                        }
                        Err(e) => tracing::error!(seq = r.seq, error = %e, "write-ahead log record does not decode; skipped"),
                    }
                }
                KIND_BATCH => match decode_marker(&r.payload) {
                    Some(seqs) => markers.push((r.seq, seqs)),
                    None => tracing::error!(seq = r.seq, "batch marker does not decode; its records will be batched again"),
                },
                KIND_DONE => {
                    if let Some(b) = r.payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                        done.insert(u64::from_le_bytes(b));
                    }
                }
                other => tracing::warn!(seq = r.seq, kind = other, "unknown write-ahead log record kind; skipped"),
            }
        }
        // Unfinished batches are rebuilt exactly, so their members are needed whole: read the
        // ones replay kept only the head of (a few batches at most: those in flight at the
        // crash).
        let pending: Vec<&(u64, Vec<u64>)> = markers.iter().filter(|(m, _)| !done.contains(m)).collect();
        let heads: BTreeSet<u64> =
            pending.iter().flat_map(|(_, seqs)| seqs.iter()).filter(|s| matches!(rows.get(s), Some((Replayed::Head { .. }, _)))).copied().collect();
        if !heads.is_empty() {
            match self.inner.wal.read(&heads) {
                Ok(read) => {
                    for r in read {
                        if let (Ok(decoded), Some(entry)) = (codec::decode(&r.payload), rows.get_mut(&r.seq)) {
                            entry.0 = Replayed::Whole(decoded);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the records of unfinished batches back"),
            }
        }
        let mut state = self.state();
        for (marker, seqs) in &markers {
            let mut members: Vec<(u64, Rows, usize)> = Vec::new();
            for s in seqs {
                match rows.remove(s) {
                    Some((Replayed::Whole(r), b)) => members.push((*s, r, b)),
                    Some((Replayed::Head { .. }, _)) => tracing::error!(seq = s, "a record of an unfinished batch could not be read back; it is lost"),
                    None => {}
                }
            }
            if done.contains(marker) || members.is_empty() {
                continue;
            }
            let Some((table_rows, bytes)) = concat(members.iter().map(|(_, r, b)| (r.clone(), *b))) else { continue };
            let seqs: Vec<u64> = members.iter().map(|(s, _, _)| *s).collect();
            state.unstored.extend(&seqs);
            self.inner.buffered_bytes.fetch_add(bytes, Ordering::Relaxed);
            state.recovered.push((*marker, seqs, table_rows, bytes));
        }
        for (seq, (replayed, bytes)) in rows {
            state.unstored.insert(seq);
            let entry = match replayed {
                Replayed::Whole(r) => {
                    self.inner.buffered_bytes.fetch_add(bytes, Ordering::Relaxed);
                    self.maybe_spill(Entry::new(seq, r, bytes))
                }
                Replayed::Head { table, rows_len } => Entry { seq, table, rows_len, rows: None, bytes },
            };
            push(&mut state, entry);
        }
        self.update_gauges(&state);
        if !state.recovered.is_empty() || !state.unstored.is_empty() {
            tracing::info!(batches = state.recovered.len(), records = state.unstored.len(), "recovered acknowledged rows not yet stored");
        }
    }
}

/// A batch marker's payload: the table name, NUL, then the member records' sequence numbers.
pub(super) fn encode_marker(table: Table, seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + seqs.len() * 8);
    out.extend_from_slice(table.name().as_bytes());
    out.push(0);
    for s in seqs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn decode_marker(payload: &[u8]) -> Option<Vec<u64>> {
    let nul = payload.iter().position(|b| *b == 0)?;
    Table::from_name(std::str::from_utf8(&payload[..nul]).ok()?)?;
    let rest = &payload[nul + 1..];
    if !rest.len().is_multiple_of(8) {
        return None;
    }
    Some(rest.chunks_exact(8).filter_map(|c| <[u8; 8]>::try_from(c).ok()).map(u64::from_le_bytes).collect())
}
