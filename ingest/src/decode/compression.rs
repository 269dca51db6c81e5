//! Undoing `Content-Encoding` without ever holding more than the body limit.
//!
//! A few kilobytes of gzip, zstd or snappy can claim gigabytes once inflated, so every
//! decoder here reads through [`read_bounded`], which stops at `limit + 1` bytes and never
//! reserves more than `limit`. Snappy's block format states its output length up front; that
//! length is checked before anything is allocated, so a header claiming 4 GiB costs nothing.

use std::borrow::Cow;
use std::io::{self, Read};

use crate::event::BodyError;

/// How much of a client-supplied encoding name is echoed back in an error.
const MAX_ECHOED_ENCODING: usize = 64;

/// The magic chunk that opens a snappy *framed* stream (`\xff\x06\0\0sNaPpY`).
const SNAPPY_FRAME_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// Undoes `Content-Encoding`: `identity`/`none`/absent, `gzip` (also multi-member),
/// `deflate` (zlib, or raw deflate when no zlib header), `zstd`, `snappy` (block format, as
/// Vector, Loki and Prometheus send it; a framed stream is recognised by its magic) and
/// `x-snappy-framed`. The result is at most `limit` bytes, or the error is `TooLarge`.
pub fn decompress<'a>(content_encoding: Option<&str>, body: &'a [u8], limit: usize) -> Result<Cow<'a, [u8]>, BodyError> {
    let encoding = content_encoding.map(str::trim).unwrap_or("");
    let is = |name: &str| encoding.eq_ignore_ascii_case(name);
    if encoding.is_empty() || is("identity") || is("none") {
        if body.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        return Ok(Cow::Borrowed(body));
    }
    let out = if is("gzip") || is("x-gzip") {
        read_bounded(flate2::read::MultiGzDecoder::new(body), limit, body.len())?
    } else if is("deflate") {
        // Vector's `zlib` sends zlib-wrapped data; some clients send raw deflate under the
        // same name. Choosing by header (instead of trying one, then the other) keeps the
        // cost of a hostile body to one pass.
        if looks_like_zlib(body) {
            read_bounded(flate2::read::ZlibDecoder::new(body), limit, body.len())?
        } else {
            read_bounded(flate2::read::DeflateDecoder::new(body), limit, body.len())?
        }
    } else if is("zstd") {
        read_bounded(zstd_reader(body, limit)?, limit, body.len())?
    } else if is("snappy") {
        if body.starts_with(SNAPPY_FRAME_MAGIC) { read_bounded(snap::read::FrameDecoder::new(body), limit, body.len())? } else { snappy_block(body, limit)? }
    } else if is("x-snappy-framed") {
        read_bounded(snap::read::FrameDecoder::new(body), limit, body.len())?
    } else {
        return Err(BodyError::UnsupportedEncoding(echo(encoding)));
    };
    Ok(Cow::Owned(out))
}

/// Decompresses a snappy *block* (not framed) body: Loki's and Prometheus remote_write's
/// bodies are always this, whatever `Content-Encoding` says. The claimed length is checked
/// against `limit` before the output buffer exists.
pub fn snappy_block(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let len = snap::raw::decompress_len(body).map_err(|e| BodyError::Malformed(format!("snappy: {e}")))?;
    if len > limit {
        return Err(BodyError::TooLarge { limit });
    }
    let mut out = vec![0u8; len];
    let written = snap::raw::Decoder::new().decompress(body, &mut out).map_err(|e| BodyError::Malformed(format!("snappy: {e}")))?;
    out.truncate(written);
    Ok(out)
}

/// Reads all of `reader` into a buffer whose capacity never exceeds `limit`: growth is capped
/// at `limit`, and once `limit` bytes are in, one more byte is probed to tell "exactly at the
/// limit" from "over it".
fn read_bounded<R: Read>(mut reader: R, limit: usize, size_hint: usize) -> Result<Vec<u8>, BodyError> {
    // A guess at the inflated size that is never a promise: real growth is capped below.
    let mut out = Vec::with_capacity(size_hint.saturating_mul(4).clamp(0, limit).min(1 << 20));
    let mut chunk = [0u8; 32 * 1024];
    loop {
        let room = limit - out.len();
        let want = chunk.len().min(room.max(1));
        let n = match reader.read(&mut chunk[..want]) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BodyError::Malformed(format!("decompression failed: {e}"))),
        };
        if n > room {
            return Err(BodyError::TooLarge { limit });
        }
        if out.capacity() - out.len() < n {
            let target = out.capacity().saturating_mul(2).max(out.len() + n).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// A zstd reader whose window (the decoder's one big allocation) is capped: a frame may ask
/// for up to 2 GiB of window, which would be allocated before a single byte is produced.
/// The cap is the body limit rounded up to a power of two, but at least 8 MiB (what streaming
/// compressors use at their usual levels) and at most 128 MiB (zstd's own default ceiling).
fn zstd_reader(body: &[u8], limit: usize) -> Result<impl Read + '_, BodyError> {
    let malformed = |e: io::Error| BodyError::Malformed(format!("zstd: {e}"));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(malformed)?;
    let needed = usize::BITS - limit.saturating_sub(1).leading_zeros();
    decoder.window_log_max(needed.clamp(23, 27)).map_err(malformed)?;
    Ok(decoder)
}

