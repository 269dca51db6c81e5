//! Any bytes as a Vector `http` / `JSONEachRow` body: the decoder must return, never panic,
//! and every event it accepts must respect the limits it was given.
#![no_main]

use ingest::decode::json_events::decode_json_events;
use ingest::event::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    // Small limits so the limit paths are reached often.
    let limits = DecodeLimits { max_body_bytes: 1 << 20, max_line_bytes: 4096, max_labels: 16, max_label_bytes: 64, max_json_depth: 8, ..DecodeLimits::default() };
    if let Ok(decoded) = decode_json_events(body, &limits) {
        for ev in &decoded.events {
            assert!(ev.message.len() <= limits.max_line_bytes);
            assert!(ev.labels.len() <= limits.max_labels && ev.attributes.len() <= limits.max_labels);
            assert!(ev.attributes.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
});
