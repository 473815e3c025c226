//! The Dispatch reconcile: a thin driver over its steps, by phase: before the Job (resolve,
//! authorize, wait for ready workspaces, take the rw locks, create the children), while it
//! runs (track the pod, honour a stop), after it (clean up). Reads are in `observe`, pure
//! decisions in `decide`, `run_state` and `children`, writes in `apply`; the folder lock in
//! `claim`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{Instrument as _, info};
use vexa_audit::Event;
use vexa_core::Termination;
use vexa_crds::{Dispatch, DispatchPhase, DispatchStatus, StopReason, Workspace, WorkspaceMode};
use vexa_policy::{Authorization, Launcher, Refusal, Scope, job_name};

use super::Reconciler;
use super::apply::{self, release_all, suspend, write_status};
use super::ceilings::{self, Ceilings};
use super::children::{Inputs, effective_limits};
use super::claim::{self, Claim};
use super::decide::{
    Stage, authorize, describe_run, finish, identity_facts, mounted, needs_identities,
    owned_workspaces, request, transitions, unix_seconds,
};
use super::error::Error;
use super::observe::{self, Resolved};
use super::run_state::{RunState, run_state};
use super::token;
use super::trace::RunTrace;
use crate::runtime::audit;
use crate::runtime::conditions::{ConditionType, Conditions, find, is_true, now};
use crate::runtime::events;
use crate::runtime::owned::is_controlled_by;
use crate::runtime::telemetry;

/// A queued dispatch is woken by its Workspace's change (ready, or released); this is only
/// the safety net should a wake-up be missed.
const QUEUE_SAFETY_NET: Duration = Duration::from_secs(30);
/// How often a dispatch whose references are missing looks again.
const MISSING_POLL: Duration = Duration::from_secs(15);
/// A safety net for live runs; watches on the Job and pod drive the real updates.
const LIVE_RESYNC: Duration = Duration::from_secs(60);

/// Marks a dispatch that waited as no longer waiting: it holds every workspace it needs.
fn claimed(
    status: &mut DispatchStatus,
    generation: Option<i64>,
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    let mut conditions = Conditions::new(&mut status.conditions, generation, t);
    if conditions.has(ConditionType::Queued) {
        conditions.set(
            ConditionType::Queued,
            false,
            "WorkspaceClaimed",
            "every workspace is ready and every rw one is held by this dispatch",
        );
    }
}

/// Reconciles one Dispatch; while the run is live, the reconcile's span is part of its trace.
pub async fn reconcile(d: Arc<Dispatch>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let phase = d.status.as_ref().and_then(|s| s.phase);
    let span = tracing::info_span!(
        "reconcile",
        "vexa.dispatch" = %d.name_any(),
        "vexa.namespace" = d.namespace().unwrap_or_default(),
        "vexa.phase" = phase.map_or("new", DispatchPhase::as_str),
    );
    // Only a live run's reconciles join its trace; nothing is computed when tracing is off.
    if telemetry::enabled()
        && !phase.is_some_and(DispatchPhase::is_terminal)
        && let Some(run) = super::trace::context(&d)
    {
        telemetry::join(&span, &run);
    }
    reconcile_run(d, ctx).instrument(span).await
}

