//! `[assistant]`: which model serves which organisation, and what a turn may spend.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use sandbox::{Budgets, RedactionConfig};
use schemas::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::model::ChatModel;
use crate::ollama::OllamaModel;
use crate::openai::OpenAiCompatible;

/// One model server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// `openai` (any OpenAI-compatible server) or `ollama`; empty: no assistant.
    pub kind: String,
    /// `https://api.openai.com/v1`, `http://127.0.0.1:8080/v1` (llama.cpp, vLLM), `http://127.0.0.1:11434` (Ollama).
    pub url: String,
    pub model: String,
    /// A file holding the API key (never the key itself in the configuration).
    pub api_key_file: Option<PathBuf>,
    /// The model calls tools natively; `false` uses the text protocol (weak local models).
    pub native_tools: bool,
    /// The server runs in our own infrastructure (counts for `local_only`); Ollama always does.
    pub local: bool,
    /// The first reply of each turn must call a tool (`tool_choice: required`; OpenAI-compatible
    /// servers): weak models then look at the data before they answer.
    pub require_tool_first: bool,
    /// The model's context window in tokens: longer conversations are compacted to fit.
    pub context_tokens: u32,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: String::new(),
            url: String::new(),
            model: String::new(),
            api_key_file: None,
            native_tools: true,
            local: false,
            require_tool_first: false,
            context_tokens: 32_768,
        }
    }
}

/// `[[assistant.organizations]]`: another model for one organisation, or local models only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OrganizationConfig {
    pub org: String,
    pub provider: Option<ProviderConfig>,
    /// Only models that run in our own infrastructure may serve this organisation.
    pub local_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AssistantConfig {
    pub provider: ProviderConfig,
    pub organizations: Vec<OrganizationConfig>,
    pub budgets: Budgets,
    pub redaction: RedactionConfig,
    /// Tools offered per question (a few relevant ones, not the whole catalogue).
    pub tools_offered: usize,
    /// Retries of a model call that failed before its first token.
    pub retries: u32,
    /// The longest a model call may take.
    pub timeout_ms: u64,
    /// Offer write tools (scaling); each call only proposes, the user approves. Off by default.
    pub write_tools: bool,
    /// How long a proposed write action waits for approval.
    pub approval_ttl_secs: u64,
    /// The longest model reply, in tokens (0: the server's default).
    pub max_output_tokens: u32,
    /// The jail of what tools execute (the manifest checks).
    pub jail: sandbox::jail::JailConfig,
}

impl Default for AssistantConfig {
    fn default() -> Self {
        AssistantConfig {
            provider: ProviderConfig::default(),
            organizations: Vec::new(),
            budgets: Budgets::default(),
            redaction: RedactionConfig::standard(),
            tools_offered: 4,
            retries: 2,
            timeout_ms: 120_000,
            write_tools: false,
            approval_ttl_secs: 600,
            max_output_tokens: 2048,
            jail: sandbox::jail::JailConfig::default(),
        }
    }
}

fn build(key: &str, p: &ProviderConfig, timeout_ms: u64) -> Result<Option<Arc<dyn ChatModel>>, String> {
    if p.kind.is_empty() {
        return Ok(None);
    }
    if p.url.is_empty() || p.model.is_empty() {
        return Err(format!("{key}: `url` and `model` are needed"));
    }
    let api_key = match &p.api_key_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{key}.api_key_file: {}: {e}", path.display()))?.trim().to_owned(),
        None => String::new(),
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms.max(1)))
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("{key}: {e}"))?;
    Ok(Some(match p.kind.as_str() {
        "openai" => Arc::new(OpenAiCompatible::new(&p.url, &api_key, &p.model, p.native_tools, p.local, http)),
        "ollama" => Arc::new(OllamaModel::new(&p.url, &p.model, p.native_tools).map_err(|e| format!("{key}.url: {e}"))?),
        other => return Err(format!("{key}.kind: `{other}`: use openai or ollama")),
    }))
}

/// The models, built once from the configuration.
#[derive(Clone, Default)]
pub struct Models {
    default: Option<Arc<dyn ChatModel>>,
    per_org: HashMap<String, (Option<Arc<dyn ChatModel>>, bool)>,
    /// Models whose first reply must call a tool, by `describe()` name.
    require_tool_first: std::collections::HashSet<String>,
    /// Context windows, by `describe()` name.
    context_tokens: HashMap<String, u32>,
}

impl Models {
    pub fn from_config(c: &AssistantConfig) -> Result<Models, String> {
        let default = build("assistant.provider", &c.provider, c.timeout_ms)?;
        let mut require_tool_first = std::collections::HashSet::new();
        if c.provider.require_tool_first {
            require_tool_first.insert(c.provider.model.clone());
        }
        let mut context_tokens = HashMap::new();
        context_tokens.insert(c.provider.model.clone(), c.provider.context_tokens);
        let mut per_org = HashMap::new();
        for (i, o) in c.organizations.iter().enumerate() {
            let key = format!("assistant.organizations[{i}]");
            if o.org.is_empty() {
                return Err(format!("{key}.org: must not be empty"));
            }
            let model = match &o.provider {
                Some(p) => {
                    if p.require_tool_first {
                        require_tool_first.insert(p.model.clone());
                    }
                    context_tokens.insert(p.model.clone(), p.context_tokens);
                    build(&format!("{key}.provider"), p, c.timeout_ms)?
                }
                None => None,
            };
            per_org.insert(o.org.clone(), (model, o.local_only));
        }
        Ok(Models { default, per_org, require_tool_first, context_tokens })
    }

    /// Whether `model`'s first reply of a turn must call a tool.
    pub fn requires_tool_first(&self, model: &dyn ChatModel) -> bool {
        self.require_tool_first.contains(model.describe().1)
    }

    /// `model`'s context window in tokens.
    pub fn context_tokens(&self, model: &dyn ChatModel) -> u32 {
        self.context_tokens.get(model.describe().1).copied().unwrap_or(32_768)
    }

    /// The model that serves `org`, or why there is none.
    pub fn for_org(&self, org: &str) -> Result<Arc<dyn ChatModel>, ApiError> {
        let (own, local_only) = self.per_org.get(org).cloned().unwrap_or((None, false));
        let Some(model) = own.or_else(|| self.default.clone()) else {
            return Err(ApiError::new(ErrorCode::Unavailable, "no model is configured for the assistant (assistant.provider)"));
        };
        if local_only && !model.is_local() {
            return Err(ApiError::new(ErrorCode::Forbidden, format!("organisation `{org}` allows only local models, and the configured one is hosted")));
        }
        Ok(model)
    }
}
