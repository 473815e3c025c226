//! The subjects controller: each Identity's subject becomes a user of the Keycloak realm the
//! MCP gateway trades dispatch tokens at, linked to the dispatch-token issuer (SPEC §5.5: the
//! gateway's JWT grant maps a token's `sub` to that user). Not to be confused with `identity/`,
//! the SPIRE registration of dispatch pods.
//!
//! The result is the Identity's `Linked` condition (reason `Linked`, or `DirectoryUnavailable`
//! with Keycloak's answer) mirrored in `Ready`, an event when it changes, and
//! `vexa_subject_reconcile_*`. Without `--keycloak-url` there is nothing to link: every
//! Identity is `Ready` (reason `NoDirectory`) for the current generation, and that is all. A failure
//! is retried with per-Identity backoff; a linked subject is checked again every 10 minutes (a
//! user deleted in Keycloak comes back). Deleting an Identity leaves its user: its past tool
//! calls stay attributable, and without an Identity no dispatch runs for it.
//!
//! Shape: link (I/O) → `decide` (pure) → apply (status, events).

pub mod decide;
pub mod directory;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use vexa_crds::Identity;

pub use directory::Directory;

use crate::FIELD_MANAGER;
use crate::runtime::backoff::Backoff;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::events;
use crate::runtime::watch::{by_generation, drive};

/// How often a linked subject is checked again.
const RECHECK: Duration = Duration::from_secs(600);

/// Why a reconcile did not finish (Keycloak's answers are conditions, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a namespace.
    #[error("object without namespace")]
    Malformed,
}

impl Error {
    /// A short, bounded reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::runtime::errors::kube_reason(e),
            Error::Malformed => "Malformed",
        }
    }
}

/// What the reconciler shares across reconciles.
pub struct Reconciler {
    /// The operator-wide context.
    pub base: Context,
    directory: Option<Arc<dyn Directory>>,
    recorder: Recorder,
    backoff: Backoff<Identity>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("subjects::Reconciler")
            .field("directory", &self.directory.as_ref().map(|d| d.describe()))
            .finish_non_exhaustive()
    }
}

/// Links one Identity's subject and writes what happened.
pub async fn reconcile(identity: Arc<Identity>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.subject.reconcile_started();
    let ns = identity.namespace().ok_or(Error::Malformed)?;
    let (outcome, where_) = match &ctx.directory {
        Some(directory) => (
            Some(directory.link(&identity.spec.subject).await),
            directory.describe(),
        ),
        None => (None, String::new()),
    };
    let link = outcome.as_ref().map(|o| (o, where_.as_str()));
    let decision = decide::decide(&identity, link, &now());
    if let Some(status) = &decision.status {
        let body = json!({
            "apiVersion": Identity::api_version(&()),
            "kind": Identity::kind(&()),
            "status": status,
        });
        Api::<Identity>::namespaced(ctx.base.client.clone(), &ns)
            .patch_status(
                &identity.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    events::publish(&ctx.recorder, identity.as_ref(), decision.notes).await;
    match outcome {
        None => Ok(Action::await_change()),
        Some(Ok(())) => {
            ctx.backoff.reset(&identity);
            Ok(Action::requeue(RECHECK))
        }
        Some(Err(why)) => {
            ctx.base
                .metrics
                .subject
                .reconcile_failed(decide::UNAVAILABLE);
            let delay = ctx.backoff.next(&identity);
            warn!(identity = %identity.name_any(), namespace = %ns, subject = %identity.spec.subject, error = %why, retry_in = ?delay, "linking the subject failed");
            Ok(Action::requeue(delay))
        }
    }
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(identity: Arc<Identity>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.subject.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&identity);
    warn!(identity = %identity.name_any(), namespace = ?identity.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "subject reconcile failed");
    Action::requeue(delay)
}

/// Runs the subjects controller against `directory` (none: nothing to link) until `shutdown`
/// resolves.
pub async fn run(
    ctx: Context,
    directory: Option<Arc<dyn Directory>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let watch = by_generation::<Identity>(ctx.client.clone());
    let concurrency = ctx.config.concurrency;
    let describe = directory.as_ref().map(|d| d.describe());
    info!(directory = ?describe, "subjects controller started");
    let rctx = Arc::new(Reconciler {
        recorder: Recorder::new(ctx.client.clone(), ctx.reporter.clone()),
        base: ctx,
        directory,
        backoff: Backoff::default(),
    });
    drive(watch, concurrency, shutdown, reconcile, error_policy, rctx).await;
    info!("subjects controller stopped");
}
