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
//! reads times, durations, lists and cursors. Grafana's Loki API comes next.

pub mod api;
pub mod params;
pub mod syntax;

pub use api::{QueryLimits, QueryState, router};