/// RFC 1950: compression method 8, window ≤ 32 KiB, header checksum divisible by 31.
fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// The client's encoding name, cut short so an error response cannot be used as an echo.
fn echo(encoding: &str) -> String {
    match encoding.char_indices().nth(MAX_ECHOED_ENCODING) {
        Some((i, _)) => format!("{}…", &encoding[..i]),
        None => encoding.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::decode::testutil;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn identity_borrows_and_respects_limit() {
        for enc in [None, Some(""), Some("identity"), Some(" None ")] {
            let out = decompress(enc, b"abc", 3).unwrap();
            assert!(matches!(out, Cow::Borrowed(b"abc")));
        }
        assert_eq!(decompress(None, b"abcd", 3), Err(BodyError::TooLarge { limit: 3 }));
    }

    #[test]
    fn round_trips_every_encoding() {
        let data = b"{\"message\":\"hello\"}\n".repeat(100);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&data).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&data).unwrap();
        let raw = raw.finish().unwrap();
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed.write_all(&data).unwrap();
        let framed = framed.into_inner().unwrap();
        let block = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let zstd = zstd::stream::encode_all(&data[..], 3).unwrap();
        let mut two_members = gzip(&data[..1000]);
        two_members.extend(gzip(&data[1000..]));
        let cases: [(&str, &[u8]); 8] = [
            ("gzip", &gzip(&data)),
            ("GZIP", &two_members),
            ("deflate", &zlib),
            ("deflate", &raw),
            ("zstd", &zstd),
            ("snappy", &block),
            ("snappy", &framed),
            ("x-snappy-framed", &framed),
        ];
        for (enc, body) in cases {
            let out = decompress(Some(enc), body, data.len()).unwrap_or_else(|e| panic!("{enc}: {e}"));
            assert_eq!(&out[..], &data[..], "{enc}");
            assert_eq!(decompress(Some(enc), body, data.len() - 1), Err(BodyError::TooLarge { limit: data.len() - 1 }), "{enc}");
        }
    }

    #[test]
    fn never_reserves_past_the_limit() {
        let data = vec![7u8; 300_000];
        let out = read_bounded(&data[..], data.len(), 10).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(out.capacity() <= data.len(), "capacity {} > limit", out.capacity());
    }

    #[test]
    fn gzip_bomb_is_cut_off_quickly() {
        // 100 MiB of zeros in one gzip member (about 100 KiB), written in 1 MiB pieces.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 200 << 10, "{}", bomb.len());
        let start = Instant::now();
        assert_eq!(decompress(Some("gzip"), &bomb, 1 << 20), Err(BodyError::TooLarge { limit: 1 << 20 }));
        // The same as 100 concatenated members of 1 MiB each.
        let member = gzip(&zeros);
        let members: Vec<u8> = member.iter().copied().cycle().take(member.len() * 100).collect();
        assert_eq!(decompress(Some("gzip"), &members, 1 << 20), Err(BodyError::TooLarge { limit: 1 << 20 }));
        // Only about the first MiB was inflated: far less time than inflating 100 MiB.
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    }

    #[test]
    fn zstd_bomb_is_cut_off() {
        let bomb = zstd::stream::encode_all(&vec![0u8; 64 << 20][..], 1).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(decompress(Some("zstd"), &bomb, 1 << 20), Err(BodyError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn zstd_frame_asking_for_a_huge_window_is_refused() {
        // Frame header: magic, a descriptor without content size, then a window descriptor
        // of exponent 16 (window log 26 → 64 MiB), then one empty last raw block. zstd's
        // default decoder accepts it; with a 1 MiB body limit we do not.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3, 0x01, 0x00, 0x00];
        assert_eq!(zstd::stream::decode_all(&frame[..]).unwrap(), Vec::<u8>::new());
        assert!(matches!(decompress(Some("zstd"), &frame, 1 << 20), Err(BodyError::Malformed(_))));
        assert_eq!(decompress(Some("zstd"), &frame, 64 << 20).unwrap().len(), 0);
    }

    #[test]
    fn snappy_header_claiming_4_gib_is_rejected_before_allocating() {
        // Varint 0xFFFFFFFF followed by nothing.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(snappy_block(&body, 16 << 20), Err(BodyError::TooLarge { limit: 16 << 20 }));
        assert_eq!(decompress(Some("snappy"), &body, 16 << 20), Err(BodyError::TooLarge { limit: 16 << 20 }));
    }

    #[test]
    fn malformed_bodies_are_malformed() {
        for enc in ["gzip", "deflate", "zstd", "snappy", "x-snappy-framed"] {
            let r = decompress(Some(enc), b"this is not compressed at all", 1 << 20);
            assert!(matches!(r, Err(BodyError::Malformed(_))), "{enc}: {r:?}");
        }
        // A gzip body cut short.
        let g = gzip(b"hello hello hello");
        assert!(matches!(decompress(Some("gzip"), &g[..g.len() - 5], 1 << 20), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn unknown_encoding_is_unsupported_and_not_echoed_in_full() {
        assert_eq!(decompress(Some("br"), b"x", 10), Err(BodyError::UnsupportedEncoding("br".into())));
        let long = "x".repeat(10_000);
        match decompress(Some(&long), b"x", 10) {
            Err(BodyError::UnsupportedEncoding(e)) => assert!(e.len() < 100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mutated_bodies_never_panic() {
        let data = b"{\"message\":\"hello\",\"kubernetes\":{\"pod_name\":\"p\"}}\n".repeat(20);
        let bodies = [
            ("gzip", gzip(&data)),
            ("zstd", zstd::stream::encode_all(&data[..], 3).unwrap()),
            ("snappy", snap::raw::Encoder::new().compress_vec(&data).unwrap()),
            ("deflate", {
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                z.write_all(&data).unwrap();
                z.finish().unwrap()
            }),
        ];
        for (enc, body) in &bodies {
            testutil::mutations(body, 500, |m| {
                let _ = decompress(Some(enc), m, 64 << 10);
            });
        }
    }
}
