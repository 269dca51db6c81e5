//! The rows the data plane stores. Field order here is the column order everywhere (Arrow
//! schema, ClickHouse DDL, write-ahead log encoding); `tests` in `arrow_schema` and
//! `migrations` hold them together.

/// Where a kind of row is stored. The names are the ClickHouse table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Containers' output, readable per namespace after a SubjectAccessReview.
    Logs,
    /// Who did what, readable within the caller's organisation by allowed roles.
    AuditLogs,
    /// The platform's own logs, readable by platform operators only.
    SystemLogs,
    /// Metric samples with their labels.
    Metrics,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Logs, Table::AuditLogs, Table::SystemLogs, Table::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Table::Logs => "logs",
            Table::AuditLogs => "audit_logs",
            Table::SystemLogs => "system_logs",
            Table::Metrics => "metrics",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Stable one-byte tag used by the write-ahead log encoding.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Table::Logs => 1,
            Table::AuditLogs => 2,
            Table::SystemLogs => 3,
            Table::Metrics => 4,
        }
    }
}

/// Normalised severity. Stored as its lowercase name so that ClickHouse and Arrow readers need
/// no lookup table; `Unknown` when neither the shipper nor the line said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Severity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    #[default]
    Unknown,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
            Severity::Unknown => "unknown",
        }
    }

    /// Parses the spellings shippers and logging libraries use (`WARNING`, `err`, `E`, syslog
    /// `crit`, OpenTelemetry severity names). Anything else is `None`.
    pub fn parse(text: &str) -> Option<Severity> {
        let t = text.trim();
        if t.len() > 12 {
            return None;
        }
        let lower = t.to_ascii_lowercase();
        Some(match lower.as_str() {
            "trace" | "trc" | "t" => Severity::Trace,
            "debug" | "dbg" | "d" => Severity::Debug,
            "info" | "inf" | "i" | "information" | "informational" | "notice" => Severity::Info,
            "warn" | "warning" | "wrn" | "w" => Severity::Warn,
            "error" | "err" | "e" | "eror" => Severity::Error,
            "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" | "f" | "severe" => Severity::Fatal,
            _ => return None,
        })
    }

    /// Finds a level in the first words of a line, the way Loki's `detected_level` does for
    /// unstructured text: `level=error`, `"level":"warn"`, `[ERROR]`, ` WARN ` and the like.
    /// Only the first 256 bytes are looked at, so this costs the same for any line length.
    pub fn detect(message: &str) -> Severity {
        let head = match message.char_indices().nth(256) {
            Some((i, _)) => &message[..i],
            None => message,
        };
        for word in head.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| w.len() >= 4 && w.len() <= 8) {
            // Only all-caps words or words after a level key count: "error" inside a sentence
            // ("no error found") must not mark the line as an error.
            let upper = word.bytes().all(|b| b.is_ascii_uppercase());
            if let (true, Some(s)) = (upper, Severity::parse(word)) {
                return s;
            }
        }
        for key in ["level=", "level\":\"", "lvl=", "severity=", "level\": \""] {
            if let Some(pos) = head.find(key) {
                let rest = &head[pos + key.len()..];
                let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
                if let Some(s) = Severity::parse(&rest[..end]) {
                    return s;
                }
            }
        }
        Severity::Unknown
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Severity> {
        Some(match tag {
            0 => Severity::Trace,
            1 => Severity::Debug,
            2 => Severity::Info,
            3 => Severity::Warn,
            4 => Severity::Error,
            5 => Severity::Fatal,
            6 => Severity::Unknown,
            _ => return None,
        })
    }

    pub(crate) fn tag(self) -> u8 {
        self as u8
    }
}

/// A workload log line: one container's output, with its tenancy attached by ingest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogRecord {
    /// When the line was written, Unix nanoseconds.
    pub timestamp_ns: i64,
    /// When the data plane received it, Unix nanoseconds.
    pub observed_ns: i64,
    pub org_id: String,
    pub workspace: String,
    /// The Kubernetes namespace.
    pub project: String,
    pub application: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    /// `stdout` or `stderr` (or empty).
    pub stream: String,
    pub severity: Severity,
    pub message: String,
    /// Structured attributes (pod labels, parsed fields), sorted by key, keys unique.
    pub attributes: Vec<(String, String)>,
    pub trace_id: String,
    pub span_id: String,
}

