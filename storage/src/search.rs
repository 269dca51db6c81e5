//! Log search as storage understands it: a [`LogSearch`] (scope, time range, filters, terms,
//! page) that every backend answers the same way, newest first.
//!
//! Term semantics (both backends): a word or a phrase matches when the message contains it,
//! ignoring ASCII case; a regex is RE2 syntax (linear time, no backreferences), matched
//! case-sensitively unless it starts with `(?i)`; an exclusion matches when its term does not.
//! Order: timestamp descending, then pod, then message, then trace id (so pages are stable).
//! Results are the stored rows themselves ([`LogRecord`]).

use auth::TenantScope;
use schemas::LogRecord;

/// A search term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Substring, ASCII case-insensitive (the dashboard's words and phrases).
    Contains(String),
    /// Substring, case-sensitive (LogQL's `|=`).
    Exact(String),
    /// RE2 regular expression.
    Regex(String),
    Not(Box<Term>),
}

/// Equality filters; an empty list means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilters {
    pub projects: Vec<String>,
    pub applications: Vec<String>,
    pub pods: Vec<String>,
    pub containers: Vec<String>,
    pub severities: Vec<String>,
}

/// Where a page starts: rows strictly older than `timestamp_ns` (strictly newer for an
/// oldest-first search), plus the first `skip` rows at exactly `timestamp_ns` already returned
/// are passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub timestamp_ns: i64,
    pub skip: u32,
}

/// One search. Only the query crate builds one, from an authorised [`TenantScope`].
#[derive(Debug, Clone)]
pub struct LogSearch {
    pub scope: TenantScope,
    /// Inclusive lower and exclusive upper bound, Unix nanoseconds.
    pub from_ns: i64,
    pub to_ns: i64,
    pub filters: LogFilters,
    pub terms: Vec<Term>,
    /// At most this many rows (newest first).
    pub limit: usize,
    /// Continue from a previous page.
    pub cursor: Option<Cursor>,
    /// The oldest `limit` rows, oldest first, instead of the newest (the lines after a hit).
    pub oldest_first: bool,
}

/// `a.cmp(b)`, without calling `memcmp` when either side is empty. An empty `String` points
/// at no memory (a dangling address in the first page), and glibc's AVX-512 `memcmp` given such
/// a pointer, even for zero bytes, makes a masked load through an unmapped page: about 100 ns
/// on this project's Xeon test machine, where comparing two short strings takes 2. Empty
/// columns are common (trace ids, stream columns a query does not group by), so sorts over
/// them compare with this.
fn cmp_text(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_empty() || b.is_empty() { a.len().cmp(&b.len()) } else { a.cmp(b) }
}

/// The order of search results: newest first, then pod, message, trace id (stable pages).
pub fn newest_first(a: &LogRecord, b: &LogRecord) -> std::cmp::Ordering {
    b.timestamp_ns
        .cmp(&a.timestamp_ns)
        .then_with(|| cmp_text(&a.pod, &b.pod))
        .then_with(|| cmp_text(&a.message, &b.message))
        .then_with(|| cmp_text(&a.trace_id, &b.trace_id))
}

/// The order of [`LogSearch::oldest_first`] results: exactly the reverse of [`newest_first`].
pub fn oldest_first(a: &LogRecord, b: &LogRecord) -> std::cmp::Ordering {
    newest_first(b, a)
}

/// Counts per time bucket and severity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistogramBucket {
    pub start_ns: i64,
    pub severity: String,
    pub count: u64,
}

/// Entries and message bytes of one stream (a distinct set of the stream columns) in one time
/// bucket: what label listings, series, index statistics, volumes and simple LogQL metric
/// queries are answered from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamCount {
    /// Bucket start (aligned to the query's `from_ns`), or `from_ns` when not bucketed.
    pub start_ns: i64,
    pub workspace: String,
    pub project: String,
    pub application: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    pub stream: String,
    pub severity: String,
    pub entries: u64,
    pub bytes: u64,
}

