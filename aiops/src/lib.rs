//! The AI assistant: a chat that answers questions about the user's workspaces by calling
//! tools, through LLM providers, acting only as the user it serves.
//!
//! - [`model::ChatModel`] is the one provider contract (streamed text, whole tool calls,
//!   usage); [`openai::OpenAiCompatible`] (async-openai: OpenAI, vLLM, llama.cpp, LM Studio) and
//!   [`ollama::OllamaModel`] (ollama-rs) implement it; [`fallback`] is the text protocol for
//!   models without native tool calling, with a tolerant parser.
//! - [`tools`] declares each tool once: argument schema from its type (schemars), class,
//!   description, bounded output; a few relevant tools are offered per question.
//! - [`agent::Agent`] runs the loop: stream, run the calls (at once) through the sandbox's
//!   [`sandbox::ToolGate`], feed back the framed results, stop at the step budget with a
//!   tool-less best answer, cite the queries run, say what could not be seen.
//! - [`manifest`] checks manifests against Kubernetes' typed schemas (run in the sandbox's jail)
//!   and generates them from typed values; nothing is ever applied by it.
//! - [`api`] is `POST /api/v1/ai/chat` (server-sent events) and the conversations, kept per
//!   user in the control database.
//!
//! ```text
//! user ─► /api/v1/ai/chat ─► Agent ─► ChatModel (stream) ─► tool calls
//!                              └─► ToolGate (identity, budgets, redaction, audit: initiated_by=agent)
//!                                    └─► query::agent::AgentQueries (same scopes and walls as the dashboard)
//! ```

pub mod agent;
pub mod api;
pub mod catalog;
pub mod config;
pub mod context;
pub mod fallback;
pub mod k8s;
pub mod k8s_write;
pub mod manifest;
pub mod manifest_tools;
pub mod model;
pub mod ollama;
pub mod openai;
pub mod tools;

pub use config::{AssistantConfig, Models};
