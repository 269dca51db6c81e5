//! The query side: the only door to stored data.
//!
//! A request is answered in three steps, each in its own place:
//! 1. identity: [`auth::TokenVerifier`] turns the bearer token into an [`auth::Identity`];
//! 2. authorisation: [`auth::Gate`] turns the identity and the workspaces/projects the request
//!    names into an [`auth::TenantScope`] (nothing else can make one);
//! 3. the read: a [`storage::LogSearch`] carrying that scope goes to [`storage::Store`], which
//!    applies it again itself (the second wall).
//!
//! [`state`] holds what every endpoint shares (limits, per-user slots, the audit sink);
//! [`api`] serves the dashboard's JSON API, with [`syntax`] for its search text and [`params`]
//! for times, durations, lists and cursors; [`loki`] serves Grafana's Loki datasource and Logs
//! Drilldown over [`logql`]; [`tail`] follows a search live for both; [`audit`] records every
//! query; [`patterns`] groups lines into templates; [`prom`] serves Grafana's Prometheus
//! datasource, each query scoped before it reaches the upstream server; [`vector_match`] is the
//! binary-operator matching (`on`, `group_left`, `and`/`or`/`unless`) PromQL and LogQL share.

pub mod agent;
pub mod api;
pub mod audit;
pub mod logql;
pub mod loki;
pub mod params;
pub mod patterns;
pub mod prom;
pub mod sql;
pub mod state;
pub mod syntax;
pub mod tail;
pub mod vector_match;

pub use state::{QueryLimits, QueryState};

/// Every query route, with its state.
pub fn router(state: QueryState) -> axum::Router {
    use axum::routing::get;
    api::routes()
        .merge(loki::routes())
        .merge(prom::routes())
        .merge(sql::routes())
        .route("/api/v1/logs/tail", get(tail::dashboard))
        .route("/loki/api/v1/tail", get(tail::loki))
        .with_state(state)
}
