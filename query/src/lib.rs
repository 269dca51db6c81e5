//! The query side: the only door to stored data.
//!
//! Not built yet. It will authenticate (JWT/OIDC), authorise (SubjectAccessReview, org and role
//! claims), scope every read to the caller's tenants and serve the dashboard's log search and
//! Grafana's Loki, Prometheus and SQL datasources, reading through `storage::Store::scan`.
