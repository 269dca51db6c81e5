//! One JSON object → one [`RawLog`], in a single pass with no intermediate `Value` tree.
//!
//! The object is walked with a serde visitor that keeps the dotted path of the current key in
//! one reused buffer (`kubernetes.pod_name`). Every scalar is routed by its full path, so a
//! nested object (`{"kubernetes":{"pod_name":…}}`, what Vector sends) and a flattened dotted
//! key (`{"kubernetes.pod_name":…}`, what ClickHouse-shaped rows use) land in the same place.
//! Keys are never allocated; only values that are kept are copied out.
//!
//! Routing (first match):
//! - `timestamp` → RFC 3339 or epoch number; unreadable → kept as attribute `timestamp`, and
//!   the event has no timestamp (the server then uses the time it received it).
//! - `message`, then `msg`, then `log` (when a string) → message; the ones not chosen become
//!   attributes. A non-string message is written as text (`5` → `"5"`, an object or array as
//!   compact JSON). With none of them, the message is the event itself as compact JSON.
//! - `kubernetes.pod_namespace`/`namespace`, `kubernetes.pod_name`/`pod`,
//!   `kubernetes.container_name`/`container`, `kubernetes.pod_node_name`/`node`, `stream`;
//!   the Vector name wins over the column name when both are present.
//! - `level`, `severity`, `log.level` → severity when [`Severity::parse`] knows the word,
//!   otherwise kept as an attribute.
//! - `trace_id`/`traceId`/`trace.id`, `span_id`/`spanId`/`span.id`.
//! - `kubernetes.pod_labels.*` and `labels.*` → labels; `attributes.*` → attributes (prefix
//!   removed).
//! - Vector's per-node, per-namespace and per-pod metadata that is the same on every line and
//!   can be large (`kubernetes.node_labels.*`, `kubernetes.namespace_labels.*`,
//!   `kubernetes.pod_annotations.*` — kubectl's last-applied configuration lives there —,
//!   `kubernetes.pod_uid`, `kubernetes.container_id`, `kubernetes.container_image_id`,
//!   `kubernetes.pod_ips`, `file`, `source_type`) → dropped, so that a default
//!   `kubernetes_logs` source does not run into `max_labels`.
//! - Anything else → attribute under its full path. Arrays become compact JSON text; `null`
//!   means absent; numbers and booleans become their JSON text.
//!
//! Nesting deeper than `max_json_depth` fails the event (the caller counts `MalformedEvent`).

use std::fmt;

use schemas::Severity;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{checks, json_scan, timestamp};
use crate::event::{DecodeLimits, RawLog, RejectReason};

/// Parses one event from `raw` (one NDJSON line or one array element, trimmed).
pub(crate) fn parse_event(raw: &[u8], limits: &DecodeLimits, path: &mut String) -> Result<RawLog, RejectReason> {
    path.clear();
    let mut b = Builder { limits, path, ev: RawLog::default(), messages: [None, None, None], priority: [0; 4] };
    let mut de = sonic_rs::Deserializer::from_slice(raw);
    Top(&mut b).deserialize(&mut de).and_then(|()| de.end()).map_err(|_| RejectReason::MalformedEvent)?;
    b.finish(raw)
}

/// Where a scalar at some path goes.
enum Target {
    Timestamp,
    /// Index into `Builder::messages`: `message`, `msg`, `log`.
    Message(usize),
    /// Index into `Builder::priority` (namespace, pod, container, node) and the priority of
    /// the name that matched: the Vector name (2) beats the column name (1).
    Identity(usize, u8),
    Stream,
    Severity,
    TraceId,
    SpanId,
    /// A label named by the path from this byte offset on.
    Label(usize),
    /// An attribute named by the path from this byte offset on.
    Attribute(usize),
    /// Not kept.
    Skip,
}

/// Vector metadata that is dropped (see the module doc).
const SKIPPED_PREFIXES: [&str; 3] = ["kubernetes.node_labels.", "kubernetes.namespace_labels.", "kubernetes.pod_annotations."];
const SKIPPED_KEYS: [&str; 6] = ["kubernetes.pod_uid", "kubernetes.container_id", "kubernetes.container_image_id", "kubernetes.pod_ips", "file", "source_type"];

const MESSAGE_KEYS: [&str; 3] = ["message", "msg", "log"];

