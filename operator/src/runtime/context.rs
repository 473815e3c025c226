//! What every reconcile shares.

use std::sync::Arc;

use kube::runtime::events::Reporter;

use super::metrics::Metrics;
use crate::config::Config;

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Settings.
    pub config: Arc<Config>,
    /// Metrics registry and handles.
    pub metrics: Arc<Metrics>,
    /// Who the operator's Events say they come from.
    pub reporter: Reporter,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
