//! Bearer token → [`Identity`].
//!
//! Checks, in order: size, header (`alg` on the allow-list; never `none`, never HS256 except
//! from the development issuer's own secret), signature with the issuer's key for the `kid`,
//! then `exp`, `nbf`, `iss` and `aud` (all of `exp`, `iss`, `aud` required), then the claims
//! that make an identity (user and organisation must be present). Verified tokens are cached
//! until they expire (at most five minutes): keyed by a keyed hash of the token's last bytes
//! (the signature), and a hit counts only when the whole cached token equals the presented
//! one, so a repeat costs a short hash, a lookup and a comparison, and a hash collision can
//! only ever cost a verification. The binding cookie is still checked on every request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{AuthSettings, DEV_ISSUER, IssuerMode};
use crate::dev_issuer::DevIssuer;
use crate::jwks::Jwks;
use crate::{AuthError, Identity, now_secs};

/// Longer tokens are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
const CACHE_TTL: Duration = Duration::from_secs(300);
const MAX_CLAIM_BYTES: usize = 256;
const MAX_CLAIM_ITEMS: usize = 1024;

enum Keys {
    Development(DecodingKey),
    Oidc(Box<Jwks>),
}

/// A verified token and who it names.
struct Verified {
    token: Box<str>,
    identity: Arc<Identity>,
}

struct Inner {
    keys: Keys,
    issuer: String,
    settings: AuthSettings,
    cache: moka::sync::Cache<u64, Arc<Verified>>,
    /// Keys the cache's hash with per-process randomness.
    hasher: std::hash::RandomState,
    /// The claim checks for each accepted algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
}

