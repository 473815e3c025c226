//! The Dispatch controller: one Dispatch becomes one isolated, short-lived Job.
//!
//! Shape (as every controller): `observe` (I/O: read what the decisions depend on) → `decide`
//! and `run_state` (pure: admission in the policy's terms, the run's description and ending,
//! the events) with `children` (pure: the Secret and the Job) → `apply` (I/O: write) → `error`.
//! `reconcile` drives them by phase; `claim` is the rw lock of a workspace's folder.

pub mod apply;
pub mod ceilings;
pub mod children;
pub mod claim;
pub mod decide;
pub mod error;
pub mod observe;
pub mod reconcile;
pub mod run_state;
pub mod token;
pub mod trace;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};
use vexa_crds::{AgentRunner, Dispatch, DispatchPhase, Identity, Tool, Workspace};

pub use crate::runtime::cache::Cache;
pub use error::Error;
pub use observe::References;

use crate::redis_users::{DispatchKey, RedisUsers};
use crate::runtime::backoff::Backoff;
use crate::runtime::context::Context;
use crate::runtime::watch::{cached, lenient};

/// Label selector of every object the operator creates.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=vexa-operator";

/// What the Dispatch reconciler shares: the operator context, the caches the controller's
/// watches fill (Dispatches for the first-come-first-served queue, Jobs and pods to track a
/// run), one event recorder and per-object backoff.
pub struct Reconciler {
    /// The operator-wide context.
    pub base: Context,
    /// Every Dispatch the controller sees.
    pub store: Store<Dispatch>,
    /// The operator's Jobs.
    pub jobs: Cache<Job>,
    /// The pods of the operator's Jobs.
    pub pods: Cache<Pod>,
    /// What Dispatches refer to.
    pub references: References,
    /// When each live run's next dispatch token is due.
    pub renewals: token::Renewals,
    recorder: Recorder,
    backoff: Backoff<Dispatch>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("dispatch::Reconciler")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler over the Dispatch `store` and the other caches.
    pub fn new(
        base: Context,
        store: Store<Dispatch>,
        jobs: Cache<Job>,
        pods: Cache<Pod>,
        references: References,
    ) -> Self {
        let recorder = Recorder::new(base.client.clone(), base.reporter.clone());
        Self {
            base,
            store,
            jobs,
            pods,
            references,
            renewals: token::Renewals::default(),
            recorder,
            backoff: Backoff::default(),
        }
    }
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(d: Arc<Dispatch>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.dispatch.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&d);
    warn!(dispatch = %d.name_any(), namespace = ?d.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The Dispatch an operator-created pod belongs to.
fn pod_owner(pod: Pod) -> Option<ObjectRef<Dispatch>> {
    let ns = pod.namespace()?;
    let name = pod
        .annotations()
        .get(children::DISPATCH_ANNOTATION)?
        .clone();
    Some(ObjectRef::new(&name).within(&ns))
}

/// Counts dispatches by phase for the `vexa_dispatches` gauge.
fn phase_counts(dispatches: &[Arc<Dispatch>]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for d in dispatches {
        let phase = d
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "pending".into());
        *counts.entry(phase).or_insert(0) += 1;
    }
    counts
}

/// How long the Dispatch longest in phase `starting` has been there, in seconds (0: none is):
/// since it claimed its workspaces (the `Queued` condition turning false), or else since its
/// creation. What `VexaDispatchesStuckStarting` alerts on, exactly: one run stuck, not a
/// different one starting at every sample.
fn oldest_starting(dispatches: &[Arc<Dispatch>], now: std::time::SystemTime) -> f64 {
    dispatches
        .iter()
        .filter_map(|d| {
            let status = d.status.as_ref()?;
            if status.phase != Some(DispatchPhase::Starting) {
                return None;
            }
            let created = d.metadata.creation_timestamp.as_ref()?.0;
            let claimed = crate::runtime::conditions::find(
                &status.conditions,
                crate::runtime::conditions::ConditionType::Queued,
            )
            .filter(|c| c.status == "False")
            .map(|c| c.last_transition_time.0);
            let since: std::time::SystemTime = claimed.map_or(created, |c| c.max(created)).into();
            now.duration_since(since).ok().map(|d| d.as_secs_f64())
        })
        .fold(0.0, f64::max)
}

/// What the cache keeps of a run's Job: the reconcile reads its metadata, `spec.suspend` and
/// its status, never the pod template (the bulk of it) or the managed fields.
fn slim_job(job: &mut Job) {
    job.managed_fields_mut().clear();
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// What the cache keeps of a run's pod: metadata and status (how it started and ended).
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.spec = None;
}

/// The Dispatches that wait for a Workspace (to be ready, or to be free): a change of the
/// Workspace wakes them, instead of a poll.
fn waiting_for(store: &Store<Dispatch>, ws: &Workspace) -> Vec<ObjectRef<Dispatch>> {
    let name = ws.name_any();
    store
        .state()
        .iter()
        .filter(|d| d.metadata.namespace == ws.metadata.namespace)
        .filter(|d| {
            matches!(
                d.status.as_ref().and_then(|s| s.phase),
                None | Some(DispatchPhase::Pending | DispatchPhase::Queued)
            )
        })
        .filter(|d| d.spec.workspaces.iter().any(|w| w.name == name))
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// How often the Redis users of dispatches that are gone or over are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The dispatches whose run may still use its Redis user: those in the cache whose run is not
/// over.
fn live_dispatches(store: &Store<Dispatch>) -> HashSet<DispatchKey> {
    store
        .state()
        .iter()
        .filter(|d| {
            !matches!(
                d.status.as_ref().and_then(|s| s.phase),
                Some(DispatchPhase::Stopped | DispatchPhase::Destroyed | DispatchPhase::Refused)
            )
        })
        .filter_map(|d| apply::redis_key(d).ok())
        .collect()
}

/// Once the Dispatch cache has synced and then every [`SWEEP_EVERY`]: removes the Redis users
/// whose dispatch is gone or over (an operator that stopped before it removed them), and makes
/// again those of live dispatches that Redis lost in a restart.
async fn sweep_redis_users(
    users: Arc<RedisUsers>,
    store: Store<Dispatch>,
    mut ready: tokio::sync::watch::Receiver<bool>,
) {
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        match users.sweep(|| live_dispatches(&store)).await {
            Ok((0, 0)) => {}
            Ok((removed, restored)) => info!(
                removed,
                restored,
                "Redis users: removed those of dispatches gone or over, made again those Redis lost"
            ),
            Err(e) => {
                warn!(error = %e, "sweeping the dispatches' Redis users failed; trying again later")
            }
        }
    }
}

/// Runs the Dispatch controller until `shutdown` resolves. `ready` turns true once the
/// Dispatch cache has synced.
pub async fn run(
    ctx: Context,
    ready: tokio::sync::watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let dispatches = Api::<Dispatch>::all(client.clone());
    if let Err(e) = dispatches
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        warn!(error = %e, "cannot list Dispatches: are the CRDs installed (kubectl apply -f charts/vexa/crds) and is RBAC granted?");
    }
    // Readiness is read off the Dispatch watch itself, when its initial list has reached the
    // cache. It cannot come from `Store::wait_until_ready`: kube-runtime wakes only the last of
    // several concurrent waiters, the controller is always one of them, so a second waiter
    // here never woke and the operator never reported ready.
    let ready_rx = ready.subscribe();
    let (store, writer) = reflector::store();
    let dispatch_events =
        lenient::<Dispatch>(client.clone(), watcher::Config::default().any_semantic())
            .modify(|d| d.managed_fields_mut().clear())
            .reflect(writer)
            .inspect(move |event| {
                if matches!(event, Ok(watcher::Event::InitDone)) && !*ready.borrow() {
                    ready.send_replace(true);
                    info!("Dispatch cache synced; reconciling");
                }
            })
            .applied_objects();
    // The Job and pod watches the controller needs for its triggers also fill the caches the
    // reconcile reads. Each store is updated before its event triggers a reconcile. The
    // managed fields are dropped: nothing reads them, and they are a large part of an object.
    let managed = watcher::Config::default().labels(MANAGED_SELECTOR);
    let (job_store, job_writer) = reflector::store();
    let jobs = Cache::new(job_store);
    let job_events = {
        let jobs = jobs.clone();
        watcher(Api::<Job>::all(client.clone()), managed.clone())
            .default_backoff()
            .modify(slim_job)
            .reflect(job_writer)
            .inspect(move |e| jobs.observe(e))
            .touched_objects()
    };
    let (pod_store, pod_writer) = reflector::store();
    let pods = Cache::new(pod_store);
    let pod_events = {
        let pods = pods.clone();
        watcher(Api::<Pod>::all(client.clone()), managed)
            .default_backoff()
            .modify(slim_pod)
            .reflect(pod_writer)
            .inspect(move |e| pods.observe(e))
            .touched_objects()
    };
    // Workspaces fill the cache the reconcile reads, and wake the Dispatches waiting for one.
    let (ws_store, ws_writer) = reflector::store();
    let workspaces = Cache::new(ws_store);
    let workspace_events = {
        let workspaces = workspaces.clone();
        lenient::<Workspace>(client.clone(), watcher::Config::default())
            .modify(|w| w.managed_fields_mut().clear())
            .reflect(ws_writer)
            .inspect(move |e| workspaces.observe(e))
            .touched_objects()
    };
    let waiting = store.clone();
    let controller = Controller::for_stream(dispatch_events, store.clone())
        .owns_stream(job_events)
        .watches_stream(pod_events, pod_owner)
        .watches_stream(workspace_events, move |ws| waiting_for(&waiting, &ws))
        .with_config(ControllerConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(shutdown);
    let metrics = ctx.metrics.clone();
    // What Dispatches refer to is only read: these watches trigger nothing (a dispatch
    // waiting for a missing reference polls), they keep the caches filled.
    // Runners and tools are only read: these watches trigger nothing (a dispatch waiting for a
    // missing reference polls), they keep the caches filled.
    let (runners, runner_watch) = cached::<AgentRunner>(client.clone());
    let (tools, tool_watch) = cached::<Tool>(client.clone());
    let (identities, identity_watch) = cached::<Identity>(client.clone());
    // Namespaces are read (and may be listed) only when a label makes them tenants.
    let (namespaces, namespace_watch) = if ctx.config.tenant_label.is_empty() {
        (Cache::new(reflector::store().0), tokio::spawn(async {}))
    } else {
        cached::<Namespace>(client.clone())
    };
    let references = References {
        runners,
        workspaces,
        tools,
        identities,
        namespaces,
    };
    let dctx = Arc::new(Reconciler::new(ctx, store.clone(), jobs, pods, references));

    // The phase gauge follows the cache, for as long as this controller runs.
    let gauge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let dispatches = store.state();
            metrics.set_phase_counts(&phase_counts(&dispatches));
            metrics.set_oldest_starting(oldest_starting(&dispatches, std::time::SystemTime::now()));
        }
    });

    // Pod identity: its own controller over the dispatch pods, for as long as this one runs.
    let identity = dctx
        .base
        .config
        .spire()
        .map(|spire| tokio::spawn(super::identity::run(dctx.base.clone(), spire)));

    let sweeper = dctx.base.redis_users.clone().map(|users| {
        let store = dctx.store.clone();
        tokio::spawn(sweep_redis_users(users, store, ready_rx))
    });

    controller
        .run(reconcile::reconcile, error_policy, dctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    gauge.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(identity) = identity {
        identity.abort();
    }
    for watch in [runner_watch, tool_watch, identity_watch, namespace_watch] {
        watch.abort();
    }
    info!("Dispatch controller stopped");
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use vexa_crds::DispatchStatus;

    use super::*;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(T0 + s).unwrap())
    }

    fn dispatch(phase: DispatchPhase, created: i64, claimed: Option<i64>) -> Arc<Dispatch> {
        let mut d = Dispatch::new(
            "d",
            serde_json::from_value(serde_json::json!({
                "identity": {"subject": "alice", "launcher": "alice"}, "runner": "r",
                "workspaces": [], "trigger": "message", "start": {"entrypoint": {"inline": "hi"}}
            }))
            .unwrap(),
        );
        d.metadata.creation_timestamp = Some(at(created));
        d.status = Some(DispatchStatus {
            phase: Some(phase),
            conditions: claimed
                .map(|c| Condition {
                    type_: "Queued".into(),
                    status: "False".into(),
                    reason: "WorkspaceClaimed".into(),
                    message: String::new(),
                    last_transition_time: at(c),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..DispatchStatus::default()
        });
        Arc::new(d)
    }

    #[test]
    fn the_oldest_starting_dispatch_counts_from_its_claim_not_its_queue_wait() {
        let now = SystemTime::from(at(1000).0);
        let all = [
            // Queued for 900 s, starting for 100.
            dispatch(DispatchPhase::Starting, 0, Some(900)),
            // Starting for 300 s, never queued.
            dispatch(DispatchPhase::Starting, 700, None),
            // Running for long: not starting.
            dispatch(DispatchPhase::Running, 0, Some(1)),
        ];
        assert_eq!(oldest_starting(&all, now), 300.0);
        assert_eq!(oldest_starting(&all[2..], now), 0.0);
        // A clock behind the API server's counts as just started.
        let behind = now - Duration::from_secs(2000);
        assert_eq!(oldest_starting(&all, behind), 0.0);
    }
}
