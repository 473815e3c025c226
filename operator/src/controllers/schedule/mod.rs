//! The Schedule controller: creates a Dispatch per nominal time of a cron schedule read in an
//! IANA zone, under the subject's delegation grant, with a concurrency policy for overlaps, a
//! catch-up policy after downtime, deterministic jitter, suspend, start/end time, pause on
//! failure, history limits and imperative actions (run now, backfill, resume) by annotation.
//!
//! Shape: `observe` (I/O: the Schedule as it is now, its Dispatches, its subject's Identity) →
//! `decide` (pure, with the time given: Dispatches to create, stop and delete, the status, the
//! events, when to look again) → `apply` (I/O). Pure helpers of `decide`: `plan` (the cron
//! plan: due, skipped, next), `run` (a run's Dispatch, the grant check, jitter), `overlap` (the
//! concurrency policy and waiting runs), `actions` (the action annotations).
//!
//! A reconcile starts on a new generation or a changed annotation of the Schedule (not on its
//! own status writes), when one of its Dispatches changes (so a run that ends starts the next
//! buffered one at once), and at the next due instant (at most [`decide::MAX_REQUEUE`] later).
//! One with an `email.received` trigger also every `--mail-poll-seconds`, and at once when its
//! mailbox reports new mail over IMAP IDLE (`idle`, unless `--mail-idle=false`).

pub mod actions;
pub mod apply;
pub mod decide;
pub mod error;
pub mod events;
pub mod idle;
pub mod observe;
pub mod overlap;
pub mod plan;
pub mod run;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Recorder;
use kube::runtime::predicates;
use kube::runtime::reflector;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::Predicate;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tracing::{info, warn};
use vexa_core::names::SCHEDULE_LABEL;
use vexa_crds::{Dispatch, EventType, Schedule, Transcript};

pub use error::Error;

use crate::mail::MailConfig;
use crate::runtime::backoff::Backoff;
use crate::runtime::context::Context;
use crate::runtime::watch::lenient;

/// What the Schedule reconciler shares across reconciles.
pub struct Reconciler {
    /// The operator-wide context.
    pub base: Context,
    /// The email integration's mailboxes (`--mail-config`).
    mail: Option<Arc<MailConfig>>,
    mail_poll: std::time::Duration,
    recorder: Recorder,
    backoff: Backoff<Schedule>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("schedule::Reconciler")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler with the operator-wide context.
    pub fn new(base: Context) -> Self {
        let mail = base.config.mail_config.as_deref().and_then(|path| {
            MailConfig::load(path)
                .inspect_err(|e| tracing::error!(error = %e, "the mail config cannot be read; email triggers do not fire"))
                .ok()
                .map(Arc::new)
        });
        Self {
            mail,
            mail_poll: std::time::Duration::from_secs(base.config.mail_poll_seconds),
            recorder: Recorder::new(base.client.clone(), base.reporter.clone()),
            base,
            backoff: Backoff::default(),
        }
    }

    fn settings(&self) -> decide::Settings {
        decide::Settings {
            seconds_field: self.base.config.schedule_seconds_field,
        }
    }
}

/// Reconciles one Schedule: observe → decide → apply, then again at the next due instant.
pub async fn reconcile(schedule: Arc<Schedule>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.schedule.reconcile_started();
    let Some((current, seen)) =
        observe::observe(&ctx.base.client, ctx.mail.as_deref(), &schedule).await?
    else {
        return Ok(Action::await_change());
    };
    let decision = decide::decide(&current, &seen, ctx.settings(), chrono::Utc::now());
    let mut requeue = decision.requeue;
    // A watched mailbox is looked at again after the poll interval.
    if current
        .spec
        .events
        .iter()
        .any(|e| e.event_type == EventType::EmailReceived)
    {
        requeue = requeue.min(ctx.mail_poll);
    }
    apply::apply(&ctx, &current, decision).await?;
    ctx.backoff.reset(&current);
    Ok(Action::requeue(requeue))
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(schedule: Arc<Schedule>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.schedule.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&schedule);
    warn!(schedule = %schedule.name_any(), namespace = ?schedule.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "schedule reconcile failed");
    Action::requeue(delay)
}

/// Runs the Schedule controller until `shutdown` resolves.
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    ctx.metrics
        .schedule_runs
        .known_skip_reasons(&decide::reason::ALL);
    let client = ctx.client.clone();
    let (store, writer) = reflector::store();
    // A new generation or a changed annotation (an action) starts a reconcile; the
    // controller's own status writes do not (the requeue at the next due instant does the rest).
    let schedules = lenient::<Schedule>(client.clone(), watcher::Config::default().any_semantic())
        .modify(|s| s.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::annotations),
            Default::default(),
        );
    let dispatches = lenient::<Dispatch>(
        client.clone(),
        watcher::Config::default().labels(SCHEDULE_LABEL),
    )
    .touched_objects();
    // A Transcript that changes wakes the Schedules of its namespace bound to
    // `transcript.completed` (they decide whether it fires).
    let transcripts =
        lenient::<Transcript>(client.clone(), watcher::Config::default().any_semantic())
            .touched_objects();
    let bound = store.clone();
    let to_schedules = move |t: Transcript| {
        let ns = t.namespace();
        bound
            .state()
            .iter()
            .filter(|s| s.namespace() == ns)
            .filter(|s| {
                s.spec
                    .events
                    .iter()
                    .any(|e| e.event_type == EventType::TranscriptCompleted)
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    };
    let concurrency = ctx.config.concurrency;
    let mail_idle = ctx.config.mail_idle;
    let rctx = Arc::new(Reconciler::new(ctx));
    // New mail wakes the Schedules bound to its mailbox; the watchers stop with the controller.
    let (mail_wakes, _watchers) =
        idle::watch(rctx.mail.clone().filter(|_| mail_idle), store.clone());
    Controller::for_stream(schedules, store)
        .owns_stream(dispatches)
        .watches_stream(transcripts, to_schedules)
        .reconcile_on(mail_wakes)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, rctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "schedule controller event");
            }
        })
        .await;
    info!("Schedule controller stopped");
}
