/// A stable error code: what a client may match on, with the HTTP status it travels with.
///
/// The string form never changes once released; messages may. Adding a variant is fine,
/// renaming one is a breaking change for every shipper and dashboard that matches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No credential, or one that is not known.
    Unauthenticated,
    /// The credential is valid but may not write what was sent.
    Forbidden,
    /// The body (or a decompressed body) is larger than allowed.
    PayloadTooLarge,
    /// A single line or event is larger than allowed.
    LineTooLong,
    /// The body could not be decoded (JSON, protobuf, snappy, gzip, zstd).
    MalformedBody,
    /// `Content-Encoding` or `Content-Type` that is not supported.
    UnsupportedMediaType,
    /// The request is well-formed but asks for something that cannot be done (unknown table,
    /// unsupported statement or format).
    BadRequest,
    /// Nothing in the request could be accepted (every event was rejected).
    NothingAccepted,
    /// The in-memory buffer is full: retry after the advertised delay.
    Backpressure,
    /// The write-ahead log cannot take more (storage outage absorbed up to its cap, disk full,
    /// or a failed fsync): retry after the advertised delay.
    Unavailable,
    /// The client was too slow to send its body.
    Timeout,
    /// No route for this path.
    NotFound,
    /// A bug or an unexpected failure; the log has the details.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NothingAccepted => "nothing_accepted",
            ErrorCode::Backpressure => "backpressure",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::PayloadTooLarge | ErrorCode::LineTooLong => 413,
            ErrorCode::MalformedBody | ErrorCode::BadRequest | ErrorCode::NothingAccepted => 400,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Backpressure => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 408,
            ErrorCode::NotFound => 404,
            ErrorCode::Internal => 500,
        }
    }

    /// Whether the same request can succeed later. Shippers (Vector, Promtail, Prometheus)
    /// retry 408, 429 and 5xx and drop other 4xx, so only transient conditions may say yes.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Backpressure | ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