/// How many trailing bytes of a token key the cache (within the signature, high in entropy).
const KEY_BYTES: usize = 48;
/// The cache's budget counts tokens as this many bytes each on average.
const TOKEN_BUDGET_BYTES: u64 = 1024;

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("issuer", &self.inner.issuer).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Builds the verifier for the configured issuer. The development issuer's secret is
    /// created under the data directory when missing.
    pub fn new(settings: AuthSettings) -> Result<TokenVerifier, AuthError> {
        crate::jwt_crypto::install();
        let (keys, issuer) = match &settings.mode {
            IssuerMode::Development { secret_file } => {
                let issuer = DevIssuer::load_or_create(secret_file, &settings.audience).map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
                (Keys::Development(issuer.decoding_key()), DEV_ISSUER.to_owned())
            }
            IssuerMode::Oidc(o) => (Keys::Oidc(Box::new(Jwks::new(o.clone())?)), o.issuer.clone()),
        };
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.token_cache_entries.saturating_mul(TOKEN_BUDGET_BYTES))
            .weigher(|_, v: &Arc<Verified>| u32::try_from(v.token.len() + 64).unwrap_or(u32::MAX))
            .time_to_live(CACHE_TTL)
            .build();
        let algorithms = match &settings.mode {
            IssuerMode::Development { .. } => vec![Algorithm::HS256],
            IssuerMode::Oidc(o) => o.algorithms.clone(),
        };
        let validations = algorithms
            .into_iter()
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.set_issuer(&[issuer.as_str()]);
                v.set_audience(&[settings.audience.as_str()]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v.leeway = settings.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                (alg, v)
            })
            .collect();
        Ok(TokenVerifier { inner: Arc::new(Inner { keys, issuer, settings, cache, hasher: std::hash::RandomState::new(), validations }) })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// Verifies the bearer token of a request (with its `Cookie` header, for token binding).
    pub async fn verify_request(&self, headers: &http::HeaderMap) -> Result<Arc<Identity>, AuthError> {
        let (token, cookies) = crate::credentials(headers);
        self.verify(token, cookies).await
    }

    /// Verifies `token`. `cookie_header` is the request's `Cookie` header, needed only when
    /// token binding is configured.
    pub async fn verify(&self, token: &str, cookie_header: Option<&str>) -> Result<Arc<Identity>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too long".into()));
        }
        let key = std::hash::BuildHasher::hash_one(&self.inner.hasher, &token.as_bytes()[token.len().saturating_sub(KEY_BYTES)..]);
        let leeway = self.inner.settings.leeway.as_secs() as i64;
        let identity = match self.inner.cache.get(&key).filter(|v| *v.token == *token) {
            Some(v) => v.identity.clone(),
            None => {
                let identity = Arc::new(self.verify_uncached(token).await?);
                self.inner.cache.insert(key, Arc::new(Verified { token: token.into(), identity: identity.clone() }));
                identity
            }
        };
        if identity.expires_at + leeway < now_secs() {
            self.inner.cache.invalidate(&key);
            return Err(AuthError::Expired);
        }
        self.check_binding(&identity, cookie_header)?;
        Ok(identity)
    }

    fn check_binding(&self, identity: &Identity, cookie_header: Option<&str>) -> Result<(), AuthError> {
        let Some(b) = &self.inner.settings.token_binding else { return Ok(()) };
        let expected = identity.binding.as_deref().ok_or(AuthError::Binding)?;
        let cookie = cookie_header
            .into_iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == b.cookie)
            .map(|(_, v)| v)
            .ok_or(AuthError::Binding)?;
        let digest = Sha256::digest(cookie.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        // Both sides are public-length hex strings; compare without an early exit anyway.
        let same = hex.len() == expected.len() && hex.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase())) == 0;
        if same { Ok(()) } else { Err(AuthError::Binding) }
    }

    async fn verify_uncached(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        let key = match &self.inner.keys {
            Keys::Development(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not the development issuer's", header.alg)));
                }
                key.clone()
            }
            Keys::Oidc(jwks) => {
                if !jwks.allows(header.alg) {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not allowed", header.alg)));
                }
                jwks.key(header.kid.as_deref(), header.alg).await?
            }
        };
        let v = self
            .inner
            .validations
            .iter()
            .find(|(a, _)| *a == header.alg)
            .map(|(_, v)| v)
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {:?} is not allowed", header.alg)))?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        self.identity_from(&data.claims)
    }

    fn identity_from(&self, claims: &serde_json::Map<String, Value>) -> Result<Identity, AuthError> {
        let names = &self.inner.settings.claims;
        let single = |name: &str| -> Result<String, AuthError> {
            match claims.get(name) {
                Some(Value::String(s)) if valid_claim(s) => Ok(s.clone()),
                Some(_) => Err(AuthError::Invalid(format!("claim `{name}` is not a usable string"))),
                None => Err(AuthError::Invalid(format!("claim `{name}` is missing"))),
            }
        };
        let set = |name: &str| -> Result<BTreeSet<String>, AuthError> {
            let bad = || AuthError::Invalid(format!("claim `{name}` must be a string or an array of strings"));
            match claims.get(name) {
                None | Some(Value::Null) => Ok(BTreeSet::new()),
                Some(Value::String(s)) if valid_claim(s) => Ok(BTreeSet::from([s.clone()])),
                Some(Value::Array(items)) if items.len() <= MAX_CLAIM_ITEMS => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) if valid_claim(s) => Ok(s.clone()),
                        _ => Err(bad()),
                    })
                    .collect(),
                Some(_) => Err(bad()),
            }
        };
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or_else(|| AuthError::Invalid("claim `exp` is not a number".into()))?;
        let binding = match &self.inner.settings.token_binding {
            Some(b) => claims.get(&b.claim).and_then(Value::as_str).map(str::to_owned),
            None => None,
        };
        Ok(Identity {
            user: single(&names.user)?,
            org_id: single(&names.org)?,
            workspaces: set(&names.workspaces)?,
            groups: set(&names.groups)?,
            roles: set(&names.roles)?,
            expires_at: exp as i64,
            binding,
        })
    }
}

/// Identifiers from claims: non-empty, bounded, no control characters.
fn valid_claim(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_BYTES && !s.chars().any(char::is_control)
}
