//! What the operator configures (`[auth]`), and its validation into settings that cannot be
//! wrong.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

/// `[auth]` in the data plane's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The OIDC issuer (`iss`). Empty: the local development issuer (loopback only).
    pub issuer: String,
    /// The audience (`aud`) tokens must be issued for.
    pub audience: String,
    /// Where the issuer's keys are. Empty: from `{issuer}/.well-known/openid-configuration`.
    pub jwks_url: String,
    /// Signature algorithms accepted from the issuer. Only asymmetric ones: `RS256`, `RS384`,
    /// `RS512`, `PS256`, `ES256`, `ES384`.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// An unknown `kid` refreshes the key set at most this often.
    pub jwks_refresh_min_secs: u64,
    /// Keys are refreshed this often in any case.
    pub jwks_refresh_secs: u64,
    /// During an issuer outage the last good keys are used this long after they were fetched;
    /// then every token is refused (fail closed).
    pub jwks_max_stale_secs: u64,
    pub claims: ClaimNames,
    /// Optional token binding: the token's `claim` must be the SHA-256 (hex) of the `cookie`.
    pub token_binding: Option<TokenBindingConfig>,
    /// The role that makes a user a platform operator (system logs, every organisation).
    pub operator_role: String,
    /// Roles that may read their organisation's audit log.
    pub audit_roles: Vec<String>,
    /// Verified tokens kept in memory (a hit skips the signature check).
    pub token_cache_entries: u64,
    /// `static`: the policy file, or with none, a workspace named in the token's workspace
    /// claim grants all of its namespaces. `kubernetes`: a SubjectAccessReview (`get
    /// pods/log`) asked of each workspace's API server (`auth.kubernetes`).
    pub authorizer: AuthorizerKind,
    /// Authorisation: a static policy file (TOML), for `authorizer = "static"`.
    pub policy_file: Option<PathBuf>,
    pub kubernetes: crate::sar::KubernetesAuthConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    #[default]
    Static,
    Kubernetes,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: String::new(),
            audience: "dataplane".into(),
            jwks_url: String::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway_secs: 30,
            jwks_refresh_min_secs: 30,
            jwks_refresh_secs: 3600,
            jwks_max_stale_secs: 86_400,
            claims: ClaimNames::default(),
            token_binding: None,
            operator_role: "platform-operator".into(),
            audit_roles: vec!["org-admin".into(), "auditor".into()],
            token_cache_entries: 100_000,
            authorizer: AuthorizerKind::Static,
            policy_file: None,
            kubernetes: crate::sar::KubernetesAuthConfig::default(),
        }
    }
}

/// Which claims carry what. Values may be a string or an array of strings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    pub user: String,
    pub org: String,
    pub workspaces: String,
    pub groups: String,
    pub roles: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames { user: "sub".into(), org: "org_id".into(), workspaces: "workspaces".into(), groups: "groups".into(), roles: "roles".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenBindingConfig {
    pub claim: String,
    pub cookie: String,
}

/// Validated `[auth]`: the issuer mode and its settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: IssuerMode,
    pub audience: String,
    pub leeway: Duration,
    pub claims: ClaimNames,
    pub token_binding: Option<TokenBindingConfig>,
    pub operator_role: String,
    pub audit_roles: Vec<String>,
    pub token_cache_entries: u64,
    pub policy_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum IssuerMode {
    /// Tokens signed by the local development issuer (HS256, secret under the data directory).
    Development {
        secret_file: PathBuf,
    },
    Oidc(OidcSettings),
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    /// `None`: discovered from the issuer.
    pub jwks_url: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub refresh_min: Duration,
    pub refresh_every: Duration,
    pub max_stale: Duration,
}

/// The issuer name and audience of the development issuer.
pub const DEV_ISSUER: &str = "dataplane-dev";

impl AuthConfig {
    /// Checks every key; the error names the key at fault and what to write instead.
    pub fn validate(&self, data_dir: &std::path::Path) -> Result<AuthSettings, String> {
        if self.audience.trim().is_empty() {
            return Err("auth.audience: must not be empty".into());
        }
        for (key, v) in [("user", &self.claims.user), ("org", &self.claims.org), ("workspaces", &self.claims.workspaces)] {
            if v.trim().is_empty() {
                return Err(format!("auth.claims.{key}: must name a claim"));
            }
        }
        if self.authorizer == AuthorizerKind::Kubernetes && self.kubernetes.workspaces.is_empty() {
            return Err("auth.kubernetes.workspaces: `authorizer = \"kubernetes\"` needs at least one workspace API server".into());
        }
        if self.authorizer == AuthorizerKind::Kubernetes && self.policy_file.is_some() {
            return Err("auth.policy_file: only used with `authorizer = \"static\"`".into());
        }
        if let Some(b) = &self.token_binding
            && (b.claim.is_empty() || b.cookie.is_empty())
        {
            return Err("auth.token_binding: both `claim` and `cookie` must be set".into());
        }
        let mode = if self.issuer.is_empty() {
            IssuerMode::Development { secret_file: data_dir.join("dev-token-secret") }
        } else {
            if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
                return Err(format!("auth.issuer: `{}` is not a URL like https://login.example.com/realms/x", self.issuer));
            }
            let mut algorithms = Vec::new();
            for a in &self.algorithms {
                let alg = match a.as_str() {
                    "RS256" => Algorithm::RS256,
                    "RS384" => Algorithm::RS384,
                    "RS512" => Algorithm::RS512,
                    "PS256" => Algorithm::PS256,
                    "ES256" => Algorithm::ES256,
                    "ES384" => Algorithm::ES384,
                    other => return Err(format!("auth.algorithms: `{other}` is not accepted; use RS256, RS384, RS512, PS256, ES256 or ES384")),
                };
                algorithms.push(alg);
            }
            if algorithms.is_empty() {
                return Err("auth.algorithms: at least one algorithm is needed".into());
            }
            if self.jwks_max_stale_secs < self.jwks_refresh_secs {
                return Err("auth.jwks_max_stale_secs: must be at least auth.jwks_refresh_secs".into());
            }
            IssuerMode::Oidc(OidcSettings {
                issuer: self.issuer.clone(),
                jwks_url: (!self.jwks_url.is_empty()).then(|| self.jwks_url.clone()),
                algorithms,
                refresh_min: Duration::from_secs(self.jwks_refresh_min_secs.max(1)),
                refresh_every: Duration::from_secs(self.jwks_refresh_secs.max(1)),
                max_stale: Duration::from_secs(self.jwks_max_stale_secs),
            })
        };
        Ok(AuthSettings {
            mode,
            audience: self.audience.clone(),
            leeway: Duration::from_secs(self.leeway_secs.min(300)),
            claims: self.claims.clone(),
            token_binding: self.token_binding.clone(),
            operator_role: self.operator_role.clone(),
            audit_roles: self.audit_roles.clone(),
            token_cache_entries: self.token_cache_entries.clamp(1, 10_000_000),
            policy_file: self.policy_file.clone(),
        })
    }
}
