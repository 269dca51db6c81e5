//! `auth-bench`: what identity and authorisation cost per request, beside the raw library.
//!
//! ```sh
//! cargo run --release -p bench --bin auth-bench -- [--tokens 20000]
//! ```
//!
//! Measured in one process, one thread, against an identity provider on loopback (JWKS over
//! HTTP, fetched once before timing), with two sets of distinct RS256 tokens:
//! - cold, steady state: `TokenVerifier::verify` of tokens never seen before (signature,
//!   claims, identity, cache insert), then `Gate::logs` with the static policy, by a verifier
//!   whose token cache is already full (each insert evicts, as in a server that has run a
//!   while) and whose heap has grown once;
//! - cold, first fill: the same by a new verifier whose cache and heap are still growing.
//!   On this virtual machine first-touched memory costs about 1 µs per KiB, paid once per
//!   cache's worth of tokens, which is why the two are apart;
//! - cached: tokens again (a hash and a cache hit), then `Gate::logs`;
//! - baseline: `jsonwebtoken::decode` of the same tokens with the same key and validation
//!   (and the same crypto provider); beside it, the RSA signature check alone, which no JWT
//!   code can take away.

#[allow(dead_code)]
mod procs;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use auth::{AuthConfig, Gate, StaticPolicy, TokenVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use procs::quantile;
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

/// Signs RS256 tokens with the test key parsed once (jsonwebtoken parses it on every call,
/// which makes a set of 40,000 tokens take half a minute).
struct Signer {
    key: aws_lc_rs::signature::RsaKeyPair,
    header: String,
}

impl Signer {
    fn new(header: &Header) -> anyhow::Result<Signer> {
        use base64::Engine;
        let der = pem_body(std::str::from_utf8(RSA1)?)?;
        let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("the test key: {e}"))?;
        Ok(Signer { key, header: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?) })
    }

    fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!("{}.{}", self.header, b64.encode(serde_json::to_vec(claims)?));
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), message.as_bytes(), &mut sig)
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(format!("{message}.{}", b64.encode(sig)))
    }
}

