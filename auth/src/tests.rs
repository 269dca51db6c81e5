//! The JWT attack suite and the authorisation rules, against a real HTTP server publishing the
//! issuer's discovery document and key set.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::IssuerMode;
use crate::*;

const RSA1: &[u8] = include_bytes!("../testdata/rsa1.pem");
const RSA1_PUB: &[u8] = include_bytes!("../testdata/rsa1.pub.pem");
const RSA2: &[u8] = include_bytes!("../testdata/rsa2.pem");
const EC1: &[u8] = include_bytes!("../testdata/ec1.pem");
const ATTACKER: &[u8] = include_bytes!("../testdata/attacker.pem");
const JWKS: &str = include_str!("../testdata/jwks.json");
const JWKS_ROTATED: &str = include_str!("../testdata/jwks-rotated.json");

/// An identity provider on loopback: discovery document and key set, switchable and breakable.
struct Idp {
    url: String,
    jwks: Arc<Mutex<String>>,
    down: Arc<AtomicBool>,
    jwks_hits: Arc<AtomicUsize>,
    /// Milliseconds the key set takes to arrive.
    slow_ms: Arc<AtomicUsize>,
}

async fn idp() -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (jwks, down, hits, slow_ms) =
        (Arc::new(Mutex::new(JWKS.to_owned())), Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (j, d, h, issuer, slow) = (jwks.clone(), down.clone(), hits.clone(), url.clone(), slow_ms.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let (j, d, h, issuer, slow) = (j.clone(), d.clone(), h.clone(), issuer.clone(), slow.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body) = if d.load(Ordering::SeqCst) {
                    ("503 Service Unavailable", "{}".to_owned())
                } else if path == "/.well-known/openid-configuration" {
                    ("200 OK", json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") }).to_string())
                } else if path == "/keys" {
                    h.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(slow.load(Ordering::SeqCst) as u64)).await;
                    ("200 OK", j.lock().unwrap().clone())
                } else {
                    ("404 Not Found", "{}".to_owned())
                };
                let resp = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Idp { url, jwks, down, jwks_hits: hits, slow_ms }
}

fn oidc_verifier(idp: &Idp, tweak: impl FnOnce(&mut AuthConfig), tweak_settings: impl FnOnce(&mut OidcSettings)) -> TokenVerifier {
    let mut c = AuthConfig { issuer: idp.url.clone(), audience: "dataplane".into(), ..AuthConfig::default() };
    tweak(&mut c);
    let mut s = c.validate(std::path::Path::new("/nonexistent")).unwrap();
    if let IssuerMode::Oidc(o) = &mut s.mode {
        tweak_settings(o);
    }
    TokenVerifier::new(s).unwrap()
}

fn now() -> i64 {
    crate::now_secs()
}

fn claims(idp: &Idp) -> Value {
    json!({ "iss": idp.url, "aud": "dataplane", "sub": "alice", "org_id": "acme", "workspaces": ["ws-a", "ws-b"], "groups": ["dev"], "roles": ["viewer"], "exp": now() + 600, "nbf": now() - 5 })
}

fn sign(alg: Algorithm, kid: Option<&str>, pem: &[u8], claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem).unwrap(),
    };
    crate::jwt_crypto::install();
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn rejected(r: Result<Arc<Identity>, AuthError>) -> AuthError {
    match r {
        Ok(id) => panic!("accepted as {id:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_issuer_are_accepted_with_their_claims() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |_| {}, |_| {});
    let id = v.verify(&sign(Algorithm::RS256, Some("k1"), RSA1, &claims(&idp)), None).await.unwrap();
    assert_eq!((id.user(), id.org_id()), ("alice", "acme"));
    assert_eq!(id.workspaces(), &BTreeSet::from(["ws-a".to_owned(), "ws-b".to_owned()]));
    assert!(id.groups().contains("dev") && id.has_role("viewer"));
    let id = v.verify(&sign(Algorithm::ES256, Some("e1"), EC1, &claims(&idp)), None).await.unwrap();
    assert_eq!(id.user(), "alice");
    // Discovery once, key set once; the second token needed no fetch.
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |_| {}, |_| {});
    let good = claims(&idp);
    // A good token first, so the verifier knows the issuer's header: forgeries that reuse it
    // byte for byte must still fail on their signature or claims.
    assert_eq!(v.verify(&sign(Algorithm::RS256, Some("k1"), RSA1, &good), None).await.expect("good token").user(), "alice");
    // alg none, hand-made (no library will sign it).
    let none = format!("{}.{}.", B64.encode(br#"{"alg":"none","typ":"JWT"}"#), B64.encode(good.to_string()));
    rejected(v.verify(&none, None).await);
    let none_kid = format!("{}.{}.", B64.encode(br#"{"alg":"none","kid":"k1"}"#), B64.encode(good.to_string()));
    rejected(v.verify(&none_kid, None).await);
    // HS256 keyed with the issuer's public key (algorithm confusion).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    crate::jwt_crypto::install();
    let confused = jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(RSA1_PUB)).unwrap();
    rejected(v.verify(&confused, None).await);
    // Signed by a key the issuer never published, under the issuer's kid.
    rejected(v.verify(&sign(Algorithm::RS256, Some("k1"), ATTACKER, &good), None).await);
    // The attacker's key embedded in the header: never followed.
    let attacker_jwk: Value = serde_json::from_str(JWKS).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    h.jwk = serde_json::from_value(attacker_jwk["keys"][0].clone()).ok();
    h.jku = Some(format!("{}/keys", idp.url));
    let embedded = jsonwebtoken::encode(&h, &good, &EncodingKey::from_rsa_pem(ATTACKER).unwrap()).unwrap();
    rejected(v.verify(&embedded, None).await);
    // An RSA key used for ES256, an EC kid with RS256.
    rejected(v.verify(&sign(Algorithm::RS256, Some("e1"), RSA1, &good), None).await);
    // Tampered payload: the signature of one body on another.
    let t = sign(Algorithm::RS256, Some("k1"), RSA1, &good);
    let parts: Vec<&str> = t.split('.').collect();
    let mut evil = good.clone();
    evil["workspaces"] = json!(["ws-a", "ws-b", "ws-victim"]);
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(evil.to_string()), parts[2]);
    rejected(v.verify(&tampered, None).await);
    // A validly signed payload that names its organisation twice (jsonwebtoken itself refuses
    // a doubled `sub`, `exp` and the like): refused, whichever one a parser would keep.
    let twice = good.to_string().replacen(r#""org_id":"acme""#, r#""org_id":"acme","org_id":"victim""#, 1);
    assert!(twice.contains(r#""org_id":"victim""#));
    let raw = serde_json::value::RawValue::from_string(twice).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    let doubled = jsonwebtoken::encode(&h, &raw, &EncodingKey::from_rsa_pem(RSA1).unwrap()).unwrap();
    let e = rejected(v.verify(&doubled, None).await).to_string();
    assert!(e.contains("appears twice"), "{e}");
    // Garbage and oversize.
    rejected(v.verify("not.a.token", None).await);
    rejected(v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), None).await);
    assert!(matches!(v.verify("", None).await, Err(AuthError::Missing)));
}

#[tokio::test]
async fn lifetime_issuer_and_audience_are_enforced_and_required() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |c| c.leeway_secs = 5, |_| {});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&idp);
        f(&mut c);
        sign(Algorithm::RS256, Some("k1"), RSA1, &c)
    };
    assert!(matches!(v.verify(&with(&|c| c["exp"] = json!(now() - 60)), None).await, Err(AuthError::Expired)));
    rejected(v.verify(&with(&|c| c["nbf"] = json!(now() + 600)), None).await);
    rejected(v.verify(&with(&|c| c["iss"] = json!("https://evil.example.com")), None).await);
    rejected(v.verify(&with(&|c| c["aud"] = json!("someone-else")), None).await);
    for claim in ["exp", "iss", "aud", "sub", "org_id"] {
        rejected(v.verify(&with(&|c| drop(c.as_object_mut().unwrap().remove(claim))), None).await);
    }
    // Claims sent as strings must not skip validation.
    rejected(v.verify(&with(&|c| c["exp"] = json!((now() - 60).to_string())), None).await);
    rejected(v.verify(&with(&|c| c["nbf"] = json!((now() + 600).to_string())), None).await);
    rejected(v.verify(&with(&|c| c["workspaces"] = json!({"ws-a": true})), None).await);
    // Within the leeway is fine.
    v.verify(&with(&|c| c["exp"] = json!(now() - 2)), None).await.unwrap();
    // An audience list that includes ours is fine.
    v.verify(&with(&|c| c["aud"] = json!(["other", "dataplane"])), None).await.unwrap();
}

