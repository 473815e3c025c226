//! The identity controller: each dispatch pod's SPIRE registration (SPEC §5.3).
//!
//! With `--spire-server-socket`, every dispatch pod is created behind the scheduling gate
//! `vexa.ai/identity` (see `dispatch::children`). This controller watches the operator's pods;
//! for a gated one it checks that the pod is its Job's own and the Job its Dispatch's (by UID and
//! by the Job's template: [`decide::verify`]), registers the entry (SPIFFE ID naming namespace and
//! dispatch; parent the node alias; selectors the pod's UID and the `worker` container) and only
//! then removes the gate, so no container of the pod starts before its identity can be issued.
//! A finished or deleted pod's entry is deleted; a sweep deletes our entries whose pods are gone
//! (an operator that was down meanwhile), and each entry expires by itself past the run's deadline.
//! A failure is a condition on the Dispatch (`IdentityRegistered=False`) and an event, retried
//! with backoff. A pod that is not ours stays gated: it never starts.

pub mod decide;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use vexa_core::identity;
use vexa_crds::Dispatch;
use vexa_spire::{Entry, EntryClient, Selector, SpiffeId};

use self::decide::{NotOurs, PodState, Registration};
use super::dispatch::MANAGED_SELECTOR;
use crate::runtime::backoff::Backoff;
use crate::runtime::context::Context;
use crate::runtime::events::{Note, publish};

/// The field manager of the `IdentityRegistered` condition (the Dispatch controller owns the
/// rest of the status; server-side apply keeps each manager's conditions apart).
pub const FIELD_MANAGER: &str = "vexa-operator-identity";
/// The condition on the Dispatch.
pub const CONDITION: &str = "IdentityRegistered";
/// How often our entries whose pods are gone are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where SPIRE is and which trust domain the dispatches' IDs are in.
#[derive(Debug, Clone)]
pub struct Spire {
    /// The server's entry API.
    pub client: EntryClient,
    /// `vexa.local` by default.
    pub trust_domain: String,
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SPIRE refused or could not be reached.
    #[error(transparent)]
    Spire(#[from] vexa_spire::Error),
    /// The API server refused.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The trust domain does not make valid SPIFFE IDs.
    #[error(transparent)]
    SpiffeId(#[from] vexa_spire::SpiffeIdError),
    /// The audit record could not be written (the action waits for it).
    #[error(transparent)]
    Audit(#[from] crate::runtime::audit::AuditError),
}

impl Error {
    /// A short, bounded reason (events, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Spire(e) => e.reason(),
            Error::Kube(_) => "KubeApiFailed",
            Error::SpiffeId(_) => "InvalidSpiffeId",
            Error::Audit(_) => "AuditWriteFailed",
        }
    }
}

struct Reconciler {
    base: Context,
    spire: Spire,
    recorder: Recorder,
    backoff: Backoff<Pod>,
}

/// Runs the identity controller until the task is aborted (it stops with the Dispatch
/// controller that spawns it).
pub async fn run(base: Context, spire: Spire) {
    let pods = Api::<Pod>::all(base.client.clone());
    let controller = Controller::new(pods, watcher::Config::default().labels(MANAGED_SELECTOR))
        .with_config(ControllerConfig::default().concurrency(base.config.concurrency));
    let store = controller.store();
    let recorder = Recorder::new(base.client.clone(), base.reporter.clone());
    let ctx = Arc::new(Reconciler {
        base,
        spire,
        recorder,
        backoff: Backoff::default(),
    });
    let sweeper = tokio::spawn(sweep(ctx.clone(), store));
    info!(
        socket = %ctx.spire.client.socket().display(),
        trust_domain = %ctx.spire.trust_domain,
        "identity controller: registering dispatch pods with SPIRE"
    );
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "identity controller event");
            }
        })
        .await;
    sweeper.abort();
}

