//! The local development issuer: HS256 tokens signed with a secret kept under the data
//! directory, so `dataplane token` and a running `dataplane serve` on the same data directory
//! agree without any identity provider. Only ever used when no OIDC issuer is configured, and
//! the binary allows that only on loopback.

use std::io::Read;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

use crate::config::DEV_ISSUER;
use crate::now_secs;

pub struct DevIssuer {
    secret: Vec<u8>,
    audience: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("audience", &self.audience).finish_non_exhaustive()
    }
}

/// What a development token says about its holder.
#[derive(Debug, Clone, Default)]
pub struct DevClaims {
    pub user: String,
    pub org: String,
    pub workspaces: Vec<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub ttl_secs: u64,
    /// The token binding claim and its value, if any.
    pub binding: Option<(String, String)>,
}

impl DevIssuer {
    /// Reads the secret, or creates it (32 random bytes, hex, mode 0600) when missing.
    pub fn load_or_create(path: &Path, audience: &str) -> std::io::Result<DevIssuer> {
        let secret = match std::fs::read_to_string(path) {
            Ok(s) if s.trim().len() >= 32 => s.trim().as_bytes().to_vec(),
            _ => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut bytes = [0u8; 32];
                std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &hex)?;
                set_private(&tmp)?;
                std::fs::rename(&tmp, path)?;
                hex.into_bytes()
            }
        };
        Ok(DevIssuer { secret, audience: audience.to_owned() })
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_secret(&self.secret)
    }

    /// A signed token for these claims.
    pub fn mint(&self, c: &DevClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now_secs();
        let mut claims = json!({
            "iss": DEV_ISSUER,
            "aud": self.audience,
            "sub": c.user,
            "org_id": c.org,
            "workspaces": c.workspaces,
            "groups": c.groups,
            "roles": c.roles,
            "iat": now,
            "nbf": now,
            "exp": now + c.ttl_secs as i64,
        });
        if let (Some((name, value)), Some(map)) = (&c.binding, claims.as_object_mut()) {
            map.insert(name.clone(), json!(value));
        }
        crate::jwt_crypto::install();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.secret))
    }
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