/// The registered claims are checked by this crate, not by `jsonwebtoken::decode` (one parse of
/// the payload instead of three): over hostile values of `exp`, `nbf`, `iss` and `aud`, alone,
/// in pairs and doubled, a token is accepted exactly when `jsonwebtoken::decode` with the same
/// rules accepts it, and is `Expired` exactly when it says `ExpiredSignature`.
#[tokio::test]
async fn registered_claims_are_judged_exactly_as_jsonwebtoken_judges_them() {
    let idp = idp().await;
    let leeway = 5u64;
    let v = oidc_verifier(&idp, |c| c.leeway_secs = leeway, |_| {});
    let mut rules = jsonwebtoken::Validation::new(Algorithm::RS256);
    rules.set_issuer(&[idp.url.as_str()]);
    rules.set_audience(&["dataplane"]);
    rules.set_required_spec_claims(&["exp", "iss", "aud"]);
    rules.leeway = leeway;
    rules.validate_nbf = true;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(RSA1_PUB).unwrap();
    let t = now();
    let times = [
        json!(t + 3600),
        json!(t - 3600),
        json!(t - 2),
        json!((t + 3600) as f64 + 0.4),
        json!((t - 3600) as f64),
        json!((t + 3600).to_string()),
        json!(-1),
        json!(1e300),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(1e19),
        json!(null),
        json!(true),
        json!([t + 3600]),
        json!({ "t": t + 3600 }),
    ];
    let names = [
        json!(idp.url),
        json!("https://evil.example.com"),
        json!(""),
        json!(7),
        json!(null),
        json!([]),
        json!(["x"]),
        json!([idp.url, "x"]),
        json!([idp.url, 1]),
    ];
    let auds =
        [json!("dataplane"), json!("other"), json!(["other", "dataplane"]), json!([]), json!(["dataplane", null]), json!(null), json!({ "dataplane": 1 })];
    let mut cases: Vec<String> = Vec::new();
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims(&idp);
        let m = c.as_object_mut().unwrap();
        f(m);
        c.to_string()
    };
    for x in &times {
        cases.push(with(&|c| drop(c.insert("exp".into(), x.clone()))));
        cases.push(with(&|c| drop(c.insert("nbf".into(), x.clone()))));
        for y in &times[..6] {
            cases.push(with(&|c| {
                c.insert("exp".into(), x.clone());
                c.insert("nbf".into(), y.clone());
            }));
        }
    }
    for n in &names {
        for a in &auds {
            cases.push(with(&|c| {
                c.insert("iss".into(), n.clone());
                c.insert("aud".into(), a.clone());
            }));
        }
        // An expired token from another issuer: which error wins matters too.
        cases.push(with(&|c| {
            c.insert("iss".into(), n.clone());
            c.insert("exp".into(), json!(t - 3600));
        }));
    }
    for claim in ["exp", "nbf", "iss", "aud", "sub"] {
        if claim != "sub" {
            // (`sub` is the user here, which an identity needs; jsonwebtoken does not.)
            cases.push(with(&|c| drop(c.remove(claim))));
        }
        // Said twice, with the same value and with another.
        let good = claims(&idp).to_string();
        let value = claims(&idp)[claim].to_string();
        cases.push(good.replacen('{', &format!(r#"{{"{claim}":{value},"#), 1));
        cases.push(good.replacen('{', &format!(r#"{{"{claim}":"other","#), 1));
    }
    let (mut accepted, mut expired) = (0, 0);
    for payload in &cases {
        let raw = serde_json::value::RawValue::from_string(payload.clone()).unwrap();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        crate::jwt_crypto::install();
        let token = jsonwebtoken::encode(&h, &raw, &EncodingKey::from_rsa_pem(RSA1).unwrap()).unwrap();
        let theirs = jsonwebtoken::decode::<Value>(&token, &key, &rules);
        let ours = v.verify(&token, None).await;
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{payload}: ours {ours:?}, jsonwebtoken {theirs:?}");
        let their_expiry = theirs.as_ref().is_err_and(|e| matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature));
        assert_eq!(matches!(ours, Err(AuthError::Expired)), their_expiry, "{payload}: ours {ours:?}, jsonwebtoken {theirs:?}");
        accepted += usize::from(ours.is_ok());
        expired += usize::from(their_expiry);
    }
    // The cases reach every outcome, not only refusals.
    assert!(accepted >= 10 && expired >= 10 && cases.len() - accepted - expired >= 50, "{accepted} accepted, {expired} expired of {}", cases.len());
}

/// With the user read from another claim, `sub` is only a registered claim: a list or an object
/// there makes the payload one `jsonwebtoken` cannot read, and it is refused here too.
#[tokio::test]
async fn a_sub_that_is_not_the_user_is_judged_as_jsonwebtoken_judges_it() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |c| c.claims.user = "email".into(), |_| {});
    let mut rules = jsonwebtoken::Validation::new(Algorithm::RS256);
    rules.set_issuer(&[idp.url.as_str()]);
    rules.set_audience(&["dataplane"]);
    rules.set_required_spec_claims(&["exp", "iss", "aud"]);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(RSA1_PUB).unwrap();
    let mut outcomes = BTreeSet::new();
    for sub in [json!("alice"), json!(["a"]), json!([]), json!({ "a": 1 }), json!(true), json!(-1), json!(5), json!(null)] {
        let mut c = claims(&idp);
        c["email"] = json!("alice@example.com");
        c["sub"] = sub.clone();
        let token = sign(Algorithm::RS256, Some("k1"), RSA1, &c);
        let theirs = jsonwebtoken::decode::<Value>(&token, &key, &rules).is_ok();
        let ours = v.verify(&token, None).await;
        assert_eq!(ours.is_ok(), theirs, "sub {sub}: ours {ours:?}");
        outcomes.insert(theirs);
    }
    assert_eq!(outcomes.len(), 2, "both outcomes are reached");
}

/// The clock is read after the signing key arrives: a token that expired while the key set was
/// being fetched is refused, as `jsonwebtoken::decode` after the fetch would refuse it.
#[tokio::test]
async fn a_token_that_expires_while_the_keys_are_fetched_is_refused() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |c| c.leeway_secs = 0, |_| {});
    idp.slow_ms.store(2_500, Ordering::SeqCst);
    let mut c = claims(&idp);
    c["exp"] = json!(now() + 1);
    let t = sign(Algorithm::RS256, Some("k1"), RSA1, &c);
    assert!(matches!(v.verify(&t, None).await, Err(AuthError::Expired)));
}

