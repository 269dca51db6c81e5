//! `auth-bench`: what identity and authorisation cost per request, beside the raw library.
//!
//! ```sh
//! cargo run --release -p bench --bin auth-bench -- [--tokens 20000]
//! ```
//!
//! Measured in one process, one thread, against an identity provider on loopback (JWKS over
//! HTTP, fetched once before timing):
//! - cold: `TokenVerifier::verify` of RS256 tokens never seen before (signature, claims,
//!   identity), then `Gate::logs` with the static policy;
//! - cached: the same tokens again (a hash and a cache hit), then `Gate::logs`;
//! - baseline: `jsonwebtoken::decode` of the same tokens with the same key and validation
//!   (and the same crypto provider), which is the floor for the cold path; beside it, the
//!   RSA signature check alone.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use auth::{AuthConfig, Gate, StaticPolicy, TokenVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The auth crate's test keys: fine for timing, never for anything else.
const RSA1: &[u8] = include_bytes!("../../auth/testdata/rsa1.pem");
const RSA1_PUB: &[u8] = include_bytes!("../../auth/testdata/rsa1.pub.pem");
const JWKS: &str = include_str!("../../auth/testdata/jwks.json");

/// Serves the discovery document and the key set on loopback; returns the issuer URL.
async fn identity_provider() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let me = issuer.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let me = me.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let body = if req.starts_with("GET /.well-known/openid-configuration") {
                    json!({ "issuer": me, "jwks_uri": format!("{me}/keys") }).to_string()
                } else {
                    JWKS.to_owned()
                };
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(issuer)
}

/// The DER inside a PEM block.
fn pem_body(pem: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

fn per_op_us(start: Instant, n: usize) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() -> anyhow::Result<()> {
    ingest::keep_freed_memory();
    let mut n = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tokens" => n = args.next().context("--tokens needs a number")?.parse().context("--tokens")?,
            other => anyhow::bail!("unknown argument {other}; usage: auth-bench [--tokens N]"),
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: auth-bench is a debug build; run it with --release");
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    auth::jwt_crypto::install();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let issuer = identity_provider().await?;
        let config = AuthConfig { issuer: issuer.clone(), ..AuthConfig::default() };
        let mut settings = config.validate(std::path::Path::new(".")).map_err(anyhow::Error::msg)?;
        settings.token_cache_entries = (2 * n) as u64;
        let verifier = TokenVerifier::new(settings).map_err(|e| anyhow::anyhow!("{e}"))?;
        let gate = Gate::new(Arc::new(StaticPolicy::members_read_all()), "platform-operator", vec![]);

        eprintln!("signing {n} distinct RS256 tokens…");
        let key = EncodingKey::from_rsa_pem(RSA1)?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                let claims = json!({ "iss": issuer, "aud": "dataplane", "sub": format!("user-{i}"), "org_id": "acme", "workspaces": ["ws-a", "ws-b"], "groups": ["dev"], "exp": exp, "jti": i });
                jsonwebtoken::encode(&header, &claims, &key)
            })
            .collect::<Result<_, _>>()?;
        // The key set is fetched once, outside the timing.
        verifier.verify(&tokens[0], None).await.map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
        let wanted = BTreeSet::from(["ws-a".to_owned()]);

        let start = Instant::now();
        for t in &tokens[1..] {
            let id = verifier.verify(t, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            black_box(gate.logs(&id, Some(&wanted), None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let cold = per_op_us(start, n - 1);

        let start = Instant::now();
        for t in &tokens[1..] {
            let id = verifier.verify(t, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            black_box(gate.logs(&id, Some(&wanted), None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let cached = per_op_us(start, n - 1);

        // The two halves of the cached path, apart.
        let start = Instant::now();
        let mut ids = Vec::with_capacity(n);
        for t in &tokens[1..] {
            ids.push(verifier.verify(t, None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let verify_hit = per_op_us(start, n - 1);
        let start = Instant::now();
        for id in &ids {
            black_box(gate.logs(id, Some(&wanted), None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let gate_only = per_op_us(start, n - 1);

        let decoding = DecodingKey::from_rsa_pem(RSA1_PUB)?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[issuer.as_str()]);
        v.set_audience(&["dataplane"]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let start = Instant::now();
        for t in &tokens[1..] {
            black_box(jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(t, &decoding, &v)?);
        }
        let raw = per_op_us(start, n - 1);

        // The signature alone (RSA-2048 PKCS#1 SHA-256 with the key parsed once): the part of
        // a cold verification no JWT code can take away.
        let parts: Vec<(Vec<u8>, Vec<u8>)> = tokens[1..]
            .iter()
            .map(|t| {
                use base64::Engine;
                let (msg, sig) = t.rsplit_once('.').unwrap_or((t, ""));
                (msg.as_bytes().to_vec(), base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap_or_default())
            })
            .collect();
        let der = pem_body(std::str::from_utf8(RSA1_PUB)?)?;
        let parsed = aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| anyhow::anyhow!("the test key: {e}"))?;
        let start = Instant::now();
        for (msg, sig) in &parts {
            parsed.verify_sig(msg, sig).map_err(|_| anyhow::anyhow!("a signature did not verify"))?;
        }
        let signature_only = per_op_us(start, n - 1);

        println!("\n## Identity and authorisation per request ({} tokens, one thread)\n", n - 1);
        println!("| path | µs per request | ÷ raw jsonwebtoken decode |\n|---|--:|--:|");
        println!("| cold: verify RS256 (JWKS key) + Gate::logs (static policy) | {cold:.2} | {:.2} |", cold / raw);
        println!("| cached: verify (cache hit) + Gate::logs | {cached:.3} | {:.3} |", cached / raw);
        println!("| of which verify (cache hit) | {verify_hit:.3} | {:.3} |", verify_hit / raw);
        println!("| of which Gate::logs | {gate_only:.3} | {:.3} |", gate_only / raw);
        println!("| baseline: jsonwebtoken::decode RS256, same key and validation | {raw:.2} | 1.00 |");
        println!("| floor: the RSA-2048 signature alone (aws-lc-rs, key parsed once) | {signature_only:.2} | {:.2} |", signature_only / raw);
        println!("\ntargets: cached < 1 µs — {}; cold < 20 µs — {}", if cached < 1.0 { "PASS" } else { "MISS" }, if cold < 20.0 { "PASS" } else { "MISS" });
        Ok(())
    })
}
