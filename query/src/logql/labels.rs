//! The labels a stored row shows to LogQL. Stream labels come from columns (never from
//! anything the shipper wrote into the line or its attributes); attributes are structured
//! metadata, under names made valid for LogQL and renamed when they would shadow a stream
//! label, so an attribute can never pose as a row's workspace or project.

use std::collections::{BTreeMap, BTreeSet};

use schemas::LogRecord;
use storage::StreamCount;

/// Stream labels, in the order they are listed.
pub const STREAM_LABELS: [&str; 9] = ["workspace", "project", "application", "pod", "container", "node", "stream", "level", "service_name"];

pub type Labels = BTreeMap<String, String>;

/// Loki's `detected_level`: structured metadata Loki adds to every line when it discovers log
/// levels (the level it found, else `unknown`), and what Logs Drilldown groups and filters by.
/// Here it is the stored severity, which ingest found the same way.
pub const DETECTED_LEVEL: &str = "detected_level";

/// Loki's `service_name`: the application, else the container, else `unknown_service`.
fn service_name<'a>(application: &'a str, container: &'a str) -> &'a str {
    if !application.is_empty() {
        application
    } else if !container.is_empty() {
        container
    } else {
        "unknown_service"
    }
}

fn put(out: &mut Labels, k: &str, v: &str) {
    // Loki never shows an empty label.
    if !v.is_empty() {
        out.insert(k.to_owned(), v.to_owned());
    }
}

/// The stream labels of the stream columns, in `StreamColumns::NAMES` order.
fn stream_labels(c: [&str; 8]) -> Labels {
    let mut out = Labels::new();
    for (k, v) in STREAM_LABELS.iter().zip(c) {
        put(&mut out, k, v);
    }
    put(&mut out, "service_name", service_name(c[2], c[4]));
    out
}

/// The stream labels of a stored stream.
pub fn of_stream(s: &StreamCount) -> Labels {
    stream_labels(stream_key(s).0)
}

/// The labels of a stored stream's counts as a metric query's series: its stream labels and,
/// when the count was grouped by severity, `detected_level`.
pub fn of_counted_stream(s: &StreamCount) -> Labels {
    let mut out = of_stream(s);
    put(&mut out, DETECTED_LEVEL, &s.severity);
    out
}

/// What a stored stream's labels are made of: equal keys, equal labels.
pub fn stream_key(s: &StreamCount) -> StreamKey<'_> {
    StreamKey([&s.workspace, &s.project, &s.application, &s.pod, &s.container, &s.node, &s.stream, &s.severity])
}

/// A stored stream's columns, compared lengths first: a column the count was not grouped by is
/// empty and costs no byte comparison. A LogQL count looks one up for every stored row, and
/// comparing all eight columns byte by byte took about a third of the server's time for a
/// `sum by (level) (count_over_time(…))` over a day (860 rows).
#[derive(Clone, Copy, Hash)]
pub struct StreamKey<'a>([&'a str; 8]);

impl PartialEq for StreamKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        let pairs = || self.0.iter().zip(&other.0);
        pairs().all(|(a, b)| a.len() == b.len()) && pairs().all(|(a, b)| a.is_empty() || a == b)
    }
}

impl Eq for StreamKey<'_> {}

/// The stream labels of a row, then its attributes as structured metadata; and the names the
/// metadata took.
pub fn of_record(r: &LogRecord) -> (Labels, BTreeSet<String>) {
    let mut out = stream_labels([&r.workspace, &r.project, &r.application, &r.pod, &r.container, &r.node, &r.stream, r.severity.as_str()]);
    put(&mut out, DETECTED_LEVEL, r.severity.as_str());
    let mut metadata = BTreeSet::from([DETECTED_LEVEL.to_owned()]);
    for (k, v) in &r.attributes {
        let name = extracted_name(&sanitize(k));
        put(&mut out, &name, v);
        metadata.insert(name);
    }
    (out, metadata)
}

/// A label name Loki accepts: `[a-zA-Z_][a-zA-Z0-9_]*`, other characters as `_`.
pub fn sanitize(key: &str) -> String {
    let mut s: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// The name an extracted label gets: its own, or with `_extracted` when it is a stream label's
/// (or `detected_level`, which every row carries).
pub fn extracted_name(name: &str) -> String {
    if STREAM_LABELS.contains(&name) || name == DETECTED_LEVEL { format!("{name}_extracted") } else { name.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::StreamKey;

    #[test]
    fn stream_keys_are_equal_only_when_every_column_is() {
        let key = |c: [&'static str; 8]| StreamKey(c);
        let base = ["ws-a", "shop", "", "", "", "", "", "error"];
        assert!(key(base) == key(base));
        let mut other = base;
        other[7] = "fatal";
        assert!(key(base) != key(other), "same length, other bytes");
        other[7] = "";
        assert!(key(base) != key(other), "a column empty on one side only");
        let mut moved = base;
        (moved[1], moved[2]) = ("", "shop");
        assert!(key(base) != key(moved), "the same text in another column");
        let hash = |k: StreamKey| std::hash::BuildHasher::hash_one(&std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(), k);
        assert_eq!(hash(key(base)), hash(key(base)));
    }
}