#[tokio::test]
async fn unknown_kids_refresh_at_a_bounded_rate_and_rotated_keys_are_picked_up() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |_| {}, |o| o.refresh_min = Duration::from_secs(60));
    v.verify(&sign(Algorithm::RS256, Some("k1"), RSA1, &claims(&idp)), None).await.unwrap();
    // A flood of unknown kids: at most one fetch per refresh_min.
    for i in 0..30 {
        rejected(v.verify(&sign(Algorithm::RS256, Some(&format!("forged-{i}")), RSA1, &claims(&idp)), None).await);
    }
    assert!(idp.jwks_hits.load(Ordering::SeqCst) <= 2, "{} fetches", idp.jwks_hits.load(Ordering::SeqCst));
    // Rotation: the issuer now signs with k2 and no longer publishes k1.
    let v = oidc_verifier(&idp, |_| {}, |o| o.refresh_min = Duration::from_millis(200));
    v.verify(&sign(Algorithm::RS256, Some("k1"), RSA1, &claims(&idp)), None).await.unwrap();
    *idp.jwks.lock().unwrap() = JWKS_ROTATED.to_owned();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let rotated = sign(Algorithm::RS256, Some("k2"), RSA2, &claims(&idp));
    v.verify(&rotated, None).await.unwrap();
    let mut fresh = claims(&idp);
    fresh["jti"] = json!("new");
    rejected(v.verify(&sign(Algorithm::RS256, Some("k1"), RSA1, &fresh), None).await);
}

