//! Rules every log decoder applies to an event before handing it on, so that a Vector event,
//! a `JSONEachRow` row and a Loki entry are judged alike.
//!
//! - NUL characters become U+FFFD everywhere (message, ids, labels, attributes). They are legal
//!   in JSON (`\u0000`) and in protobuf strings, but never meaningful in log text, they break
//!   C-string tooling and terminals downstream, and a visible replacement marks where they were.
//! - Tenancy is decided on the server (credential, then pod labels), never by what an event
//!   says about itself: attributes whose first path segment looks like a tenancy field
//!   (`org_id`, `workspace`, `project`, `application`, `tenant`, `X-Scope-OrgID`, …) are
//!   dropped, so nothing downstream can mistake them for the real thing.
//! - Labels and attributes are sorted by key with unique keys; a repeated key keeps its last
//!   value, as a JSON object with repeated keys means in most parsers.
//! - Limits: message (and any attribute value) ≤ `max_line_bytes`; labels and attributes each
//!   ≤ `max_labels`; label names and values, attribute names, and the identifying fields
//!   (namespace, pod, container, node, stream, trace and span ids) ≤ `max_label_bytes`.
//! - Memory: decoded events take more room than their wire form (a 3-byte `{}` line is a
//!   whole `RawLog`; a Loki stream's labels are copied into each of its entries). A [`Budget`]
//!   of `MEMORY_FACTOR` × `max_body_bytes` bounds what one body may decode to, so a small
//!   body cannot fan out into gigabytes; past it the whole body is `TooLarge`.

use std::mem::size_of;

use crate::event::{BodyError, DecodeLimits, RawLog, RawSeries, RejectReason};

/// How many times its own size a body may take once decoded. Realistic Vector, Loki and
/// Prometheus bodies stay within 2–4×; only degenerate ones (millions of empty events, huge
/// label sets shared by tiny entries) come near.
const MEMORY_FACTOR: usize = 16;

/// Room for decoded events left to one body; see the module doc.
#[derive(Debug)]
pub(crate) struct Budget {
    left: usize,
    body_limit: usize,
}

impl Budget {
    pub(crate) fn new(limits: &DecodeLimits) -> Budget {
        Budget { left: limits.max_body_bytes.saturating_mul(MEMORY_FACTOR).max(1 << 20), body_limit: limits.max_body_bytes }
    }

    /// Takes `bytes` from the budget, or fails the body.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), BodyError> {
        self.left = self.left.checked_sub(bytes).ok_or(BodyError::TooLarge { limit: self.body_limit })?;
        Ok(())
    }

    /// The approximate memory of an event: the struct, its strings' bytes, and their headers.
    pub(crate) fn log_cost(ev: &RawLog) -> usize {
        let pairs = |p: &[(String, String)]| p.iter().map(|(k, v)| k.len() + v.len() + 2 * size_of::<String>()).sum::<usize>();
        let ids = [&ev.namespace, &ev.pod, &ev.container, &ev.node, &ev.stream, &ev.trace_id, &ev.span_id];
        size_of::<RawLog>()
            + ev.message.len()
            + ids.iter().map(|v| v.as_ref().map_or(0, String::len)).sum::<usize>()
            + pairs(&ev.labels)
            + pairs(&ev.attributes)
    }

    /// The approximate memory of a series.
    pub(crate) fn series_cost(s: &RawSeries) -> usize {
        size_of::<RawSeries>()
            + s.labels.iter().map(|(k, v)| k.len() + v.len() + 2 * size_of::<String>()).sum::<usize>()
            + s.samples.len() * size_of::<(i64, f64)>()
    }
}

/// Normalised (lower case, no `-`/`_`) names of fields a payload might use to claim a tenant.
const TENANCY_NAMES: [&str; 16] = [
    "org",
    "orgid",
    "organization",
    "organizationid",
    "organisation",
    "organisationid",
    "workspace",
    "workspaceid",
    "project",
    "projectid",
    "application",
    "applicationid",
    "tenant",
    "tenantid",
    "xscopeorgid",
    "scopeorgid",
];

/// A copy of `s` with NUL replaced by U+FFFD.
pub(crate) fn text(s: &str) -> String {
    if s.as_bytes().contains(&0) { s.replace('\0', "\u{fffd}") } else { s.to_owned() }
}

/// `s` with NUL replaced by U+FFFD; no copy when there is none.
pub(crate) fn scrub(s: String) -> String {
    if s.as_bytes().contains(&0) { s.replace('\0', "\u{fffd}") } else { s }
}

