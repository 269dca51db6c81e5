//! `jsonwebtoken`'s signatures computed with aws-lc-rs, the crypto library the TLS stack already
//! links, instead of the pure-Rust RSA and elliptic-curve crates: an RS256 verification is
//! several times cheaper, and two crypto stacks are not compiled.
//!
//! A verification key is parsed once and kept ([`ParsedPublicKey`]): parsing an RSA key (its
//! Montgomery constants) cost as much as a third of a verification done from the raw key.
//!
//! [`install`] must run before any token is signed or verified; [`crate::TokenVerifier::new`]
//! and [`crate::DevIssuer`] call it, and so should anything else that uses `jsonwebtoken`.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::ParsedPublicKey;
use aws_lc_rs::{digest, hmac, signature as sig};

fn hmac_alg(a: Algorithm) -> Option<hmac::Algorithm> {
    Some(match a {
        Algorithm::HS256 => hmac::HMAC_SHA256,
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => return None,
    })
}

fn rsa_verify_alg(a: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match a {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn rsa_sign_alg(a: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    Some(match a {
        Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn ec_verify_alg(a: Algorithm) -> Option<&'static sig::EcdsaVerificationAlgorithm> {
    Some(match a {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        _ => return None,
    })
}

fn ec_sign_alg(a: Algorithm) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    Some(match a {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => return None,
    })
}

fn failed(e: impl std::fmt::Display) -> signature::Error {
    signature::Error::from_source(e.to_string())
}

/// Signs with one key and algorithm.
struct Signing {
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer<Vec<u8>> for Signing {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        if let Some(h) = hmac_alg(self.alg) {
            let secret = self.key.try_get_hmac_secret().map_err(failed)?;
            return Ok(hmac::sign(&hmac::Key::new(h, secret), msg).as_ref().to_vec());
        }
        if let Some(enc) = rsa_sign_alg(self.alg) {
            let pair = sig::RsaKeyPair::from_der(self.key.inner()).map_err(failed)?;
            let mut out = vec![0; pair.public_modulus_len()];
            pair.sign(enc, &rng, msg, &mut out).map_err(failed)?;
            return Ok(out);
        }
        if let Some(alg) = ec_sign_alg(self.alg) {
            let pair = sig::EcdsaKeyPair::from_pkcs8(alg, self.key.inner()).map_err(failed)?;
            return Ok(pair.sign(&rng, msg).map_err(failed)?.as_ref().to_vec());
        }
        Err(failed(format!("{:?} is not supported", self.alg)))
    }
}

impl JwtSigner for Signing {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Verifies with one key and algorithm: an HMAC secret, or a public key parsed once.
enum Verifying {
    Hmac(Box<hmac::Key>),
    Public(Arc<ParsedPublicKey>),
}

struct Verification {
    alg: Algorithm,
    key: Verifying,
}

impl Verifier<Vec<u8>> for Verification {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        match &self.key {
            Verifying::Hmac(key) => hmac::verify(key, msg, signature).map_err(failed),
            Verifying::Public(key) => key.verify_sig(msg, signature).map_err(failed),
        }
    }
}

impl JwtVerifier for Verification {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// A public key as a [`DecodingKey`] holds it.
#[derive(PartialEq)]
enum Material<'a> {
    Der(&'a [u8]),
    Rsa(&'a [u8], &'a [u8]),
}

fn material(key: &DecodingKey) -> Material<'_> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => Material::Der(der),
        DecodingKeyKind::RsaModulusExponent { n, e } => Material::Rsa(n, e),
    }
}

/// [`Material`] owned, as a kept key remembers what it was parsed from.
enum Owned {
    Der(Vec<u8>),
    Rsa(Vec<u8>, Vec<u8>),
}

impl Owned {
    fn of(m: &Material<'_>) -> Owned {
        match m {
            Material::Der(der) => Owned::Der(der.to_vec()),
            Material::Rsa(n, e) => Owned::Rsa(n.to_vec(), e.to_vec()),
        }
    }

    fn borrowed(&self) -> Material<'_> {
        match self {
            Owned::Der(der) => Material::Der(der),
            Owned::Rsa(n, e) => Material::Rsa(n, e),
        }
    }
}

/// A parsed public key, with the algorithm and the bytes it was parsed from.
struct Parsed {
    alg: Algorithm,
    from: Owned,
    key: Arc<ParsedPublicKey>,
}

/// At most this many parsed keys are kept: an issuer publishes a handful at a time, and only
/// keys of the current key set ever reach a verifier.
const MAX_PARSED: usize = 64;

/// Public keys parsed for verification. A lookup compares bytes (no allocation, no hashing):
/// it runs once per verification, beside a signature check of about 15 µs.
static PARSED: std::sync::RwLock<Vec<Parsed>> = std::sync::RwLock::new(Vec::new());

/// `key` for `alg`, parsed (or taken from [`PARSED`]).
fn parsed(alg: Algorithm, key: &DecodingKey) -> Result<Arc<ParsedPublicKey>, Error> {
    let m = material(key);
    if let Ok(kept) = PARSED.read()
        && let Some(p) = kept.iter().find(|p| p.alg == alg && p.from.borrowed() == m)
    {
        return Ok(p.key.clone());
    }
    let k = if let Some(params) = rsa_verify_alg(alg) {
        match &m {
            Material::Der(der) => ParsedPublicKey::new(params, der),
            Material::Rsa(n, e) => sig::RsaPublicKeyComponents { n, e }.to_parsed_public_key(params),
        }
        .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?
    } else if let Some(curve) = ec_verify_alg(alg) {
        ParsedPublicKey::new(curve, key.as_bytes()).map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?
    } else {
        return Err(ErrorKind::InvalidAlgorithm.into());
    };
    let k = Arc::new(k);
    if let Ok(mut kept) = PARSED.write() {
        if kept.len() >= MAX_PARSED {
            kept.clear();
        }
        kept.push(Parsed { alg, from: Owned::of(&m), key: k.clone() });
    }
    Ok(k)
}

// A key of another family than its algorithm's is refused, so an RSA public key can never be
// used as an HMAC secret.
fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if key.family() != alg.family() || matches!(alg, Algorithm::EdDSA) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(Signing { alg: *alg, key: key.clone() }))
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != alg.family() || matches!(alg, Algorithm::EdDSA) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let verifying = match hmac_alg(*alg) {
        Some(h) => Verifying::Hmac(Box::new(hmac::Key::new(h, key.try_get_hmac_secret()?))),
        None => Verifying::Public(parsed(*alg, key)?),
    };
    Ok(Box::new(Verification { alg: *alg, key: verifying }))
}