#[tokio::test]
async fn an_issuer_outage_keeps_the_last_good_keys_until_they_are_too_old() {
    let idp = idp().await;
    let v = oidc_verifier(
        &idp,
        |_| {},
        |o| {
            o.refresh_every = Duration::from_millis(100);
            o.refresh_min = Duration::from_millis(50);
            o.max_stale = Duration::from_millis(600);
        },
    );
    let token = |i: u32| {
        let mut c = claims(&idp);
        c["jti"] = json!(i);
        sign(Algorithm::RS256, Some("k1"), RSA1, &c)
    };
    v.verify(&token(0), None).await.unwrap();
    idp.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    v.verify(&token(1), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(v.verify(&token(2), None).await, Err(AuthError::KeysUnavailable(_))));
    idp.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    v.verify(&token(3), None).await.unwrap();
}

#[tokio::test]
async fn a_bound_token_needs_its_cookie() {
    let idp = idp().await;
    let v = oidc_verifier(&idp, |c| c.token_binding = Some(TokenBindingConfig { claim: "fgp".into(), cookie: "__Host-Fgp".into() }), |_| {});
    let secret = "random-cookie-value";
    let hash: String = sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let mut c = claims(&idp);
    c["fgp"] = json!(hash);
    let t = sign(Algorithm::RS256, Some("k1"), RSA1, &c);
    v.verify(&t, Some(&format!("theme=dark; __Host-Fgp={secret}"))).await.unwrap();
    // Cached now: the cookie is still checked.
    assert!(matches!(v.verify(&t, None).await, Err(AuthError::Binding)));
    assert!(matches!(v.verify(&t, Some("__Host-Fgp=stolen-elsewhere")).await, Err(AuthError::Binding)));
    // A token without the claim cannot be used when binding is on.
    let unbound = sign(Algorithm::RS256, Some("k1"), RSA1, &claims(&idp));
    assert!(matches!(v.verify(&unbound, Some(&format!("__Host-Fgp={secret}"))).await, Err(AuthError::Binding)));
}