fn route(path: &str) -> Target {
    match path {
        "timestamp" => Target::Timestamp,
        "message" => Target::Message(0),
        "msg" => Target::Message(1),
        "log" => Target::Message(2),
        "kubernetes.pod_namespace" => Target::Identity(0, 2),
        "namespace" => Target::Identity(0, 1),
        "kubernetes.pod_name" => Target::Identity(1, 2),
        "pod" => Target::Identity(1, 1),
        "kubernetes.container_name" => Target::Identity(2, 2),
        "container" => Target::Identity(2, 1),
        "kubernetes.pod_node_name" => Target::Identity(3, 2),
        "node" => Target::Identity(3, 1),
        "stream" => Target::Stream,
        "level" | "severity" | "log.level" => Target::Severity,
        "trace_id" | "traceId" | "trace.id" => Target::TraceId,
        "span_id" | "spanId" | "span.id" => Target::SpanId,
        p => {
            for prefix in ["kubernetes.pod_labels.", "labels."] {
                if p.len() > prefix.len() && p.starts_with(prefix) {
                    return Target::Label(prefix.len());
                }
            }
            if SKIPPED_KEYS.contains(&p) || SKIPPED_PREFIXES.iter().any(|s| p.starts_with(s)) {
                return Target::Skip;
            }
            if p.len() > "attributes.".len() && p.starts_with("attributes.") {
                return Target::Attribute("attributes.".len());
            }
            Target::Attribute(0)
        }
    }
}

/// A scalar as the visitor saw it.
enum Leaf<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i128),
    Float(f64),
    /// An array, or an object where a message was expected, as compact JSON.
    Json(String),
}

impl Leaf<'_> {
    fn into_text(self) -> String {
        match self {
            Leaf::Str(s) => checks::text(s),
            Leaf::Bool(b) => if b { "true" } else { "false" }.to_owned(),
            Leaf::Int(i) => i.to_string(),
            Leaf::Float(f) => float_text(f),
            Leaf::Json(s) => checks::scrub(s),
        }
    }
}

/// JSON's shortest round-trip form (`1e300`, not 301 digits).
fn float_text(f: f64) -> String {
    serde_json::to_string(&f).unwrap_or_else(|_| f.to_string())
}

struct Builder<'a> {
    limits: &'a DecodeLimits,
    path: &'a mut String,
    ev: RawLog,
    messages: [Option<String>; 3],
    priority: [u8; 4],
}

impl Builder<'_> {
    fn leaf(&mut self, leaf: Leaf<'_>) {
        match route(self.path) {
            Target::Timestamp => {
                let ts = match &leaf {
                    Leaf::Str(s) => timestamp::parse_text(s),
                    Leaf::Int(i) => timestamp::from_epoch_int(*i),
                    Leaf::Float(f) => timestamp::from_epoch_float(*f),
                    Leaf::Bool(_) | Leaf::Json(_) => None,
                };
                match ts {
                    Some(ts) => self.ev.timestamp_ns = Some(ts),
                    None => self.attribute(0, leaf),
                }
            }
            Target::Message(i) => self.messages[i] = Some(leaf.into_text()),
            Target::Identity(i, prio) => {
                if prio >= self.priority[i] {
                    self.priority[i] = prio;
                    let slot = match i {
                        0 => &mut self.ev.namespace,
                        1 => &mut self.ev.pod,
                        2 => &mut self.ev.container,
                        _ => &mut self.ev.node,
                    };
                    *slot = Some(leaf.into_text());
                }
            }
            Target::Stream => self.ev.stream = Some(leaf.into_text()),
            Target::Severity => match &leaf {
                Leaf::Str(s) if Severity::parse(s).is_some() => self.ev.severity = Severity::parse(s),
                _ => self.attribute(0, leaf),
            },
            Target::TraceId => self.ev.trace_id = Some(leaf.into_text()),
            Target::SpanId => self.ev.span_id = Some(leaf.into_text()),
            Target::Label(from) => {
                let key = checks::text(&self.path[from..]);
                self.ev.labels.push((key, leaf.into_text()));
            }
            Target::Attribute(from) => self.attribute(from, leaf),
            Target::Skip => {}
        }
    }

    fn attribute(&mut self, from: usize, leaf: Leaf<'_>) {
        let key = checks::text(&self.path[from..]);
        self.ev.attributes.push((key, leaf.into_text()));
    }

    /// Whether the value at the current path is read as a message (so an object there is
    /// kept whole as text instead of flattened).
    fn at_message(&self) -> bool {
        matches!(self.path.as_str(), "message" | "msg")
    }

    fn finish(mut self, raw: &[u8]) -> Result<RawLog, RejectReason> {
        let chosen = self.messages.iter().position(Option::is_some);
        for (i, m) in self.messages.iter_mut().enumerate() {
            if Some(i) != chosen
                && let Some(value) = m.take()
            {
                self.ev.attributes.push((MESSAGE_KEYS[i].to_owned(), value));
            }
        }
        self.ev.message = match chosen.and_then(|i| self.messages[i].take()) {
            Some(m) => m,
            None => json_scan::compact(raw).ok_or(RejectReason::MalformedEvent)?,
        };
        checks::finish(&mut self.ev, self.limits)?;
        Ok(self.ev)
    }
}

