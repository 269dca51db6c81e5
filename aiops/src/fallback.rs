//! The text protocol for models without native tool calling: the tools are described in the
//! system prompt, the model answers with a JSON object naming one (or a list of them), and a
//! tolerant parser finds it in whatever else the model wrote (prose, code fences, trailing
//! commas are not accepted as JSON, but a JSON object inside text is found).

use serde_json::Value;

use crate::model::{ToolCall, ToolSpec};

/// The system prompt's part that describes the tools and the protocol.
pub fn protocol(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "You can call tools. To call one, reply with only a JSON object: {\"tool\": \"<name>\", \"arguments\": {…}} \
         (or a JSON list of such objects to call several). When you have the answer, reply in plain text without JSON.\nTools:\n",
    );
    for t in tools {
        s.push_str(&format!("- {}: {} Arguments (JSON Schema): {}\n", t.name, t.description, t.parameters));
    }
    s
}

/// The calls in a reply, if it makes any: the first JSON object or list in the text whose
/// objects name a known tool (`tool`, `name` or `function`) with `arguments` (or `args`,
/// `parameters`; an object, or a string holding one).
pub fn parse_calls(reply: &str, known: &[&str]) -> Vec<ToolCall> {
    let bytes = reply.as_bytes();
    let mut start = 0;
    while let Some(off) = reply[start..].find(['{', '[']) {
        let at = start + off;
        if let Some(end) = balanced_end(bytes, at)
            && let Ok(v) = serde_json::from_str::<Value>(&reply[at..end])
        {
            let calls = calls_in(&v, known);
            if !calls.is_empty() {
                return calls;
            }
        }
        start = at + 1;
    }
    Vec::new()
}

fn calls_in(v: &Value, known: &[&str]) -> Vec<ToolCall> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Some(o) = item.as_object() else { continue };
        let Some(name) = ["tool", "name", "function"].iter().find_map(|k| o.get(*k).and_then(Value::as_str)) else { continue };
        if !known.contains(&name) {
            continue;
        }
        let args = ["arguments", "args", "parameters", "input"].iter().find_map(|k| o.get(*k)).cloned().unwrap_or(Value::Object(Default::default()));
        let args = match args {
            Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
            other => other,
        };
        out.push(ToolCall { id: format!("text-{}-{i}", name), name: name.to_owned(), arguments: args });
    }
    out
}

/// The end (exclusive) of the JSON value opening at `at`, counting brackets outside strings;
/// bounded in depth so a hostile reply cannot make it expensive.
fn balanced_end(b: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, &c) in b.iter().enumerate().skip(at) {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > 64 {
                    return None;
                }
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const KNOWN: &[&str] = &["logs.search", "logs.patterns"];

    #[test]
    fn calls_are_found_in_what_weak_models_write() {
        let cases = [
            (r#"{"tool": "logs.search", "arguments": {"q": "error"}}"#, vec![("logs.search", json!({ "q": "error" }))]),
            ("Sure! I'll search.\n```json\n{\"name\": \"logs.search\", \"args\": {\"q\": \"a}b\"}}\n```", vec![("logs.search", json!({ "q": "a}b" }))]),
            (
                r#"[{"tool":"logs.search","arguments":"{\"since\":\"1h\"}"},{"tool":"logs.patterns","arguments":{}}]"#,
                vec![("logs.search", json!({ "since": "1h" })), ("logs.patterns", json!({}))],
            ),
            (r#"use {braces} then {"function": "logs.patterns", "parameters": {"limit": 5}}"#, vec![("logs.patterns", json!({ "limit": 5 }))]),
        ];
        for (reply, want) in cases {
            let got: Vec<(String, Value)> = parse_calls(reply, KNOWN).into_iter().map(|c| (c.name, c.arguments)).collect();
            let want: Vec<(String, Value)> = want.into_iter().map(|(n, a)| (n.to_owned(), a)).collect();
            assert_eq!(got, want, "{reply}");
        }
    }

    #[test]
    fn answers_and_unknown_tools_are_not_calls() {
        for reply in [
            "The checkout pods crash because the database refuses connections.",
            r#"{"tool": "shell.exec", "arguments": {"cmd": "rm -rf /"}}"#,
            r#"{"tool": "logs.search""#,
            &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            r#"{"answer": "done"}"#,
        ] {
            assert!(parse_calls(reply, KNOWN).is_empty(), "{reply}");
        }
    }
}
