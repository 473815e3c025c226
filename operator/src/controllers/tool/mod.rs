//! The Tool controller: each Tool's status says whether a tool call through the gateway could
//! work, before a run needs it. `Reachable`: its MCP server answers an `initialize` POST (any
//! HTTP answer, a 401 too; see `probe` for how the probe is bounded against request forgery).
//! `AudienceKnown`: its `audience` is a client of the Keycloak realm the gateway exchanges
//! tokens in (`Unknown`, reason `KeycloakNotConfigured`, without `--keycloak-url`). `Ready`
//! from both (reasons `ServerUnreachable`, `AudienceUnknown`, `KeycloakUnavailable`). Every
//! Tool is probed again every `--tool-probe-interval-seconds`, so one that breaks shows;
//! a change of `Ready` is an event; `vexa_tools{ready}` counts them.
//!
//! Shape: `observe` (I/O: probe, look up) → `decide` (pure) → `apply` (I/O: status, events).

pub mod apply;
pub mod audiences;
pub mod decide;
pub mod error;
pub mod observe;
pub mod probe;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};
use vexa_crds::Tool;

pub use audiences::Audiences;
pub use error::Error;

use crate::runtime::backoff::Backoff;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::watch::{by_generation, drive};
use decide::Readiness;
use probe::Prober;

/// What the Tool reconciler shares across reconciles.
pub struct Reconciler {
    /// The operator-wide context.
    pub base: Context,
    /// Every Tool (to forget the readiness of deleted ones).
    pub store: Store<Tool>,
    prober: Prober,
    audiences: Option<Arc<dyn Audiences>>,
    probe_timeout: Duration,
    interval: Duration,
    readiness: Mutex<HashMap<ObjectRef<Tool>, Readiness>>,
    recorder: Recorder,
    backoff: Backoff<Tool>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tool::Reconciler")
            .field("base", &self.base)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler over the Tool `store`, asking `audiences` (if any) about audiences.
    pub fn new(
        base: Context,
        store: Store<Tool>,
        audiences: Option<Arc<dyn Audiences>>,
    ) -> std::io::Result<Self> {
        let probe_timeout = Duration::from_secs(base.config.tool_probe_timeout_seconds);
        let interval = Duration::from_secs(base.config.tool_probe_interval_seconds);
        Ok(Self {
            recorder: Recorder::new(base.client.clone(), base.reporter.clone()),
            prober: Prober::new(probe_timeout)?,
            base,
            store,
            audiences,
            probe_timeout,
            interval,
            readiness: Mutex::new(HashMap::new()),
            backoff: Backoff::default(),
        })
    }

    /// Records `tool`'s readiness and sets the gauge (Tools no longer in the store drop out).
    fn count(&self, tool: &Tool, readiness: Readiness) {
        let mut known = self
            .readiness
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known.insert(ObjectRef::from_obj(tool), readiness);
        let present: std::collections::HashSet<_> = self
            .store
            .state()
            .iter()
            .map(|t| ObjectRef::from_obj(t.as_ref()))
            .collect();
        known.retain(|r, _| present.contains(r) || *r == ObjectRef::from_obj(tool));
        let mut counts = BTreeMap::from([(Readiness::Ready, 0), (Readiness::NotReady, 0)]);
        for r in known.values() {
            *counts.entry(*r).or_default() += 1;
        }
        self.base.metrics.set_tool_readiness(
            &counts
                .into_iter()
                .map(|(r, n)| (r.as_str(), n))
                .collect::<Vec<_>>(),
        );
    }
}

/// Reconciles one Tool: observe → decide → apply, then again after the probe interval.
pub async fn reconcile(tool: Arc<Tool>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.tool.reconcile_started();
    let seen = observe::observe(&ctx, &tool).await;
    let decision = decide::decide(&tool, &seen, &now());
    let readiness = decision.readiness;
    apply::apply(&ctx, &tool, decision).await?;
    ctx.count(&tool, readiness);
    ctx.backoff.reset(&tool);
    Ok(Action::requeue(ctx.interval))
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(tool: Arc<Tool>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.tool.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&tool);
    warn!(tool = %tool.name_any(), namespace = ?tool.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "tool reconcile failed");
    Action::requeue(delay)
}

/// Runs the Tool controller until `shutdown` resolves.
pub async fn run(
    ctx: Context,
    audiences: Option<Arc<dyn Audiences>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let watch = by_generation::<Tool>(ctx.client.clone());
    let concurrency = ctx.config.concurrency;
    let rctx = match Reconciler::new(ctx, watch.0.clone(), audiences) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "the Tool controller cannot load the system's CA certificates; Tools get no status");
            return;
        }
    };
    drive(watch, concurrency, shutdown, reconcile, error_policy, rctx).await;
    info!("Tool controller stopped");
}
