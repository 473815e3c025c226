//! The Dispatch's decisions, pure: whether it may run (in the policy's terms), how its run is
//! described, how its ending is recorded, and which events its transitions publish. What the
//! Job and pod say about the run is in `run_state`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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

/// The condition that refused a dispatch or holds it back: `Authorized` or else `Valid`, when
/// `False`.
fn refusal(conditions: &[Condition]) -> Option<Condition> {
    [ConditionType::Authorized, ConditionType::Valid]
        .into_iter()
        .filter_map(|t| find(conditions, t))
        .find(|c| c.status == "False")
        .cloned()
}

/// `Ready=False` for a dispatch that does not run, saying why in one place (what `kubectl
/// wait` and health checks read): `Refused` with the `Authorized` or `Valid` refusal, `Queued`
/// with what it waits for, or the `Valid` reason of a reference it waits to exist. A dispatch
/// that started sets `Ready` itself, so nothing else is touched.
pub fn ready_while_not_running(status: &mut DispatchStatus, generation: Option<i64>, t: &Time) {
    let (reason, message) = match status.phase {
        Some(DispatchPhase::Refused) => match refusal(&status.conditions) {
            Some(c) => ("Refused".to_owned(), format!("{}: {}", c.reason, c.message)),
            None => ("Refused".to_owned(), "the dispatch was refused".to_owned()),
        },
        Some(DispatchPhase::Queued) => match find(&status.conditions, ConditionType::Queued) {
            Some(c) => ("Queued".to_owned(), format!("{}: {}", c.reason, c.message)),
            None => ("Queued".to_owned(), "waiting for a workspace".to_owned()),
        },
        None | Some(DispatchPhase::Pending) => match refusal(&status.conditions) {
            Some(c) => (c.reason.clone(), c.message.clone()),
            None => return,
        },
        _ => return,
    };
    Conditions::new(&mut status.conditions, generation, t).set(
        ConditionType::Ready,
        false,
        &reason,
        &message,
    );
}

/// A stage of a run worth measuring, seen in one status transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Refused, with the refusal's reason (a fixed set: the policy's and the references').
    Refused(String),
    /// Left the queue for its workspace after this many seconds.
    Dequeued(f64),
    /// The worker runs, this many seconds after the Dispatch was created.
    Running(f64),
    /// The run ended, for this reason.
    Finished(StopReason),
}

