//! The one chat-model contract every provider implements, and the messages and events it
//! speaks. Providers stream: text arrives in pieces, tool calls whole (assembled from their
//! deltas by the provider), then `Done` with the token usage.

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message of the conversation as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        content: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of call `call_id` (already framed as data by the sandbox).
    Tool {
        call_id: String,
        name: String,
        content: String,
    },
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Offered natively (empty: none offered, or the text protocol is in the system prompt).
    pub tools: Vec<ToolSpec>,
    /// The model must call a tool in this reply (`tool_choice: required`), where the provider
    /// supports it.
    pub require_tool: bool,
    /// A JSON Schema the reply must follow (a grammar on servers that have one, like
    /// llama.cpp's): how a weak model without native tool calls is made to pick a tool.
    pub response_schema: Option<serde_json::Value>,
    /// The longest reply, in tokens.
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    ToolCall(ToolCall),
    Done(Usage),
}

/// Why a model call failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    pub retryable: bool,
}

impl ProviderError {
    pub fn new(message: impl Into<String>, retryable: bool) -> ProviderError {
        ProviderError { message: message.into(), retryable }
    }
}

/// A chat model behind a provider. `stream` must not block; dropping the stream cancels the
/// call (the HTTP request is dropped with it). Errors before the first delta may be retried by
/// the caller; once deltas have flowed, an error ends the step.
pub trait ChatModel: Send + Sync {
    /// `openai` or `ollama`, and the model's name, for the audit record and the answer.
    fn describe(&self) -> (&'static str, &str);
    /// Whether the model calls tools natively; if not, the text protocol is used.
    fn native_tools(&self) -> bool;
    /// Runs in local infrastructure (Ollama, a llama.cpp or vLLM server of our own).
    fn is_local(&self) -> bool;
    fn stream(&self, request: ChatRequest) -> BoxStream<'static, Result<Delta, ProviderError>>;
}

/// Token count estimate for budgets when the provider reports none: about four characters a
/// token for English and JSON, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
