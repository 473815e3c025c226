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
    /// The key of the dispatches' model-gateway tokens (`None`: model access is not brokered,
    /// and a dispatch whose runner has a model credential gets no token).
    pub gateway_key: Option<Arc<[u8]>>,
    /// The keys dispatch tokens are signed with (`None`: no tokens are minted; only evals
    /// that run without the operator's namespace do this).
    pub signing_keys: Option<Arc<super::signing_keys::SigningKeys>>,
    /// The dispatches' own Redis users (`None`: turned off; workers connect as `REDIS_URL`
    /// says).
    pub redis_users: Option<Arc<crate::redis_users::RedisUsers>>,
    /// The audit log: every controller records a dispatch's effects here.
    pub audit: super::audit::Audit,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
