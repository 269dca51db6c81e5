//! Log patterns: lines grouped into templates where the parts that vary (numbers, ids,
//! addresses, quoted values) become `<_>`, as Loki's pattern endpoint and the assistant's
//! `logs.patterns` tool show them.

use std::collections::HashMap;

/// Whether a token is a variable part: it holds a digit, or is long and mixed like an id.
fn variable(token: &str) -> bool {
    token.bytes().any(|b| b.is_ascii_digit()) || (token.len() >= 16 && token.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
}

/// The template of a line: whitespace-separated tokens, variable ones as `<_>`, runs of
/// variable tokens collapsed into one.
pub fn template(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(256));
    let mut last_var = false;
    for (i, token) in line.split_whitespace().enumerate() {
        if i >= 64 {
            out.push_str(" <_>");
            break;
        }
        // Keep the key of a variable `key=value` (`id=<_>`).
        let rendered = if !variable(token) {
            token
        } else {
            match token.find('=') {
                Some(eq) if !variable(&token[..eq]) => &token[..=eq],
                _ => "",
            }
        };
        let is_var = variable(token);
        if is_var && rendered.is_empty() && last_var {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(rendered);
        if is_var {
            out.push_str("<_>");
        }
        last_var = is_var && rendered.is_empty();
    }
    out
}

/// One pattern and its counts per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub pattern: String,
    pub total: u64,
    /// (bucket start ns, count), in time order.
    pub samples: Vec<(i64, u64)>,
}

/// Groups `(timestamp, line)` into at most `max` patterns (the most frequent), counted per
/// `step_ns` bucket aligned to `from_ns`.
pub fn group<'a>(lines: impl IntoIterator<Item = (i64, &'a str)>, from_ns: i64, step_ns: i64, max: usize) -> Vec<Pattern> {
    let mut by: HashMap<String, HashMap<i64, u64>> = HashMap::new();
    for (ts, line) in lines {
        let bucket = from_ns + (ts - from_ns).div_euclid(step_ns.max(1)) * step_ns.max(1);
        *by.entry(template(line)).or_default().entry(bucket).or_default() += 1;
    }
    let mut out: Vec<Pattern> = by
        .into_iter()
        .map(|(pattern, buckets)| {
            let mut samples: Vec<(i64, u64)> = buckets.into_iter().collect();
            samples.sort_unstable();
            Pattern { total: samples.iter().map(|(_, c)| c).sum(), pattern, samples }
        })
        .collect();
    out.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.pattern.cmp(&b.pattern)));
    out.truncate(max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_become_placeholders() {
        assert_eq!(template("Received block blk_-1608999687919862906 of size 91178 from /10.250.10.6"), "Received block <_> of size <_> from <_>");
        assert_eq!(template("user=alice took 35ms status=200"), "user=alice took <_> status=<_>");
        let lines = ["GET /a 200 12ms", "GET /b 200 9ms", "GET /b 500 3ms", "worker started"];
        let p = group(lines.iter().enumerate().map(|(i, l)| (i as i64, *l)), 0, 2, 10);
        assert_eq!(p[0].pattern, "GET /b <_>");
        assert_eq!(p.iter().find(|x| x.pattern == "GET /b <_>").map(|x| x.total), Some(2));
        assert_eq!(p.iter().find(|x| x.pattern == "GET /b <_>").map(|x| x.samples.clone()), Some(vec![(0, 1), (2, 1)]));
    }
}
