//! Binary encoding of a [`Rows`] batch for the write-ahead log.
//!
//! Layout: `version:u8 table:u8 count:varint row*`. Strings are `len:varint bytes` (UTF-8),
//! integers and floats are 8 bytes little-endian, maps are `count:varint (key value)*`.
//! Decoding is total: truncated, oversized or non-UTF-8 input is an error, never a panic or an
//! allocation larger than the input (counts are checked against the bytes left).

use crate::records::{AuditRecord, LogRecord, MetricSample, Rows, Severity, SystemRecord, Table};

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("encoded rows end early")]
    Truncated,
    #[error("unknown encoding version {0}")]
    Version(u8),
    #[error("unknown table tag {0}")]
    Table(u8),
    #[error("unknown severity tag {0}")]
    Severity(u8),
    #[error("string is not UTF-8")]
    Utf8,
    #[error("{0} bytes left over after the last row")]
    Trailing(usize),
}

pub fn encode(rows: &Rows) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + rows.len() * 256);
    encode_into(rows, &mut out);
    out
}

pub fn encode_into(rows: &Rows, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(rows.table().tag());
    put_varint(out, rows.len() as u64);
    match rows {
        Rows::Logs(v) => v.iter().for_each(|r| {
            put_i64(out, r.timestamp_ns);
            put_i64(out, r.observed_ns);
            for s in [&r.org_id, &r.workspace, &r.project, &r.application, &r.pod, &r.container, &r.node, &r.stream] {
                put_str(out, s);
            }
            out.push(r.severity.tag());
            put_str(out, &r.message);
            put_map(out, &r.attributes);
            put_str(out, &r.trace_id);
            put_str(out, &r.span_id);
        }),
        Rows::AuditLogs(v) => v.iter().for_each(|r| {
            put_i64(out, r.timestamp_ns);
            for s in [&r.org_id, &r.workspace, &r.actor, &r.initiated_by, &r.action, &r.resource, &r.outcome, &r.message] {
                put_str(out, s);
            }
            put_map(out, &r.attributes);
        }),
        Rows::SystemLogs(v) => v.iter().for_each(|r| {
            put_i64(out, r.timestamp_ns);
            put_str(out, &r.component);
            put_str(out, &r.node);
            out.push(r.severity.tag());
            put_str(out, &r.message);
            put_map(out, &r.attributes);
        }),
        Rows::Metrics(v) => v.iter().for_each(|r| {
            put_i64(out, r.timestamp_ms);
            for s in [&r.org_id, &r.workspace, &r.project, &r.metric] {
                put_str(out, s);
            }
            put_map(out, &r.labels);
            out.extend_from_slice(&r.value.to_le_bytes());
        }),
    }
}

/// The table and row count of encoded rows, read from their first bytes only (a prefix of at
/// least 12 bytes is always enough).
pub fn peek(prefix: &[u8]) -> Result<(Table, usize), DecodeError> {
    let mut c = Cursor { b: prefix };
    let version = c.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let tag = c.u8()?;
    let table = Table::ALL.into_iter().find(|t| t.tag() == tag).ok_or(DecodeError::Table(tag))?;
    let count = usize::try_from(c.varint()?).map_err(|_| DecodeError::Truncated)?;
    Ok((table, count))
}

