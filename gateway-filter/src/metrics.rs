//! What the filter counts: decisions by verdict and reason, token cache hits and misses, and how
//! long a check takes; served with /healthz on --metrics-addr.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allowed, refused, gated.
    pub verdict: String,
    /// The bounded CamelCase reason.
    pub reason: String,
}

/// Labels of a token cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// hit or miss.
    pub result: String,
}

/// The filter's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Decisions.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Token cache lookups of forwarded calls.
    pub cache: Family<CacheLabels, Counter>,
    /// Seconds per check, from Envoy's request to the filter's answer.
    pub check_seconds: Histogram,
}

impl Metrics {
    /// New metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            decisions: Family::default(),
            cache: Family::default(),
            check_seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ]),
        };
        registry.register(
            "vexa_gateway_decisions",
            "Tool requests decided, by verdict and reason",
            m.decisions.clone(),
        );
        registry.register(
            "vexa_gateway_token_cache",
            "Exchanged-token lookups of forwarded requests, by hit or miss",
            m.cache.clone(),
        );
        registry.register(
            "vexa_gateway_check_seconds",
            "Time to answer one authorization check",
            m.check_seconds.clone(),
        );
        m
    }
}
