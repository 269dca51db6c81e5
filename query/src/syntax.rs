//! The dashboard's search syntax: `words`, `"a phrase"`, `-excluded`, `-"excluded phrase"`,
//! `/a regex/` and `-/a regex/` (a `-` alone or before another `-` is text). Words and phrases match case-insensitively anywhere in the
//! line; every term must hold.

use storage::Term;

pub const MAX_QUERY_BYTES: usize = 4096;
pub const MAX_TERMS: usize = 32;

/// Parses `q` into terms, or says what is wrong with it.
pub fn parse(q: &str) -> Result<Vec<Term>, String> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(format!("the search text is longer than {MAX_QUERY_BYTES} bytes"));
    }
    let mut terms = Vec::new();
    let mut chars = q.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        // `-x` excludes; a `-` followed by nothing, a space or another `-` is literal text.
        let negated = c == '-' && {
            let mut ahead = chars.clone();
            ahead.next();
            ahead.peek().is_some_and(|&(_, d)| !d.is_whitespace() && d != '-')
        };
        if negated {
            chars.next();
        }
        let term = match chars.peek().map(|&(_, c)| c) {
            Some(quote @ ('"' | '/')) => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    if c == '\\' {
                        match chars.next() {
                            // `\"` in a phrase and `\/` in a regex stand for the delimiter; other
                            // escapes are kept (a regex needs them).
                            Some((_, d)) if d == quote => text.push(d),
                            Some((_, d)) => {
                                text.push('\\');
                                text.push(d);
                            }
                            None => text.push('\\'),
                        }
                    } else if c == quote {
                        closed = true;
                        break;
                    } else {
                        text.push(c);
                    }
                }
                if !closed {
                    return Err(format!("unclosed {quote} in the search text"));
                }
                if text.is_empty() {
                    continue;
                }
                if quote == '"' { Term::Contains(text) } else { Term::Regex(text) }
            }
            Some(_) => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                Term::Contains(word)
            }
            None => break,
        };
        terms.push(if negated { Term::Not(Box::new(term)) } else { term });
        if terms.len() > MAX_TERMS {
            return Err(format!("at most {MAX_TERMS} terms per search"));
        }
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Term {
        Term::Contains(s.into())
    }
    fn not(t: Term) -> Term {
        Term::Not(Box::new(t))
    }

    #[test]
    fn words_phrases_exclusions_and_regexes() {
        assert_eq!(parse("  error  timeout ").unwrap(), vec![c("error"), c("timeout")]);
        assert_eq!(parse(r#""connection reset" -"by peer" -debug"#).unwrap(), vec![c("connection reset"), not(c("by peer")), not(c("debug"))]);
        assert_eq!(parse(r"/blk_-?\d+/ -/^INFO/").unwrap(), vec![Term::Regex(r"blk_-?\d+".into()), not(Term::Regex("^INFO".into()))]);
        assert_eq!(parse(r#""say \"hi\"" /a\/b/"#).unwrap(), vec![c(r#"say "hi""#), Term::Regex("a/b".into())]);
        // Hostile text is just text: it becomes a parameter, never part of a statement.
        assert_eq!(parse("' OR 1=1 --").unwrap(), vec![c("'"), c("OR"), c("1=1"), c("--")]);
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("a - b -").unwrap(), vec![c("a"), c("-"), c("b"), c("-")]);
        assert!(parse("\"unclosed").is_err());
        assert!(parse("/unclosed").is_err());
        assert!(parse(&"a ".repeat(40)).is_err());
        assert!(parse(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }
}