pub fn decode(bytes: &[u8]) -> Result<Rows, DecodeError> {
    let mut c = Cursor { b: bytes };
    let version = c.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let tag = c.u8()?;
    let table = Table::ALL.into_iter().find(|t| t.tag() == tag).ok_or(DecodeError::Table(tag))?;
    // Every row takes at least 8 bytes, so a count larger than that is a lie, not a reason
    // to allocate.
    let count = c.count(8)?;
    let rows = match table {
        Table::Logs => {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(LogRecord {
                    timestamp_ns: c.i64()?,
                    observed_ns: c.i64()?,
                    org_id: c.string()?,
                    workspace: c.string()?,
                    project: c.string()?,
                    application: c.string()?,
                    pod: c.string()?,
                    container: c.string()?,
                    node: c.string()?,
                    stream: c.string()?,
                    severity: c.severity()?,
                    message: c.string()?,
                    attributes: c.map()?,
                    trace_id: c.string()?,
                    span_id: c.string()?,
                });
            }
            Rows::Logs(v)
        }
        Table::AuditLogs => {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(AuditRecord {
                    timestamp_ns: c.i64()?,
                    org_id: c.string()?,
                    workspace: c.string()?,
                    actor: c.string()?,
                    initiated_by: c.string()?,
                    action: c.string()?,
                    resource: c.string()?,
                    outcome: c.string()?,
                    message: c.string()?,
                    attributes: c.map()?,
                });
            }
            Rows::AuditLogs(v)
        }
        Table::SystemLogs => {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(SystemRecord {
                    timestamp_ns: c.i64()?,
                    component: c.string()?,
                    node: c.string()?,
                    severity: c.severity()?,
                    message: c.string()?,
                    attributes: c.map()?,
                });
            }
            Rows::SystemLogs(v)
        }
        Table::Metrics => {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(MetricSample {
                    timestamp_ms: c.i64()?,
                    org_id: c.string()?,
                    workspace: c.string()?,
                    project: c.string()?,
                    metric: c.string()?,
                    labels: c.map()?,
                    value: f64::from_le_bytes(c.array()?),
                });
            }
            Rows::Metrics(v)
        }
    };
    if !c.b.is_empty() {
        return Err(DecodeError::Trailing(c.b.len()));
    }
    Ok(rows)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_map(out: &mut Vec<u8>, m: &[(String, String)]) {
    put_varint(out, m.len() as u64);
    for (k, v) in m {
        put_str(out, k);
        put_str(out, v);
    }
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.b.split_first().ok_or(DecodeError::Truncated)?;
        self.b = rest;
        Ok(first)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.b.split_first_chunk::<N>().ok_or(DecodeError::Truncated)?;
        self.b = rest;
        Ok(*head)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    /// A count of items that each take at least `min_size` bytes, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.b.len() / min_size.max(1)) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.varint()?;
        if len > self.b.len() as u64 {
            return Err(DecodeError::Truncated);
        }
        let (s, rest) = self.b.split_at(len as usize);
        self.b = rest;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    fn severity(&mut self) -> Result<Severity, DecodeError> {
        let tag = self.u8()?;
        Severity::from_tag(tag).ok_or(DecodeError::Severity(tag))
    }

    fn map(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let n = self.count(2)?;
        let mut m = Vec::with_capacity(n);
        for _ in 0..n {
            m.push((self.string()?, self.string()?));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_logs() -> Rows {
        Rows::Logs(vec![LogRecord {
            timestamp_ns: 1_700_000_000_123_456_789,
            observed_ns: 1_700_000_000_200_000_000,
            org_id: "acme".into(),
            workspace: "ws-a".into(),
            project: "shop".into(),
            application: "cart".into(),
            pod: "cart-7d9".into(),
            container: "app".into(),
            node: "node-1".into(),
            stream: "stdout".into(),
            severity: Severity::Warn,
            message: "slow request ünïcode".into(),
            attributes: vec![("app".into(), "cart".into())],
            trace_id: "abc".into(),
            span_id: "def".into(),
        }])
    }

    #[test]
    fn every_table_round_trips() {
        let batches = vec![
            sample_logs(),
            Rows::AuditLogs(vec![AuditRecord { actor: "alice".into(), initiated_by: "agent".into(), ..Default::default() }]),
            Rows::SystemLogs(vec![SystemRecord { component: "ingest".into(), severity: Severity::Error, ..Default::default() }]),
            Rows::Metrics(vec![MetricSample { metric: "up".into(), value: f64::NAN, labels: vec![("job".into(), "x".into())], ..Default::default() }]),
        ];
        for rows in batches {
            let decoded = decode(&encode(&rows)).expect("decodes");
            // NaN != NaN, so compare through the encoding.
            assert_eq!(encode(&decoded), encode(&rows));
        }
    }

    #[test]
    fn peek_reads_table_and_count_from_a_prefix() {
        let rows = Rows::Metrics(vec![MetricSample::default(); 300]);
        assert_eq!(peek(&encode(&rows)[..12]), Ok((Table::Metrics, 300)));
        assert!(peek(&[VERSION]).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample_logs());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        // version, logs, count = u64::MAX as varint
        let mut bytes = vec![VERSION, Table::Logs.tag()];
        put_varint(&mut bytes, u64::MAX);
        assert_eq!(decode(&bytes), Err(DecodeError::Truncated));
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let bytes = encode(&sample_logs());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let _ = decode(&b);
            }
        }
    }
}
