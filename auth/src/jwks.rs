//! The issuer's signing keys: discovered, fetched, refreshed and kept through an outage.
//!
//! What must hold:
//! - Only asymmetric keys are taken from a key set; a symmetric (`oct`) key there is ignored,
//!   so a token can never be checked with HS256 against public material.
//! - A key is used only with an algorithm of its own family (RSA: RS*/PS*, EC: ES*) and, when
//!   the key names one, with exactly that algorithm.
//! - An unknown `kid` triggers a refresh at most every `refresh_min` (a flood of forged `kid`s
//!   cannot turn into a flood of requests to the issuer).
//! - When the issuer cannot be reached the last good keys are used until they are `max_stale`
//!   old; after that every token is refused.
//! - Header fields that point elsewhere for keys (`jku`, `x5u`, an embedded `jwk`) are never
//!   followed: keys come from the configured issuer only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::AuthError;
use crate::config::OidcSettings;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger key sets than this are refused (a real one is a few KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Clone)]
struct Key {
    /// Shared: a lookup hands out the key without copying its material.
    decoding: Arc<DecodingKey>,
    family: Family,
    /// The algorithm the key is restricted to, if it names one.
    alg: Option<Algorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
}

fn family_of(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        _ => None,
    }
}

#[derive(Default)]
struct KeyState {
    keys: HashMap<String, Key>,
    /// Keys without a `kid` (usable only when the set has exactly one key of the family).
    anonymous: Vec<Key>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    jwks_url: Option<String>,
}

pub(crate) struct Jwks {
    http: reqwest::Client,
    settings: OidcSettings,
    state: RwLock<KeyState>,
    /// One refresh at a time; others wait for its result.
    refreshing: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub(crate) fn new(settings: OidcSettings) -> Result<Jwks, AuthError> {
        // The issuer is reached over HTTPS with rustls and AWS-LC (idempotent if the binary has
        // installed the provider already).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::KeysUnavailable(format!("http client: {e}")))?;
        let state = KeyState { jwks_url: settings.jwks_url.clone(), ..KeyState::default() };
        Ok(Jwks { http, settings, state: RwLock::new(state), refreshing: tokio::sync::Mutex::new(()) })
    }

    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        self.settings.algorithms.contains(&alg)
    }

    /// The key for a token's `kid` and `alg`.
    pub(crate) async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, AuthError> {
        let (found, age, may_refresh) = self.lookup(kid, alg);
        let stale = age.is_none_or(|a| a >= self.settings.refresh_every);
        if let Some(k) = found
            && !stale
        {
            return Ok(k);
        }
        if may_refresh && let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, issuer = %self.settings.issuer, "signing key refresh failed");
        }
        let (found, age, _) = self.lookup(kid, alg);
        match (found, age) {
            (Some(k), Some(age)) if age < self.settings.max_stale => Ok(k),
            (_, None) => Err(AuthError::KeysUnavailable("no key set fetched yet".into())),
            (Some(_), Some(_)) => Err(AuthError::KeysUnavailable("the last good key set is too old".into())),
            (None, Some(age)) if age >= self.settings.max_stale => Err(AuthError::KeysUnavailable("the last good key set is too old".into())),
            (None, _) => Err(AuthError::Invalid("no key for this token's kid".into())),
        }
    }

    /// The matching key, the key set's age, and whether a refresh is allowed now.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> (Option<Arc<DecodingKey>>, Option<Duration>, bool) {
        let Ok(s) = self.state.read() else { return (None, None, true) };
        let fits = |k: &Key| Some(k.family) == family_of(alg) && k.alg.is_none_or(|a| a == alg);
        let found = match kid {
            Some(kid) => s.keys.get(kid).filter(|k| fits(k)).map(|k| k.decoding.clone()),
            None => {
                let mut all = s.keys.values().chain(s.anonymous.iter()).filter(|k| fits(k));
                match (all.next(), all.next()) {
                    (Some(only), None) => Some(only.decoding.clone()),
                    _ => None,
                }
            }
        };
        let may_refresh = s.last_attempt.is_none_or(|t| t.elapsed() >= self.settings.refresh_min);
        (found, s.fetched_at.map(|t| t.elapsed()), may_refresh)
    }

    async fn refresh(&self) -> Result<(), AuthError> {
        let _one = self.refreshing.lock().await;
        // Someone else may have refreshed while this call waited.
        let url = {
            let Ok(mut s) = self.state.write() else { return Err(AuthError::KeysUnavailable("key state poisoned".into())) };
            if s.last_attempt.is_some_and(|t| t.elapsed() < self.settings.refresh_min) {
                return Ok(());
            }
            s.last_attempt = Some(Instant::now());
            s.jwks_url.clone()
        };
        let url = match url {
            Some(u) => u,
            None => {
                let u = self.discover().await?;
                if let Ok(mut s) = self.state.write() {
                    s.jwks_url = Some(u.clone());
                }
                u
            }
        };
        let set: JwkSet = self.get_json(&url).await?;
        let (mut keys, mut anonymous) = (HashMap::new(), Vec::new());
        for jwk in &set.keys {
            let Some(key) = to_key(jwk) else { continue };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.insert(kid.clone(), key);
                }
                None => anonymous.push(key),
            }
        }
        if keys.is_empty() && anonymous.is_empty() {
            return Err(AuthError::KeysUnavailable(format!("{url} holds no usable RSA or EC signing key")));
        }
        tracing::info!(keys = keys.len() + anonymous.len(), "signing keys refreshed");
        let Ok(mut s) = self.state.write() else { return Err(AuthError::KeysUnavailable("key state poisoned".into())) };
        s.keys = keys;
        s.anonymous = anonymous;
        s.fetched_at = Some(Instant::now());
        Ok(())
    }

    async fn discover(&self) -> Result<String, AuthError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let doc: serde_json::Value = self.get_json(&url).await?;
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(self.settings.issuer.as_str()) {
            return Err(AuthError::KeysUnavailable(format!("{url}: `issuer` does not match auth.issuer")));
        }
        doc.get("jwks_uri").and_then(|v| v.as_str()).map(str::to_owned).ok_or_else(|| AuthError::KeysUnavailable(format!("{url}: no jwks_uri")))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, AuthError> {
        let unavailable = |e: String| AuthError::KeysUnavailable(format!("{url}: {e}"));
        let resp = self.http.get(url).send().await.map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("status {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(unavailable("answer too large".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| unavailable(e.to_string()))
    }
}

fn to_key(jwk: &Jwk) -> Option<Key> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| !matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature)) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(_) => Family::Ec,
        // Symmetric and EdDSA keys are never taken from a key set.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(match a {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            _ => return None,
        }),
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { decoding: Arc::new(decoding), family, alg })
}
