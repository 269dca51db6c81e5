//! The query side: the only door to stored data.
//!
//! A request is answered in three steps, each in its own place:
//! 1. identity: [`auth::TokenVerifier`] turns the bearer token into an [`auth::Identity`];
//! 2. authorisation: [`auth::Gate`] turns the identity and the workspaces/projects the request
//!    names into an [`auth::TenantScope`] (nothing else can make one);
//! 3. the read: a [`storage::LogSearch`] carrying that scope goes to [`storage::Store`], which
//!    applies it again itself (the second wall).
//!
//! [`api`] serves the dashboard's JSON API; [`syntax`] parses its search text; [`params`]
//! reads times, durations, lists and cursors. [`loki`] serves Grafana's Loki datasource and
//! Logs Drilldown over [`logql`]; [`patterns`] groups lines into templates.

pub mod api;
pub mod audit;
pub mod logql;
pub mod loki;
pub mod params;
pub mod patterns;
pub mod syntax;
pub mod tail;

pub use api::{QueryLimits, QueryState, router};
