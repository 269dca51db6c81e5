//! What can go wrong in the control plane, and the one mapping of it to the outside.

use schemas::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Configuration that cannot work (named key in the message).
    #[error("{0}")]
    Config(String),
    #[error("migrating the control database: {0}")]
    Migrate(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Input that fails validation; `field` names the offending field.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{kind} `{name}` not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} `{name}` exists already")]
    AlreadyExists { kind: &'static str, name: String },
    /// The row changed since the caller read it, or is in a state that does not allow this.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PlanNotAllowed(String),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Invalid { .. } => ApiError::new(ErrorCode::BadRequest, e.to_string()),
            ControlError::NotFound { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
            ControlError::AlreadyExists { .. } => ApiError::new(ErrorCode::AlreadyExists, format!("{e}; choose another name")),
            ControlError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            ControlError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m),
            ControlError::PlanNotAllowed(m) => ApiError::new(ErrorCode::PlanNotAllowed, m),
            ControlError::Database(ref d) if is_unavailable(d) => {
                tracing::warn!(error = %e, "control database unavailable");
                ApiError::new(ErrorCode::Unavailable, "the control database is not reachable; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "control request failed");
                ApiError::new(ErrorCode::Internal, "the request failed on our side; the server log has the details")
            }
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
}