async fn reconcile_run(d: Arc<Dispatch>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.dispatch.reconcile_started();
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let name = d.name_any();
    let old = d.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = d.metadata.generation;

    let (action, ended) = match old.phase {
        Some(DispatchPhase::Refused | DispatchPhase::Destroyed) => (Action::await_change(), None),
        Some(DispatchPhase::Stopped) => (clean_up(&ctx, &d, &mut status).await?, None),
        // A Job the cache has not seen yet is created again only when the run has not been
        // recorded as started: creating it is idempotent (the run's own Job already there is
        // success). Ending the run (the Job
        // vanished, or a stop before the start) waits for the API server to confirm.
        // A Job of that name that this Dispatch does not control is not its run: it is never
        // followed (creating the run's own then fails, and the run ends `start_failed`).
        _ => match ctx
            .job(
                &ns,
                &job_name(&name),
                old.job_name.is_some() || d.spec.stop == Some(true),
            )
            .await?
            .filter(|job| owns(&d, &job.metadata))
        {
            None if old.job_name.is_some() => {
                // The Job vanished while the run was live (deleted by hand, replaced, or its
                // namespace is going away): the run is over, and so are its tokens.
                if let Some(uid) = d.metadata.uid.as_deref() {
                    ctx.renewals.forget(uid);
                }
                finish(
                    &mut status,
                    &d,
                    RunState::Finished {
                        reason: if d.spec.stop == Some(true) {
                            StopReason::Stopped
                        } else {
                            StopReason::Failed
                        },
                        exit_code: None,
                        started: old.start_time.clone(),
                        finished: Some(now()),
                        message: "the run's Job was deleted before the run ended".into(),
                        provenance: Vec::new(),
                        usage: None,
                    },
                );
                release_all(&ctx, &d, &status).await?;
                (Action::await_change(), None)
            }
            None => (start(&ctx, &d, &mut status).await?, None),
            Some(job) => track_run(&ctx, &d, &job, &mut status).await?,
        },
    };
    super::decide::ready_while_not_running(&mut status, d.metadata.generation, &now());
    // The outcome is on disk before the status says it.
    record_outcome(&ctx, &d, &old, &status).await?;
    // Events are for people and never fail a reconcile; they go out beside the status write.
    let mut notes = transitions(&old, &status);
    if old.job_name.is_none()
        && status.job_name.is_some()
        && let Some(why) = super::trace::ignored_annotation(&d)
    {
        // Said once, when the run starts: the creator asked for a trace it does not get.
        notes.push(events::Note::warning(
            "TraceContextIgnored",
            Some(why),
            "Create",
        ));
    }
    let notes = events::publish(&ctx.recorder, d.as_ref(), notes);
    if status != old {
        let (_, written) = tokio::join!(notes, write_status(&ctx, &d, &status));
        written?;
        // Counted once written: a write that failed is decided again by the retry.
        let metrics = &ctx.base.metrics;
        for stage in super::decide::stages(&old, &status, d.metadata.creation_timestamp.as_ref()) {
            match stage {
                Stage::Refused(reason) => metrics.dispatch_refused(&reason),
                Stage::Dequeued(seconds) => metrics.dispatch_dequeued(seconds),
                Stage::Running(seconds) => metrics.dispatch_running(seconds),
                Stage::Finished(reason) => {
                    metrics.dispatch_finished(reason.as_str());
                    // Counted and exported once, by the reconcile whose write ended the run.
                    if let Some(ended) = &ended {
                        if let Some(report) = &ended.report {
                            let created = d.metadata.creation_timestamp.as_ref();
                            metrics.dispatch_worker_report(created.map(|t| t.0.into()), report);
                        }
                        if let Some(trace) = &ended.trace {
                            telemetry::report(trace);
                        }
                    }
                }
            }
        }
    } else {
        notes.await;
    }
    ctx.backoff.reset(&d);
    Ok(action)
}

/// What a reconcile that saw the run end learnt, for the metrics and the trace once the
/// ending is written.
struct Ended {
    /// The worker's termination message.
    report: Option<Termination>,
    /// The run's trace (when tracing is on and the run is sampled).
    trace: Option<RunTrace>,
}

/// Records a refusal or the end of the run in the audit log when this reconcile decided it.
async fn record_outcome(
    ctx: &Reconciler,
    d: &Dispatch,
    old: &DispatchStatus,
    new: &DispatchStatus,
) -> Result<(), Error> {
    if new.phase == old.phase {
        return Ok(());
    }
    let event = match new.phase {
        Some(DispatchPhase::Refused) => {
            let why = find(&new.conditions, ConditionType::Authorized);
            Event::Refused {
                reason: why.map(|c| c.reason.clone()).unwrap_or_default(),
                message: why.map(|c| c.message.clone()).unwrap_or_default(),
            }
        }
        Some(DispatchPhase::Stopped) => Event::Stopped {
            reason: new
                .stop_reason
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
        },
        _ => return Ok(()),
    };
    ctx.base
        .audit
        .record(d, audit::scope(d, new), event)
        .await?;
    Ok(())
}

