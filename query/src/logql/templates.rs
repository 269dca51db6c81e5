//! The text-level parts of LogQL: `pattern` expressions and `line_format`/`label_format`
//! templates.

use super::{PatternPart, TemplatePart};

/// A `pattern` expression: literal text and `<name>` captures (`<_>` captures nothing); at
/// least one named capture, and never two captures side by side (Loki's rules).
pub(super) fn pattern(src: &str) -> Result<Vec<PatternPart>, String> {
    let mut out: Vec<PatternPart> = Vec::new();
    let mut literal = String::new();
    let mut rest = src;
    while !rest.is_empty() {
        let capture = rest.strip_prefix('<').and_then(|r| {
            let end = r.find('>')?;
            let name = &r[..end];
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with(|c: char| c.is_ascii_digit());
            valid.then_some((name, end + 2))
        });
        match capture {
            Some((name, len)) => {
                if !literal.is_empty() {
                    out.push(PatternPart::Literal(std::mem::take(&mut literal)));
                }
                if matches!(out.last(), Some(PatternPart::Capture(_))) {
                    return Err(format!("pattern `{src}`: two captures side by side (`<{name}>` follows another) cannot be told apart"));
                }
                out.push(PatternPart::Capture((name != "_").then(|| name.to_owned())));
                rest = &rest[len..];
            }
            None => {
                let ch = rest.chars().next().unwrap_or_default();
                literal.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        out.push(PatternPart::Literal(literal));
    }
    if !out.iter().any(|p| matches!(p, PatternPart::Capture(Some(_)))) {
        return Err(format!("pattern `{src}`: at least one named capture like <name> is needed"));
    }
    Ok(out)
}

/// A `line_format` template: text with `{{.label}}`, `{{__line__}}` and `{{__timestamp__}}`.
pub(super) fn template(src: &str) -> Result<Vec<TemplatePart>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(TemplatePart::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find("}}").ok_or("line_format: `{{` without `}}`")? + open;
        let inner = rest[open + 2..close].trim().trim_start_matches('-').trim_end_matches('-').trim();
        out.push(match inner {
            "__line__" => TemplatePart::Line,
            "__timestamp__" => TemplatePart::Timestamp,
            s if s.starts_with('.') && s.len() > 1 && s[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => TemplatePart::Label(s[1..].to_owned()),
            other => return Err(format!("line_format: `{{{{{other}}}}}` is not supported (use {{{{.label}}}}, {{{{__line__}}}} or {{{{__timestamp__}}}})")),
        });
        rest = &rest[close + 2..];
    }
    if !rest.is_empty() {
        out.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(out)
}