fn extract_rsa_public_key_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pair = sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let c: sig::RsaPublicKeyComponents<Vec<u8>> = sig::KeyPair::public_key(&pair).into();
    Ok((c.n, c.e))
}

fn extract_ec_public_key_coordinates(der: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let (signing, curve, len) = match alg {
        Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, EllipticCurve::P256, 32),
        Algorithm::ES384 => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, EllipticCurve::P384, 48),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    let point = sig::KeyPair::public_key(&pair).as_ref();
    if point.first() != Some(&4) || point.len() != 1 + 2 * len {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    let (x, y) = point[1..].split_at(len);
    Ok((curve, x.to_vec(), y.to_vec()))
}

fn compute_digest(data: &[u8], h: ThumbprintHash) -> Vec<u8> {
    let alg = match h {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

static AWS_LC: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils { extract_rsa_public_key_components, extract_ec_public_key_coordinates, compute_digest },
};

/// Makes aws-lc-rs the process's `jsonwebtoken` crypto provider. Idempotent.
pub fn install() {
    let _ = AWS_LC.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Header, Validation, decode, encode};

    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn every_family_signs_and_verifies_and_keys_do_not_cross_families() {
        install();
        let claims = serde_json::json!({ "sub": "alice", "exp": 4_000_000_000u64 });
        let mut v = Validation::new(Algorithm::RS256);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        for (alg, enc, dec) in [
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pem")).unwrap(),
                DecodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pub.pem")).unwrap(),
            ),
            (
                Algorithm::PS256,
                EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pem")).unwrap(),
                DecodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pub.pem")).unwrap(),
            ),
            (Algorithm::ES256, EncodingKey::from_ec_pem(include_bytes!("../testdata/ec1.pem")).unwrap(), {
                let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(include_str!("../testdata/jwks.json")).unwrap();
                DecodingKey::from_jwk(set.find("e1").unwrap()).unwrap()
            }),
            (Algorithm::HS256, EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"), DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef")),
        ] {
            v.algorithms = vec![alg];
            let token = encode(&Header::new(alg), &claims, &enc).unwrap();
            assert!(decode::<serde_json::Value>(&token, &dec, &v).is_ok(), "{alg:?}");
            let mut tampered = token.clone();
            tampered.pop();
            tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
            assert!(decode::<serde_json::Value>(&tampered, &dec, &v).is_err(), "{alg:?} tampered");
        }
        // Parsed keys are kept per key and algorithm: with both of two keys parsed and kept,
        // a token still verifies with its own key only, and RS256 and PS256 keep their own.
        let own = DecodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pub.pem")).unwrap();
        let other_pair = EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa2.pem")).unwrap();
        let other_pub = {
            let pair = sig::RsaKeyPair::from_pkcs8(&pem_body(include_str!("../testdata/rsa2.pem"))).unwrap();
            let c: sig::RsaPublicKeyComponents<Vec<u8>> = sig::KeyPair::public_key(&pair).into();
            DecodingKey::from_rsa_raw_components(&c.n, &c.e)
        };
        let rs1 = encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pem")).unwrap()).unwrap();
        let rs2 = encode(&Header::new(Algorithm::RS256), &claims, &other_pair).unwrap();
        v.algorithms = vec![Algorithm::RS256];
        for _ in 0..2 {
            assert!(decode::<serde_json::Value>(&rs1, &own, &v).is_ok());
            assert!(decode::<serde_json::Value>(&rs2, &other_pub, &v).is_ok());
            assert!(decode::<serde_json::Value>(&rs1, &other_pub, &v).is_err());
            assert!(decode::<serde_json::Value>(&rs2, &own, &v).is_err());
        }
        let ps1 = encode(&Header::new(Algorithm::PS256), &claims, &EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pem")).unwrap()).unwrap();
        assert!(decode::<serde_json::Value>(&ps1, &own, &v).is_err(), "a PS256 token is not an RS256 one");
        v.algorithms = vec![Algorithm::PS256];
        assert!(decode::<serde_json::Value>(&ps1, &own, &v).is_ok());
        assert!(decode::<serde_json::Value>(&rs1, &own, &v).is_err(), "an RS256 signature checked as PS256");

        // An RSA public key is never an HMAC secret.
        let public = DecodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pub.pem")).unwrap();
        assert!(new_verifier(&Algorithm::HS256, &public).is_err());
    }
}
