//! Fitting a conversation into the model's context. When the messages of a request would not
//! fit, the earlier turns are compacted first: each becomes the user's question and the
//! assistant's answer (tool calls and their results left out, long texts cut), summarised into
//! the system message; if that is still too long the oldest exchanges go; then the tool results
//! of this turn's earlier steps are cut to their opening. The current question, the latest
//! step's results and the system rules are never touched. Only what is sent is compacted; the
//! stored conversation stays whole.
//!
//! The summary is extractive, not written by the model: it costs no model call, and a weak
//! local model summarising its own transcript loses exactly the facts a later question needs.

use crate::model::{Message, estimate_tokens};

/// Characters kept of each earlier question and answer.
const EXCHANGE_CHARS: usize = 400;
/// Characters kept of an earlier step's tool result once results must be cut.
const RESULT_CHARS: usize = 600;

fn tokens(m: &Message) -> u64 {
    estimate_tokens(&serde_json::to_string(m).unwrap_or_default())
}

pub fn total(messages: &[Message]) -> u64 {
    messages.iter().map(tokens).sum()
}

fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(chars).collect();
    s.push('…');
    s
}

/// An earlier turn: what was asked and what was answered.
fn exchanges(history: &[Message]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for m in history {
        match m {
            // A user message of the text protocol carrying a tool result is not a question.
            Message::User { content } if !content.starts_with(sandbox::channel::OPEN) => out.push((content.clone(), String::new())),
            Message::Assistant { content, tool_calls } if tool_calls.is_empty() && !content.is_empty() => {
                if let Some(last) = out.last_mut() {
                    last.1 = content.clone();
                }
            }
            _ => {}
        }
    }
    out
}

fn summary(kept: &[(String, String)], dropped: usize) -> String {
    let mut s = String::from("\n\nEarlier in this conversation (summarised; tool results left out, call the tools again if you need them):");
    if dropped > 0 {
        s.push_str(&format!("\n- ({dropped} earlier exchanges left out)"));
    }
    for (q, a) in kept {
        s.push_str(&format!(
            "\n- The user asked: {}\n  You answered: {}",
            cut(q, EXCHANGE_CHARS),
            if a.is_empty() { "(no answer)".into() } else { cut(a, EXCHANGE_CHARS) }
        ));
    }
    s
}

/// The messages to send for `messages` (system first, the earlier turns up to `first_new`,
/// then this turn) within `budget` tokens, and whether anything was compacted.
pub fn fit(messages: &[Message], first_new: usize, budget: u64) -> (Vec<Message>, bool) {
    if total(messages) <= budget || messages.is_empty() {
        return (messages.to_vec(), false);
    }
    let first_new = first_new.clamp(1, messages.len());
    let Message::System { content: system } = &messages[0] else { return (messages.to_vec(), false) };
    let current = &messages[first_new..];
    let all = exchanges(&messages[1..first_new]);
    // As many of the latest exchanges as fit beside this turn (measured once: only the system
    // message changes with what is kept).
    let this_turn = total(current);
    let system_with = |keep: usize| {
        let content = if all.is_empty() { system.clone() } else { format!("{system}{}", summary(&all[all.len() - keep..], all.len() - keep)) };
        Message::System { content }
    };
    let mut keep = all.len();
    let mut head = system_with(keep);
    while keep > 0 && tokens(&head) + this_turn > budget {
        keep -= 1;
        head = system_with(keep);
    }
    let fits = tokens(&head) + this_turn <= budget;
    let mut out = vec![head];
    out.extend_from_slice(current);
    if fits {
        return (out, true);
    }
    // This turn's earlier steps: their tool results cut to the opening (the latest step's
    // results stay whole; the model is reading them now).
    let last_step = out.iter().rposition(|m| matches!(m, Message::Assistant { tool_calls, .. } if !tool_calls.is_empty())).unwrap_or(out.len());
    for m in out[..last_step].iter_mut() {
        match m {
            Message::Tool { content, .. } => *content = cut_result(content),
            Message::User { content } if content.starts_with(sandbox::channel::OPEN) => *content = cut_result(content),
            _ => {}
        }
    }
    (out, true)
}

