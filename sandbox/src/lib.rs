//! The sandbox: the one path every assistant tool call takes.
//!
//! - [`gate::ToolGate`] binds the call to the turn's user (the model never chooses identity),
//!   refuses write tools without approval, counts budgets ([`gate::Budgets`]: steps, calls,
//!   calls per tool, repeated identical calls, time, output bytes), runs the call under a
//!   timeout, and writes an audit record with `initiated_by = agent`;
//! - [`redact::Redactor`] masks secrets (JWTs, cloud keys, passwords in URLs, bearer tokens,
//!   private keys, `password=` and friends) and, by configuration, e-mails and IP addresses, in
//!   what the model reads and in what is audited;
//! - [`channel`] frames tool output as untrusted data the data cannot break out of, with
//!   invisible Unicode removed;
//! - [`jail::Jail`] runs anything a tool executes in a separate process with no network, a
//!   read-only view of the system, a scratch directory, no capabilities and resource limits.
//!
//! Authorisation itself happens where the data is: each tool reads through the query service
//! with the turn's identity, so the same `Gate` rules and tenant walls apply.

pub mod channel;
pub mod gate;
pub mod jail;
pub mod redact;

pub use gate::{Admission, Budgets, CallOutcome, Ran, ToolClass, ToolError, ToolGate, Turn};
pub use redact::{RedactionConfig, Redactor};