fn error_policy(pod: Arc<Pod>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    let delay = ctx.backoff.next(&pod);
    warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "registering a dispatch pod with SPIRE failed");
    Action::requeue(delay)
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    match decide::pod_state(&pod) {
        PodState::Other => Ok(Action::await_change()),
        PodState::Finished => {
            // Whether or not it ever had one: deleting an entry that is not there succeeds.
            let Some(uid) = pod.uid() else {
                return Ok(Action::await_change());
            };
            let removed = ctx.spire.client.delete(&[identity::entry_id(&uid)]).await?;
            if !removed.is_empty() {
                record_removal(&pod, &ctx).await?;
            }
            Ok(Action::await_change())
        }
        PodState::Gated => register(&pod, &ctx).await,
    }
}

/// The Job the pod's owner reference names and the Dispatch that Job's names, as the API
/// server has them now (either may be gone; whether they really own is checked by the caller).
async fn owners(pod: &Pod, ctx: &Reconciler) -> Result<(Option<Job>, Option<Dispatch>), Error> {
    let ns = pod.namespace().unwrap_or_default();
    let client = &ctx.base.client;
    let job = match decide::job_owner(pod) {
        Some(o) => {
            Api::<Job>::namespaced(client.clone(), &ns)
                .get_opt(&o.name)
                .await?
        }
        None => None,
    };
    let dispatch = match job.as_ref().and_then(decide::dispatch_owner) {
        Some(o) => {
            Api::<Dispatch>::namespaced(client.clone(), &ns)
                .get_opt(&o.name)
                .await?
        }
        None => None,
    };
    Ok((job, dispatch))
}

async fn register(pod: &Pod, ctx: &Reconciler) -> Result<Action, Error> {
    let ns = pod.namespace().unwrap_or_default();
    let client = &ctx.base.client;
    let (job, dispatch) = owners(pod, ctx).await?;
    let registration = match decide::verify(
        pod,
        job.as_ref(),
        dispatch.as_ref(),
        &ctx.spire.trust_domain,
    ) {
        Ok(r) => r,
        Err(NotOurs(why)) => {
            warn!(pod = %pod.name_any(), namespace = %ns, why = %why, "a gated pod that is not a dispatch's own gets no identity and stays gated");
            let note = Note::warning(
                "NotADispatchPod",
                Some(format!(
                    "the operator gives this pod no SPIFFE identity, so it stays behind the scheduling gate {}: {why}",
                    identity::IDENTITY_GATE
                )),
                "Register",
            );
            publish(&ctx.recorder, pod, vec![note]).await;
            return Ok(Action::await_change());
        }
    };
    let Some(dispatch) = dispatch else {
        return Ok(Action::await_change());
    };
    let entry = entry(&registration, &ctx.spire.trust_domain)?;
    if let Err(e) = ctx.spire.client.create(std::slice::from_ref(&entry)).await {
        let message = format!(
            "registering the pod's SPIFFE ID {} with SPIRE failed ({e}); the pod waits behind its scheduling gate and the operator retries",
            registration.spiffe_id
        );
        set_condition(ctx, &dispatch, false, e.reason(), &message).await;
        publish(
            &ctx.recorder,
            &dispatch,
            vec![Note::warning(e.reason(), Some(message), "Register")],
        )
        .await;
        return Err(e.into());
    }
    // Recorded before the pod may start; a record that cannot be written is retried (the
    // create above is idempotent), and the gate stays until it is written.
    let event = vexa_audit::Event::EntryRegistered {
        spiffe_id: registration.spiffe_id.clone(),
        entry_id: registration.entry_id.clone(),
    };
    ctx.base
        .audit
        .record(&dispatch, audit_scope(&dispatch), event)
        .await?;
    Api::<Pod>::namespaced(client.clone(), &ns)
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(decide::release_gate_patch(pod))
                    .map_err(kube::Error::SerdeError)?,
            ),
        )
        .await?;
    ctx.backoff.reset(pod);
    info!(dispatch = %registration.dispatch, namespace = %ns, pod = %pod.name_any(), spiffe_id = %registration.spiffe_id, entry = %registration.entry_id, "registered the dispatch pod with SPIRE and released its gate");
    let message = format!(
        "pod {} may start: SPIRE issues {} to its worker container (entry {})",
        pod.name_any(),
        registration.spiffe_id,
        registration.entry_id
    );
    set_condition(ctx, &dispatch, true, "Registered", &message).await;
    publish(
        &ctx.recorder,
        &dispatch,
        vec![Note::normal(
            "IdentityRegistered",
            Some(message),
            "Register",
        )],
    )
    .await;
    Ok(Action::await_change())
}

