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
//! copied, the signature is checked by `jsonwebtoken::crypto::verify`, and the payload is read
//! once, for the registered claims and those an identity needs together
//! ([`crate::claims`], which judges the registered claims exactly as `jsonwebtoken::decode`
//! does; `decode` itself parses the header twice and the payload twice more).

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};

use crate::claims::Expected;
use crate::config::{AuthSettings, DEV_ISSUER, IssuerMode};
use crate::dev_issuer::DevIssuer;
use crate::jwks::Jwks;
use crate::{AuthError, Identity, now_secs};

/// Longer tokens are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A verified token is trusted again without its signature for at most this long (and never
/// past its `exp`), so a key the issuer withdraws stops working within it.
const CACHE_TTL_SECS: i64 = 300;

enum Keys {
    Development(Arc<DecodingKey>),
    Oidc(Box<Jwks>),
}

/// A verified token and who it names.
struct Verified {
    token: Box<str>,
    identity: Arc<Identity>,
    /// Unix seconds.
    verified_at: i64,
}

/// The cache's weight of a token: its bytes and the entry around them.
#[derive(Clone, Copy)]
struct TokenWeight;

impl quick_cache::Weighter<u64, Arc<Verified>> for TokenWeight {
    fn weight(&self, _: &u64, v: &Arc<Verified>) -> u64 {
        v.token.len() as u64 + 64
    }
}

struct Inner {
    keys: Keys,
    issuer: String,
    settings: AuthSettings,
    /// Verified tokens. A concurrent clock cache (quick_cache) rather than moka: an insert that
    /// evicts costs about a tenth of moka's, and a cold request pays one.
    cache: quick_cache::sync::Cache<u64, Arc<Verified>, TokenWeight, KeyIsHash>,
    /// Keys the cache's hash with per-process randomness.
    hasher: foldhash::fast::RandomState,
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
        let cache = quick_cache::sync::Cache::with(
            usize::try_from(settings.token_cache_entries).unwrap_or(usize::MAX),
            settings.token_cache_entries.saturating_mul(TOKEN_BUDGET_BYTES),
            TokenWeight,
            KeyIsHash,
            quick_cache::sync::DefaultLifecycle::default(),
        );
        Ok(TokenVerifier {
            inner: Arc::new(Inner { keys, issuer, settings, cache, hasher: foldhash::fast::RandomState::default(), headers: RwLock::default() }),
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
        let mut now = now_secs();
        let identity = match self.inner.cache.get(&key).filter(|v| *v.token == *token && now < v.verified_at + CACHE_TTL_SECS) {
            Some(v) => v.identity.clone(),
            None => {
                // Judged at a time read after the key lookup, which may have waited on the issuer.
                let (identity, judged_at) = self.verify_uncached(token).await?;
                let identity = Arc::new(identity);
                now = judged_at;
                self.inner.cache.insert(key, Arc::new(Verified { token: token.into(), identity: identity.clone(), verified_at: now }));
                identity
            }
        };
        if identity.expires_at.saturating_add(leeway) < now {
            self.inner.cache.remove(&key);
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

    /// The identity of a token not in the cache, and the time (Unix seconds) its lifetime was
    /// judged at.
    async fn verify_uncached(&self, token: &str) -> Result<(Identity, i64), AuthError> {
        let malformed = || AuthError::Invalid("not a JWT (header.payload.signature)".into());
        let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (encoded_header, payload) = message.split_once('.').ok_or_else(malformed)?;
        if payload.contains('.') {
            return Err(malformed());
        }
        let (alg, kid, known) = self.header(encoded_header, token)?;
        // Each kind of issuer holds its own allow-list: HS256 for the development issuer, the
        // configured algorithms for an OIDC one.
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
        // The signature first (jsonwebtoken's own check, with the installed crypto provider);
        // nothing of the payload is read before it holds.
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::Invalid("InvalidSignature".into())),
            Err(e) => return Err(AuthError::Invalid(e.to_string())),
        }
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| AuthError::Invalid("payload: not base64url".into()))?;
        let payload = std::str::from_utf8(&payload).map_err(|_| AuthError::Invalid("payload: not UTF-8".into()))?;
        if !known {
            self.remember_header(encoded_header, alg, kid);
        }
        // Read after the key lookup, which may have waited on the issuer.
        let now = now_secs();
        let s = &self.inner.settings;
        let expected = Expected { issuer: &self.inner.issuer, audience: &s.audience, leeway: s.leeway.as_secs(), now: now.max(0) as u64 };
        Ok((crate::claims::identity(payload, &s.claims, s.token_binding.as_ref().map(|b| b.claim.as_str()), &expected)?, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthConfig, DevClaims};

    /// A cached token is served from the cache for five minutes at most: past that it is
    /// verified again, so a key the issuer withdrew stops working.
    #[tokio::test]
    async fn a_cached_token_is_trusted_for_five_minutes_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let v = TokenVerifier::new(AuthConfig::default().validate(dir.path()).unwrap()).unwrap();
        let issuer = DevIssuer::load_or_create(&dir.path().join("dev-token-secret"), "dataplane").unwrap();
        let token = issuer.mint(&DevClaims { user: "bob".into(), org: "acme".into(), ttl_secs: 3600, ..Default::default() }).unwrap();
        assert_eq!(v.verify(&token, None).await.unwrap().user(), "bob");
        // Put a marked identity in the token's entry, verified some time ago.
        let key = std::hash::BuildHasher::hash_one(&v.inner.hasher, &token.as_bytes()[token.len().saturating_sub(KEY_BYTES)..]);
        let cached = v.inner.cache.get(&key).expect("the token is cached");
        let marked = |age: i64| {
            let identity = Arc::new(Identity { user: "from-the-cache".into(), ..(*cached.identity).clone() });
            Arc::new(Verified { token: token.as_str().into(), identity, verified_at: now_secs() - age })
        };
        v.inner.cache.insert(key, marked(CACHE_TTL_SECS - 10));
        assert_eq!(v.verify(&token, None).await.unwrap().user(), "from-the-cache", "a recent entry is used");
        v.inner.cache.insert(key, marked(CACHE_TTL_SECS + 1));
        assert_eq!(v.verify(&token, None).await.unwrap().user(), "bob", "an old entry is verified again");
        // And the entry was renewed.
        assert!(v.inner.cache.get(&key).is_some_and(|c| c.identity.user() == "bob" && now_secs() - c.verified_at < 5));
    }
}
