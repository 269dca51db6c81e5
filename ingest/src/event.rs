//! What decoders produce: events as the shipper described them, before tenancy is attached.
//! Nothing here is trusted yet; `tenancy` turns these into stored rows.

use schemas::Severity;

/// A log event from any shipper (Vector `http`/`clickhouse` sinks, Loki push).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawLog {
    /// When the line was written, Unix nanoseconds; `None` if the shipper did not say.
    pub timestamp_ns: Option<i64>,
    pub message: String,
    /// An explicit level field (`level`, `severity`, Loki's `level`/`detected_level` label).
    pub severity: Option<Severity>,
    /// Kubernetes namespace (`kubernetes.pod_namespace`, Loki `namespace` label).
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub node: Option<String>,
    /// `stdout` / `stderr`.
    pub stream: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// Pod labels (Vector's `kubernetes.pod_labels`) or Loki stream labels: where tenancy
    /// labels such as `hexabase.ai/workspace` are looked up.
    pub labels: Vec<(String, String)>,
    /// Every other scalar field, flattened with dots (`http.status`), as text.
    pub attributes: Vec<(String, String)>,
}

/// One Prometheus series from remote_write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSeries {
    /// All labels including `__name__`.
    pub labels: Vec<(String, String)>,
    /// (Unix milliseconds, value).
    pub samples: Vec<(i64, f64)>,
}

/// Why one event of a request can never be accepted. The request as a whole still succeeds
/// when other events were accepted; the client is told the counts per reason so it does not
/// retry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    MalformedEvent,
    LineTooLong,
    TooManyLabels,
    LabelTooLong,
    TimestampTooOld,
    TimestampInFuture,
    WorkspaceNotAllowed,
    InvalidSample,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::MalformedEvent,
        RejectReason::LineTooLong,
        RejectReason::TooManyLabels,
        RejectReason::LabelTooLong,
        RejectReason::TimestampTooOld,
        RejectReason::TimestampInFuture,
        RejectReason::WorkspaceNotAllowed,
        RejectReason::InvalidSample,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedEvent => "malformed_event",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::LabelTooLong => "label_too_long",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::TimestampInFuture => "timestamp_in_future",
            RejectReason::WorkspaceNotAllowed => "workspace_not_allowed",
            RejectReason::InvalidSample => "invalid_sample",
        }
    }
}

/// Limits a decoder enforces while it reads. Per credential; see `IngestLimits` in the config.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Largest body after decompression.
    pub max_body_bytes: usize,
    /// Largest single message / line.
    pub max_line_bytes: usize,
    /// Most labels (or flattened attributes) on one event.
    pub max_labels: usize,
    /// Longest label name or value.
    pub max_label_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_body_bytes: 16 << 20, max_line_bytes: 256 << 10, max_labels: 64, max_label_bytes: 1024, max_json_depth: 32 }
    }
}

/// A decoder's output: what it could read, and one reason per event it could not.
#[derive(Debug, Default)]
pub struct Decoded<T> {
    pub events: Vec<T>,
    pub rejected: Vec<RejectReason>,
}

/// Why a whole body cannot be read. Maps to a 4xx; nothing of the body is stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is larger than {limit} bytes after decompression")]
    TooLarge { limit: usize },
    #[error("unsupported content encoding `{0}`: use gzip, zstd, snappy, deflate or none")]
    UnsupportedEncoding(String),
    #[error("unsupported content type `{0}`")]
    UnsupportedContentType(String),
    #[error("malformed body: {0}")]
    Malformed(String),
}