impl StreamCount {
    /// The order `Store::streams` returns: by bucket, then the stream columns. Compared with
    /// `cmp_text`: most columns of a grouped answer are empty, and sorting a LogQL answer's
    /// thousand rows with `str::cmp` cost 0.9 ms here, with `cmp_text` 0.05 ms.
    pub fn order(a: &StreamCount, b: &StreamCount) -> std::cmp::Ordering {
        a.start_ns.cmp(&b.start_ns).then_with(|| {
            let (x, y) = (a.columns(), b.columns());
            x.iter().zip(&y).map(|(p, q)| cmp_text(p, q)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        })
    }

    fn columns(&self) -> [&str; 8] {
        [&self.workspace, &self.project, &self.application, &self.pod, &self.container, &self.node, &self.stream, &self.severity]
    }
}

/// Which stream columns [`crate::Store::streams`] groups by; the others come back empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamColumns(pub u8);

impl StreamColumns {
    /// The stream columns, in [`StreamCount`]'s order.
    pub const NAMES: [&'static str; 8] = ["workspace", "project", "application", "pod", "container", "node", "stream", "severity"];
    pub const ALL: StreamColumns = StreamColumns(0xff);
    pub const NONE: StreamColumns = StreamColumns(0);

    /// The column called `name` (one of [`StreamColumns::NAMES`]) added.
    pub fn with(self, name: &str) -> StreamColumns {
        match Self::NAMES.iter().position(|n| *n == name) {
            Some(i) => StreamColumns(self.0 | (1 << i)),
            None => self,
        }
    }

    pub fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

/// How [`crate::Store::streams`] counts: per bucket of `step_ns` (aligned to the query's
/// `from_ns`) or over the whole range, grouped by `columns`, and whether to add up message
/// bytes (reading every message costs; counting entries does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsBy {
    pub step_ns: Option<i64>,
    pub columns: StreamColumns,
    pub bytes: bool,
}

impl StreamsBy {
    /// Every stream over the whole range, with bytes (label listings, index statistics).
    pub const ALL: StreamsBy = StreamsBy { step_ns: None, columns: StreamColumns::ALL, bytes: true };
}

/// A compiled matcher for terms, used by the embedded store and by anything that filters lines
/// in memory (live tail). Regexes are compiled with a size limit.
pub struct Matcher {
    terms: Vec<(bool, Compiled)>,
}

enum Compiled {
    /// The needle lowercased (for highlights) and a searcher for it ignoring ASCII case (the
    /// literal search the regex engine would use, without compiling a regex per request);
    /// `None` where only highlights and checks are wanted (see [`Matcher::without_searchers`]).
    Contains(Vec<u8>, Option<aho_corasick::AhoCorasick>),
    Exact(String),
    Regex(regex::Regex),
}

/// Compiled regex programs larger than this are refused (a regex bomb costs nothing to send).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

impl Matcher {
    /// A matcher to scan lines with ([`Matcher::is_match`]).
    pub fn new(terms: &[Term]) -> Result<Matcher, String> {
        Matcher::build(terms, true)
    }

    /// The same checks (a regex over the size limits is refused) and highlights, without
    /// building a searcher per word (about 10 µs each): for lines another engine found, and for
    /// checking terms another engine will run. [`Matcher::is_match`] still answers, more slowly.
    pub fn without_searchers(terms: &[Term]) -> Result<Matcher, String> {
        Matcher::build(terms, false)
    }

    fn build(terms: &[Term], searchers: bool) -> Result<Matcher, String> {
        let mut out = Vec::new();
        for t in terms {
            let (negated, inner) = match t {
                Term::Not(inner) => (true, inner.as_ref()),
                other => (false, other),
            };
            let c = match inner {
                Term::Contains(s) => Compiled::Contains(
                    s.to_ascii_lowercase().into_bytes(),
                    if searchers {
                        Some(aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build([s.as_bytes()]).map_err(|e| format!("word `{s}`: {e}"))?)
                    } else {
                        None
                    },
                ),
                Term::Exact(s) => Compiled::Exact(s.clone()),
                Term::Regex(r) => Compiled::Regex(
                    regex::RegexBuilder::new(r)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .dfa_size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| format!("regex `{r}`: {e}"))?,
                ),
                Term::Not(_) => return Err("a double exclusion is not supported".into()),
            };
            out.push((negated, c));
        }
        Ok(Matcher { terms: out })
    }