/// The top-level value: must be an object.
struct Top<'a, 'b>(&'a mut Builder<'b>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        fields(self.0, map, 1)
    }
}

/// Walks an object's entries at nesting `depth`, extending the path with each key.
fn fields<'de, A: MapAccess<'de>>(b: &mut Builder<'_>, mut map: A, depth: usize) -> Result<(), A::Error> {
    if depth > b.limits.max_json_depth {
        return Err(de::Error::custom("nesting too deep"));
    }
    while let Some(mark) = map.next_key_seed(Key(b.path))? {
        map.next_value_seed(Value { b: &mut *b, depth })?;
        b.path.truncate(mark);
    }
    Ok(())
}

/// Appends a key to the path; yields the path length to restore afterwards.
struct Key<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        let mark = self.0.len();
        if mark > 0 {
            self.0.push('.');
        }
        self.0.push_str(key);
        Ok(mark)
    }
}

/// A value inside an object whose own nesting is `depth`.
struct Value<'a, 'b> {
    b: &'a mut Builder<'b>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Value<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.b.leaf(Leaf::Bool(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.b.leaf(Leaf::Int(i128::from(v)));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.b.leaf(Leaf::Int(i128::from(v)));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.b.leaf(Leaf::Float(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.b.leaf(Leaf::Str(v));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if self.b.at_message() {
            let mut out = Vec::new();
            Compact { out: &mut out, depth: self.depth + 1, max: self.b.limits.max_json_depth }.visit_map(map)?;
            let json = String::from_utf8(out).map_err(|_| de::Error::custom("invalid UTF-8"))?;
            self.b.leaf(Leaf::Json(json));
            return Ok(());
        }
        fields(self.b, map, self.depth + 1)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let mut out = Vec::new();
        Compact { out: &mut out, depth: self.depth + 1, max: self.b.limits.max_json_depth }.visit_seq(seq)?;
        let json = String::from_utf8(out).map_err(|_| de::Error::custom("invalid UTF-8"))?;
        self.b.leaf(Leaf::Json(json));
        Ok(())
    }
}

/// Re-writes a value as compact JSON while it is read, with the same depth limit.
struct Compact<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
    max: usize,
}

impl Compact<'_> {
    fn child(&mut self) -> Compact<'_> {
        Compact { out: self.out, depth: self.depth + 1, max: self.max }
    }

    fn check_depth<E: de::Error>(&self) -> Result<(), E> {
        if self.depth > self.max { Err(E::custom("nesting too deep")) } else { Ok(()) }
    }

    fn write<E: de::Error, T: serde::Serialize + ?Sized>(self, v: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, v).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Compact<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Compact<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.write(&v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.write(&v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.write(&v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.write(&v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.write(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.check_depth()?;
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key::<KeyText<'de>>()? {
            if !first {
                self.out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.out, key.0.as_ref()).map_err(de::Error::custom)?;
            self.out.push(b':');
            map.next_value_seed(self.child())?;
        }
        self.out.push(b'}');
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.check_depth()?;
        self.out.push(b'[');
        let mut first = true;
        loop {
            // The separator is written before knowing whether an element follows, and taken
            // back when none does.
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(self.child())?.is_none() {
                self.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
}

/// A key, borrowed from the input when it has no escapes.
struct KeyText<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText<'de>, E> {
                Ok(KeyText(v.to_owned().into()))
            }
        }
        d.deserialize_str(V)
    }
}
