//! Ollama, through ollama-rs: native tool calls where the model has them (the text protocol
//! otherwise), streamed as NDJSON.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use ollama_rs::Ollama;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage, MessageRole};
use ollama_rs::generation::tools::{ToolCall as OllamaCall, ToolCallFunction, ToolFunctionInfo, ToolInfo, ToolType};

use crate::model::{ChatModel, ChatRequest, Delta, Message, ProviderError, ToolCall, Usage};

pub struct OllamaModel {
    client: Ollama,
    model: String,
    native_tools: bool,
}

impl std::fmt::Debug for OllamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OllamaModel").field("model", &self.model).finish_non_exhaustive()
    }
}

impl OllamaModel {
    /// `url` like `http://127.0.0.1:11434`.
    pub fn new(url: &str, model: &str, native_tools: bool) -> Result<OllamaModel, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        Ok(OllamaModel { client: Ollama::from_url(url), model: model.to_owned(), native_tools })
    }

    fn request(&self, r: &ChatRequest) -> ChatMessageRequest {
        let messages = r
            .messages
            .iter()
            .map(|m| match m {
                Message::System { content } => ChatMessage::new(MessageRole::System, content.clone()),
                Message::User { content } => ChatMessage::new(MessageRole::User, content.clone()),
                Message::Assistant { content, tool_calls } => {
                    let mut msg = ChatMessage::new(MessageRole::Assistant, content.clone());
                    msg.tool_calls =
                        tool_calls.iter().map(|c| OllamaCall { function: ToolCallFunction { name: c.name.clone(), arguments: c.arguments.clone() } }).collect();
                    msg
                }
                Message::Tool { content, .. } => ChatMessage::new(MessageRole::Tool, content.clone()),
            })
            .collect();
        let mut req = ChatMessageRequest::new(self.model.clone(), messages);
        if !r.tools.is_empty() {
            let tools = r
                .tools
                .iter()
                .filter_map(|t| {
                    let parameters = schemars::Schema::try_from(t.parameters.clone()).ok()?;
                    Some(ToolInfo {
                        tool_type: ToolType::Function,
                        function: ToolFunctionInfo { name: t.name.clone(), description: t.description.clone(), parameters },
                    })
                })
                .collect();
            req = req.tools(tools);
        }
        req
    }
}

impl ChatModel for OllamaModel {
    fn describe(&self) -> (&'static str, &str) {
        ("ollama", &self.model)
    }
    fn native_tools(&self) -> bool {
        self.native_tools
    }
    fn is_local(&self) -> bool {
        true
    }

    fn stream(&self, request: ChatRequest) -> BoxStream<'static, Result<Delta, ProviderError>> {
        let req = self.request(&request);
        let client = self.client.clone();
        futures_util::stream::once(async move { client.send_chat_messages_stream(req).await })
            .flat_map(|opened| -> BoxStream<'static, Result<Delta, ProviderError>> {
                match opened {
                    Err(e) => {
                        let retryable = !e.to_string().contains("model") || e.to_string().contains("connect");
                        futures_util::stream::once(async move { Err(ProviderError::new(format!("Ollama: {e}"), retryable)) }).boxed()
                    }
                    Ok(responses) => {
                        let mut n = 0usize;
                        responses
                            .flat_map(move |r| {
                                let out: Vec<Result<Delta, ProviderError>> = match r {
                                    Err(()) => vec![Err(ProviderError::new("Ollama: the stream broke off", true))],
                                    Ok(resp) => {
                                        let mut out = Vec::new();
                                        if !resp.message.content.is_empty() {
                                            out.push(Ok(Delta::Text(resp.message.content.clone())));
                                        }
                                        for c in resp.message.tool_calls {
                                            n += 1;
                                            out.push(Ok(Delta::ToolCall(ToolCall {
                                                id: format!("call-{n}"),
                                                name: c.function.name,
                                                arguments: c.function.arguments,
                                            })));
                                        }
                                        if resp.done {
                                            let usage = resp
                                                .final_data
                                                .map(|d| Usage { prompt_tokens: d.prompt_eval_count, completion_tokens: d.eval_count })
                                                .unwrap_or_default();
                                            out.push(Ok(Delta::Done(usage)));
                                        }
                                        out
                                    }
                                };
                                futures_util::stream::iter(out)
                            })
                            .boxed()
                    }
                }
            })
            .boxed()
    }
}