/// An audit event: who did what. `initiated_by` is `user`, `agent` or `system`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditRecord {
    pub timestamp_ns: i64,
    pub org_id: String,
    pub workspace: String,
    pub actor: String,
    pub initiated_by: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub message: String,
    pub attributes: Vec<(String, String)>,
}

/// Where audit records go (the binary hands them to the ingest pipeline, durable in the
/// write-ahead log). `record` must not block: a sink that does I/O hands the record on.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: AuditRecord);
}

/// A log line of the platform itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SystemRecord {
    pub timestamp_ns: i64,
    pub component: String,
    pub node: String,
    pub severity: Severity,
    pub message: String,
    pub attributes: Vec<(String, String)>,
}

/// One metric sample. `labels` excludes `__name__` (kept in `metric`) and the tenancy labels
/// (kept in their own columns); sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricSample {
    /// Unix milliseconds, as Prometheus sends them.
    pub timestamp_ms: i64,
    pub org_id: String,
    pub workspace: String,
    pub project: String,
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A homogeneous batch of rows bound for one table.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    Logs(Vec<LogRecord>),
    AuditLogs(Vec<AuditRecord>),
    SystemLogs(Vec<SystemRecord>),
    Metrics(Vec<MetricSample>),
}

impl Rows {
    pub fn empty(table: Table) -> Rows {
        match table {
            Table::Logs => Rows::Logs(Vec::new()),
            Table::AuditLogs => Rows::AuditLogs(Vec::new()),
            Table::SystemLogs => Rows::SystemLogs(Vec::new()),
            Table::Metrics => Rows::Metrics(Vec::new()),
        }
    }

