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
    /// A query that cannot be parsed or is not supported (LogQL, search syntax, parameters).
    InvalidQuery,
    /// A query over a configured limit (time range, lines, bytes, regex size).
    LimitExceeded,
    /// Too many queries of this user at once: retry after the advertised delay.
    TooManyQueries,
    /// The query ran past its timeout and was cancelled.
    QueryTimeout,
    /// A bug or an unexpected failure; the log has the details.
    Internal,
    /// A resource of that name exists already (control API).
    AlreadyExists,
    /// The resource changed since it was read (its `version` no longer matches), or an
    /// idempotency key was reused for a different request: read again, then retry.
    Conflict,
    /// The workspace's plan does not include this (backups need the Dedicated plan).
    PlanNotAllowed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::PayloadTooLarge,
        ErrorCode::LineTooLong,
        ErrorCode::MalformedBody,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::BadRequest,
        ErrorCode::NothingAccepted,
        ErrorCode::Backpressure,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::NotFound,
        ErrorCode::InvalidQuery,
        ErrorCode::LimitExceeded,
        ErrorCode::TooManyQueries,
        ErrorCode::QueryTimeout,
        ErrorCode::Internal,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::PlanNotAllowed,
    ];

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
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::TooManyQueries => "too_many_queries",
            ErrorCode::QueryTimeout => "query_timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PlanNotAllowed => "plan_not_allowed",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::PayloadTooLarge | ErrorCode::LineTooLong => 413,
            ErrorCode::MalformedBody | ErrorCode::BadRequest | ErrorCode::NothingAccepted | ErrorCode::InvalidQuery | ErrorCode::LimitExceeded => 400,
            ErrorCode::TooManyQueries => 429,
            ErrorCode::QueryTimeout => 504,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Backpressure => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 408,
            ErrorCode::NotFound => 404,
            ErrorCode::Internal => 500,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => 409,
            ErrorCode::PlanNotAllowed => 403,
        }
    }

    /// Whether the same request can succeed later. Shippers (Vector, Promtail, Prometheus)
    /// retry 408, 429 and 5xx and drop other 4xx, so only transient conditions may say yes.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Backpressure | ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::TooManyQueries | ErrorCode::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a stable code, a message that says what to do next, and a retry hint.
/// The body is always `{"error": {"code": ..., "message": ...}}`; the message never carries
/// internals (the log has the whole chain).
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    /// Seconds a client should wait before retrying, where a retry can succeed.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self.code {
            ErrorCode::Backpressure | ErrorCode::TooManyQueries => Some(1),
            ErrorCode::Unavailable => Some(5),
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(feature = "http")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderValue, StatusCode, header};
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } });
        let retry_after = self.retry_after_secs();
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}
