//! The Dispatch's decisions, pure: whether it may run (in the policy's terms), how its run is
//! described, how its ending is recorded, and which events its transitions publish. What the
//! Job and pod say about the run is in `run_state`.

use kube::ResourceExt;
use vexa_crds::Identity;
use vexa_crds::{
    Dispatch, DispatchPhase, DispatchSpec, DispatchStatus, StopReason, StreamKeys, WorkspaceMode,
    WorkspaceProvenance,
};
use vexa_policy::{
    Authorization, DispatchRequest, GrantFacts, IdentityFacts, OwnedWorkspace, Refusal, ToolFacts,
    WantedWorkspace, WorkspaceFacts, dispatch_id, in_topic, out_topic, session_file,
    thread_or_default,
};

use super::children::MountedWorkspace;
use super::observe::Resolved;
use super::run_state::RunState;
use crate::runtime::conditions::{ConditionType, Conditions, find, now};
use crate::runtime::events::Note;

/// What the policy needs of a Dispatch's spec.
pub fn request(spec: &DispatchSpec) -> DispatchRequest {
    DispatchRequest {
        subject: spec.identity.subject.clone(),
        launcher: spec.identity.launcher.clone(),
        trigger: spec.trigger,
        workspaces: spec
            .workspaces
            .iter()
            .map(|w| WantedWorkspace {
                name: w.name.clone(),
                mode: w.mode,
            })
            .collect(),
        tools: spec.tools.clone(),
    }
}

/// [`vexa_policy::authorize`] for a Dispatch's spec.
pub fn authorize(
    spec: &DispatchSpec,
    workspaces: &[WorkspaceFacts],
    tools: &[ToolFacts],
) -> Result<Authorization, Refusal> {
    vexa_policy::authorize(&request(spec), workspaces, tools)
}

/// What the policy needs of an Identity (times as Unix seconds).
pub fn identity_facts(i: &Identity) -> IdentityFacts {
    IdentityFacts {
        subject: i.spec.subject.clone(),
        kubernetes_users: i.spec.kubernetes_users.clone(),
        grants: i
            .spec
            .grants
            .iter()
            .map(|g| GrantFacts {
                name: g.name.clone(),
                launcher: g.launcher.clone(),
                workspaces: g
                    .workspaces
                    .iter()
                    .map(|w| (w.name.clone(), w.mode))
                    .collect(),
                tools: g.tools.clone(),
                expires: g.expires.as_ref().map(|t| unix_seconds(t.0)),
                max_token_lifetime: g
                    .max_token_lifetime_seconds
                    .map(|s| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))),
            })
            .collect(),
    }
}

/// A time as the policy takes it: Unix seconds (0 for any time before 1970).
pub fn unix_seconds(t: k8s_openapi::jiff::Timestamp) -> u64 {
    u64::try_from(t.as_second()).unwrap_or(0)
}

/// The run's workspaces with their owners and granted modes, for the custody check.
pub fn owned_workspaces(resolved: &Resolved, auth: &Authorization) -> Vec<OwnedWorkspace> {
    resolved
        .workspaces
        .iter()
        .zip(&auth.modes)
        .map(|(w, (_, mode))| OwnedWorkspace {
            name: w.name_any(),
            owner: w.spec.owner.clone(),
            mode: *mode,
        })
        .collect()
}

/// Whether the custody check needs the namespace's Identities: someone acts for another
/// subject, a schedule or integration launches, or a workspace belongs to someone else.
pub fn needs_identities(request: &DispatchRequest, owned: &[OwnedWorkspace]) -> bool {
    request.launcher != format!("{}{}", vexa_policy::USER_LAUNCHER, request.subject)
        || owned.iter().any(|w| w.owner != request.subject)
}

/// The run's trust, streams, session and provenance skeleton, fixed once authorized.
pub fn describe_run(
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
    let thread = thread_or_default(d.spec.context.as_ref().and_then(|c| c.session.as_deref()));
    status.session_ref = Some(match &d.spec.start.session {
        Some(s) => s.reference.clone(),
        None => session_file(&resolved.runner.spec.session_path, thread),
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

/// The workspaces a run mounts, with the modes it was granted.
pub fn mounted(resolved: &Resolved, auth: &Authorization) -> Vec<MountedWorkspace> {
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

/// Records the end of a run in the status, with the commits the worker reports for each rw
/// workspace of the run.
pub fn finish(status: &mut DispatchStatus, d: &Dispatch, state: RunState) {
    let RunState::Finished {
        reason,
        exit_code,
        started,
        finished,
        message,
        provenance,
        usage,
    } = state
    else {
        return;
    };
    if usage.is_some() {
        status.usage = usage;
    }
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

/// Events for what a person would want to see in `kubectl describe`: only on transitions.
pub fn transitions(old: &DispatchStatus, new: &DispatchStatus) -> Vec<Note> {
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
