//! LogQL's lexer: strings (with escapes, and raw in backticks), numbers, durations (Prometheus's
//! and Go's), byte sizes, identifiers and symbols, each with where it starts.

use super::parse::MAX_QUERY_BYTES;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    /// A duration literal like `5m`, in nanoseconds.
    Dur(i64),
    /// A byte size like `20MB` or `1KiB`, in bytes.
    Bytes(f64),
    Sym(&'static str),
}

const SYMBOLS: [&str; 27] =
    ["|=", "|~", "|>", "!=", "!~", "!>", "=~", "==", ">=", "<=", "{", "}", "(", ")", "[", "]", ",", "|", "=", ">", "<", "+", "-", "*", "/", "%", "^"];

pub(super) fn lex(src: &str) -> Result<Vec<(usize, Tok)>, String> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            // A comment runs to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c == b'"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = b.get(i) else { return Err(format!("unterminated string starting at {}", start + 1)) };
                match ch {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        let esc = *b.get(i + 1).ok_or_else(|| format!("unterminated string starting at {}", start + 1))?;
                        s.push(match esc {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            b'\\' => '\\',
                            b'"' => '"',
                            b'\'' => '\'',
                            other => return Err(format!("unknown escape `\\{}` at {}", other as char, i + 1)),
                        });
                        i += 2;
                    }
                    _ => {
                        let ch = src[i..].chars().next().ok_or("bad text")?;
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        if c == b'`' {
            let end = src[i + 1..].find('`').ok_or_else(|| format!("unterminated raw string starting at {}", start + 1))?;
            out.push((start, Tok::Str(src[i + 1..i + 1 + end].to_owned())));
            i += end + 2;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            let text = &src[start..i];
            if let Ok(n) = text.parse::<f64>() {
                out.push((start, Tok::Num(n)));
            } else if let Some(d) = crate::params::parse_duration_ns(text)
                .or_else(|| super::pipeline::duration_seconds(text).map(|s| (s * 1e9).round() as i64))
                .filter(|_| text.ends_with(|c: char| c.is_ascii_alphabetic()))
            {
                // Go's durations too (`1.5m`, `89.5s`), as Loki's lexer reads them.
                out.push((start, Tok::Dur(d)));
            } else if let Some(n) = super::pipeline::bytes(text).filter(|_| text.ends_with(|c: char| c.is_ascii_alphabetic())) {
                // As in Loki, a duration wins: `5m` is five minutes, `5MB` five megabytes.
                out.push((start, Tok::Bytes(n)));
            } else {
                return Err(format!("`{text}` at {} is neither a number, a duration (like 5m) nor a size (like 20MB)", start + 1));
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_owned())));
            continue;
        }
        match SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            Some(s) => {
                out.push((start, Tok::Sym(s)));
                i += s.len();
            }
            None => return Err(format!("unexpected character `{}` at {}", src[i..].chars().next().unwrap_or('?'), start + 1)),
        }
    }
    Ok(out)
}
