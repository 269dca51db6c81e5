//! The AI assistant: a chat agent that answers operators' questions by calling tools through LLM
//! providers (Ollama, OpenAI-compatible). Not built yet; every tool call will pass through
//! `sandbox`.