/// Before the Job exists: resolve, authorize, read the credential, claim, then create the
/// Secret and the Job.
async fn start(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &mut DispatchStatus,
) -> Result<Action, Error> {
    let client = &ctx.base.client;
    let generation = d.metadata.generation;
    let t = now();
    if status.phase.is_none() {
        status.phase = Some(DispatchPhase::Pending);
    }
    let ns = d.namespace().ok_or(Error::Malformed)?;
    if !ctx.serves(&ns).await? {
        Conditions::new(&mut status.conditions, generation, &t).set(
            ConditionType::Authorized,
            false,
            "NamespaceNotTenant",
            &format!(
                "namespace {ns} is not a tenant namespace: the operator runs Dispatches only in \
                 {}; make it one and create the Dispatch again",
                match ctx.base.config.tenant_label.as_str() {
                    "" => "the namespaces named in the chart's tenants.namespaces".to_owned(),
                    label => format!(
                        "namespaces labelled {label} (or named in the chart's tenants.namespaces)"
                    ),
                }
            ),
        );
        status.phase = Some(DispatchPhase::Refused);
        return Ok(Action::await_change());
    }
    if d.spec.stop == Some(true) {
        // A stop before the start needs nothing else to exist.
        finish(
            status,
            d,
            RunState::Finished {
                reason: StopReason::Stopped,
                exit_code: None,
                started: None,
                finished: Some(t),
                message: "stopped before it started".into(),
                provenance: Vec::new(),
                usage: None,
            },
        );
        release_all(ctx, d, status).await?;
        return Ok(Action::await_change());
    }

    let Some((resolved, auth, grant)) = admit(ctx, d, status).await? else {
        return Ok(if status.phase == Some(DispatchPhase::Refused) {
            Action::await_change()
        } else {
            Action::requeue(MISSING_POLL)
        });
    };

    // Check the credential before claiming, so a missing Secret never holds a workspace.
    match observe::check_model_credential(client, &resolved.runner, &ctx.base.config.namespace)
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_user_error() => {
            Conditions::new(&mut status.conditions, generation, &t).set(
                ConditionType::Valid,
                false,
                e.reason(),
                &e.to_string(),
            );
            return Ok(Action::requeue(MISSING_POLL));
        }
        Err(e) => return Err(e),
    }

    // Every workspace must hold a prepared folder before anything mounts it; its Workspace's
    // change wakes this dispatch (no poll).
    if let Some(not_ready) = resolved.workspaces.iter().find(|w| {
        !is_true(
            &w.status.clone().unwrap_or_default().conditions,
            ConditionType::Ready,
        )
    }) {
        let why = not_ready
            .status
            .as_ref()
            .and_then(|s| find(&s.conditions, ConditionType::Ready))
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        Conditions::new(&mut status.conditions, generation, &t).set(
            ConditionType::Queued,
            true,
            "WorkspaceNotReady",
            &format!(
                "waiting for workspace {:?} to be ready{why}",
                not_ready.name_any()
            ),
        );
        status.phase = Some(DispatchPhase::Queued);
        return Ok(Action::requeue(QUEUE_SAFETY_NET));
    }

    // All rw workspaces or none: holding some while waiting for others could deadlock two
    // dispatches that want the same pair in opposite orders.
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let storage_of = |name: &str| ctx.references.workspace_storage(&ns, name);
    let mut held: Vec<&Workspace> = Vec::new();
    for (workspace, (_, mode)) in resolved.workspaces.iter().zip(&auth.modes) {
        if *mode != WorkspaceMode::ReadWrite {
            continue;
        }
        match claim::claim(client, &ctx.store, d, workspace, storage_of).await? {
            Claim::Held => held.push(workspace),
            Claim::Busy { holder } => {
                for w in held {
                    claim::release(client, d, w, None).await?;
                }
                Conditions::new(&mut status.conditions, generation, &t).set(
                    ConditionType::Queued,
                    true,
                    "WorkspaceBusy",
                    &format!(
                        "waiting for workspace {:?}, whose folder is held for writing by dispatch \
                         {holder:?}",
                        workspace.name_any()
                    ),
                );
                status.phase = Some(DispatchPhase::Queued);
                return Ok(Action::requeue(QUEUE_SAFETY_NET));
            }
        }
    }
    claimed(status, generation, &t);

    // Admitted, in the audit log, before anything of the run exists.
    ctx.base
        .audit
        .record(d, audit::scope(d, status), Event::Admitted)
        .await?;

    // The dispatch's own Redis user exists before the Secret that carries its password and the
    // Job whose worker logs in with it.
    let redis_user = match &ctx.base.redis_users {
        Some(users) => {
            let (user, took) = users.create(&apply::redis_key(d)?).await?;
            tracing::debug!(dispatch = %d.name_any(), user = %user.username, ?took, "created the dispatch's Redis user");
            Some(user)
        }
        None => None,
    };
    // The run's first dispatch token, for its Secret (audited before it is handed out).
    let claims = token::claims(
        ctx,
        d,
        &resolved,
        &auth,
        grant,
        unix_seconds(k8s_openapi::jiff::Timestamp::now()),
    );
    let dispatch_token = token::mint(ctx, d, &claims, audit::scope(d, status)).await?;
    let settings = ctx.build_settings();
    let inputs = Inputs {
        dispatch_token: dispatch_token.as_deref(),
        dispatch: d,
        runner: &resolved.runner.spec,
        workspaces: mounted(&resolved, &auth),
        authorization: &auth,
        settings: &settings,
        redis_user: redis_user.as_ref(),
        tools: resolved.granted_tools(),
    };
    let job_name = match apply::children(ctx, &ns, &inputs).await {
        Ok(job_name) => job_name,
        Err(e) if e.fails_the_start() => {
            finish(
                status,
                d,
                RunState::Finished {
                    reason: StopReason::StartFailed,
                    exit_code: None,
                    started: None,
                    finished: Some(now()),
                    message: e.to_string(),
                    provenance: Vec::new(),
                    usage: None,
                },
            );
            release_all(ctx, d, status).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };

    if let Some(created) = &d.metadata.creation_timestamp {
        let latency = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
        ctx.base
            .metrics
            .job_created(Duration::try_from(latency).unwrap_or_default());
    }
    info!(dispatch = %d.name_any(), namespace = %ns, job = %job_name, "created Job");
    status.job_name = Some(job_name);
    status.phase = Some(DispatchPhase::Starting);
    Conditions::new(&mut status.conditions, generation, &t).set(
        ConditionType::Ready,
        false,
        "Starting",
        "the pod is being scheduled or started",
    );
    Ok(Action::requeue(LIVE_RESYNC))
}

