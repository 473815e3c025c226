//! The Card controller, part two, I/O: reconciles every decided Card. Observes the record's
//! Workspace, who holds its write lock and the apply Job (for a `send` card: its Tool and the
//! owner's mailbox from `--mail-config`); `applier::step` decides; this module takes and
//! releases the lock, creates the Secret and the Job, sends an approved email card with
//! `vexa_email::send_once`, and writes the status (`phase`, `decidedBy`, `appliedCommit`,
//! conditions `Ready` and `Applied`) and events.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Recorder;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use vexa_crds::card::{Card, CardPhase};
use vexa_crds::{Tool, Workspace};

use super::applier::{self, JobState, Report, Seen, Sending, Step};
use super::error::Error;
use super::status::{self, Applied};
use crate::FIELD_MANAGER;
use crate::controllers::dispatch::claim::holder_alive;
use crate::controllers::workspace::storage::{self, HEAD_ANNOTATION, LOCK_LABEL, Storage};
use crate::mail::MailConfig;
use crate::runtime::backoff::Backoff;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::events::{self, Note};
use crate::runtime::owned::is_controlled_by;

/// How often an apply in progress (or waiting for its workspace) is looked at again.
const POLL: Duration = Duration::from_secs(5);
/// How often a send card held for a missing mailbox is looked at again.
const HOLD: Duration = Duration::from_secs(60);

/// What the reconciler shares.
pub struct Reconciler {
    base: Context,
    recorder: Recorder,
    backoff: Backoff<Card>,
    /// The mailboxes send cards are sent from (read once at start).
    mail: MailConfig,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("card::approved::Reconciler")
            .finish_non_exhaustive()
    }
}

async fn observe(ctx: &Reconciler, card: &Card, ns: &str) -> Result<Seen, Error> {
    let client = ctx.base.client.clone();
    let workspace = match &card.spec.record {
        Some(r) => {
            Api::<Workspace>::namespaced(client.clone(), ns)
                .get_opt(&r.workspace)
                .await?
        }
        None => None,
    };
    let mut busy_with = None;
    if let Some(ws) = &workspace {
        let lock = Api::<Lease>::namespaced(client.clone(), ns)
            .get_opt(&Storage::of(&ws.spec).lock_name())
            .await?;
        if let Some(h) = lock.as_ref().and_then(storage::holder)
            && h != applier::holder(card)
            && holder_alive(&client, ns, h).await?
        {
            busy_with = Some(h.to_owned());
        }
    }
    let job = job_state(ctx, card, ns).await?;
    let (tool, mailbox) = match &card.spec.send {
        Some(send) => (
            Api::<Tool>::namespaced(client.clone(), ns)
                .get_opt(&send.tool)
                .await?,
            ctx.mail.of_subject(&card.spec.owner).cloned(),
        ),
        None => (None, None),
    };
    Ok(Seen {
        workspace,
        busy_with,
        job,
        tool,
        mailbox,
    })
}

async fn job_state(ctx: &Reconciler, card: &Card, ns: &str) -> Result<JobState, Error> {
    let name = applier::apply_job_name(card);
    let Some(job) = Api::<Job>::namespaced(ctx.base.client.clone(), ns)
        .get_opt(&name)
        .await?
    else {
        return Ok(JobState::Absent);
    };
    let card_uid = card.metadata.uid.as_deref().unwrap_or_default();
    if !is_controlled_by(&job.metadata, card_uid) {
        return Ok(JobState::Failed(
            None,
            format!("a Job named {name:?} that this Card does not control exists"),
        ));
    }
    let condition = |t: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"))
            .map(|c| c.message.clone().unwrap_or_default())
    };
    let (complete, failed) = (condition("Complete"), condition("Failed"));
    if complete.is_none() && failed.is_none() {
        return Ok(JobState::Running);
    }
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.base.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await?;
    let report = pods
        .items
        .iter()
        .filter(|p| is_controlled_by(&p.metadata, &job_uid))
        .filter_map(|p| {
            let t = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?
                .terminated
                .clone()?;
            Some((t.finished_at.map(|t| t.0), t.message?))
        })
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, m)| serde_json::from_str::<Report>(m.trim()).ok());
    Ok(match (complete, failed) {
        (Some(_), _) => JobState::Succeeded(report),
        (None, Some(why)) => JobState::Failed(report, why),
        (None, None) => JobState::Running,
    })
}

