//! The Dispatch reconcile: a thin driver over the steps read → validate → build → apply →
//! status. Pure decisions live in `build`, `status` and the `vexa-policy` crate.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;
use vexa_crds::{
    Dispatch, DispatchPhase, DispatchStatus, StopReason, StreamKeys, Workspace, WorkspaceMode,
    WorkspaceProvenance,
};
use vexa_policy::{Authorization, dispatch_id, in_topic, job_name, out_topic, session_file};

use super::Reconciler;
use super::build::{self, BuildSettings, DISPATCH_LABEL, Inputs, MountedWorkspace};
use super::claim::{self, Claim, is_finished};
use super::error::Error;
use super::resolve::{self, Resolved, authorize};
use super::status::{RunState, observe};
use crate::FIELD_MANAGER;
use crate::runtime::conditions::{ConditionType, Conditions, find, is_true};
use crate::runtime::events::{self, Note};

/// A queued dispatch is woken by its Workspace's change (ready, or released); this is only
/// the safety net should a wake-up be missed.
const QUEUE_SAFETY_NET: Duration = Duration::from_secs(30);
/// How often a dispatch whose references are missing looks again.
const MISSING_POLL: Duration = Duration::from_secs(15);
/// A safety net for live runs; watches on the Job and pod drive the real updates.
const LIVE_RESYNC: Duration = Duration::from_secs(60);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Reconciles one Dispatch.
pub async fn reconcile(d: Arc<Dispatch>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.dispatch.reconcile_started();
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let name = d.name_any();
    let old = d.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = d.metadata.generation;

    let action = match old.phase {
        Some(DispatchPhase::Refused | DispatchPhase::Destroyed) => Action::await_change(),
        Some(DispatchPhase::Stopped) => clean_up(&ctx, &d, &mut status).await?,
        // A Job the cache has not seen yet is created again only when the run has not been
        // recorded as started: applying the Job is idempotent. Ending the run (the Job
        // vanished, or a stop before the start) waits for the API server to confirm.
        _ => match ctx
            .job(
                &ns,
                &job_name(&name),
                old.job_name.is_some() || d.spec.stop == Some(true),
            )
            .await?
        {
            None if old.job_name.is_some() => {
                // The Job vanished while the run was live (deleted by hand, or its namespace is
                // going away): the run is over.
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
                        message: "the Job was deleted before the run ended".into(),
                        provenance: Vec::new(),
                    },
                );
                release_all(&ctx, &d, &status).await?;
                Action::await_change()
            }
            None => start(&ctx, &d, &mut status).await?,
            Some(job) => track_run(&ctx, &d, &job, &mut status).await?,
        },
    };
    // Events are for people and never fail a reconcile; they go out beside the status write.
    let notes = events::publish(&ctx.recorder, d.as_ref(), transitions(&old, &status));
    if status != old {
        let (_, written) = tokio::join!(notes, write_status(&ctx, &d, &status));
        written?;
    } else {
        notes.await;
    }
    ctx.backoff.reset(&d);
    Ok(action)
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
            },
        );
        release_all(ctx, d, status).await?;
        return Ok(Action::await_change());
    }

    let Some((resolved, auth)) = admit(ctx, d, status).await? else {
        return Ok(if status.phase == Some(DispatchPhase::Refused) {
            Action::await_change()
        } else {
            Action::requeue(MISSING_POLL)
        });
    };

    // Read the credential before claiming, so a missing Secret never holds a workspace.
    let model_credential =
        match resolve::model_credential(client, &resolved.runner, &ctx.base.config.namespace).await
        {
            Ok(c) => c,
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
        };

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
    let mut conditions = Conditions::new(&mut status.conditions, generation, &t);
    if conditions.has(ConditionType::Queued) {
        conditions.set(
            ConditionType::Queued,
            false,
            "WorkspaceClaimed",
            "every workspace is ready and every rw one is held by this dispatch",
        );
    }

    let settings = ctx.build_settings();
    let inputs = Inputs {
        dispatch: d,
        runner: &resolved.runner.spec,
        workspaces: mounted(&resolved, &auth),
        authorization: &auth,
        model_credential,
        settings: &settings,
    };
    // The Secret and the Job at once: the pod waits for the Secret's key if it comes second.
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let secret = build::secret(&inputs);
    let job = build::job(&inputs);
    let job_name = job.name_any();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let (secret_name, secret_patch, job_patch) =
        (secret.name_any(), Patch::Apply(&secret), Patch::Apply(&job));
    tokio::try_join!(
        secrets.patch(&secret_name, &pp, &secret_patch),
        jobs.patch(&job_name, &pp, &job_patch),
    )?;

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
) -> Result<Option<(Resolved, Authorization)>, Error> {
    let generation = d.metadata.generation;
    let t = now();
    let resolved = match resolve::resolve(&ctx.base.client, &ctx.references, d).await {
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
    match authorize(&d.spec, &resolved.workspace_facts(), &resolved.tool_facts()) {
        Ok(auth) => {
            Conditions::new(&mut status.conditions, generation, &t).set(
                ConditionType::Authorized,
                true,
                "Authorized",
                "the dispatch may run as specified",
            );
            describe_run(d, &resolved, &auth, status);
            Ok(Some((resolved, auth)))
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

/// The run's trust, streams, session and provenance skeleton, fixed once authorized.
fn describe_run(
    d: &Dispatch,
    resolved: &Resolved,
    auth: &Authorization,
    status: &mut DispatchStatus,
) {
    let id = dispatch_id(
        d.metadata.namespace.as_deref().unwrap_or_default(),
        &d.name_any(),
    );
    status.trust = Some(auth.trust);
    status.streams = Some(StreamKeys {
        out: out_topic(&id),
        input: in_topic(&id),
    });
    let thread = d
        .spec
        .context
        .as_ref()
        .and_then(|c| c.session.clone())
        .unwrap_or_else(|| "main".into());
    status.session_ref = Some(match &d.spec.start.session {
        Some(s) => s.reference.clone(),
        None => session_file(&resolved.runner.spec.session_path, &thread),
    });
    if status.provenance.is_empty() {
        status.provenance = auth
            .modes
            .iter()
            .map(|(w, m)| WorkspaceProvenance {
                workspace: w.clone(),
                mode: *m,
                base_commit: None,
                result_commit: None,
            })
            .collect();
    }
}

fn mounted(resolved: &Resolved, auth: &Authorization) -> Vec<MountedWorkspace> {
    resolved
        .workspaces
        .iter()
        .zip(&auth.modes)
        .map(|(w, (_, mode))| MountedWorkspace {
            name: w.name_any(),
            spec: w.spec.clone(),
            mode: *mode,
        })
        .collect()
}

/// While the Job exists: follow its pod, honour a stop request, record the ending.
async fn track_run(
    ctx: &Reconciler,
    d: &Dispatch,
    job: &Job,
    status: &mut DispatchStatus,
) -> Result<Action, Error> {
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
    let pods = ctx.pods(&ns, &job.name_any()).await?;
    let pod = pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .map(AsRef::as_ref);
    status.job_name = Some(job.name_any());
    if let Some(p) = pod {
        status.pod_name = Some(p.name_any());
    }
    let state = observe(job, pod, stop);
    let generation = d.metadata.generation;
    let t = now();
    match &state {
        RunState::Starting => {
            status.phase = Some(DispatchPhase::Starting);
            Ok(Action::requeue(LIVE_RESYNC))
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
            Ok(Action::requeue(LIVE_RESYNC))
        }
        RunState::Finished { reason, .. } => {
            if *reason == StopReason::StartFailed && !suspended {
                // Stop the Job from retrying a pod that cannot start.
                suspend(client, &ns, &job.name_any()).await?;
            }
            // The ending first: its provenance is the head commit the lock keeps.
            finish(status, d, state);
            release_all(ctx, d, status).await?;
            Ok(Action::await_change())
        }
    }
}

/// Records the end of a run in the status, with the commits the worker reports for each rw
/// workspace of the run.
fn finish(status: &mut DispatchStatus, d: &Dispatch, state: RunState) {
    let RunState::Finished {
        reason,
        exit_code,
        started,
        finished,
        message,
        provenance,
    } = state
    else {
        return;
    };
    let generation = d.metadata.generation;
    let t = now();
    status.phase = Some(DispatchPhase::Stopped);
    status.stop_reason = Some(reason);
    status.exit_code = exit_code;
    if status.start_time.is_none() {
        status.start_time = started;
    }
    status.stop_time = Some(finished.unwrap_or_else(|| t.clone()));
    // Only workspaces the run was authorized to write: the report cannot add any.
    for range in provenance {
        if let Some(p) = status
            .provenance
            .iter_mut()
            .find(|p| p.workspace == range.workspace && p.mode == WorkspaceMode::ReadWrite)
        {
            p.base_commit = range.base;
            p.result_commit = range.result;
        }
    }
    let reason_text = reason.as_str();
    let message = if message.is_empty() {
        format!("the run ended: {reason_text}")
    } else {
        message
    };
    Conditions::new(&mut status.conditions, generation, &t).set(
        ConditionType::Ready,
        false,
        "Finished",
        &message,
    );
    Conditions::new(&mut status.conditions, generation, &t).set(
        ConditionType::Finished,
        true,
        if reason.is_success() {
            "Succeeded"
        } else {
            "Failed"
        },
        &format!("{reason_text}: {message}"),
    );
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
    match ctx.job(&ns, &job_name(&d.name_any()), true).await? {
        None => {
            // The run's credentials must not outlive it.
            let secrets = Api::<Secret>::namespaced(ctx.base.client.clone(), &ns);
            match secrets
                .delete(
                    &vexa_policy::secret_name(&d.name_any()),
                    &DeleteParams::background(),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            status.phase = Some(DispatchPhase::Destroyed);
            Ok(Action::await_change())
        }
        Some(job) if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) => {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            // The cache may still hold a Job that is already gone.
            match Api::<Job>::namespaced(ctx.base.client.clone(), &ns)
                .delete(&job.name_any(), &dp)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        Some(_) => Ok(Action::await_change()),
    }
}

async fn suspend(client: &kube::Client, ns: &str, job: &str) -> Result<(), Error> {
    // A merge patch from a second manager: the Job's apply owner keeps every other field.
    // Not `.force()`: force exists only for server-side apply, and kube refuses to send a
    // merge patch that carries it.
    let patch = json!({"spec": {"suspend": true}});
    Api::<Job>::namespaced(client.clone(), ns)
        .patch(
            job,
            &PatchParams::apply("vexa-operator-stop"),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn release_all(ctx: &Reconciler, d: &Dispatch, status: &DispatchStatus) -> Result<(), Error> {
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let api = Api::<Workspace>::namespaced(ctx.base.client.clone(), &ns);
    for w in &d.spec.workspaces {
        if w.mode == Some(WorkspaceMode::ReadOnly) {
            continue;
        }
        // A workspace deleted meanwhile leaves a stale lock, which the next claimant takes over.
        let Some(workspace) = ctx
            .references
            .workspaces
            .get_or_fetch(&api, Some(&ns), &w.name)
            .await?
        else {
            continue;
        };
        let head = status
            .provenance
            .iter()
            .find(|p| p.workspace == w.name)
            .and_then(|p| p.result_commit.as_deref());
        claim::release(&ctx.base.client, d, &workspace, head).await?;
    }
    Ok(())
}

async fn write_status(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &DispatchStatus,
) -> Result<(), Error> {
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let body = json!({
        "apiVersion": Dispatch::api_version(&()),
        "kind": Dispatch::kind(&()),
        "status": status,
    });
    Api::<Dispatch>::namespaced(ctx.base.client.clone(), &ns)
        .patch_status(
            &d.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

/// Events for what a person would want to see in `kubectl describe`: only on transitions.
fn transitions(old: &DispatchStatus, new: &DispatchStatus) -> Vec<Note> {
    let cond = |s: &DispatchStatus, t: ConditionType| {
        find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let mut notes = Vec::new();
    for (t, action) in [
        (ConditionType::Valid, "Validate"),
        (ConditionType::Authorized, "Authorize"),
    ] {
        let before = cond(old, t).map(|(s, r, _)| (s, r));
        if let Some((status, reason, message)) = cond(new, t)
            && status == "False"
            && before != Some((status, reason.clone()))
        {
            notes.push(Note::warning(reason, Some(message), action));
        }
    }
    if new.phase != old.phase {
        match new.phase {
            Some(DispatchPhase::Queued) => {
                notes.push(Note::normal("Queued", cond_msg(new, "Queued"), "Schedule"))
            }
            Some(DispatchPhase::Starting) if old.job_name.is_none() => notes.push(Note::normal(
                "JobCreated",
                new.job_name.as_ref().map(|j| format!("created Job {j}")),
                "Create",
            )),
            Some(DispatchPhase::Stopped) => {
                let message = cond_msg(new, "Finished");
                notes.push(if new.stop_reason.is_some_and(StopReason::is_success) {
                    Note::normal("Stopped", message, "Finish")
                } else {
                    Note::warning("Stopped", message, "Finish")
                })
            }
            _ => {}
        }
    }
    notes
}

fn cond_msg(s: &DispatchStatus, t: &str) -> Option<String> {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.message.clone())
}

/// Whether a dispatch has finished (used by metrics and the queue).
pub fn finished(d: &Dispatch) -> bool {
    is_finished(d.status.as_ref().and_then(|s| s.phase))
}

impl Reconciler {
    /// The Job `name` in `ns`: from the cache once it has synced. `confirm_absence`: a Job
    /// missing from the cache is looked up on the API server, for decisions an absence must
    /// not get wrong.
    async fn job(
        &self,
        ns: &str,
        name: &str,
        confirm_absence: bool,
    ) -> Result<Option<Arc<Job>>, Error> {
        if let Some(store) = self.jobs.store() {
            if let Some(job) = store.get(&ObjectRef::new(name).within(ns)) {
                return Ok(Some(job));
            }
            if !confirm_absence {
                return Ok(None);
            }
        }
        let job = Api::<Job>::namespaced(self.base.client.clone(), ns)
            .get_opt(name)
            .await?;
        Ok(job.map(Arc::new))
    }

    /// The pods of the Job `job` in `ns`: from the cache once it has synced.
    async fn pods(&self, ns: &str, job: &str) -> Result<Vec<Arc<Pod>>, Error> {
        if let Some(store) = self.pods.store() {
            return Ok(store.state_filter(|p| {
                p.metadata.namespace.as_deref() == Some(ns)
                    && p.labels().get(DISPATCH_LABEL).map(String::as_str) == Some(job)
            }));
        }
        let pods = Api::<Pod>::namespaced(self.base.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("{DISPATCH_LABEL}={job}")))
            .await?;
        Ok(pods.items.into_iter().map(Arc::new).collect())
    }

    fn build_settings(&self) -> BuildSettings {
        let c = &self.base.config;
        BuildSettings {
            redis_url: c.redis_url.clone(),
            job_ttl_seconds: c.job_ttl_seconds,
            default_max_lifetime_seconds: c.default_max_lifetime_seconds,
            default_idle_timeout_seconds: c.default_idle_timeout_seconds,
            default_resources: build::resources(
                &c.default_cpu_request,
                &c.default_memory_request,
                &c.default_memory_limit,
            ),
        }
    }
}
