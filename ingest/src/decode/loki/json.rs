//! Loki's JSON push body, read in one pass with serde visitors:
//! `{"streams":[{"stream":{"app":"web"},"values":[["<unix ns>","line"],["<unix ns>","line",{"trace_id":"…"}]]}]}`.
//!
//! Keys other than `streams`, `stream` and `values` are skipped. A stream's `stream` object
//! may come before or after its `values` (JSON objects are unordered), so entries are held
//! until the stream's object ends. Serde's error text can quote the input, so only its
//! category and position are reported.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Entry, Ts, push_entry, stream_base};
use crate::decode::checks::{self, Budget};
use crate::event::{BodyError, DecodeLimits, Decoded, RawLog};

/// Decodes a Loki JSON push body (already decompressed).
pub fn decode_loki_json(body: &[u8], limits: &DecodeLimits) -> Result<Decoded<RawLog>, BodyError> {
    if body.len() > limits.max_body_bytes {
        return Err(BodyError::TooLarge { limit: limits.max_body_bytes });
    }
    let mut state = State { out: Decoded::default(), budget: Budget::new(limits), limits, failure: None };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Push(&mut state).deserialize(&mut de).and_then(|()| de.end());
    // A budget failure surfaces as a serde error (to stop the walk); report the real reason.
    if let Some(failure) = state.failure {
        return Err(failure);
    }
    parsed.map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => "invalid JSON",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Data => "JSON is not a Loki push request",
        };
        BodyError::Malformed(format!("{what} at line {} column {}", e.line(), e.column()))
    })?;
    Ok(state.out)
}

struct State<'l> {
    out: Decoded<RawLog>,
    budget: Budget,
    limits: &'l DecodeLimits,
    failure: Option<BodyError>,
}

/// The top-level object.
struct Push<'a, 'l>(&'a mut State<'l>);

impl<'de> DeserializeSeed<'de> for Push<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Push<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a push request object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "streams" {
                map.next_value_seed(Streams(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `streams` array: each stream is turned into events as soon as it has been read.
struct Streams<'a, 'l>(&'a mut State<'l>);

impl<'de> DeserializeSeed<'de> for Streams<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Streams<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of streams")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(stream) = seq.next_element::<Stream>()? {
            let state = &mut *self.0;
            let base = stream_base(stream.labels.into_iter().collect(), state.limits);
            for entry in stream.entries {
                if let Err(e) = push_entry(&base, entry, &mut state.out, &mut state.budget, state.limits) {
                    state.failure = Some(e);
                    return Err(de::Error::custom("decoded events over budget"));
                }
            }
        }
        Ok(())
    }
}

/// One stream, fully read.
struct Stream {
    labels: BTreeMap<String, String>,
    entries: Vec<Entry>,
}

impl<'de> de::Deserialize<'de> for Stream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stream, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stream;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a stream object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stream, A::Error> {
                let mut stream = Stream { labels: BTreeMap::new(), entries: Vec::new() };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        // A repeated key in the label object keeps its last value.
                        "stream" => stream.labels = map.next_value()?,
                        "values" => stream.entries = map.next_value::<Vec<Entry>>()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(stream)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> de::Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"an entry ["<unix ns>", "line"] or ["<unix ns>", "line", {metadata}]"#)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
                let ts = seq.next_element::<JsonTs>()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let line = seq.next_element::<String>()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let metadata = seq.next_element::<Option<BTreeMap<String, String>>>()?.flatten().unwrap_or_default();
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                let metadata = metadata.into_iter().map(|(k, v)| (checks::scrub(k), checks::scrub(v))).collect();
                Ok(Entry { ts: ts.0, line: checks::scrub(line), metadata })
            }
        }
        d.deserialize_seq(V)
    }
}

/// A JSON entry timestamp: a string of Unix nanoseconds (Loki's format) or, leniently, an
/// integer. Any other string is an invalid timestamp for this entry only.
struct JsonTs(Ts);

impl<'de> de::Deserialize<'de> for JsonTs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonTs, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonTs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a timestamp in Unix nanoseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonTs, E> {
                let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
                Ok(JsonTs(match v.parse::<i64>() {
                    Ok(ns) if ok => Ts::At(ns),
                    _ => Ts::Invalid,
                }))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonTs, E> {
                Ok(JsonTs(i64::try_from(v).map_or(Ts::Invalid, Ts::At)))
            }
            // Negative (before 1970, never a real log line), fractional or boolean: this
            // entry is bad, the body is not.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<JsonTs, E> {
                Ok(JsonTs(Ts::Invalid))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<JsonTs, E> {
                Ok(JsonTs(Ts::Invalid))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<JsonTs, E> {
                Ok(JsonTs(Ts::Invalid))
            }
        }
        d.deserialize_any(V)
    }
}
