//! The Workspace controller: a Workspace's claim, the preparation of its folder (seed, git,
//! first commit), its status (`Ready`, `initialized`, `headCommit`, `heldBy`), and a deletion
//! that never pulls storage from under a run.
//!
//! Shape: `observe` (I/O: read) → `decide` (pure) → `apply` (I/O: write); `children` builds
//! the claim and the prepare Job; `storage` is the folder and its write lock, shared with the
//! Dispatch controller, which takes and releases the lock.

pub mod apply;
pub mod children;
pub mod decide;
pub mod error;
pub mod observe;
pub mod storage;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};
use vexa_crds::Workspace;

pub use error::Error;

use crate::runtime::backoff::Backoff;
use crate::runtime::cache::Cache;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::watch::lenient;
use children::{PREPARE_COMPONENT, Settings, WORKSPACE_LABEL};
use storage::{CLAIM_ANNOTATION, LOCK_LABEL, PATH_ANNOTATION, Storage};

/// What the Workspace reconciler shares across reconciles.
pub struct Reconciler {
    /// The operator-wide context.
    pub base: Context,
    /// Every Workspace (for overlapping folders, and to map a lock to its Workspaces).
    pub store: Store<Workspace>,
    /// The prepare Jobs.
    pub jobs: Cache<Job>,
    /// What shapes the children.
    pub settings: Settings,
    recorder: Recorder,
    backoff: Backoff<Workspace>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("workspace::Reconciler")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler over the Workspace `store` and the prepare-Job cache.
    pub fn new(base: Context, store: Store<Workspace>, jobs: Cache<Job>) -> Self {
        let recorder = Recorder::new(base.client.clone(), base.reporter.clone());
        let settings = Settings {
            init_image: base.config.workspace_init_image.clone(),
        };
        Self {
            base,
            store,
            jobs,
            settings,
            recorder,
            backoff: Backoff::default(),
        }
    }
}

/// Reconciles one Workspace: observe → decide → apply.
pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.workspace.reconcile_started();
    let seen = observe::observe(&ctx, &ws).await?;
    let decision = decide::decide(&ws, &seen, &ctx.settings, &now());
    let action = apply::apply(&ctx, &ws, decision).await?;
    ctx.backoff.reset(&ws);
    Ok(action)
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(ws: Arc<Workspace>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.workspace.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&ws);
    if error.reason() == "NamespaceTerminating" {
        // The namespace is going away with everything in it: nothing for a person to do.
        tracing::debug!(workspace = %ws.name_any(), namespace = ?ws.namespace(), "namespace terminating; retrying until the Workspace is gone");
    } else {
        warn!(workspace = %ws.name_any(), namespace = ?ws.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "workspace reconcile failed");
    }
    Action::requeue(delay)
}

/// The Workspaces whose folder a lock locks (their `heldBy` and `headCommit` follow it).
fn lock_users(store: &Store<Workspace>, lock: &Lease) -> Vec<ObjectRef<Workspace>> {
    let (Some(ns), Some(annotations)) = (lock.namespace(), lock.metadata.annotations.as_ref())
    else {
        return Vec::new();
    };
    let (Some(claim), Some(path)) = (
        annotations.get(CLAIM_ANNOTATION),
        annotations.get(PATH_ANNOTATION),
    ) else {
        return Vec::new();
    };
    let locked = Storage {
        claim: claim.clone(),
        path: path.clone(),
    };
    store
        .state()
        .iter()
        .filter(|w| w.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|w| Storage::of(&w.spec) == locked)
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Runs the Workspace controller until `shutdown` resolves.
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let (store, writer) = reflector::store();
    let workspaces =
        lenient::<Workspace>(client.clone(), watcher::Config::default().any_semantic())
            .modify(|w| w.managed_fields_mut().clear())
            .reflect(writer)
            .applied_objects();
    let (job_store, job_writer) = reflector::store();
    let jobs = Cache::new(job_store);
    let job_events = {
        let jobs = jobs.clone();
        let selector = format!("app.kubernetes.io/component={PREPARE_COMPONENT},{WORKSPACE_LABEL}");
        watcher(
            Api::<Job>::all(client.clone()),
            watcher::Config::default().labels(&selector),
        )
        .default_backoff()
        .modify(|j| j.managed_fields_mut().clear())
        .reflect(job_writer)
        .inspect(move |e| jobs.observe(e))
        .touched_objects()
    };
    let lock_events = watcher(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().labels(LOCK_LABEL),
    )
    .default_backoff()
    .touched_objects();
    let concurrency = ctx.config.concurrency;
    let rctx = Arc::new(Reconciler::new(ctx, store.clone(), jobs));
    let mapper_store = store.clone();
    Controller::for_stream(workspaces, store)
        .owns_stream(job_events)
        .watches_stream(lock_events, move |lock| lock_users(&mapper_store, &lock))
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, rctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "workspace controller event");
            }
        })
        .await;
    info!("Workspace controller stopped");
}
