//! Loki's push protobuf (`logproto.PushRequest`), declared by hand so no `protoc` is needed.
//!
//! The `pub` types mirror Loki's `push.proto` field for field; tests and benchmarks encode
//! real payloads with them. Decoding uses the `Lenient*` twins, which read the line and
//! structured metadata as bytes: Loki's Go clients (gogo protobuf) do not check UTF-8, so a
//! single line of invalid UTF-8 must not make the whole batch unreadable. The two share the
//! wire format exactly (`string` and `bytes` are both length-delimited).

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// Prometheus label-set text: `{app="web", namespace="shop"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// [`PushRequest`] for decoding.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LenientPushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<LenientStream>,
}

/// [`StreamAdapter`] for decoding; the label text must be UTF-8 (it is parsed strictly anyway).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LenientStream {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<LenientEntry>,
}

/// [`EntryAdapter`] for decoding.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LenientEntry {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(bytes = "vec", tag = "2")]
    pub line: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LenientPair>,
}

/// [`LabelPairAdapter`] for decoding.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LenientPair {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
