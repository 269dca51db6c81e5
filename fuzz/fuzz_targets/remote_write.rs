//! Any bytes as a Prometheus remote_write body: raw, and snappy-compressed here so the
//! protobuf decoder sees the fuzzer's bytes directly.
#![no_main]

use ingest::decode::remote_write::decode_remote_write;
use ingest::event::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_body_bytes: 1 << 20, max_line_bytes: 4096, max_labels: 16, max_label_bytes: 64, max_json_depth: 8, ..DecodeLimits::default() };
    let _ = decode_remote_write(data, &limits);
    if let Ok(body) = snap::raw::Encoder::new().compress_vec(data) {
        if let Ok(decoded) = decode_remote_write(&body, &limits) {
            assert!(decoded.events.iter().all(|s| s.labels.len() <= limits.max_labels));
        }
    }
});
