use schemas::{ApiError, ErrorCode};

/// Why a request was not let in. What the client is told is deliberately coarse (a wrong
/// signature and an unknown key read the same); the log gets the detail.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token binding cookie missing or not matching")]
    Binding,
    /// The issuer's keys could not be had and the last good ones are too old (fail closed).
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The authorisation backend (a workspace's API server) failed; the request is denied.
    #[error("authorisation unavailable: {0}")]
    Unavailable(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing => {
                ApiError::new(ErrorCode::Unauthenticated, "send `Authorization: Bearer <token>`; `dataplane token` makes one for the development issuer")
            }
            AuthError::Invalid(_) | AuthError::Binding => ApiError::new(ErrorCode::Unauthenticated, "the token is not valid for this service; sign in again"),
            AuthError::Expired => ApiError::new(ErrorCode::Unauthenticated, "the token has expired; sign in again"),
            AuthError::KeysUnavailable(_) => ApiError::new(ErrorCode::Unavailable, "the identity provider's keys cannot be fetched; retry later"),
            AuthError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m),
            AuthError::Unavailable(_) => ApiError::new(ErrorCode::Forbidden, "permission could not be checked, so it is denied; retry later"),
        }
    }
}