/// Resolves the references and authorizes the dispatch, recording both in the conditions and
/// describing the run (trust, streams, session). `None` when it may not run now: refused
/// (phase `refused`) or waiting for a missing reference.
async fn admit(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &mut DispatchStatus,
) -> Result<Option<(Resolved, Authorization, Option<Scope>)>, Error> {
    let generation = d.metadata.generation;
    let t = now();
    let resolved = match observe::resolve(&ctx.base.client, &ctx.references, d).await {
        Ok(r) => r,
        Err(e) if e.is_user_error() => {
            Conditions::new(&mut status.conditions, generation, &t).set(
                ConditionType::Valid,
                false,
                e.reason(),
                &e.to_string(),
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Conditions::new(&mut status.conditions, generation, &t).set(
        ConditionType::Valid,
        true,
        "ReferencesResolved",
        "runner, workspaces and tools exist",
    );
    let decision = match authorize(&d.spec, &resolved.workspace_facts(), &resolved.tool_facts()) {
        Ok(mut auth) => custody(ctx, d, &resolved, &auth).await?.and_then(|scope| {
            within_ceilings(ctx, d, &resolved)?;
            // A delegation grant narrows the modes the dispatch did not ask for.
            if let Some(scope) = &scope {
                auth.narrow(scope);
            }
            Ok((auth, scope))
        }),
        Err(refusal) => Err(refusal),
    };
    match decision {
        Ok((auth, scope)) => {
            Conditions::new(&mut status.conditions, generation, &t).set(
                ConditionType::Authorized,
                true,
                "Authorized",
                "the dispatch may run as specified",
            );
            describe_run(d, &resolved, &auth, status);
            Ok(Some((resolved, auth, scope)))
        }
        Err(refusal) => {
            Conditions::new(&mut status.conditions, generation, &t).set(
                ConditionType::Authorized,
                false,
                refusal.reason,
                &refusal.message,
            );
            status.phase = Some(DispatchPhase::Refused);
            Ok(None)
        }
    }
}

/// The chain of custody, checked again from what the operator can see (admission already
/// checked the requesting user): the launcher, the subject's Identity and grants, and the
/// owners of the workspaces. The Identities are read (and RBAC asked) only when needed. For a
/// schedule or integration, the scope its grant allows.
async fn custody(
    ctx: &Reconciler,
    d: &Dispatch,
    resolved: &Resolved,
    auth: &Authorization,
) -> Result<Result<Option<Scope>, Refusal>, Error> {
    let request = request(&d.spec);
    let owned = owned_workspaces(resolved, auth);
    let now = unix_seconds(k8s_openapi::jiff::Timestamp::now());
    if !needs_identities(&request, &owned) {
        return Ok(vexa_policy::check_custody(
            &request,
            &owned,
            &[],
            false,
            now,
        ));
    }
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let client = &ctx.base.client;
    let identities: Vec<_> = observe::identities(client, &ctx.references, &ns)
        .await?
        .iter()
        .map(|i| identity_facts(i))
        .collect();
    let checked = vexa_policy::check_custody(&request, &owned, &identities, false, now);
    if let Err(r) = &checked
        && r.reason == "SubjectNotPermitted"
        && let Ok(Launcher::User(user)) = Launcher::parse(&request.launcher)
        && observe::may_act_as(client, &ns, user, &request.subject).await?
    {
        return Ok(vexa_policy::check_custody(
            &request,
            &owned,
            &identities,
            true,
            now,
        ));
    }
    Ok(checked)
}

/// The limits in force (the Dispatch's, its runner's, the operator's defaults) are within the
/// cluster's ceilings.
fn within_ceilings(ctx: &Reconciler, d: &Dispatch, resolved: &Resolved) -> Result<(), Refusal> {
    let c = &ctx.base.config;
    let ceilings = Ceilings {
        max_lifetime_seconds: c.ceiling_max_lifetime_seconds,
        idle_timeout_seconds: c.ceiling_idle_timeout_seconds,
        cpu: Some(c.ceiling_cpu.clone()),
        memory: Some(c.ceiling_memory.clone()),
    };
    let (idle, life, resources) = effective_limits(d, &resolved.runner.spec, &ctx.build_settings());
    ceilings::check(&ceilings, life, idle, resources.as_ref())
}

/// While the Job exists: follow its pod, honour a stop request, record the ending.
async fn track_run(
    ctx: &Reconciler,
    d: &Dispatch,
    job: &Job,
    status: &mut DispatchStatus,
) -> Result<(Action, Option<Ended>), Error> {
    let client = &ctx.base.client;
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let stop = d.spec.stop == Some(true);
    let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    if status.trust.is_none() {
        // The operator stopped between creating the Job and writing the status: describe
        // the run now (the references were valid when the Job was built).
        let _ = admit(ctx, d, status).await?;
    }
    if stop && !suspended {
        suspend(client, &ns, &job.name_any()).await?;
        info!(dispatch = %d.name_any(), "stop requested: suspended the Job, its pod terminates gracefully");
    }
    let pods = ctx.pods(&ns, job).await?;
    let pod = pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .map(AsRef::as_ref);
    status.job_name = Some(job.name_any());
    if let Some(p) = pod {
        status.pod_name = Some(p.name_any());
    }
    let state = run_state(job, pod, stop);
    let generation = d.metadata.generation;
    let t = now();
    // The Job exists, so the claims were taken; a status read from a cache that has not yet
    // seen the claim's write must not bring the wait back.
    claimed(status, generation, &t);
    let live = !matches!(state, RunState::Finished { .. });
    let next_token = if live && !stop {
        renew_token(ctx, d, status).await?
    } else {
        LIVE_RESYNC
    };
    let resync = LIVE_RESYNC.min(next_token);
    match &state {
        RunState::Starting => {
            status.phase = Some(DispatchPhase::Starting);
            Ok((Action::requeue(resync), None))
        }
        RunState::Running { started } | RunState::Stopping { started } => {
            status.phase = Some(state.phase());
            if status.start_time.is_none() {
                status.start_time = started.clone();
            }
            let (reason, msg) = if matches!(state, RunState::Running { .. }) {
                ("Running", "the agent worker runs")
            } else {
                ("Stopping", "stop requested; the pod is terminating")
            };
            Conditions::new(&mut status.conditions, generation, &t).set(
                ConditionType::Ready,
                matches!(state, RunState::Running { .. }),
                reason,
                msg,
            );
            Ok((Action::requeue(resync), None))
        }
        RunState::Finished { reason, .. } => {
            if *reason == StopReason::StartFailed && !suspended {
                // Stop the Job from retrying a pod that cannot start.
                suspend(client, &ns, &job.name_any()).await?;
            }
            if let Some(uid) = d.metadata.uid.as_deref() {
                ctx.renewals.forget(uid);
            }
            // The ending first: its provenance is the head commit the lock keeps.
            finish(status, d, state);
            release_all(ctx, d, status).await?;
            let report = pod.and_then(super::run_state::worker_report);
            let milestones = report.as_ref().and_then(|r| r.milestones);
            let ended = Ended {
                trace: telemetry::enabled()
                    .then(|| {
                        super::trace::finished(d, status, job, pod, milestones.unwrap_or_default())
                    })
                    .flatten(),
                report,
            };
            Ok((Action::await_change(), Some(ended)))
        }
    }
}

/// Mints the run's next dispatch token into its Secret when it is due (from a fresh
/// authorization: a grant revoked or expired meanwhile is not renewed); how long until the one
/// after is due.
async fn renew_token(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &DispatchStatus,
) -> Result<Duration, Error> {
    if ctx.base.signing_keys.is_none() {
        return Ok(LIVE_RESYNC);
    }
    let uid = d.metadata.uid.clone().ok_or(Error::Malformed)?;
    let now = unix_seconds(k8s_openapi::jiff::Timestamp::now());
    if let Some(due) = ctx.renewals.due(&uid)
        && now < due
    {
        return Ok(Duration::from_secs(due - now));
    }
    // The conditions of this check are not the run's: they are only looked at.
    let mut check = status.clone();
    let Some((resolved, auth, grant)) = admit(ctx, d, &mut check).await? else {
        let why = find(&check.conditions, ConditionType::Authorized)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default();
        tracing::warn!(dispatch = %d.name_any(), namespace = ?d.namespace(), %why, "not renewing the dispatch token: the dispatch is no longer authorized as it runs; its token lapses");
        ctx.renewals.set(&uid, now + LIVE_RESYNC.as_secs());
        return Ok(LIVE_RESYNC);
    };
    let claims = token::claims(ctx, d, &resolved, &auth, grant, now);
    if let Some(t) = token::mint(ctx, d, &claims, audit::scope(d, status)).await? {
        token::renew(ctx, d, t).await?;
        tracing::debug!(dispatch = %d.name_any(), exp = claims.exp, "renewed the dispatch token");
    }
    Ok(Duration::from_secs(
        claims.refresh_at().saturating_sub(now).max(1),
    ))
}

/// After the run: remove a Job that its TTL will not remove (suspended ones), and mark the
/// dispatch destroyed once the Job is gone. The Dispatch keeps its status.
async fn clean_up(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &mut DispatchStatus,
) -> Result<Action, Error> {
    release_all(ctx, d, status).await?;
    let ns = d.namespace().ok_or(Error::Malformed)?;
    // `destroyed` is final: the Job's absence is confirmed, not taken from the cache.
    // Only this run's own children are deleted, each with its UID as a precondition.
    match ctx
        .job(&ns, &job_name(&d.name_any()), true)
        .await?
        .filter(|job| owns(d, &job.metadata))
    {
        None => {
            // The run's credentials must not outlive it.
            let secrets = Api::<Secret>::namespaced(ctx.base.client.clone(), &ns);
            let name = vexa_policy::secret_name(&d.name_any());
            if let Some(secret) = secrets.get_opt(&name).await?
                && owns(d, &secret.metadata)
            {
                delete_exactly(&secrets, &name, secret.metadata.uid.clone()).await?;
            }
            status.phase = Some(DispatchPhase::Destroyed);
            Ok(Action::await_change())
        }
        Some(job) if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) => {
            // The cache may still hold a Job that is already gone.
            delete_exactly(
                &Api::<Job>::namespaced(ctx.base.client.clone(), &ns),
                &job.name_any(),
                job.metadata.uid.clone(),
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        Some(_) => Ok(Action::await_change()),
    }
}

/// Whether the Dispatch controls the child with `meta`.
fn owns(d: &Dispatch, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    d.metadata
        .uid
        .as_deref()
        .is_some_and(|uid| is_controlled_by(meta, uid))
}

/// Deletes the object `name` only if it is still the one with `uid` (in the background); one
/// already gone is fine.
async fn delete_exactly<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
