//! Who is asking, and what they may read.
//!
//! - [`TokenVerifier`] turns a bearer token into an [`Identity`]: JWTs from an OIDC issuer
//!   (RS256/ES256 keys from its JWKS, discovered, refreshed on an unknown `kid` at a bounded
//!   rate, kept through an outage until they are too old), or from the local development
//!   issuer ([`DevIssuer`], HS256 with a secret under the data directory, loopback only).
//! - An [`Authorizer`] decides which namespaces of a workspace an identity may read
//!   ([`StaticPolicy`] from a file or the token's workspace claim, or
//!   [`SubjectAccessReviewer`], which asks each workspace's own Kubernetes API server).
//! - [`Gate`] is the only maker of a [`TenantScope`], the value storage needs for every read.
//!   Because nothing else can make one, a read that skipped authorisation does not compile.
//!
//! ```
//! # async fn demo(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use auth::{AuthConfig, DevClaims, DevIssuer, Gate, StaticPolicy, TokenVerifier};
//! let settings = AuthConfig::default().validate(dir)?;
//! let verifier = TokenVerifier::new(settings)?;
//! let issuer = DevIssuer::load_or_create(&dir.join("dev-token-secret"), "dataplane")?;
//! let token = issuer.mint(&DevClaims { user: "alice".into(), org: "acme".into(), workspaces: vec!["ws-a".into()], ttl_secs: 60, ..Default::default() })?;
//! let alice = verifier.verify(&token, None).await?;
//! let gate = Gate::new(Arc::new(StaticPolicy::members_read_all()), "platform-operator", vec![]);
//! let scope = gate.logs(&alice, None, None).await?;
//! assert!(scope.allows("acme", "ws-a", "shop") && !scope.allows("acme", "ws-b", "shop"));
//! # Ok(()) }
//! ```

mod claims;
mod config;
mod dev_issuer;
mod error;
mod identity;
mod jwks;
pub mod jwt_crypto;
mod policy;
mod sar;
mod scope;
mod verifier;

#[cfg(test)]
mod tests;

pub use config::{AuthConfig, AuthSettings, AuthorizerKind, ClaimNames, DEV_ISSUER, IssuerMode, OidcSettings, TokenBindingConfig};
pub use dev_issuer::{DevClaims, DevIssuer};
pub use error::AuthError;
pub use identity::Identity;
pub use policy::{Authorizer, BoxFuture, Gate, MAX_SCOPE_WORKSPACES, StaticGrant, StaticPolicy};
pub use sar::{KubernetesAuthConfig, SubjectAccessReviewer, WorkspaceApiServer, kube_client, kube_config};
pub use scope::{Namespaces, TenantScope, WorkspaceGrant};
pub use verifier::{MAX_TOKEN_BYTES, TokenVerifier};

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The bearer token and the cookie header of a request, as [`TokenVerifier::verify`] takes them.
pub(crate) fn credentials(headers: &http::HeaderMap) -> (&str, Option<&str>) {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .unwrap_or("");
    (token, headers.get(http::header::COOKIE).and_then(|v| v.to_str().ok()))
}
