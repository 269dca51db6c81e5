//! A strict parser for the Prometheus label-set text Loki's protobuf push carries per stream:
//! `{app="web", namespace="shop"}`.
//!
//! Stream labels are where tenancy is later looked up, so the parser is strict: names are
//! `[a-zA-Z_][a-zA-Z0-9_]*`, values are double-quoted, a name appears once, and nothing may
//! follow the closing brace. A quote can only end a value when it is not escaped, so
//! `{app="x\", namespace=\"victim"}` is one label `app` whose value contains the text
//! `", namespace="victim` — never a second label. Escapes are those Go's `strconv.Quote`
//! writes (promtail and Loki's own clients produce the text with it): `\\ \" \n \t \r \a \b
//! \f \v \uXXXX \UXXXXXXXX`; `\x` and octal escapes (raw bytes, maybe not UTF-8) and raw
//! line breaks are refused, as Loki refuses them. A trailing comma is accepted, as PromQL does.

/// Why a label set could not be read. Positions are byte offsets; label text is never
/// echoed, since it may carry whatever a client put there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LabelTextError {
    #[error("expected `{expected}` at byte {at}")]
    Expected { expected: char, at: usize },
    #[error("invalid label name at byte {at}")]
    BadName { at: usize },
    #[error("invalid escape or character in label value at byte {at}")]
    BadValue { at: usize },
    #[error("unterminated label value")]
    Unterminated,
    #[error("label name appears more than once")]
    Duplicate,
    #[error("unexpected data after the label set at byte {at}")]
    Trailing { at: usize },
}

/// Parses `{name="value", …}` into pairs sorted by name.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, LabelTextError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    expect(b, i, '{')?;
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    loop {
        if b.get(i) == Some(&b'}') {
            i += 1;
            break;
        }
        let name_start = i;
        if !b.get(i).is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') {
            return Err(LabelTextError::BadName { at: i });
        }
        while b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            i += 1;
        }
        let name = &text[name_start..i];
        i = skip_ws(b, i);
        expect(b, i, '=')?;
        i = skip_ws(b, i + 1);
        expect(b, i, '"')?;
        let (value, end) = value(text, i + 1)?;
        out.push((name.to_owned(), value));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return Err(LabelTextError::Expected { expected: '}', at: i }),
        }
    }
    i = skip_ws(b, i);
    if i != b.len() {
        return Err(LabelTextError::Trailing { at: i });
    }
    // Sorting first makes the duplicate check linear, whatever the number of labels.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(LabelTextError::Duplicate);
    }
    Ok(out)
}

/// Reads a quoted value starting just after its opening quote; returns it and the offset
/// just past its closing quote.
fn value(text: &str, start: usize) -> Result<(String, usize), LabelTextError> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = start;
    // Runs without escapes are copied as slices; they start and end at ASCII bytes (`"`, `\`),
    // which are always char boundaries.
    let mut run = start;
    loop {
        match b.get(i) {
            None => return Err(LabelTextError::Unterminated),
            Some(b'"') => {
                out.push_str(&text[run..i]);
                return Ok((out, i + 1));
            }
            Some(b'\n' | b'\r') => return Err(LabelTextError::BadValue { at: i }),
            Some(b'\\') => {
                out.push_str(&text[run..i]);
                let at = i;
                let simple = match b.get(i + 1) {
                    Some(b'\\') => Some('\\'),
                    Some(b'"') => Some('"'),
                    Some(b'n') => Some('\n'),
                    Some(b't') => Some('\t'),
                    Some(b'r') => Some('\r'),
                    Some(b'a') => Some('\u{07}'),
                    Some(b'b') => Some('\u{08}'),
                    Some(b'f') => Some('\u{0c}'),
                    Some(b'v') => Some('\u{0b}'),
                    _ => None,
                };
                if let Some(c) = simple {
                    out.push(c);
                    i += 2;
                } else {
                    let digits = match b.get(i + 1) {
                        Some(b'u') => 4,
                        Some(b'U') => 8,
                        None => return Err(LabelTextError::Unterminated),
                        _ => return Err(LabelTextError::BadValue { at }),
                    };
                    let hex = text.get(i + 2..i + 2 + digits).ok_or(LabelTextError::BadValue { at })?;
                    let code = if hex.bytes().all(|c| c.is_ascii_hexdigit()) { u32::from_str_radix(hex, 16).ok() } else { None };
                    out.push(code.and_then(char::from_u32).ok_or(LabelTextError::BadValue { at })?);
                    i += 2 + digits;
                }
                run = i;
            }
            Some(_) => i += 1,
        }
    }
}

fn expect(b: &[u8], i: usize, c: char) -> Result<(), LabelTextError> {
    if b.get(i).is_some_and(|x| char::from(*x) == c) { Ok(()) } else { Err(LabelTextError::Expected { expected: c, at: i }) }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
        i += 1;
    }
    i
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_what_clients_write() {
        // Vector's and promtail's spelling: sorted, `, ` separated.
        assert_eq!(
            ok(r#"{agent="vector", file="/var/log/a.log", namespace="shop"}"#),
            pairs(&[("agent", "vector"), ("file", "/var/log/a.log"), ("namespace", "shop")])
        );
        assert_eq!(ok(r#" {b="2",a="1",} "#), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(ok("{}"), pairs(&[]));
        assert_eq!(ok(r#"{a="", _b9="é☃"}"#), pairs(&[("_b9", "é☃"), ("a", "")]));
        assert_eq!(ok(r#"{a="q\"\\\n\t\u00e9\U0001F600"}"#), pairs(&[("a", "q\"\\\n\té😀")]));
    }

    #[test]
    fn injection_attempts_stay_inside_one_value() {
        assert_eq!(ok(r#"{app="x\", namespace=\"victim"}"#), pairs(&[("app", r#"x", namespace="victim"#)]));
        assert_eq!(ok(r#"{app="}, namespace=\"victim\"{"}"#), pairs(&[("app", r#"}, namespace="victim"{"#)]));
    }

    #[test]
    fn refuses_anything_else() {
        for text in [
            "",
            "app=\"x\"",
            "{app=\"x\"",
            "{app=\"x}",
            "{app=x}",
            "{app='x'}",
            "{1app=\"x\"}",
            "{a-b=\"x\"}",
            "{a.b=\"x\"}",
            "{app=\"x\" namespace=\"y\"}",
            "{app=\"x\"} namespace=\"victim\"",
            "{app=\"x\"}}",
            "{app=\"x\", app=\"y\"}",
            "{namespace=\"a\", namespace=\"b\"}",
            "{app=\"\\x41\"}",
            "{app=\"\\101\"}",
            "{app=\"\\q\"}",
            "{app=\"\\uD800\"}",
            "{app=\"\\u12\"}",
            "{app=\"\\u12é\"}",
            "{app=\"line\nbreak\"}",
            "{,}",
            "{app=\"x\",,}",
            "{app=\"x\\",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
