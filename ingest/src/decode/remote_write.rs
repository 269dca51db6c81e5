//! Prometheus remote_write 1.0: a snappy-block-compressed `prometheus.WriteRequest` (what
//! Prometheus, Grafana Agent/Alloy and Vector's `prometheus_remote_write` sink send).
//!
//! Each series is checked on its own; a series that fails rejects **one entry per sample it
//! carried** (the unit a client counts and would otherwise think was stored), so a series with
//! no samples rejects nothing. Rules, following Prometheus' own ingestion:
//! - labels with an empty value are dropped (in Prometheus an empty value means "absent");
//! - an empty label name, a repeated name, or a missing/empty `__name__` → `MalformedEvent`;
//! - more than `max_labels` labels → `TooManyLabels`; a name or value longer than
//!   `max_label_bytes` → `LabelTooLong`;
//! - labels are sorted by name; NUL becomes U+FFFD as in logs; samples (including the NaN
//!   staleness markers) are passed through as sent, judged later with the timestamps.
//!
//! A body that is not snappy, or not the protobuf (including label text that is not UTF-8),
//! fails whole.

pub mod proto;

use prost::Message;

use super::checks::{self, Budget};
use super::snappy_block;
use crate::event::{BodyError, DecodeLimits, Decoded, RawSeries, RejectReason};

/// Decodes a remote_write body (snappy block compression always).
pub fn decode_remote_write(snappy_body: &[u8], limits: &DecodeLimits) -> Result<Decoded<RawSeries>, BodyError> {
    let raw = snappy_block(snappy_body, limits.max_body_bytes)?;
    let request = proto::WriteRequest::decode(&raw[..]).map_err(|e| BodyError::Malformed(format!("remote_write protobuf: {e}")))?;
    let mut out = Decoded::default();
    let mut budget = Budget::new(limits);
    for ts in request.timeseries {
        if ts.samples.is_empty() {
            continue;
        }
        let samples: Vec<(i64, f64)> = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        match series_labels(ts.labels, limits) {
            Ok(labels) => {
                let series = RawSeries { labels, samples };
                budget.charge(Budget::series_cost(&series))?;
                out.events.push(series);
            }
            Err(reason) => out.rejected.extend(std::iter::repeat_n(reason, samples.len())),
        }
    }
    Ok(out)
}

/// A series' labels, validated and sorted, or why the series is rejected.
fn series_labels(labels: Vec<proto::Label>, limits: &DecodeLimits) -> Result<Vec<(String, String)>, RejectReason> {
    let mut out: Vec<(String, String)> = labels.into_iter().filter(|l| !l.value.is_empty()).map(|l| (checks::scrub(l.name), checks::scrub(l.value))).collect();
    if out.iter().any(|(name, _)| name.is_empty()) {
        return Err(RejectReason::MalformedEvent);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.windows(2).any(|w| w[0].0 == w[1].0) || !out.iter().any(|(name, _)| name == "__name__") {
        return Err(RejectReason::MalformedEvent);
    }
    if out.len() > limits.max_labels {
        return Err(RejectReason::TooManyLabels);
    }
    if out.iter().any(|(name, value)| name.len() > limits.max_label_bytes || value.len() > limits.max_label_bytes) {
        return Err(RejectReason::LabelTooLong);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use super::proto::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
    use super::*;
    use crate::decode::testutil;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
            samples: samples.iter().map(|(t, v)| Sample { timestamp: *t, value: *v }).collect(),
        }
    }

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
    }

    fn request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![
                series(
                    &[("job", "shop"), ("__name__", "http_requests_total"), ("namespace", "shop"), ("code", "200"), ("empty", "")],
                    &[(1_714_644_930_000, 1027.0), (1_714_644_945_000, 1031.0)],
                ),
                series(&[("__name__", "up"), ("instance", "10.0.0.1:9100")], &[(1_714_644_930_000, f64::from_bits(0x7ff0_0000_0000_0002))]),
            ],
            metadata: vec![MetricMetadata { r#type: 1, metric_family_name: "http_requests_total".into(), help: "Requests.".into(), unit: String::new() }],
        }
    }

    #[test]
    fn decodes_what_prometheus_sends() {
        let d = decode_remote_write(&body(&request()), &DecodeLimits::default()).unwrap();
        assert_eq!(d.rejected, vec![]);
        assert_eq!(d.events.len(), 2);
        let labels: Vec<_> = d.events[0].labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels, [("__name__", "http_requests_total"), ("code", "200"), ("job", "shop"), ("namespace", "shop")]);
        assert_eq!(d.events[0].samples, vec![(1_714_644_930_000, 1027.0), (1_714_644_945_000, 1031.0)]);
        assert!(d.events[1].samples[0].1.is_nan(), "staleness markers pass through");
    }

    #[test]
    fn bad_series_reject_one_per_sample() {
        let limits = DecodeLimits { max_labels: 3, max_label_bytes: 20, ..DecodeLimits::default() };
        let req = WriteRequest {
            timeseries: vec![
                series(&[("job", "x")], &[(1, 1.0), (2, 2.0)]),
                series(&[("__name__", "a"), ("__name__", "b")], &[(1, 1.0)]),
                series(&[("__name__", "a"), ("", "v")], &[(1, 1.0)]),
                series(&[("__name__", "a"), ("b", "1"), ("c", "1"), ("d", "1")], &[(1, 1.0), (2, 1.0), (3, 1.0)]),
                series(&[("__name__", "a"), ("b", &"v".repeat(21))], &[(1, 1.0)]),
                series(&[("job", "no samples")], &[]),
                series(&[("__name__", "ok\0")], &[(1, 1.0)]),
            ],
            metadata: vec![],
        };
        let d = decode_remote_write(&body(&req), &limits).unwrap();
        use RejectReason::*;
        assert_eq!(d.rejected, vec![MalformedEvent, MalformedEvent, MalformedEvent, MalformedEvent, TooManyLabels, TooManyLabels, TooManyLabels, LabelTooLong]);
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].labels, vec![("__name__".into(), "ok\u{fffd}".into())]);
    }

    #[test]
    fn malformed_and_oversized_bodies() {
        let limits = DecodeLimits::default();
        assert!(matches!(decode_remote_write(b"not snappy at all", &limits), Err(BodyError::Malformed(_))));
        let junk = snap::raw::Encoder::new().compress_vec(b"\x0a\x05\x0a\x03\xff\xfe\xfd").unwrap();
        assert!(matches!(decode_remote_write(&junk, &limits), Err(BodyError::Malformed(_))), "label name not UTF-8");
        assert_eq!(decode_remote_write(&[0xff, 0xff, 0xff, 0xff, 0x0f], &limits).unwrap_err(), BodyError::TooLarge { limit: limits.max_body_bytes });
        assert!(decode_remote_write(&body(&WriteRequest::default()), &limits).unwrap().events.is_empty());
    }

    #[test]
    fn mutated_bodies_never_panic() {
        let limits = DecodeLimits::default();
        let raw = request().encode_to_vec();
        testutil::mutations(&raw, 1500, |m| {
            let _ = decode_remote_write(&snap::raw::Encoder::new().compress_vec(m).unwrap(), &limits);
        });
        testutil::mutations(&body(&request()), 500, |m| {
            let _ = decode_remote_write(m, &limits);
        });
    }
}
