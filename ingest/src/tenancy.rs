//! Attaching tenancy: the only place a stored row gets its organisation, workspace and project.
//!
//! The rule, from strongest to weakest source:
//! 1. The credential. A credential bound to an organisation sets `org_id`, whatever the payload
//!    says. A credential allowed one workspace sets that workspace for events that name none.
//! 2. Configured labels on the event (pod labels for Vector, stream labels for Loki, series
//!    labels for Prometheus), looked up in the order configured. A workspace named there must be
//!    one the credential may write, or the event is rejected (`workspace_not_allowed`).
//! 3. Nothing: the event goes to the quarantine workspace (`_quarantine`), never dropped.
//!
//! Payload fields that look like tenancy (`org_id`, `workspace`, …) were already dropped by the
//! decoders; tenancy label keys are removed from stored attributes so a label can never be
//! mistaken for the tenant downstream.

use std::collections::HashSet;
use std::sync::Arc;

use schemas::{LogRecord, MetricSample, Severity};
use serde::{Deserialize, Serialize};

use crate::event::{DecodeLimits, RawLog, RawSeries, RejectReason};

/// Where events with no tenant go.
pub const QUARANTINE: &str = "_quarantine";

/// Which labels name the tenant, tried in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyLabels {
    pub organization: Vec<String>,
    pub workspace: Vec<String>,
    pub project: Vec<String>,
    pub application: Vec<String>,
}

impl Default for TenancyLabels {
    fn default() -> Self {
        TenancyLabels {
            organization: vec!["hexabase.ai/organization".into(), "hexabase_organization".into()],
            workspace: vec!["hexabase.ai/workspace".into(), "hexabase_workspace".into(), "workspace".into()],
            project: vec!["hexabase.ai/project".into(), "hexabase_project".into(), "namespace".into()],
            application: vec!["hexabase.ai/application".into(), "hexabase_application".into(), "app.kubernetes.io/name".into(), "app".into()],
        }
    }
}

impl TenancyLabels {
    fn is_tenancy_key(&self, key: &str) -> bool {
        [&self.organization, &self.workspace].iter().any(|keys| keys.iter().any(|k| k == key))
    }
}

/// The workspaces a credential may write.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkspaceSet {
    /// A host-cluster shipper: any workspace.
    All,
    Only(HashSet<String>),
}

/// A validated ingest credential. Its `Debug` output leaves the token out.
pub struct Credential {
    pub name: String,
    pub token: String,
    pub org: Option<String>,
    pub workspaces: WorkspaceSet,
    pub limits: DecodeLimits,
    /// Oldest and newest event timestamps accepted, relative to now.
    pub max_age_ns: i64,
    pub max_future_ns: i64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("name", &self.name).field("org", &self.org).field("workspaces", &self.workspaces).finish_non_exhaustive()
    }
}

/// Resolves tenancy for one request's events: one credential, one clock reading.
pub struct Resolver<'a> {
    pub credential: &'a Arc<Credential>,
    pub labels: &'a TenancyLabels,
    pub now_ns: i64,
}

fn lookup<'l>(labels: &'l [(String, String)], keys: &[String]) -> Option<&'l str> {
    keys.iter().find_map(|k| labels.iter().find(|(lk, v)| lk == k && !v.is_empty()).map(|(_, v)| v.as_str()))
}