    pub fn table(&self) -> Table {
        match self {
            Rows::Logs(_) => Table::Logs,
            Rows::AuditLogs(_) => Table::AuditLogs,
            Rows::SystemLogs(_) => Table::SystemLogs,
            Rows::Metrics(_) => Table::Metrics,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Rows::Logs(v) => v.len(),
            Rows::AuditLogs(v) => v.len(),
            Rows::SystemLogs(v) => v.len(),
            Rows::Metrics(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `other`'s rows to the end of `self`. Both must be for the same table; a mismatch
    /// is a programming error and is reported rather than silently dropping rows.
    /// Room for `additional` more rows without growing (and moving every row) again.
    pub fn reserve(&mut self, additional: usize) {
        match self {
            Rows::Logs(v) => v.reserve_exact(additional),
            Rows::AuditLogs(v) => v.reserve_exact(additional),
            Rows::SystemLogs(v) => v.reserve_exact(additional),
            Rows::Metrics(v) => v.reserve_exact(additional),
        }
    }

    pub fn append(&mut self, other: Rows) -> Result<(), Rows> {
        match (self, other) {
            (Rows::Logs(a), Rows::Logs(b)) => a.extend(b),
            (Rows::AuditLogs(a), Rows::AuditLogs(b)) => a.extend(b),
            (Rows::SystemLogs(a), Rows::SystemLogs(b)) => a.extend(b),
            (Rows::Metrics(a), Rows::Metrics(b)) => a.extend(b),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// The partition (tenant, UTC day) of row `i`, borrowed: (organisation, workspace, day),
    /// ordered as [`PartitionKey`] orders. Partitions drive both the embedded store's directory
    /// layout and how ClickHouse inserts are split.
    fn partition_of(&self, i: usize) -> PartitionRef<'_> {
        const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;
        const MS_PER_DAY: i64 = 86_400 * 1_000;
        match self {
            Rows::Logs(v) => (&v[i].org_id, &v[i].workspace, v[i].timestamp_ns.div_euclid(NS_PER_DAY)),
            Rows::AuditLogs(v) => (&v[i].org_id, "", v[i].timestamp_ns.div_euclid(NS_PER_DAY)),
            Rows::SystemLogs(v) => ("", "", v[i].timestamp_ns.div_euclid(NS_PER_DAY)),
            Rows::Metrics(v) => (&v[i].org_id, &v[i].workspace, v[i].timestamp_ms.div_euclid(MS_PER_DAY)),
        }
    }

    /// Row indices grouped by partition, groups sorted by key and rows in their original
    /// order: deterministic, so a retried or replayed batch always groups the same way.
    pub fn partition_groups(&self) -> Vec<(PartitionKey, Vec<usize>)> {
        // Rows are grouped by hashing borrowed keys (rows keep their order inside a group),
        // then the few groups are sorted; one `PartitionKey` is made per group, not per row.
        let mut index: std::collections::HashMap<PartitionRef<'_>, usize> = std::collections::HashMap::new();
        let mut groups: Vec<(PartitionRef<'_>, Vec<usize>)> = Vec::new();
        for i in 0..self.len() {
            let key = self.partition_of(i);
            let g = *index.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups.into_iter().map(|((org, ws, day), idx)| (PartitionKey::new(org, ws, day), idx)).collect()
    }

    /// Splits into sub-batches by partition, as [`Rows::partition_groups`] orders them.
    pub fn split_by_partition(self) -> Vec<(PartitionKey, Rows)> {
        let groups = self.partition_groups();
        fn take<T: Default>(v: &mut [T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| std::mem::take(&mut v[i])).collect()
        }
        let mut out = Vec::with_capacity(groups.len());
        match self {
            Rows::Logs(mut v) => groups.into_iter().for_each(|(k, idx)| out.push((k, Rows::Logs(take(&mut v, &idx))))),
            Rows::AuditLogs(mut v) => groups.into_iter().for_each(|(k, idx)| out.push((k, Rows::AuditLogs(take(&mut v, &idx))))),
            Rows::SystemLogs(mut v) => groups.into_iter().for_each(|(k, idx)| out.push((k, Rows::SystemLogs(take(&mut v, &idx))))),
            Rows::Metrics(mut v) => groups.into_iter().for_each(|(k, idx)| out.push((k, Rows::Metrics(take(&mut v, &idx))))),
        }
        out
    }
}

/// A partition key borrowed from a row: (organisation, workspace, day).
type PartitionRef<'a> = (&'a str, &'a str, i64);

/// A storage partition: tenant and UTC day (days since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub org_id: String,
    pub workspace: String,
    pub day: i64,
}

impl PartitionKey {
    pub fn new(org_id: &str, workspace: &str, day: i64) -> PartitionKey {
        PartitionKey { org_id: org_id.to_owned(), workspace: workspace.to_owned(), day }
    }

    /// A hash of the key that never changes between builds or machines (FNV-1a, 64 bits), for
    /// names that must be the same every time: deduplication tokens, file names.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(self.org_id.as_bytes());
        eat(&[0xff]);
        eat(self.workspace.as_bytes());
        eat(&[0xff]);
        eat(&self.day.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_parses_common_spellings() {
        assert_eq!(Severity::parse("WARNING"), Some(Severity::Warn));
        assert_eq!(Severity::parse("err"), Some(Severity::Error));
        assert_eq!(Severity::parse("crit"), Some(Severity::Fatal));
        assert_eq!(Severity::parse("verbose-ish"), None);
    }

    #[test]
    fn severity_detection_ignores_lowercase_prose() {
        assert_eq!(Severity::detect("2024-01-01 ERROR disk failed"), Severity::Error);
        assert_eq!(Severity::detect("ts=1 level=warn msg=slow"), Severity::Warn);
        assert_eq!(Severity::detect("{\"level\":\"debug\",\"msg\":\"x\"}"), Severity::Debug);
        assert_eq!(Severity::detect("no error was found"), Severity::Unknown);
        assert_eq!(Severity::detect(&"é".repeat(10_000)), Severity::Unknown);
    }

    #[test]
    fn split_by_partition_is_deterministic_and_complete() {
        let day = 86_400_000_000_000i64;
        let mk = |ws: &str, t: i64| LogRecord { workspace: ws.into(), timestamp_ns: t, message: format!("{ws}{t}"), ..Default::default() };
        let rows = Rows::Logs(vec![mk("b", 0), mk("a", day), mk("b", 5), mk("a", 1)]);
        let parts = rows.split_by_partition();
        let shape: Vec<(String, i64, usize)> = parts.iter().map(|(k, r)| (k.workspace.clone(), k.day, r.len())).collect();
        assert_eq!(shape, vec![("a".into(), 0, 1), ("a".into(), 1, 1), ("b".into(), 0, 2)]);
        let Rows::Logs(b) = &parts[2].1 else { panic!("wrong table") };
        assert_eq!(b[0].message, "b0", "row order within a partition is kept");
    }
}
