//! What every controller shares: the operator context, watches and caches, conditions,
//! events, backoff, leader election, and the health and metrics server.

pub mod audit;
pub mod backoff;
pub mod cache;
pub mod conditions;
pub mod context;
pub mod errors;
pub mod events;
pub mod gateway_key;
pub mod http;
pub mod keycloak;
pub mod leader;
pub mod metrics;
pub mod owned;
pub mod security;
pub mod signing_keys;
pub mod telemetry;
pub mod watch;