/// The stages `old` → `new` passed, for the metrics; `created` is the Dispatch's creation.
pub fn stages(old: &DispatchStatus, new: &DispatchStatus, created: Option<&Time>) -> Vec<Stage> {
    let seconds = |from: &Time, to: &Time| {
        let d = to.0.duration_since(from.0).as_secs_f64();
        (d >= 0.0).then_some(d)
    };
    let mut out = Vec::new();
    if new.phase == old.phase {
        return out;
    }
    match new.phase {
        Some(DispatchPhase::Refused) => {
            let reason =
                refusal(&new.conditions).map_or_else(|| "Unknown".to_owned(), |c| c.reason.clone());
            out.push(Stage::Refused(reason));
        }
        Some(DispatchPhase::Stopped) => {
            if let Some(reason) = new.stop_reason {
                out.push(Stage::Finished(reason));
            }
        }
        _ => {}
    }
    if old.phase == Some(DispatchPhase::Queued)
        && matches!(
            new.phase,
            Some(DispatchPhase::Starting | DispatchPhase::Running)
        )
        && let Some(queued) = find(&old.conditions, ConditionType::Queued)
        && let Some(waited) = find(&new.conditions, ConditionType::Queued)
            .and_then(|now| seconds(&queued.last_transition_time, &now.last_transition_time))
    {
        out.push(Stage::Dequeued(waited));
    }
    if new.phase == Some(DispatchPhase::Running)
        && let (Some(created), Some(started)) = (created, new.start_time.as_ref())
        && let Some(latency) = seconds(created, started)
    {
        out.push(Stage::Running(latency));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn with(
        phase: Option<DispatchPhase>,
        conditions: &[(ConditionType, bool, &str)],
    ) -> DispatchStatus {
        let mut status = DispatchStatus {
            phase,
            ..DispatchStatus::default()
        };
        let t = at(1);
        let mut c = Conditions::new(&mut status.conditions, Some(2), &t);
        for (type_, ok, reason) in conditions {
            c.set(*type_, *ok, reason, &format!("{reason} says why"));
        }
        status
    }

    fn ready(status: &DispatchStatus) -> Option<(String, String, String)> {
        find(&status.conditions, ConditionType::Ready)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    #[test]
    fn a_refused_dispatch_is_not_ready_with_the_refusal() {
        let mut s = with(
            Some(DispatchPhase::Refused),
            &[(ConditionType::Authorized, false, "NoGrant")],
        );
        ready_while_not_running(&mut s, Some(2), &at(5));
        assert_eq!(
            ready(&s),
            Some((
                "False".into(),
                "Refused".into(),
                "NoGrant: NoGrant says why".into()
            ))
        );
        let c = find(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(c.observed_generation, Some(2));
        let mut invalid = with(
            Some(DispatchPhase::Refused),
            &[
                (ConditionType::Authorized, true, "Granted"),
                (ConditionType::Valid, false, "RunnerNotFound"),
            ],
        );
        ready_while_not_running(&mut invalid, Some(2), &at(5));
        assert_eq!(
            ready(&invalid).unwrap().2,
            "RunnerNotFound: RunnerNotFound says why"
        );
    }

    #[test]
    fn a_queued_or_waiting_dispatch_says_what_it_waits_for() {
        let mut queued = with(
            Some(DispatchPhase::Queued),
            &[(ConditionType::Queued, true, "WorkspaceBusy")],
        );
        ready_while_not_running(&mut queued, Some(2), &at(5));
        assert_eq!(ready(&queued).unwrap().1, "Queued");
        assert!(ready(&queued).unwrap().2.contains("WorkspaceBusy"));
        let mut waiting = with(None, &[(ConditionType::Valid, false, "CredentialNotFound")]);
        ready_while_not_running(&mut waiting, Some(2), &at(5));
        assert_eq!(ready(&waiting).unwrap().1, "CredentialNotFound");
    }

    #[test]
    fn each_stage_is_seen_once_in_the_transition_that_passes_it() {
        let created = at(100);
        let mut queued = with(
            Some(DispatchPhase::Queued),
            &[(ConditionType::Queued, true, "WorkspaceBusy")],
        );
        assert!(stages(&DispatchStatus::default(), &queued, Some(&created)).is_empty());
        // Dequeued 30 s later: the Queued condition turns False then.
        let mut starting = queued.clone();
        starting.phase = Some(DispatchPhase::Starting);
        Conditions::new(&mut starting.conditions, Some(2), &at(31)).set(
            ConditionType::Queued,
            false,
            "WorkspaceClaimed",
            "held",
        );
        assert_eq!(
            stages(&queued, &starting, Some(&created)),
            vec![Stage::Dequeued(30.0)]
        );
        let mut running = starting.clone();
        running.phase = Some(DispatchPhase::Running);
        running.start_time = Some(at(112));
        assert_eq!(
            stages(&starting, &running, Some(&created)),
            vec![Stage::Running(12.0)]
        );
        assert!(
            stages(&running, &running, Some(&created)).is_empty(),
            "no transition, no stage"
        );
        let mut stopped = running.clone();
        stopped.phase = Some(DispatchPhase::Stopped);
        stopped.stop_reason = Some(StopReason::IdleTimeout);
        assert_eq!(
            stages(&running, &stopped, Some(&created)),
            vec![Stage::Finished(StopReason::IdleTimeout)]
        );
        queued.phase = Some(DispatchPhase::Refused);
        Conditions::new(&mut queued.conditions, Some(2), &at(5)).set(
            ConditionType::Authorized,
            false,
            "UntrustedTriggerWrites",
            "no",
        );
        assert_eq!(
            stages(&DispatchStatus::default(), &queued, Some(&created)),
            vec![Stage::Refused("UntrustedTriggerWrites".into())]
        );
    }

    #[test]
    fn a_started_or_finished_run_keeps_its_own_ready() {
        for phase in [
            DispatchPhase::Running,
            DispatchPhase::Stopped,
            DispatchPhase::Starting,
        ] {
            let mut s = with(Some(phase), &[(ConditionType::Ready, true, "Running")]);
            let before = s.clone();
            ready_while_not_running(&mut s, Some(2), &at(5));
            assert_eq!(s, before, "{phase:?}");
        }
        let mut fresh = with(None, &[]);
        ready_while_not_running(&mut fresh, Some(2), &at(5));
        assert_eq!(ready(&fresh), None);
    }
}
