//! The Vexa operator: reconciles each Dispatch into an isolated, short-lived Job.
//!
//! Layout: `dispatch/` holds the Dispatch reconciler (pure steps in `build`, `status` and
//! `resolve`; Kubernetes I/O in `reconcile` and `claim`). `metrics`, `http` and `leader` are
//! the operational plumbing; `config` is what `main` parses.

pub mod config;
pub mod context;
pub mod dispatch;
pub mod http;
pub mod leader;
pub mod metrics;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "vexa-operator";