/// Verifies each token and authorises its identity; µs per token.
async fn verify_all(v: &TokenVerifier, gate: &Gate, wanted: &BTreeSet<String>, tokens: &[String]) -> anyhow::Result<f64> {
    let start = Instant::now();
    for t in tokens {
        let id = v.verify(t, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        black_box(gate.logs(&id, Some(wanted), None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    Ok(per_op_us(start, tokens.len()))
}

/// Tokens per timed chunk.
const CHUNK: usize = 500;

fn median(xs: &[f64]) -> f64 {
    quantile(&mut xs.to_vec(), 0.5)
}

fn quartiles(xs: &[f64]) -> (f64, f64) {
    (quantile(&mut xs.to_vec(), 0.25), quantile(&mut xs.to_vec(), 0.75))
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
        let verifier = TokenVerifier::new(settings.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let gate = Gate::new(Arc::new(StaticPolicy::members_read_all()), "platform-operator", vec![]);

        eprintln!("signing 2 × {n} distinct RS256 tokens…");
        // One token through jsonwebtoken, to check that the hand-made ones below match it.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
        let claims = |i: usize| json!({ "iss": issuer, "aud": "dataplane", "sub": format!("user-{i}"), "org_id": "acme", "workspaces": ["ws-a", "ws-b"], "groups": ["dev"], "exp": exp, "jti": i });
        let reference = jsonwebtoken::encode(&header, &claims(0), &EncodingKey::from_rsa_pem(RSA1)?)?;
        let signer = Signer::new(&header)?;
        anyhow::ensure!(signer.sign(&claims(0))? == reference, "hand-signed token differs from jsonwebtoken's");
        let fresh: Vec<String> = (1..n).map(|i| signer.sign(&claims(i))).collect::<anyhow::Result<_>>()?;
        let other: Vec<String> = (n..2 * n).map(|i| signer.sign(&claims(i))).collect::<anyhow::Result<_>>()?;
        let wanted = BTreeSet::from(["ws-a".to_owned()]);
        // First fill: a new verifier, its cache and the heap growing. The key set is fetched
        // once, outside the timing.
        verifier.verify(&reference, None).await.map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
        let first_fill = verify_all(&verifier, &gate, &wanted, &fresh).await?;

        // Cached, in chunks: the whole path, then its two halves apart.
        let (mut cached, mut verify_hit, mut gate_only) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in fresh.chunks(CHUNK) {
            cached.push(verify_all(&verifier, &gate, &wanted, chunk).await?);
            let start = Instant::now();
            let mut ids = Vec::with_capacity(chunk.len());
            for t in chunk {
                ids.push(verifier.verify(t, None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
            }
            verify_hit.push(per_op_us(start, chunk.len()));
            let start = Instant::now();
            for id in &ids {
                black_box(gate.logs(id, Some(&wanted), None).await.map_err(|e| anyhow::anyhow!("{e}"))?);
            }
            gate_only.push(per_op_us(start, chunk.len()));
        }
        drop(verifier);

        // Steady state: a verifier whose cache holds about half a set, filled (and evicting)
        // with the other set first; then the fresh set, every token new to it. Each chunk is
        // timed three ways back to back (ours, jsonwebtoken alone, the signature alone), so a
        // slow spell of the machine touches all three and the ratios stay fair.
        let mut small = settings.clone();
        small.token_cache_entries = (n / 2) as u64;
        let steady = TokenVerifier::new(small).map_err(|e| anyhow::anyhow!("{e}"))?;
        verify_all(&steady, &gate, &wanted, &other).await?;
        let decoding = DecodingKey::from_rsa_pem(RSA1_PUB)?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[issuer.as_str()]);
        v.set_audience(&["dataplane"]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let der = pem_body(std::str::from_utf8(RSA1_PUB)?)?;
        let parsed = aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| anyhow::anyhow!("the test key: {e}"))?;
        let (mut cold, mut raw, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in fresh.chunks(CHUNK) {
            cold.push(verify_all(&steady, &gate, &wanted, chunk).await?);
            let start = Instant::now();
            for t in chunk {
                black_box(jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(t, &decoding, &v)?);
            }
            raw.push(per_op_us(start, chunk.len()));
            // The signature alone (RSA-2048 PKCS#1 SHA-256, key parsed once).
            let parts: Vec<(&[u8], Vec<u8>)> = chunk
                .iter()
                .map(|t| {
                    use base64::Engine;
                    let (msg, sig) = t.rsplit_once('.').unwrap_or((t, ""));
                    (msg.as_bytes(), base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap_or_default())
                })
                .collect();
            let start = Instant::now();
            for (msg, sig) in &parts {
                parsed.verify_sig(msg, sig).map_err(|_| anyhow::anyhow!("a signature did not verify"))?;
            }
            floor.push(per_op_us(start, chunk.len()));
        }
        let ratio = |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());

        println!("\n## Identity and authorisation per request ({} tokens in chunks of {CHUNK}, one thread)\n", n - 1);
        println!("Median over chunks (quartiles); ratio: median of per-chunk ratios to jsonwebtoken::decode in the same chunk.\n");
        println!("| path | µs per request | quartiles | ÷ jsonwebtoken::decode |\n|---|--:|--:|--:|");
        let row = |name: &str, xs: &[f64], r: Option<f64>| {
            let (q1, q3) = quartiles(xs);
            let r = r.map_or("".to_owned(), |r| format!("{r:.2}"));
            println!("| {name} | {:.3} | {q1:.3}–{q3:.3} | {r} |", median(xs));
        };
        row("cold: verify RS256 (JWKS key) + Gate::logs (static policy), steady state", &cold, Some(ratio(&cold, &raw)));
        println!("| cold, first fill (new cache, heap growing), whole set | {first_fill:.3} | | |");
        row("cached: verify (cache hit) + Gate::logs", &cached, None);
        row("of which verify (cache hit)", &verify_hit, None);
        row("of which Gate::logs", &gate_only, None);
        row("baseline: jsonwebtoken::decode RS256, same key and validation", &raw, Some(1.0));
        row("floor: the RSA-2048 signature alone (aws-lc-rs, key parsed once)", &floor, Some(ratio(&floor, &raw)));
        let (cold, cached) = (median(&cold), median(&cached));
        println!("\ntargets: cached < 1 µs — {}; cold < 20 µs — {}", if cached < 1.0 { "PASS" } else { "MISS" }, if cold < 20.0 { "PASS" } else { "MISS" });
        Ok(())
    })
}
