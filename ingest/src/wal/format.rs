//! The on-disk frame of one record, and the names of segment files.
//!
//! ```text
//! magic:u32 | len:u32 | seq:u64 | kind:u8 | crc:u32 | payload (len bytes)
//! ```
//!
//! All integers are little-endian. `crc` is CRC-32 (IEEE) over `len | seq | kind | payload`, so
//! a flipped bit anywhere but in the magic is caught, and a flipped magic only makes the record
//! unfindable. Nothing here panics on any input: recovery feeds it whatever the disk returns.

/// Marks the start of every record. Chosen outside ASCII so that text payloads (JSON, log
/// lines) cannot contain it, which keeps resynchronisation after corruption cheap and exact.
const MAGIC: [u8; 4] = [0xC7, 0x5A, 0x1E, 0x9D];

/// Bytes before the payload: magic, len, seq, kind, crc.
pub(super) const HEADER_LEN: usize = 4 + 4 + 8 + 1 + 4;

/// Largest payload one record may carry. It is fixed (not taken from the configuration) because
/// recovery uses it to reject impossible headers, and a log must stay readable whatever
/// configuration opens it later.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// Bytes one record with a payload of `payload_len` bytes takes on disk.
pub(super) fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN.saturating_add(payload_len)
}

/// Appends the frame of one record to `buf`. The caller has checked that the payload is at
/// most [`MAX_PAYLOAD_BYTES`].
pub(super) fn encode_into(buf: &mut Vec<u8>, seq: u64, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.reserve(encoded_len(payload.len()));
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(&checksum(len, seq, kind, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn checksum(len: u32, seq: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// One record read back from a segment, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Decoded<'a> {
    pub seq: u64,
    pub kind: u8,
    pub payload: &'a [u8],
    /// Offset just past this record.
    pub end: usize,
}

/// Decodes the record starting at `pos`, or `None` when there is no whole, valid record there
/// (wrong magic, impossible header, cut short, or checksum mismatch).
pub(super) fn decode_at(buf: &[u8], pos: usize) -> Option<Decoded<'_>> {
    let header = buf.get(pos..pos.checked_add(HEADER_LEN)?)?;
    if header.get(0..4)? != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(header.get(8..16)?.try_into().ok()?);
    let kind = *header.get(16)?;
    let crc = u32::from_le_bytes(header.get(17..21)?.try_into().ok()?);
    let payload_len = usize::try_from(len).ok()?;
    // Sequence numbers start at 1, so 0 can only be damage.
    if payload_len > MAX_PAYLOAD_BYTES || seq == 0 {
        return None;
    }
    let start = pos.checked_add(HEADER_LEN)?;
    let end = start.checked_add(payload_len)?;
    let payload = buf.get(start..end)?;
    if checksum(len, seq, kind, payload) != crc {
        return None;
    }
    Some(Decoded { seq, kind, payload, end })
}

/// The first offset after `from` where a whole valid record starts, if any.
pub(super) fn find_next_record(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    tail.windows(MAGIC.len()).enumerate().filter(|(_, window)| *window == MAGIC).map(|(offset, _)| from + offset).find(|&pos| decode_at(buf, pos).is_some())
}

/// File name of the segment whose first record has sequence number `first_seq`. Zero-padded to
/// the width of `u64::MAX` so that names sort like the numbers.
pub(super) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// The first sequence number a segment file name stands for, or `None` for any other file.
pub(super) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_into(&mut buf, seq, kind, payload);
        buf
    }

    #[test]
    fn round_trips_and_reports_its_end() {
        let buf = frame(7, 3, b"hello");
        assert_eq!(buf.len(), encoded_len(5));
        let decoded = decode_at(&buf, 0).expect("valid record");
        assert_eq!((decoded.seq, decoded.kind, decoded.payload, decoded.end), (7, 3, &b"hello"[..], buf.len()));
    }

    #[test]
    fn every_single_bit_flip_outside_the_magic_is_detected() {
        let buf = frame(42, 1, b"some payload bytes");
        for byte in 4..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                if let Some(b) = damaged.get_mut(byte) {
                    *b ^= 1 << bit;
                }
                assert!(decode_at(&damaged, 0).is_none(), "flip at byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn cut_short_and_out_of_range_are_not_records() {
        let buf = frame(1, 0, b"abc");
        for cut in 0..buf.len() {
            assert!(decode_at(buf.get(..cut).unwrap_or_default(), 0).is_none());
        }
        assert!(decode_at(&buf, buf.len()).is_none());
        assert!(decode_at(&buf, usize::MAX).is_none());
        assert!(find_next_record(&buf, usize::MAX).is_none());
    }

    #[test]
    fn seq_zero_is_impossible() {
        assert!(decode_at(&frame(0, 0, b"x"), 0).is_none());
    }

    #[test]
    fn finds_the_next_record_after_garbage() {
        let mut buf = vec![0xC7, 0x5A, 0x1E, 0x9D, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3];
        let at = buf.len();
        buf.extend(frame(9, 2, b"payload"));
        assert_eq!(find_next_record(&buf, 0), Some(at));
        assert_eq!(find_next_record(&buf, at + 1), None);
    }

    #[test]
    fn segment_names_round_trip_and_reject_strays() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        for stray in ["WAL_ID", "1.wal", "0000000000000000000a.wal", "00000000000000000001.wal.tmp", "99999999999999999999.wal"] {
            assert_eq!(parse_segment_file_name(stray), None, "{stray}");
        }
    }
}
