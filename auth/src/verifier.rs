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
//!
//! A cold token costs the signature check and little else: headers of tokens that verified
//! are remembered by their encoded text (an issuer uses a handful), keys are shared rather than
//! copied, and the payload is scanned once for the claims an identity needs instead of being
//! built into a map of every claim.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::{AuthSettings, DEV_ISSUER, IssuerMode};
use crate::dev_issuer::DevIssuer;
use crate::jwks::Jwks;
use crate::{AuthError, Identity, now_secs};

/// Longer tokens are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
const CACHE_TTL: Duration = Duration::from_secs(300);

enum Keys {
    Development(Arc<DecodingKey>),
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
    cache: moka::sync::Cache<u64, Arc<Verified>, KeyIsHash>,
    /// Keys the cache's hash with per-process randomness.
    hasher: foldhash::fast::RandomState,
    /// The claim checks for each accepted algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    /// Headers already read, by their encoded text: an issuer's tokens share a handful
    /// (one per key and algorithm), so most tokens skip decoding theirs. At most
    /// [`MAX_HEADERS`]; others are decoded each time.
    headers: RwLock<Vec<KnownHeader>>,
}

/// A token header that decoded, reduced to what picks the key.
struct KnownHeader {
    encoded: Box<str>,
    alg: Algorithm,
    kid: Option<Arc<str>>,
}

const MAX_HEADERS: usize = 16;

/// How many trailing bytes of a token key the cache (within the signature, high in entropy).
const KEY_BYTES: usize = 48;
/// The cache's budget counts tokens as this many bytes each on average.
const TOKEN_BUDGET_BYTES: u64 = 1024;

/// The token cache's hasher: its keys are already keyed hashes of the tokens, so they are
/// used as they are rather than hashed again.
#[derive(Clone, Copy, Default)]
struct KeyIsHash;

impl std::hash::BuildHasher for KeyIsHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys reach this hasher; kept total for any other use.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

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
                (Keys::Development(Arc::new(issuer.decoding_key())), DEV_ISSUER.to_owned())
            }
            IssuerMode::Oidc(o) => (Keys::Oidc(Box::new(Jwks::new(o.clone())?)), o.issuer.clone()),
        };
        let cache = moka::sync::Cache::builder()
            .max_capacity(settings.token_cache_entries.saturating_mul(TOKEN_BUDGET_BYTES))
            .weigher(|_, v: &Arc<Verified>| u32::try_from(v.token.len() + 64).unwrap_or(u32::MAX))
            .time_to_live(CACHE_TTL)
            .build_with_hasher(KeyIsHash);
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
        Ok(TokenVerifier {
            inner: Arc::new(Inner { keys, issuer, settings, cache, hasher: foldhash::fast::RandomState::default(), validations, headers: RwLock::default() }),
        })
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

    /// The algorithm and key id of a token's header, and whether the header was known.
    /// `jsonwebtoken::decode` reads the header again and checks the algorithm against the
    /// validation's, so this only picks the key.
    fn header(&self, encoded: &str, token: &str) -> Result<(Algorithm, Option<Arc<str>>, bool), AuthError> {
        if let Ok(known) = self.inner.headers.read()
            && let Some(h) = known.iter().find(|h| *h.encoded == *encoded)
        {
            return Ok((h.alg, h.kid.clone(), true));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        Ok((header.alg, header.kid.map(Arc::from), false))
    }

    /// Remembers the header of a token that verified (so forged tokens cannot fill the list).
    fn remember_header(&self, encoded: &str, alg: Algorithm, kid: Option<Arc<str>>) {
        if let Ok(mut known) = self.inner.headers.write()
            && known.len() < MAX_HEADERS
            && !known.iter().any(|h| *h.encoded == *encoded)
        {
            known.push(KnownHeader { encoded: encoded.into(), alg, kid });
        }
    }

    async fn verify_uncached(&self, token: &str) -> Result<Identity, AuthError> {
        let encoded_header = token.split_once('.').map_or(token, |(h, _)| h);
        let (alg, kid, known) = self.header(encoded_header, token)?;
        let key = match &self.inner.keys {
            Keys::Development(key) => {
                if alg != Algorithm::HS256 {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not the development issuer's", alg)));
                }
                key.clone()
            }
            Keys::Oidc(jwks) => {
                if !jwks.allows(alg) {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not allowed", alg)));
                }
                jwks.key(kid.as_deref(), alg).await?
            }
        };
        let v = self
            .inner
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {:?} is not allowed", alg)))?;
        // The payload is kept as its JSON text; only the claims an identity needs are parsed.
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, &key, v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        if !known {
            self.remember_header(encoded_header, alg, kid);
        }
        let binding = self.inner.settings.token_binding.as_ref().map(|b| b.claim.as_str());
        crate::claims::identity(data.claims.get(), &self.inner.settings.claims, binding)
    }
}
