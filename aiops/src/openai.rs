//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp's server, LM Studio) through
//! async-openai's client, with request and chunk types of our own (the `byot` interface), so
//! servers that differ in the fields they add are read alike.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::{ChatModel, ChatRequest, Delta, Message, ProviderError, ToolCall, Usage};

pub struct OpenAiCompatible {
    client: Client<OpenAIConfig>,
    model: String,
    native_tools: bool,
    local: bool,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible").field("model", &self.model).finish_non_exhaustive()
    }
}

impl OpenAiCompatible {
    /// `base_url` like `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub fn new(base_url: &str, api_key: &str, model: &str, native_tools: bool, local: bool, http: reqwest::Client) -> OpenAiCompatible {
        let config = OpenAIConfig::new().with_api_base(base_url.trim_end_matches('/')).with_api_key(api_key);
        OpenAiCompatible { client: Client::with_config(config).with_http_client(http), model: model.to_owned(), native_tools, local }
    }

    fn body(&self, r: &ChatRequest) -> Value {
        let messages: Vec<Value> = r
            .messages
            .iter()
            .map(|m| match m {
                Message::System { content } => json!({ "role": "system", "content": content }),
                Message::User { content } => json!({ "role": "user", "content": content }),
                Message::Assistant { content, tool_calls } if tool_calls.is_empty() => json!({ "role": "assistant", "content": content }),
                Message::Assistant { content, tool_calls } => json!({
                    "role": "assistant", "content": content,
                    "tool_calls": tool_calls.iter().map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments.to_string() } })).collect::<Vec<_>>(),
                }),
                Message::Tool { call_id, content, .. } => json!({ "role": "tool", "tool_call_id": call_id, "content": content }),
            })
            .collect();
        let mut body = json!({ "model": self.model, "messages": messages, "stream": true, "stream_options": { "include_usage": true } });
        if let Some(n) = r.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(schema) = &r.response_schema {
            body["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": "tool_call", "schema": schema } });
        }
        if !r.tools.is_empty() {
            body["tools"] = r
                .tools
                .iter()
                .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
                .collect();
        }
        body
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<ChunkUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: ChoiceDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChoiceDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<CallChunk>,
}

#[derive(Deserialize)]
struct CallChunk {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<FunctionChunk>,
}

#[derive(Deserialize)]
struct FunctionChunk {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

fn provider_error(e: OpenAIError) -> ProviderError {
    let retryable = match &e {
        OpenAIError::Reqwest(r) => r.is_connect() || r.is_timeout() || r.status().is_some_and(|s| s.is_server_error() || s.as_u16() == 429),
        OpenAIError::ApiError(a) => a.status_code.is_server_error() || a.status_code.as_u16() == 429,
        OpenAIError::StreamError(_) => true,
        _ => false,
    };
    ProviderError::new(format!("the model server: {e}"), retryable)
}

/// Tool calls arrive as deltas by index: an id and a name once, arguments in pieces.
#[derive(Default)]
struct Pending {
    id: String,
    name: String,
    arguments: String,
}

impl ChatModel for OpenAiCompatible {
    fn describe(&self) -> (&'static str, &str) {
        ("openai", &self.model)
    }
    fn native_tools(&self) -> bool {
        self.native_tools
    }
    fn is_local(&self) -> bool {
        self.local
    }

    fn stream(&self, request: ChatRequest) -> BoxStream<'static, Result<Delta, ProviderError>> {
        let body = self.body(&request);
        let client = self.client.clone();
        let s = async_stream(client, body);
        s.boxed()
    }
}

fn async_stream(client: Client<OpenAIConfig>, body: Value) -> impl futures_util::Stream<Item = Result<Delta, ProviderError>> + Send + 'static {
    futures_util::stream::once(async move { client.chat().create_stream_byot::<Value, Chunk>(body).await }).flat_map(
        |opened| -> BoxStream<'static, Result<Delta, ProviderError>> {
            match opened {
                Err(e) => futures_util::stream::once(async move { Err(provider_error(e)) }).boxed(),
                Ok(chunks) => assemble(chunks).boxed(),
            }
        },
    )
}

/// Text deltas pass through; tool calls are emitted whole when the model finishes them.
fn assemble(chunks: async_openai::types::stream::StreamResponse<Chunk>) -> impl futures_util::Stream<Item = Result<Delta, ProviderError>> + Send {
    let state = (chunks, Vec::<Pending>::new(), Usage::default(), false);
    futures_util::stream::unfold(state, |(mut chunks, mut pending, mut usage, done)| async move {
        if done {
            return None;
        }
        loop {
            match chunks.next().await {
                None => {
                    let mut out: Vec<Result<Delta, ProviderError>> =
                        pending.drain(..).filter(|p| !p.name.is_empty()).map(|p| Ok(Delta::ToolCall(finish(p)))).collect();
                    out.push(Ok(Delta::Done(usage)));
                    return Some((futures_util::stream::iter(out), (chunks, pending, usage, true)));
                }
                Some(Err(e)) => return Some((futures_util::stream::iter(vec![Err(provider_error(e))]), (chunks, pending, usage, true))),
                Some(Ok(chunk)) => {
                    if let Some(u) = chunk.usage {
                        usage = Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens };
                    }
                    let mut out = Vec::new();
                    for choice in chunk.choices {
                        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                            out.push(Ok(Delta::Text(text)));
                        }
                        for c in choice.delta.tool_calls {
                            if pending.len() <= c.index {
                                pending.resize_with(c.index + 1, Pending::default);
                            }
                            let p = &mut pending[c.index];
                            if let Some(id) = c.id {
                                p.id = id;
                            }
                            if let Some(f) = c.function {
                                if let Some(n) = f.name {
                                    p.name.push_str(&n);
                                }
                                if let Some(a) = f.arguments {
                                    p.arguments.push_str(&a);
                                }
                            }
                        }
                        if choice.finish_reason.as_deref() == Some("tool_calls") {
                            out.extend(pending.drain(..).filter(|p| !p.name.is_empty()).map(|p| Ok(Delta::ToolCall(finish(p)))));
                        }
                    }
                    if !out.is_empty() {
                        return Some((futures_util::stream::iter(out), (chunks, pending, usage, false)));
                    }
                }
            }
        }
    })
    .flatten()
}

fn finish(p: Pending) -> ToolCall {
    // Arguments the model did not close as JSON are passed on as a string: the tool's own
    // argument check answers with what is wrong.
    let arguments = serde_json::from_str(&p.arguments).unwrap_or(Value::String(p.arguments));
    let id = if p.id.is_empty() { format!("call-{}", p.name) } else { p.id };
    ToolCall { id, name: p.name, arguments }
}