/// A framed tool result cut to its opening, still closed (the data stays inside its frame).
fn cut_result(content: &str) -> String {
    if content.chars().count() <= RESULT_CHARS {
        return content.to_owned();
    }
    let close = if content.starts_with(sandbox::channel::OPEN) { format!("\n{}", sandbox::channel::CLOSE) } else { String::new() };
    format!("{} [cut to fit the context; call the tool again for the rest]{close}", cut(content, RESULT_CHARS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ToolCall;
    use serde_json::json;

    fn turn(q: &str, result: &str, a: &str) -> Vec<Message> {
        vec![
            Message::User { content: q.into() },
            Message::Assistant { content: String::new(), tool_calls: vec![ToolCall { id: "c".into(), name: "logs.search".into(), arguments: json!({}) }] },
            Message::Tool { call_id: "c".into(), name: "logs.search".into(), content: result.into() },
            Message::Assistant { content: a.into(), tool_calls: Vec::new() },
        ]
    }

    fn conversation(turns: usize) -> (Vec<Message>, usize) {
        let mut m = vec![Message::System { content: "rules".into() }];
        for i in 0..turns {
            m.extend(turn(&format!("question {i}"), &format!("RESULT-{i} {}", "x".repeat(4000)), &format!("answer {i}")));
        }
        let first_new = m.len();
        m.push(Message::User { content: "the question now".into() });
        (m, first_new)
    }

    #[test]
    fn what_fits_is_sent_unchanged() {
        let (m, first_new) = conversation(2);
        let (out, compacted) = fit(&m, first_new, 1_000_000);
        assert!(!compacted);
        assert_eq!(out, m);
    }

    #[test]
    fn earlier_turns_become_questions_and_answers_in_the_system_message() {
        let (m, first_new) = conversation(5);
        let budget = 1_000;
        let (out, compacted) = fit(&m, first_new, budget);
        assert!(compacted);
        assert!(total(&out) <= budget, "{} > {budget}", total(&out));
        let Message::System { content } = &out[0] else { panic!("system first") };
        assert!(content.starts_with("rules"));
        for i in 0..5 {
            assert!(content.contains(&format!("The user asked: question {i}\n  You answered: answer {i}")), "{content}");
        }
        let sent = serde_json::to_string(&out).expect("json");
        assert!(!sent.contains("RESULT-"), "old tool results are left out");
        assert_eq!(out.last(), m.last(), "the question now is kept");
    }

    #[test]
    fn the_oldest_exchanges_go_when_the_summary_is_too_long() {
        let mut m = vec![Message::System { content: "rules".into() }];
        for i in 0..40 {
            m.extend(turn(&format!("question {i} {}", "q".repeat(390)), "r", &format!("answer {i} {}", "a".repeat(390))));
        }
        let first_new = m.len();
        m.push(Message::User { content: "now".into() });
        let (out, _) = fit(&m, first_new, 3_000);
        assert!(total(&out) <= 3_000);
        let Message::System { content } = &out[0] else { panic!("system first") };
        assert!(content.contains("question 39") && !content.contains("question 0 "), "the latest are kept");
        assert!(content.contains("earlier exchanges left out"));
    }

    #[test]
    fn this_turns_earlier_results_are_cut_but_the_latest_stay_whole() {
        let mut m = vec![Message::System { content: "rules".into() }, Message::User { content: "q".into() }];
        m.extend(turn("", &format!("OLD {}", "o".repeat(20_000)), "").into_iter().skip(1).take(2));
        m.extend(turn("", &format!("NEW {}", "n".repeat(5_000)), "").into_iter().skip(1).take(2));
        let (out, compacted) = fit(&m, 1, 2_500);
        assert!(compacted);
        let contents: Vec<&str> = out.iter().filter_map(|m| if let Message::Tool { content, .. } = m { Some(content.as_str()) } else { None }).collect();
        assert!(contents[0].starts_with("OLD") && contents[0].ends_with("call the tool again for the rest]") && contents[0].len() < 1_000);
        assert_eq!(contents[1].len(), 5_004, "the latest result is whole");
    }
}
