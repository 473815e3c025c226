//! The Vexa operator: one controller per kind, all of the same shape.
//!
//! Layout: `controllers/<kind>/` holds one controller each (observe → decide → apply, with
//! typed errors); `runtime/` is the machinery they share: watches and caches, conditions,
//! events, backoff, leader election, health and metrics. `model_gateway` adds the brokered
//! model credential to dispatches' model requests (every replica serves it); `redis_users` makes each dispatch's own Redis user; `streams` is the API people read streams and send
//! turns through, behind the API server (every replica serves it). `config` is what
//! `main` parses.

pub mod config;
pub mod controllers;
pub mod mail;
pub mod model_gateway;
pub mod redis_users;
pub mod runtime;
pub mod streams;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "vexa-operator";