use sha2::Digest;

#[tokio::test]
async fn the_development_issuer_signs_what_the_server_accepts_and_nothing_else_passes() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AuthConfig::default().validate(dir.path()).unwrap();
    let v = TokenVerifier::new(settings).unwrap();
    let issuer = DevIssuer::load_or_create(&dir.path().join("dev-token-secret"), "dataplane").unwrap();
    let t = issuer
        .mint(&DevClaims {
            user: "bob".into(),
            org: "acme".into(),
            workspaces: vec!["ws-a".into()],
            roles: vec!["auditor".into()],
            ttl_secs: 60,
            ..Default::default()
        })
        .unwrap();
    let id = v.verify(&t, None).await.unwrap();
    assert_eq!((id.user(), id.org_id()), ("bob", "acme"));
    // Another secret, an RSA token, an expired dev token.
    let other = DevIssuer::load_or_create(&dir.path().join("other-secret"), "dataplane").unwrap();
    rejected(v.verify(&other.mint(&DevClaims { user: "bob".into(), org: "acme".into(), ttl_secs: 60, ..Default::default() }).unwrap(), None).await);
    let rs = sign(Algorithm::RS256, None, RSA1, &json!({"iss": DEV_ISSUER, "aud": "dataplane", "sub": "x", "org_id": "acme", "exp": now() + 60}));
    rejected(v.verify(&rs, None).await);
    let expired = issuer.mint(&DevClaims { user: "bob".into(), org: "acme".into(), ttl_secs: 0, ..Default::default() }).unwrap();
    let v_strict = TokenVerifier::new(AuthConfig { leeway_secs: 0, ..AuthConfig::default() }.validate(dir.path()).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    rejected(v_strict.verify(&expired, None).await);
    // The secret is private to the owner.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.path().join("dev-token-secret")).unwrap().permissions().mode() & 0o077, 0);
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = std::path::Path::new("/tmp");
    let e = AuthConfig { issuer: "login.example.com".into(), ..AuthConfig::default() }.validate(dir).unwrap_err();
    assert!(e.contains("auth.issuer"), "{e}");
    let e = AuthConfig { issuer: "https://x".into(), algorithms: vec!["HS256".into()], ..AuthConfig::default() }.validate(dir).unwrap_err();
    assert!(e.contains("auth.algorithms") && e.contains("HS256"), "{e}");
    let e = AuthConfig { issuer: "https://x".into(), algorithms: vec!["none".into()], ..AuthConfig::default() }.validate(dir).unwrap_err();
    assert!(e.contains("auth.algorithms"), "{e}");
}

