//! The AgentRunner controller: says, on each runner, whether dispatches can use it. Today that
//! is whether the model credential it names can be brokered: the model gateway reads it, on
//! each model request, from a Secret of the operator's namespace, so a missing Secret or key
//! would otherwise show only as failed model calls inside a run.
//!
//! The result is `Ready` (reason `Ready`, `CredentialNamespace`, `CredentialNotFound` or
//! `CredentialKeyMissing`) with `observedGeneration`, a Warning event when a runner breaks and
//! a Normal one when it is repaired, and `vexa_runner_reconcile_*`. The operator may not watch
//! Secrets (its RBAC is `get` in its own namespace), so a runner is looked at again every
//! minute while it is broken and every ten minutes while it is ready.
//!
//! Shape: observe (the Secret) → `decide` (pure) → apply (status, events).

pub mod decide;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use vexa_crds::AgentRunner;

use self::decide::Credential;
use crate::FIELD_MANAGER;
use crate::runtime::backoff::Backoff;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::events;
use crate::runtime::watch::{by_generation, drive};

/// How often a ready runner's credential is looked at again.
const RECHECK: Duration = Duration::from_secs(600);
/// How often a broken runner's credential is looked at again.
const RECHECK_BROKEN: Duration = Duration::from_secs(60);

/// Why a reconcile did not finish (a missing credential is a condition, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// A short, bounded reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::runtime::errors::kube_reason(e),
        }
    }
}

/// What the reconciler shares across reconciles.
pub struct Reconciler {
    /// The operator-wide context.
    pub base: Context,
    recorder: Recorder,
    backoff: Backoff<AgentRunner>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("runner::Reconciler").finish_non_exhaustive()
    }
}

/// What there is of `runner`'s model credential in the operator's namespace (the only one read).
async fn observe(runner: &AgentRunner, ctx: &Reconciler) -> Result<Credential, Error> {
    let operator_ns = &ctx.base.config.namespace;
    let (name, key) = match decide::secret_to_read(runner, operator_ns) {
        Ok(found) => found,
        Err(known) => return Ok(known),
    };
    let secret = Api::<Secret>::namespaced(ctx.base.client.clone(), operator_ns)
        .get_opt(name)
        .await?;
    Ok(match secret {
        None => Credential::SecretNotFound,
        Some(s) if s.data.as_ref().is_some_and(|d| d.contains_key(key)) => Credential::Found,
        Some(_) => Credential::KeyMissing,
    })
}

/// Checks one AgentRunner and writes what was found.
pub async fn reconcile(runner: Arc<AgentRunner>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.runner.reconcile_started();
    let credential = observe(&runner, &ctx).await?;
    let decision = decide::decide(&runner, &credential, &ctx.base.config.namespace, &now());
    if let Some(status) = &decision.status {
        let body = json!({
            "apiVersion": AgentRunner::api_version(&()),
            "kind": AgentRunner::kind(&()),
            "status": status,
        });
        Api::<AgentRunner>::all(ctx.base.client.clone())
            .patch_status(
                &runner.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    events::publish(&ctx.recorder, runner.as_ref(), decision.notes).await;
    ctx.backoff.reset(&runner);
    Ok(Action::requeue(
        if matches!(credential, Credential::None | Credential::Found) {
            RECHECK
        } else {
            RECHECK_BROKEN
        },
    ))
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(runner: Arc<AgentRunner>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.runner.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&runner);
    warn!(runner = %runner.name_any(), reason = error.reason(), error = %error, retry_in = ?delay, "AgentRunner reconcile failed");
    Action::requeue(delay)
}

/// Runs the AgentRunner controller until `shutdown` resolves.
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let watch = by_generation::<AgentRunner>(ctx.client.clone());
    let concurrency = ctx.config.concurrency;
    info!("AgentRunner controller started");
    let rctx = Arc::new(Reconciler {
        recorder: Recorder::new(ctx.client.clone(), ctx.reporter.clone()),
        base: ctx,
        backoff: Backoff::default(),
    });
    drive(watch, concurrency, shutdown, reconcile, error_policy, rctx).await;
    info!("AgentRunner controller stopped");
}
