//! Masking secrets and personal data in text before a model or the audit log sees it.
//!
//! Each rule replaces what it finds with a marker naming what was there (`[redacted:jwt]`), so
//! the model can still reason about the line ("a request carried a token") without the value.
//! Rules run in order, on the whole text, in linear time (the regex crate has no backtracking).

use std::borrow::Cow;

use regex::{Captures, Regex};

/// Which optional rules apply. Secrets are always masked; personal data by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// E-mail addresses (on by default through [`RedactionConfig::standard`]).
    pub emails: bool,
    /// IPv4 and IPv6 addresses.
    pub ip_addresses: bool,
}

impl RedactionConfig {
    pub fn standard() -> RedactionConfig {
        RedactionConfig { emails: true, ip_addresses: false }
    }
}

struct Rule {
    name: &'static str,
    re: Regex,
    /// The capture group kept in front of the marker (a key name, a scheme), if any.
    keep: Option<usize>,
}

/// The compiled rules.
pub struct Redactor {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("rules", &self.rules.iter().map(|r| r.name).collect::<Vec<_>>()).finish()
    }
}

fn rule(name: &'static str, pattern: &str, keep: Option<usize>) -> Rule {
    // The patterns are constants of this file; a typo is caught by the tests.
    #[allow(clippy::unwrap_used)]
    let re = regex::RegexBuilder::new(pattern).size_limit(1 << 22).build().unwrap();
    Rule { name, re, keep }
}

impl Redactor {
    pub fn new(config: RedactionConfig) -> Redactor {
        let mut rules = vec![
            rule("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", None),
            rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", None),
            rule("aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b", None),
            rule("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", None),
            rule("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}", None),
            rule("url_password", r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", Some(1)),
            rule("bearer", r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", Some(1)),
            rule(
                "secret",
                r#"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|client[_-]?secret|aws_secret_access_key|authorization)["']?\s*[:=]\s*["']?)[^\s"',;&}\[]{3,}"#,
                Some(1),
            ),
        ];
        if config.emails {
            rules.push(rule("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b", None));
        }
        if config.ip_addresses {
            rules.push(rule("ip", r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", None));
            rules.push(rule("ip", r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b", None));
        }
        Redactor { rules }
    }

    /// `text` with every match masked, and how many were.
    pub fn redact<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        let mut out = Cow::Borrowed(text);
        let mut count = 0;
        for r in &self.rules {
            if !r.re.is_match(&out) {
                continue;
            }
            let replaced =
                r.re.replace_all(&out, |c: &Captures<'_>| {
                    count += 1;
                    let kept = r.keep.and_then(|i| c.get(i)).map_or("", |m| m.as_str());
                    let tail = if r.name == "url_password" { "@" } else { "" };
                    format!("{kept}[redacted:{}]{tail}", r.name)
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        (out, count)
    }

    /// Every string inside a JSON value, redacted in place; returns how many were masked.
    pub fn redact_json(&self, v: &mut serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => {
                let (r, n) = self.redact(s);
                if n > 0 {
                    *s = r.into_owned();
                }
                n
            }
            serde_json::Value::Array(a) => a.iter_mut().map(|x| self.redact_json(x)).sum(),
            serde_json::Value::Object(o) => o.values_mut().map(|x| self.redact_json(x)).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red(s: &str) -> String {
        Redactor::new(RedactionConfig { emails: true, ip_addresses: true }).redact(s).0.into_owned()
    }

    #[test]
    fn real_looking_secrets_are_masked() {
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsIm9yZ19pZCI6ImFjbWUifQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
        let cases = [
            (format!("auth header {jwt} rejected"), "auth header [redacted:jwt] rejected"),
            ("key AKIAIOSFODNN7EXAMPLE used".into(), "key [redacted:aws_access_key] used"),
            ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(), "aws_secret_access_key=[redacted:secret]"),
            ("connecting to postgres://app:hunter2@db:5432/shop".into(), "connecting to postgres://app:[redacted:url_password]@db:5432/shop"),
            ("Authorization: Bearer abcdef0123456789xyz".into(), "Authorization: [redacted:secret] [redacted:bearer]"),
            ("login failed for alice@example.com from 10.1.2.3".into(), "login failed for [redacted:email] from [redacted:ip]"),
            (r#"{"password": "s3cr3t!", "user": "bob"}"#.into(), r#"{"password": "[redacted:secret]", "user": "bob"}"#),
            ("token=ghp_abcdefghijklmnopqrstuvwxyz0123456789AB".into(), "token=[redacted:github_token]"),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY----- done".into(), "[redacted:private_key] done"),
            ("GET /healthz 200 12ms".into(), "GET /healthz 200 12ms"),
        ];
        for (input, want) in cases {
            let got = red(&input);
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn bearer_tokens_alone_are_masked() {
        assert_eq!(red("sent Bearer abcdef0123456789xyz to the API"), "sent Bearer [redacted:bearer] to the API");
    }

    #[test]
    fn json_strings_are_masked_and_counted() {
        let r = Redactor::new(RedactionConfig::standard());
        let mut v = serde_json::json!({ "lines": ["user bob@example.com", "ok"], "n": 2 });
        assert_eq!(r.redact_json(&mut v), 1);
        assert_eq!(v["lines"][0], "user [redacted:email]");
    }

    #[test]
    fn long_text_without_secrets_is_unchanged() {
        let long = "a".repeat(1 << 20) + "@";
        let (out, n) = Redactor::new(RedactionConfig::standard()).redact(&long);
        assert_eq!((n, out.len()), (0, long.len()));
    }
}