async fn dev_identity(dir: &std::path::Path, user: &str, workspaces: &[&str], groups: &[&str], roles: &[&str]) -> Arc<Identity> {
    let v = TokenVerifier::new(AuthConfig::default().validate(dir).unwrap()).unwrap();
    let issuer = DevIssuer::load_or_create(&dir.join("dev-token-secret"), "dataplane").unwrap();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    let t = issuer
        .mint(&DevClaims {
            user: user.into(),
            org: "acme".into(),
            workspaces: s(workspaces),
            groups: s(groups),
            roles: s(roles),
            ttl_secs: 60,
            ..Default::default()
        })
        .unwrap();
    v.verify(&t, None).await.unwrap()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_gate_scopes_workload_audit_and_system_logs_by_their_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let alice = dev_identity(dir.path(), "alice", &["ws-a", "ws-b"], &["dev"], &[]).await;
    let gate = Gate::new(Arc::new(StaticPolicy::members_read_all()), "platform-operator", vec!["auditor".into()]);
    let all = gate.logs(&alice, None, None).await.unwrap();
    assert_eq!(all.workspaces(), Some(vec!["ws-a", "ws-b"]));
    assert!(all.allows("acme", "ws-a", "anything") && !all.allows("acme", "ws-c", "x") && !all.allows("other-org", "ws-a", "x"));
    // Naming a workspace outside the token is refused, existing or not.
    let e = gate.logs(&alice, Some(&set(&["ws-a", "ws-victim"])), None).await.unwrap_err();
    assert!(matches!(e, AuthError::Forbidden(_)));
    let projects = gate.logs(&alice, Some(&set(&["ws-a"])), Some(&set(&["shop"]))).await.unwrap();
    assert!(projects.allows("acme", "ws-a", "shop") && !projects.allows("acme", "ws-a", "billing"));
    assert!(matches!(gate.audit(&alice), Err(AuthError::Forbidden(_))) && matches!(gate.system(&alice), Err(AuthError::Forbidden(_))));
    let auditor = dev_identity(dir.path(), "carol", &[], &[], &["auditor"]).await;
    let audit = gate.audit(&auditor).unwrap();
    assert!(audit.allows("acme", "any", "any") && !audit.allows("globex", "any", "any"));
    let op = dev_identity(dir.path(), "root", &[], &[], &["platform-operator"]).await;
    assert!(gate.system(&op).unwrap().org_id().is_none());
    // Operators get no workload logs by their role alone.
    assert!(gate.logs(&op, None, None).await.unwrap().is_empty());

    // A policy file: only the listed namespaces, and never outside the token's workspaces.
    let policy: StaticPolicy = toml::from_str(
        "[[grant]]\nusers = [\"alice\"]\nworkspace = \"ws-a\"\nnamespaces = [\"shop\"]\n[[grant]]\ngroups = [\"dev\"]\nworkspace = \"ws-c\"\nnamespaces = [\"*\"]\n",
    )
    .unwrap();
    let gate = Gate::new(Arc::new(policy), "platform-operator", vec![]);
    let s = gate.logs(&alice, None, None).await.unwrap();
    assert_eq!(s.workspaces(), Some(vec!["ws-a"]));
    assert!(s.allows("acme", "ws-a", "shop") && !s.allows("acme", "ws-a", "billing") && !s.allows("acme", "ws-c", "x"));
    assert!(gate.logs(&alice, Some(&set(&["ws-b"])), None).await.is_err());
}
