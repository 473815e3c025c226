//! What every controller shares: the operator context, watch caches, leader election, the
//! health and metrics server.

pub mod cache;
pub mod context;
pub mod http;
pub mod leader;
pub mod metrics;
