//! Any bytes as a Loki JSON push body: the decoder must return, never panic.
#![no_main]

use ingest::decode::loki::decode_loki_json;
use ingest::event::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let limits = DecodeLimits { max_body_bytes: 1 << 20, max_line_bytes: 4096, max_labels: 16, max_label_bytes: 64, max_json_depth: 8, ..DecodeLimits::default() };
    if let Ok(decoded) = decode_loki_json(body, &limits) {
        assert!(decoded.events.iter().all(|ev| ev.message.len() <= limits.max_line_bytes));
    }
});