impl Resolver<'_> {
    /// The (org, workspace) for an event whose labels are `labels`.
    fn tenant(&self, labels: &[(String, String)]) -> Result<(String, String), RejectReason> {
        let cred = self.credential;
        let org = cred.org.clone().or_else(|| lookup(labels, &self.labels.organization).map(str::to_owned));
        let named = lookup(labels, &self.labels.workspace);
        let workspace = match (&cred.workspaces, named) {
            (WorkspaceSet::All, Some(ws)) => ws.to_owned(),
            (WorkspaceSet::Only(set), Some(ws)) if set.contains(ws) => ws.to_owned(),
            (WorkspaceSet::Only(_), Some(_)) => return Err(RejectReason::WorkspaceNotAllowed),
            (WorkspaceSet::Only(set), None) if set.len() == 1 => set.iter().next().cloned().unwrap_or_default(),
            (_, None) => QUARANTINE.to_owned(),
        };
        match org {
            Some(org) => Ok((org, workspace)),
            None => Ok((QUARANTINE.to_owned(), workspace)),
        }
    }

    fn check_time(&self, ts: i64) -> Result<i64, RejectReason> {
        if ts < self.now_ns.saturating_sub(self.credential.max_age_ns) {
            Err(RejectReason::TimestampTooOld)
        } else if ts > self.now_ns.saturating_add(self.credential.max_future_ns) {
            Err(RejectReason::TimestampInFuture)
        } else {
            Ok(ts)
        }
    }

    pub fn log(&self, raw: RawLog) -> Result<LogRecord, RejectReason> {
        let timestamp_ns = self.check_time(raw.timestamp_ns.unwrap_or(self.now_ns))?;
        let (org_id, workspace) = self.tenant(&raw.labels)?;
        let project = lookup(&raw.labels, &self.labels.project).map(str::to_owned).or(raw.namespace).unwrap_or_default();
        let application = lookup(&raw.labels, &self.labels.application).unwrap_or_default().to_owned();
        let severity = raw.severity.unwrap_or_else(|| Severity::detect(&raw.message));
        let mut attributes: Vec<(String, String)> = raw.labels.into_iter().filter(|(k, _)| !self.labels.is_tenancy_key(k)).collect();
        attributes.extend(raw.attributes.into_iter().filter(|(k, _)| !self.labels.is_tenancy_key(k)));
        // Sorted, keys unique, the event's own attributes winning over labels of the same name.
        attributes.reverse();
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
        attributes.dedup_by(|a, b| a.0 == b.0);
        Ok(LogRecord {
            timestamp_ns,
            observed_ns: self.now_ns,
            org_id,
            workspace,
            project,
            application,
            pod: raw.pod.unwrap_or_default(),
            container: raw.container.unwrap_or_default(),
            node: raw.node.unwrap_or_default(),
            stream: raw.stream.unwrap_or_default(),
            severity,
            message: raw.message,
            attributes,
            trace_id: raw.trace_id.unwrap_or_default(),
            span_id: raw.span_id.unwrap_or_default(),
        })
    }

    /// One sample per accepted point; one reject per point of a series that cannot be stored.
    pub fn series(&self, raw: RawSeries, out: &mut Vec<MetricSample>, rejected: &mut Vec<RejectReason>) {
        let metric = raw.labels.iter().find(|(k, _)| k == "__name__").map(|(_, v)| v.clone());
        let tenant = self.tenant(&raw.labels);
        let (metric, (org_id, workspace)) = match (metric, tenant) {
            (Some(m), Ok(t)) if !m.is_empty() => (m, t),
            (_, Err(reason)) => return rejected.extend(std::iter::repeat_n(reason, raw.samples.len())),
            (_, Ok(_)) => return rejected.extend(std::iter::repeat_n(RejectReason::InvalidSample, raw.samples.len())),
        };
        let project = lookup(&raw.labels, &self.labels.project).unwrap_or_default().to_owned();
        let mut labels: Vec<(String, String)> = raw.labels.into_iter().filter(|(k, _)| k != "__name__" && !self.labels.is_tenancy_key(k)).collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        for (ts_ms, value) in raw.samples {
            match self.check_time(ts_ms.saturating_mul(1_000_000)) {
                Ok(_) => out.push(MetricSample {
                    timestamp_ms: ts_ms,
                    org_id: org_id.clone(),
                    workspace: workspace.clone(),
                    project: project.clone(),
                    metric: metric.clone(),
                    labels: labels.clone(),
                    value,
                }),
                Err(reason) => rejected.push(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(org: Option<&str>, ws: WorkspaceSet) -> Arc<Credential> {
        Arc::new(Credential {
            name: "t".into(),
            token: "x".into(),
            org: org.map(str::to_owned),
            workspaces: ws,
            limits: DecodeLimits::default(),
            max_age_ns: 1_000,
            max_future_ns: 100,
        })
    }

    fn raw(labels: &[(&str, &str)]) -> RawLog {
        RawLog {
            timestamp_ns: Some(10_000),
            message: "ERROR boom".into(),
            namespace: Some("ns".into()),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn only(ws: &[&str]) -> WorkspaceSet {
        WorkspaceSet::Only(ws.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn credential_binds_org_and_single_workspace() {
        let labels = TenancyLabels::default();
        let c = cred(Some("acme"), only(&["ws-a"]));
        let r = Resolver { credential: &c, labels: &labels, now_ns: 10_000 };
        let rec = r.log(raw(&[("hexabase.ai/organization", "evil"), ("app", "cart")])).unwrap();
        assert_eq!((rec.org_id.as_str(), rec.workspace.as_str(), rec.project.as_str()), ("acme", "ws-a", "ns"));
        assert_eq!(rec.application, "cart");
        assert_eq!(rec.severity, Severity::Error);
        assert!(!rec.attributes.iter().any(|(k, _)| k == "hexabase.ai/organization"), "tenancy labels are not stored as attributes");
        assert_eq!(r.log(raw(&[("hexabase.ai/workspace", "ws-b")])), Err(RejectReason::WorkspaceNotAllowed));
    }

    #[test]
    fn host_shipper_takes_labels_and_quarantines_the_rest() {
        let labels = TenancyLabels::default();
        let c = cred(None, WorkspaceSet::All);
        let r = Resolver { credential: &c, labels: &labels, now_ns: 10_000 };
        let rec = r.log(raw(&[("hexabase.ai/organization", "acme"), ("hexabase.ai/workspace", "ws-z"), ("hexabase.ai/project", "shop")])).unwrap();
        assert_eq!((rec.org_id.as_str(), rec.workspace.as_str(), rec.project.as_str()), ("acme", "ws-z", "shop"));
        let q = r.log(raw(&[])).unwrap();
        assert_eq!((q.org_id.as_str(), q.workspace.as_str()), (QUARANTINE, QUARANTINE));
    }

    #[test]
    fn time_window_is_enforced() {
        let labels = TenancyLabels::default();
        let c = cred(Some("acme"), WorkspaceSet::All);
        let r = Resolver { credential: &c, labels: &labels, now_ns: 10_000 };
        let mut old = raw(&[]);
        old.timestamp_ns = Some(1);
        assert_eq!(r.log(old), Err(RejectReason::TimestampTooOld));
        let mut future = raw(&[]);
        future.timestamp_ns = Some(i64::MAX);
        assert_eq!(r.log(future), Err(RejectReason::TimestampInFuture));
    }

    #[test]
    fn series_need_a_name_and_an_allowed_workspace() {
        let labels = TenancyLabels::default();
        let c = cred(Some("acme"), only(&["ws-a", "ws-b"]));
        let r = Resolver { credential: &c, labels: &labels, now_ns: 10_000_000 };
        let (mut out, mut rej) = (Vec::new(), Vec::new());
        let s = |l: &[(&str, &str)]| RawSeries { labels: l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), samples: vec![(10, 1.0), (10, 2.0)] };
        r.series(s(&[("__name__", "up"), ("workspace", "ws-b"), ("job", "x")]), &mut out, &mut rej);
        r.series(s(&[("__name__", "up"), ("workspace", "ws-c")]), &mut out, &mut rej);
        r.series(s(&[("workspace", "ws-a")]), &mut out, &mut rej);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels, vec![("job".to_string(), "x".to_string())]);
        assert_eq!(rej, vec![RejectReason::WorkspaceNotAllowed, RejectReason::WorkspaceNotAllowed, RejectReason::InvalidSample, RejectReason::InvalidSample]);
    }
}