fn audit_scope(d: &Dispatch) -> vexa_audit::ScopeRecord {
    crate::runtime::audit::scope(d, &d.status.clone().unwrap_or_default())
}

/// Records that a finished pod's entry is gone, when the pod's Dispatch is still there to
/// resolve it (the sweep removes entries of dispatches already deleted without a record).
async fn record_removal(pod: &Pod, ctx: &Reconciler) -> Result<(), Error> {
    let (job, dispatch) = owners(pod, ctx).await?;
    let Some(d) = dispatch.filter(|d| {
        job.as_ref()
            .zip(d.uid())
            .is_some_and(|(j, uid)| crate::runtime::owned::is_controlled_by(&j.metadata, &uid))
    }) else {
        return Ok(());
    };
    ctx.base
        .audit
        .record(&d, audit_scope(&d), vexa_audit::Event::EntryRemoved)
        .await?;
    Ok(())
}

/// The SPIRE entry of a verified pod.
fn entry(r: &Registration, trust_domain: &str) -> Result<Entry, Error> {
    Ok(Entry {
        id: r.entry_id.clone(),
        spiffe_id: SpiffeId::parse(&r.spiffe_id)?,
        parent_id: SpiffeId::parse(&identity::node_alias(trust_domain))?,
        selectors: identity::selectors(&r.pod_uid)
            .into_iter()
            .map(|(kind, value)| Selector::new(kind, value))
            .collect(),
        expires_at: unix_now() + r.lifetime_seconds,
        hint: String::new(),
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Sets `IdentityRegistered` on the Dispatch (its own field manager; logged, never an error:
/// the event and the retry carry on).
async fn set_condition(ctx: &Reconciler, d: &Dispatch, ok: bool, reason: &str, message: &str) {
    let status = if ok { "True" } else { "False" };
    let previous = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
    if previous.is_some_and(|c| c.status == status && c.reason == reason && c.message == message) {
        return;
    }
    let since = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let body = json!({
        "apiVersion": Dispatch::api_version(&()),
        "kind": Dispatch::kind(&()),
        "status": {"conditions": [{
            "type": CONDITION,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
            "observedGeneration": d.metadata.generation.unwrap_or_default(),
        }]},
    });
    let api =
        Api::<Dispatch>::namespaced(ctx.base.client.clone(), &d.namespace().unwrap_or_default());
    if let Err(e) = api
        .patch_status(
            &d.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        warn!(dispatch = %d.name_any(), error = %e, "could not set the IdentityRegistered condition");
    }
}

/// Every [`SWEEP_EVERY`], once the pod cache has synced: deletes our entries whose pod is gone
/// or over (an operator that was down when the pod ended, or a pod deleted while gated).
async fn sweep(ctx: Arc<Reconciler>, store: Store<Pod>) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let parent = match SpiffeId::parse(&identity::node_alias(&ctx.spire.trust_domain)) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "no sweep of SPIRE entries");
            return;
        }
    };
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let entries = match ctx.spire.client.list_by_parent(&parent).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "listing SPIRE entries for the sweep failed; trying again later");
                continue;
            }
        };
        let live = |uid: &str| {
            store.state().iter().any(|p| {
                p.uid().as_deref() == Some(uid) && decide::pod_state(p) != PodState::Finished
            })
        };
        let stale: Vec<String> = entries
            .into_iter()
            .filter(|e| identity::pod_uid_of_entry(&e.id).is_some_and(|uid| !live(uid)))
            .map(|e| e.id)
            .collect();
        if stale.is_empty() {
            continue;
        }
        match ctx.spire.client.delete(&stale).await {
            Ok(_) => info!(
                removed = stale.len(),
                "removed the SPIRE entries of dispatch pods that are gone or over"
            ),
            Err(e) => warn!(error = %e, "removing stale SPIRE entries failed; trying again later"),
        }
    }
}
