//! Any bytes under every supported `Content-Encoding`: never a panic, and never more output
//! than the limit.
#![no_main]

use ingest::decode::decompress;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 256 << 10;

fuzz_target!(|body: &[u8]| {
    for encoding in [None, Some("gzip"), Some("deflate"), Some("zstd"), Some("snappy"), Some("x-snappy-framed")] {
        if let Ok(out) = decompress(encoding, body, LIMIT) {
            assert!(out.len() <= LIMIT);
        }
    }
});
