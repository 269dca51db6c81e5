//! Byte-level JSON scanning that does not build values: splitting a top-level array into
//! its elements, and compacting an already-validated JSON text.
//!
//! Splitting first and parsing each element alone is what lets one bad event in a Vector
//! JSON-array batch cost one reject instead of the whole batch, and gives every event its own
//! raw text (used as the message of an event that has none). Only strings and bracket depth
//! are tracked; a broken element is found when that element is parsed.

use crate::event::BodyError;

/// The elements of the JSON array at the start of `body`, as raw (trimmed) byte slices.
/// Whole-body errors: no `[`, an empty element (`[1,,2]`, `[1,]`), a truncated array, or
/// anything but whitespace after the closing `]`.
pub(crate) fn array_elements(body: &[u8]) -> Result<Vec<&[u8]>, BodyError> {
    let malformed = |what: &str, at: usize| BodyError::Malformed(format!("JSON array: {what} at byte {at}"));
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'[') {
        return Err(malformed("expected `[`", i));
    }
    i = skip_ws(body, i + 1);
    let mut out = Vec::new();
    if body.get(i) == Some(&b']') {
        return end(body, i + 1).map(|()| out);
    }
    loop {
        let start = i;
        let mut depth = 0usize;
        let mut in_string = false;
        // Scan to the `,` or `]` that ends this element at depth 0.
        let stop = loop {
            let Some(&b) = body.get(i) else {
                return Err(malformed("unterminated array", i));
            };
            if in_string {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' if depth > 0 => {}
                    b']' | b',' => break b,
                    b'}' => return Err(malformed("unbalanced `}`", i)),
                    _ => {}
                }
            }
            i += 1;
        };
        let element = trim(&body[start..i]);
        if element.is_empty() {
            return Err(malformed("empty element", i));
        }
        out.push(element);
        i = skip_ws(body, i + 1);
        if stop == b']' {
            return end(body, i).map(|()| out);
        }
    }
}

/// Only whitespace may follow the array.
fn end(body: &[u8], i: usize) -> Result<(), BodyError> {
    if skip_ws(body, i) == body.len() { Ok(()) } else { Err(BodyError::Malformed(format!("JSON array: trailing data at byte {i}"))) }
}

/// `raw`, known to be valid JSON, without the whitespace between tokens.
pub(crate) fn compact(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !is_ws(b) {
            in_string = b == b'"';
            out.push(b);
        }
    }
    // Only ASCII whitespace outside strings was removed, so valid UTF-8 stays valid.
    String::from_utf8(out).ok()
}

pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while body.get(i).is_some_and(|b| is_ws(*b)) {
        i += 1;
    }
    i
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use super::*;

    fn split(s: &str) -> Result<Vec<&str>, BodyError> {
        array_elements(s.as_bytes()).map(|v| v.into_iter().map(|e| std::str::from_utf8(e).unwrap()).collect())
    }

    #[test]
    fn splits_elements() {
        assert_eq!(split(" [ ] ").unwrap(), Vec::<&str>::new());
        assert_eq!(split(r#"[{"a":"x,]}\"["} , [1,[2]] ,3,"s]"]"#).unwrap(), vec![r#"{"a":"x,]}\"["}"#, "[1,[2]]", "3", r#""s]""#]);
        assert_eq!(split("[{}]\n").unwrap(), vec!["{}"]);
    }

    #[test]
    fn whole_body_errors() {
        for s in ["", "{}", "[", "[1,", "[1,]", "[,]", "[1] x", "[{]", r#"["abc]"#, "[}]"] {
            assert!(split(s).is_err(), "{s}");
        }
    }

    #[test]
    fn compacts() {
        assert_eq!(compact(b" { \"a b\" : [ 1 , \"\\\" x\" ] } ").unwrap(), r#"{"a b":[1,"\" x"]}"#);
    }
}
