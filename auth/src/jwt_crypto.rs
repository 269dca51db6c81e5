//! `jsonwebtoken`'s signatures computed with `ring`, the crypto library the TLS stack already
//! links, instead of the pure-Rust RSA and elliptic-curve crates: an RS256 verification is
//! several times cheaper, and two crypto stacks are not compiled.
//!
//! [`install`] must run before any token is signed or verified; [`crate::TokenVerifier::new`]
//! and [`crate::DevIssuer`] call it, and so should anything else that uses `jsonwebtoken`.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::{digest, hmac, signature as sig};

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
struct RingSigner {
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        if let Some(h) = hmac_alg(self.alg) {
            let secret = self.key.try_get_hmac_secret().map_err(failed)?;
            return Ok(hmac::sign(&hmac::Key::new(h, secret), msg).as_ref().to_vec());
        }
        if let Some(enc) = rsa_sign_alg(self.alg) {
            let pair = sig::RsaKeyPair::from_der(self.key.inner()).map_err(failed)?;
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(enc, &rng, msg, &mut out).map_err(failed)?;
            return Ok(out);
        }
        if let Some(alg) = ec_sign_alg(self.alg) {
            let pair = sig::EcdsaKeyPair::from_pkcs8(alg, self.key.inner(), &rng).map_err(failed)?;
            return Ok(pair.sign(&rng, msg).map_err(failed)?.as_ref().to_vec());
        }
        Err(failed(format!("{:?} is not supported", self.alg)))
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Verifies with one key and algorithm.
struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        if let Some(h) = hmac_alg(self.alg) {
            let secret = self.key.try_get_hmac_secret().map_err(failed)?;
            return hmac::verify(&hmac::Key::new(h, secret), msg, signature).map_err(failed);
        }
        if let Some(params) = rsa_verify_alg(self.alg) {
            return match self.key.kind() {
                DecodingKeyKind::SecretOrDer(der) => sig::UnparsedPublicKey::new(params, der).verify(msg, signature).map_err(failed),
                DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature).map_err(failed),
            };
        }
        if let Some(alg) = ec_verify_alg(self.alg) {
            return sig::UnparsedPublicKey::new(alg, self.key.as_bytes()).verify(msg, signature).map_err(failed);
        }
        Err(failed(format!("{:?} is not supported", self.alg)))
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

// A key of another family than its algorithm's is refused, so an RSA public key can never be
// used as an HMAC secret.
fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if key.family() != alg.family() || matches!(alg, Algorithm::EdDSA) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingSigner { alg: *alg, key: key.clone() }))
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != alg.family() || matches!(alg, Algorithm::EdDSA) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier { alg: *alg, key: key.clone() }))
}

fn extract_rsa_public_key_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pair = sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let c: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    Ok((c.n, c.e))
}

fn extract_ec_public_key_coordinates(der: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let (signing, curve, len) = match alg {
        Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, EllipticCurve::P256, 32),
        Algorithm::ES384 => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, EllipticCurve::P384, 48),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new()).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
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

static RING: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils { extract_rsa_public_key_components, extract_ec_public_key_coordinates, compute_digest },
};

/// Makes `ring` the process's `jsonwebtoken` crypto provider. Idempotent.
pub fn install() {
    let _ = RING.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Header, Validation, decode, encode};

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
        // An RSA public key is never an HMAC secret.
        let public = DecodingKey::from_rsa_pem(include_bytes!("../testdata/rsa1.pub.pem")).unwrap();
        assert!(new_verifier(&Algorithm::HS256, &public).is_err());
    }
}
