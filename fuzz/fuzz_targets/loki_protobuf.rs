//! Any bytes as a Loki protobuf push: once as the snappy body a client sends, once snappy-
//! compressed here so the protobuf and label-text parsers see the fuzzer's bytes directly.
#![no_main]

use ingest::decode::loki::decode_loki_protobuf;
use ingest::event::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_body_bytes: 1 << 20, max_line_bytes: 4096, max_labels: 16, max_label_bytes: 64, max_json_depth: 8, ..DecodeLimits::default() };
    let _ = decode_loki_protobuf(data, &limits);
    if let Ok(body) = snap::raw::Encoder::new().compress_vec(data) {
        let _ = decode_loki_protobuf(&body, &limits);
    }
});