/// Takes the workspace's lock for the card; false when someone else won it meanwhile.
async fn take_lock(ctx: &Reconciler, card: &Card, ns: &str, ws: &Workspace) -> Result<bool, Error> {
    let folder = Storage::of(&ws.spec);
    let api = Api::<Lease>::namespaced(ctx.base.client.clone(), ns);
    let me = applier::holder(card);
    let stamp = || MicroTime(k8s_openapi::jiff::Timestamp::now());
    let written = match api.get_opt(&folder.lock_name()).await? {
        Some(lock) if storage::holder(&lock) == Some(me.as_str()) => return Ok(true),
        // Claimed since it was observed free: wait for it again.
        Some(lock)
            if match storage::holder(&lock) {
                Some(h) => holder_alive(&ctx.base.client, ns, h).await?,
                None => false,
            } =>
        {
            return Ok(false);
        }
        Some(mut lock) => {
            // Keeps the resourceVersion: a concurrent claim makes this a 409.
            let spec = lock.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(stamp());
            api.replace(&folder.lock_name(), &PostParams::default(), &lock)
                .await
        }
        None => {
            let lock = Lease {
                metadata: ObjectMeta {
                    name: Some(folder.lock_name()),
                    namespace: Some(ns.to_owned()),
                    labels: Some(BTreeMap::from([
                        (LOCK_LABEL.to_owned(), "true".to_owned()),
                        (
                            "app.kubernetes.io/managed-by".to_owned(),
                            FIELD_MANAGER.to_owned(),
                        ),
                    ])),
                    annotations: Some(folder.annotations()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    acquire_time: Some(stamp()),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lock).await
        }
    };
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Releases the lock if the card holds it, leaving `head` for the Workspace's `headCommit`.
async fn release_lock(
    ctx: &Reconciler,
    card: &Card,
    ns: &str,
    head: Option<&str>,
) -> Result<(), Error> {
    let Some(record) = &card.spec.record else {
        return Ok(());
    };
    let Some(ws) = Api::<Workspace>::namespaced(ctx.base.client.clone(), ns)
        .get_opt(&record.workspace)
        .await?
    else {
        return Ok(());
    };
    let folder = Storage::of(&ws.spec);
    let api = Api::<Lease>::namespaced(ctx.base.client.clone(), ns);
    let Some(mut lock) = api.get_opt(&folder.lock_name()).await? else {
        return Ok(());
    };
    if storage::holder(&lock) != Some(applier::holder(card).as_str()) {
        return Ok(());
    }
    if let Some(spec) = lock.spec.as_mut() {
        spec.holder_identity = None;
        spec.acquire_time = None;
    }
    if let Some(head) = head {
        lock.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(HEAD_ANNOTATION.to_owned(), head.to_owned());
    }
    match api
        .replace(&folder.lock_name(), &PostParams::default(), &lock)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn create_if_absent<K>(api: Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the status: `phase`, `decidedBy`, the commit and the conditions (`Ready` from the
/// phase, `Applied` when given; see `status::conditions`).
async fn write_status(
    ctx: &Reconciler,
    card: &Card,
    ns: &str,
    phase: CardPhase,
    applied: Option<Applied<'_>>,
    commit: Option<&str>,
) -> Result<(), Error> {
    let mut status = json!({
        "observedGeneration": card.metadata.generation,
        "phase": phase,
        "conditions": status::conditions(card, phase, applied, &now()),
    });
    if let Some(by) = card.spec.decision.as_ref().and_then(|d| d.by.as_ref()) {
        status["decidedBy"] = json!(by);
    }
    if let Some(sha) = commit {
        status["appliedCommit"] = json!(sha);
    }
    let body = json!({
        "apiVersion": Card::api_version(&()),
        "kind": Card::kind(&()),
        "status": status,
    });
    Api::<Card>::namespaced(ctx.base.client.clone(), ns)
        .patch_status(
            &card.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

/// Reconciles one Card: observe → `applier::step` → carry it out.
pub async fn reconcile(card: Arc<Card>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let ns = card.namespace().ok_or(Error::Malformed)?;
    if card.spec.decision.is_none() || applier::is_done(&card) {
        return Ok(Action::await_change());
    }
    let seen = observe(&ctx, &card, &ns).await?;
    let image = ctx.base.config.workspace_init_image.clone();
    let action = match applier::step(&card, &seen, &image) {
        Step::Nothing => Action::await_change(),
        Step::Phase(phase) => {
            write_status(&ctx, &card, &ns, phase, None, None).await?;
            Action::await_change()
        }
        Step::Wait(message) => {
            write_status(
                &ctx,
                &card,
                &ns,
                CardPhase::Approved,
                Some((false, "WaitingForWorkspace", &message)),
                None,
            )
            .await?;
            Action::requeue(POLL)
        }
        Step::Start(children) => {
            let Some(ws) = &seen.workspace else {
                return Ok(Action::requeue(POLL));
            };
            if !take_lock(&ctx, &card, &ns, ws).await? {
                return Ok(Action::requeue(POLL));
            }
            let (secret, job) = *children;
            create_if_absent(
                Api::<Secret>::namespaced(ctx.base.client.clone(), &ns),
                &secret,
            )
            .await?;
            create_if_absent(Api::<Job>::namespaced(ctx.base.client.clone(), &ns), &job).await?;
            write_status(
                &ctx,
                &card,
                &ns,
                CardPhase::Approved,
                Some((false, "Applying", "the record is being committed")),
                None,
            )
            .await?;
            Action::requeue(POLL)
        }
        Step::Applying => Action::requeue(POLL),
        Step::Applied(sha) => {
            let message = format!("committed as {sha}");
            write_status(
                &ctx,
                &card,
                &ns,
                CardPhase::Applied,
                Some((true, "Committed", &message)),
                Some(&sha),
            )
            .await?;
            release_lock(&ctx, &card, &ns, Some(&sha)).await?;
            let note = Note::normal("Applied", Some(message), "Apply");
            events::publish(&ctx.recorder, card.as_ref(), vec![note]).await;
            Action::await_change()
        }
        Step::Hold(reason, message) => {
            write_status(
                &ctx,
                &card,
                &ns,
                CardPhase::Approved,
                Some((false, reason, &message)),
                None,
            )
            .await?;
            Action::requeue(HOLD)
        }
        Step::Send(out) => {
            let result = vexa_email::send_once(&out.mailbox, &out.message).await;
            match applier::sending(&result, &out.message.message_id) {
                Sending::Applied(reason, message) => {
                    info!(card = %card.name_any(), namespace = %ns, message_id = %out.message.message_id, reason, "send card applied");
                    write_status(
                        &ctx,
                        &card,
                        &ns,
                        CardPhase::Applied,
                        Some((true, reason, &message)),
                        None,
                    )
                    .await?;
                    let note = Note::normal("Applied", Some(message), "Send");
                    events::publish(&ctx.recorder, card.as_ref(), vec![note]).await;
                    Action::await_change()
                }
                Sending::Retry(reason, message) => {
                    let delay = ctx.backoff.next(&card);
                    warn!(card = %card.name_any(), namespace = %ns, reason, retry_in = ?delay, "sending a card failed; retried");
                    write_status(
                        &ctx,
                        &card,
                        &ns,
                        CardPhase::Approved,
                        Some((false, reason, &message)),
                        None,
                    )
                    .await?;
                    // No reset: the next failure waits longer.
                    return Ok(Action::requeue(delay));
                }
                Sending::Failed(reason, message) => {
                    write_status(
                        &ctx,
                        &card,
                        &ns,
                        CardPhase::Failed,
                        Some((false, reason, &message)),
                        None,
                    )
                    .await?;
                    let note = Note::warning(reason, Some(message), "Send");
                    events::publish(&ctx.recorder, card.as_ref(), vec![note]).await;
                    Action::await_change()
                }
            }
        }
        Step::Failed(reason, message) => {
            write_status(
                &ctx,
                &card,
                &ns,
                CardPhase::Failed,
                Some((false, reason, &message)),
                None,
            )
            .await?;
            release_lock(&ctx, &card, &ns, None).await?;
            let note = Note::warning(reason, Some(message), "Apply");
            events::publish(&ctx.recorder, card.as_ref(), vec![note]).await;
            Action::await_change()
        }
    };
    ctx.backoff.reset(&card);
    Ok(action)
}

/// Failed reconciles back off exponentially per Card.
pub fn error_policy(card: Arc<Card>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    let delay = ctx.backoff.next(&card);
    warn!(card = %card.name_any(), namespace = ?card.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "card reconcile failed");
    Action::requeue(delay)
}

/// Runs the reconciler of decided Cards until `shutdown` resolves.
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let concurrency = ctx.config.concurrency;
    let mail = match &ctx.config.mail_config {
        Some(path) => MailConfig::load(path).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the mail config cannot be read; approved send cards wait (NoMailbox)");
            MailConfig::default()
        }),
        None => MailConfig::default(),
    };
    let rctx = Arc::new(Reconciler {
        recorder: Recorder::new(ctx.client.clone(), ctx.reporter.clone()),
        base: ctx.clone(),
        backoff: Backoff::default(),
        mail,
    });
    Controller::new(
        Api::<Card>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().concurrency(concurrency))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, rctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "card controller event");
        }
    })
    .await;
    info!("Card apply controller stopped");
}