/// Whether an attribute key claims tenancy: its first dotted segment, ignoring case, `-` and
/// `_`, is one of [`TENANCY_NAMES`].
pub(crate) fn is_tenancy_key(key: &str) -> bool {
    let segment = key.split('.').next().unwrap_or(key);
    if segment.len() > 24 {
        return false;
    }
    let normalised = || segment.bytes().filter(|b| *b != b'-' && *b != b'_').map(|b| b.to_ascii_lowercase());
    TENANCY_NAMES.iter().any(|name| normalised().eq(name.bytes()))
}

/// Sorts by key and keeps the last value of a repeated key.
pub(crate) fn sort_unique(pairs: &mut Vec<(String, String)>) {
    // Stable, so equal keys stay in arrival order and the swap below keeps the last one.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
}

/// Drops tenancy-looking attributes, sorts and de-duplicates labels and attributes, then
/// applies the limits.
pub(crate) fn finish(ev: &mut RawLog, limits: &DecodeLimits) -> Result<(), RejectReason> {
    ev.attributes.retain(|(k, _)| !is_tenancy_key(k));
    sort_unique(&mut ev.labels);
    sort_unique(&mut ev.attributes);
    check(ev, limits)
}

/// The limits of the module doc, first failure wins.
pub(crate) fn check(ev: &RawLog, limits: &DecodeLimits) -> Result<(), RejectReason> {
    if ev.message.len() > limits.max_line_bytes {
        return Err(RejectReason::LineTooLong);
    }
    if ev.labels.len() > limits.max_labels || ev.attributes.len() > limits.max_labels {
        return Err(RejectReason::TooManyLabels);
    }
    let short = |s: &str| s.len() <= limits.max_label_bytes;
    let ids = [&ev.namespace, &ev.pod, &ev.container, &ev.node, &ev.stream, &ev.trace_id, &ev.span_id];
    if !ids.iter().all(|v| v.as_deref().is_none_or(short))
        || !ev.labels.iter().all(|(k, v)| short(k) && short(v))
        || !ev.attributes.iter().all(|(k, _)| short(k))
    {
        return Err(RejectReason::LabelTooLong);
    }
    if ev.attributes.iter().any(|(_, v)| v.len() > limits.max_line_bytes) {
        return Err(RejectReason::LineTooLong);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has already failed
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn sort_unique_keeps_last() {
        let mut p = pairs(&[("b", "1"), ("a", "1"), ("b", "2"), ("a", "2"), ("b", "3"), ("c", "1")]);
        sort_unique(&mut p);
        assert_eq!(p, pairs(&[("a", "2"), ("b", "3"), ("c", "1")]));
    }

    #[test]
    fn tenancy_keys() {
        for k in ["org_id", "OrgID", "X-Scope-OrgID", "workspace", "workspace.id", "Project", "application", "tenant_id", "organization"] {
            assert!(is_tenancy_key(k), "{k}");
        }
        for k in ["http.org_id", "app", "namespace", "projection", "user", "", "orgs"] {
            assert!(!is_tenancy_key(k), "{k}");
        }
    }

    #[test]
    fn nul_is_replaced() {
        assert_eq!(text("a\0b"), "a\u{fffd}b");
        assert_eq!(scrub("plain".into()), "plain");
    }

    #[test]
    fn limits() {
        let limits = DecodeLimits { max_line_bytes: 10, max_labels: 2, max_label_bytes: 4, ..DecodeLimits::default() };
        let ok = RawLog { message: "0123456789".into(), labels: pairs(&[("a", "b")]), ..RawLog::default() };
        assert_eq!(check(&ok, &limits), Ok(()));
        let long = RawLog { message: "01234567890".into(), ..RawLog::default() };
        assert_eq!(check(&long, &limits), Err(RejectReason::LineTooLong));
        let many = RawLog { attributes: pairs(&[("a", ""), ("b", ""), ("c", "")]), ..RawLog::default() };
        assert_eq!(check(&many, &limits), Err(RejectReason::TooManyLabels));
        let pod = RawLog { pod: Some("abcde".into()), ..RawLog::default() };
        assert_eq!(check(&pod, &limits), Err(RejectReason::LabelTooLong));
        let attr = RawLog { attributes: pairs(&[("k", "01234567890")]), ..RawLog::default() };
        assert_eq!(check(&attr, &limits), Err(RejectReason::LineTooLong));
    }
}