    /// Byte ranges of `message` that the positive terms matched, sorted, for highlighting.
    pub fn highlights(&self, message: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let lower = message.to_ascii_lowercase();
        for (negated, c) in &self.terms {
            if *negated {
                continue;
            }
            match c {
                Compiled::Contains(needle, _) if !needle.is_empty() => {
                    let needle = std::str::from_utf8(needle).unwrap_or_default();
                    out.extend(lower.match_indices(needle).map(|(i, m)| (i, i + m.len())).take(64));
                }
                Compiled::Exact(needle) if !needle.is_empty() => out.extend(message.match_indices(needle.as_str()).map(|(i, m)| (i, i + m.len())).take(64)),
                Compiled::Contains(..) | Compiled::Exact(_) => {}
                Compiled::Regex(r) => out.extend(r.find_iter(message).filter(|m| !m.is_empty()).map(|m| (m.start(), m.end())).take(64)),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn is_match(&self, message: &str) -> bool {
        self.terms.iter().all(|(negated, c)| {
            let hit = match c {
                Compiled::Contains(_, Some(r)) => r.is_match(message.as_bytes()),
                Compiled::Contains(needle, None) => needle.is_empty() || message.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle)),
                Compiled::Exact(needle) => message.contains(needle.as_str()),
                Compiled::Regex(r) => r.is_match(message),
            };
            hit != *negated
        })
    }
}

impl LogFilters {
    pub fn matches(&self, project: &str, application: &str, pod: &str, container: &str, severity: &str) -> bool {
        let ok = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        ok(&self.projects, project)
            && ok(&self.applications, application)
            && ok(&self.pods, pod)
            && ok(&self.containers, container)
            && ok(&self.severities, severity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_as_documented() {
        // Both kinds of matcher answer alike; only how they search differs.
        for make in [Matcher::new, Matcher::without_searchers] {
            let m = make(&[Term::Contains("Packet".into()), Term::Not(Box::new(Term::Contains("terminating".into())))]).unwrap();
            assert!(m.is_match("PACKETRESPONDER 1 started"));
            assert!(!m.is_match("PacketResponder 1 terminating"));
            assert!(!m.is_match("nothing here"));
            assert!(!m.is_match("Pack"), "a needle longer than the line");
            // Words are literal text, folded for ASCII only.
            let dot = make(&[Term::Contains("a.b(".into())]).unwrap();
            assert!(dot.is_match("x A.B( y") && !dot.is_match("axb("));
            let accent = make(&[Term::Contains("café".into())]).unwrap();
            assert!(accent.is_match("CAFé au lait") && !accent.is_match("CAFÉ"));
            assert!(make(&[Term::Contains(String::new())]).unwrap().is_match("anything"));
            assert_eq!(m.highlights("a packet, a PACKET"), vec![(2, 8), (12, 18)]);
            let r = make(&[Term::Regex("blk_-?[0-9]+".into())]).unwrap();
            assert!(r.is_match("Received block blk_-1608999687919862906") && !r.is_match("blk_x"));
            assert!(make(&[Term::Regex("(a".into())]).is_err());
            // A regex whose program is huge is refused instead of compiled.
            assert!(make(&[Term::Regex("(\\w{100}){100}".into())]).is_err());
        }
    }

    #[test]
    fn text_comparisons_agree_with_the_standard_ones() {
        let words = ["", "a", "ab", "b", "B", "é", "a\0"];
        for a in words {
            for b in words {
                assert_eq!(cmp_text(a, b), a.cmp(b), "{a:?} {b:?}");
                // An owned empty string (no allocation behind it), as rows hold them.
                let empty = String::new();
                assert_eq!(cmp_text(&String::from(a), empty.as_str()), a.cmp(""));
            }
        }
    }

    #[test]
    fn streams_sort_into_their_documented_order() {
        // Rows drawn from a few values per column, some columns empty: ties on every prefix.
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let pick = |i: u64| ["", "a", "b", "ab"][i as usize].to_owned();
        let mut rows: Vec<StreamCount> = (0..500)
            .map(|i| StreamCount {
                start_ns: next(4) as i64 * 10 - 10,
                workspace: pick(next(2) + 1),
                project: pick(next(4)),
                application: pick(next(2)),
                pod: pick(next(4)),
                container: String::new(),
                node: pick(next(3)),
                stream: pick(next(2)),
                severity: pick(next(4)),
                entries: i,
                bytes: 0,
            })
            .collect();
        // The expectation from the standard library's ordering of the same columns.
        let key = |r: &StreamCount| {
            (r.start_ns, r.workspace.clone(), r.project.clone(), r.application.clone(), r.pod.clone(), r.node.clone(), r.stream.clone(), r.severity.clone())
        };
        let mut expected = rows.clone();
        expected.sort_by_key(key);
        rows.sort_unstable_by(StreamCount::order);
        assert_eq!(rows.iter().map(key).collect::<Vec<_>>(), expected.iter().map(key).collect::<Vec<_>>());
        assert_eq!(rows.len(), 500);
        let mut entries: Vec<u64> = rows.iter().map(|r| r.entries).collect();
        entries.sort_unstable();
        assert_eq!(entries, (0..500).collect::<Vec<_>>(), "every row kept once");
    }
}
