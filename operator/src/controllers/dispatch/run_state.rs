//! Pure derivation of a run's lifecycle from its Job and pod (including the worker's
//! termination message, `vexa_core::termination`), and condition bookkeeping.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vexa_core::{CommitRange, ModelUsage, Termination};
use vexa_crds::{DispatchPhase, StopReason};

use super::children::{AGENT_CONTAINER, WORKER_CONTAINER};

/// Termination reasons of a container whose process never started (the runtime could not
/// create or exec it): containerd says `StartError`, dockershim said `ContainerCannotRun`.
const START_ERRORS: &[&str] = &["StartError", "ContainerCannotRun"];

/// Container waiting reasons after which a pod will not start on its own.
const START_FAILURES: &[&str] = &[
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What the Job and pod say about the run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// The pod is being scheduled or its containers are starting.
    Starting,
    /// The agent container runs.
    Running {
        /// When it started.
        started: Option<Time>,
    },
    /// A stop was asked for; the pod is going away.
    Stopping {
        /// When it started, if it did.
        started: Option<Time>,
    },
    /// The run is over.
    Finished {
        /// Why.
        reason: StopReason,
        /// The worker's exit code, when it exited.
        exit_code: Option<i32>,
        /// When it started, if it did.
        started: Option<Time>,
        /// When it ended, if known.
        finished: Option<Time>,
        /// Detail for a person.
        message: String,
        /// What the worker reports it did to git, per rw workspace.
        provenance: Vec<CommitRange>,
        /// The model tokens the worker counted, if the run brokered a credential.
        usage: Option<ModelUsage>,
    },
}

impl RunState {
    /// The Dispatch phase for this state.
    pub fn phase(&self) -> DispatchPhase {
        match self {
            RunState::Starting => DispatchPhase::Starting,
            RunState::Running { .. } => DispatchPhase::Running,
            RunState::Stopping { .. } => DispatchPhase::Stopping,
            RunState::Finished { .. } => DispatchPhase::Stopped,
        }
    }
}

/// The reason the Job controller gives a Job past its `activeDeadlineSeconds`.
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// A container's status, among the pod's init containers (the worker is a native sidecar)
/// or its regular ones (the agent; and the worker of a pod an older operator made).
fn container_status<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    [&status.init_container_statuses, &status.container_statuses]
        .into_iter()
        .flatten()
        .flatten()
        .find(|c| c.name == name)
}

/// A worker the kubelet restarted (it crashed, was killed, or never became ready): the run
/// failed, whatever the new worker or the agent container report afterwards. The restarted
/// worker refuses to run the dispatch again; this is the operator's own account of it.
fn restarted_worker(worker: &k8s_openapi::api::core::v1::ContainerStatus) -> Option<RunState> {
    if worker.restart_count == 0 {
        return None;
    }
    let last = worker
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let report = Termination::parse(last.and_then(|t| t.message.as_deref()).unwrap_or_default());
    let oom = last.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let how = match last {
        Some(t) => format!(
            "after it ended with code {}{}",
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        None => "after it ended".into(),
    };
    Some(RunState::Finished {
        reason: if oom {
            StopReason::Oom
        } else {
            StopReason::Failed
        },
        exit_code: last.map(|t| t.exit_code),
        started: last.and_then(|t| t.started_at.clone()),
        finished: last.and_then(|t| t.finished_at.clone()),
        message: format!(
            "the worker container was restarted {how}{}; a dispatch never runs twice, so the run failed (kubectl logs --previous -c worker shows why)",
            if oom {
                ": it ran out of memory, raise the operator's worker memory limit"
            } else {
                ""
            }
        ),
        provenance: report.provenance,
        usage: report.usage,
    })
}

/// The worker's termination message, if it wrote one (its current container's).
pub fn worker_report(pod: &Pod) -> Option<Termination> {
    let message = terminated_state(container_status(pod, WORKER_CONTAINER))?
        .message
        .as_deref()?;
    Some(Termination::parse(message))
}

fn terminated_state(
    c: Option<&k8s_openapi::api::core::v1::ContainerStatus>,
) -> Option<&ContainerStateTerminated> {
    c?.state.as_ref()?.terminated.as_ref()
}

fn from_termination(
    t: &ContainerStateTerminated,
    stop_requested: bool,
    started: Option<Time>,
) -> RunState {
    // The worker's report, or plain text (an older worker, or the log tail Kubernetes falls
    // back to when the worker wrote nothing).
    let report = Termination::parse(t.message.as_deref().unwrap_or_default());
    let message = report.message.unwrap_or_default();
    let never_started = START_ERRORS.contains(&t.reason.as_deref().unwrap_or_default());
    let reason = if t.reason.as_deref() == Some("OOMKilled") {
        StopReason::Oom
    } else if never_started {
        StopReason::StartFailed
    } else if stop_requested {
        StopReason::Stopped
    } else if t.exit_code == 0 {
        // A clean exit is completed unless the worker says it went idle or was stopped.
        match report.reason {
            Some(r @ (StopReason::IdleTimeout | StopReason::Stopped)) => r,
            _ => StopReason::Completed,
        }
    } else {
        StopReason::Failed
    };
    let detail = match reason {
        StopReason::Failed => {
            let last = message.lines().last().unwrap_or_default();
            format!(
                "the agent worker exited with code {}{}",
                t.exit_code,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            )
        }
        StopReason::Oom => OOM_MESSAGE.into(),
        StopReason::StartFailed => format!(
            "the agent container could not start (check the runner's image): {}",
            message.trim()
        ),
        _ => message.trim().to_owned(),
    };
    // A container that never started reports the Unix epoch as its start.
    let started = if never_started {
        None
    } else {
        t.started_at.clone().or(started)
    };
    RunState::Finished {
        reason,
        exit_code: Some(t.exit_code),
        started,
        finished: t.finished_at.clone(),
        message: detail,
        provenance: report.provenance,
        usage: report.usage,
    }
}

/// The message of a run whose agent ran out of memory.
const OOM_MESSAGE: &str = "the agent container ran out of memory: raise the runner's memory limit";

/// The run's state once its worker container has terminated.
fn ending_of(
    t: &ContainerStateTerminated,
    pod: Option<&Pod>,
    job: &Job,
    stop_requested: bool,
    started: Option<Time>,
) -> RunState {
    // A pod being deleted whose worker died of a signal was killed from outside (the Job's
    // deadline, an eviction); until the Job says why, the run is only stopping.
    let killed_from_outside = t.exit_code > 128
        && !stop_requested
        && t.reason.as_deref() != Some("OOMKilled")
        && pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
        && job_condition(job, "Failed").is_none();
    if killed_from_outside {
        return RunState::Stopping { started };
    }
    // Otherwise the container's own ending is the most precise account.
    from_termination(t, stop_requested, started)
}

/// Reads the run's state from its Job and (if it still exists) its pod.
///
/// The pod has two containers. The trusted `worker` (a native sidecar) says how the run ended
/// (its exit and termination message, provenance included); the `agent` container's own
/// message is never read, since the agent could write anything there. From the agent
/// container only what the kubelet vouches for counts: that it ran out of memory, or could
/// not start. Nor does the Job's verdict count for success: the Job completes when the agent
/// container exits 0, which the agent can do on its own.
pub fn run_state(job: &Job, pod: Option<&Pod>, stop_requested: bool) -> RunState {
    let worker = pod.and_then(|p| container_status(p, WORKER_CONTAINER));
    let agent = pod.and_then(|p| container_status(p, AGENT_CONTAINER));
    if let Some(state) = worker.and_then(restarted_worker) {
        return state;
    }
    let running_since = |c: Option<&k8s_openapi::api::core::v1::ContainerStatus>| {
        c.and_then(|c| c.state.as_ref())
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone())
    };
    let worker_running = running_since(worker).is_some();
    // The agent's start: it runs, or it has run and ended (the worker then wraps up).
    let agent_started = running_since(agent).or_else(|| {
        terminated_state(agent)
            .filter(|t| !START_ERRORS.contains(&t.reason.as_deref().unwrap_or_default()))
            .and_then(|t| t.started_at.clone())
    });
    // Running means both sides run (or the agent has ended and the worker is finishing); the
    // agent's start is the later one, as the sidecar starts first.
    let started = agent_started.clone().filter(|_| worker_running);
    let agent_oom =
        terminated_state(agent).is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let agent_never_started = terminated_state(agent)
        .filter(|t| START_ERRORS.contains(&t.reason.as_deref().unwrap_or_default()));
    let terminated = terminated_state(worker);
    // The Job controller marks a deadline (FailureTarget, then Failed) before it kills the pod,
    // so the container's non-zero exit that follows is the deadline's doing, not the agent's.
    if let Some(c) = job_condition(job, "FailureTarget")
        .or_else(|| job_condition(job, "Failed"))
        .filter(|c| c.reason.as_deref() == Some(DEADLINE_EXCEEDED))
    {
        let report = Termination::parse(
            terminated
                .and_then(|t| t.message.as_deref())
                .unwrap_or_default(),
        );
        return RunState::Finished {
            reason: if stop_requested {
                StopReason::Stopped
            } else {
                StopReason::MaxLifetime
            },
            exit_code: terminated.map(|t| t.exit_code),
            started: terminated.and_then(|t| t.started_at.clone()).or(started),
            finished: terminated
                .and_then(|t| t.finished_at.clone())
                .or_else(|| c.last_transition_time.clone()),
            message: "the run reached its maximum lifetime".into(),
            // The worker got SIGTERM and reported what it had committed and used.
            provenance: report.provenance,
            usage: report.usage,
        };
    }
    if let Some(t) = terminated {
        let mut state = ending_of(t, pod, job, stop_requested, started.clone());
        if let RunState::Finished {
            reason, message, ..
        } = &mut state
        {
            if agent_oom && *reason != StopReason::Stopped {
                *reason = StopReason::Oom;
                *message = OOM_MESSAGE.into();
            } else if let Some(a) = agent_never_started {
                *reason = StopReason::StartFailed;
                *message = format!(
                    "the agent container could not start (check the runner's image and that it carries vexa-agent-shim): {}",
                    a.message.as_deref().unwrap_or_default().trim()
                );
            }
        }
        return state;
    }
    if let Some(a) = agent_never_started {
        return RunState::Finished {
            reason: StopReason::StartFailed,
            exit_code: None,
            started: None,
            finished: a.finished_at.clone(),
            message: format!(
                "the agent container could not start (check the runner's image and that it carries vexa-agent-shim): {}",
                a.message.as_deref().unwrap_or_default().trim()
            ),
            provenance: Vec::new(),
            usage: None,
        };
    }
    // The Job's verdict (the agent container's exit) comes while the kubelet still stops the
    // worker: wait for the worker's own report.
    let verdict = job_condition(job, "Failed").or_else(|| job_condition(job, "Complete"));
    if verdict.is_some() && worker_running && !stop_requested {
        return RunState::Running { started };
    }
    if let Some(c) = job_condition(job, "Failed") {
        let (reason, message) = if stop_requested {
            (StopReason::Stopped, String::new())
        } else {
            (
                StopReason::Failed,
                c.message.clone().unwrap_or_else(|| "the Job failed".into()),
            )
        };
        return RunState::Finished {
            reason,
            exit_code: None,
            started,
            finished: c.last_transition_time.clone(),
            message,
            provenance: Vec::new(),
            usage: None,
        };
    }
    if let Some(c) = job_condition(job, "Complete") {
        // Only the worker vouches for a success; with its report gone (the pod was deleted
        // before the operator read it) the run cannot count as completed.
        let (reason, message) = if stop_requested {
            (StopReason::Stopped, String::new())
        } else {
            (
                StopReason::Failed,
                "the Job completed but the worker's report is gone (its pod was deleted before the operator read it); the run cannot count as completed".into(),
            )
        };
        return RunState::Finished {
            reason,
            exit_code: None,
            started,
            finished: c.last_transition_time.clone(),
            message,
            provenance: Vec::new(),
            usage: None,
        };
    }
    let start_failure = [(worker, WORKER_CONTAINER), (agent, AGENT_CONTAINER)]
        .into_iter()
        .find_map(|(c, name)| {
            let waiting = c?.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            START_FAILURES
                .contains(&reason)
                .then_some((name, reason, waiting))
        });
    if let Some((name, reason, waiting)) = start_failure {
        return RunState::Finished {
            reason: StopReason::StartFailed,
            exit_code: None,
            started: None,
            finished: None,
            message: format!(
                "the {name} container cannot start: {reason}: {}",
                waiting.message.clone().unwrap_or_default()
            ),
            provenance: Vec::new(),
            usage: None,
        };
    }
    if stop_requested {
        let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
        let pod_alive = pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none() || active > 0);
        if !pod_alive && active == 0 {
            return RunState::Finished {
                reason: StopReason::Stopped,
                exit_code: None,
                started,
                finished: None,
                message: "stopped on request".into(),
                provenance: Vec::new(),
                usage: None,
            };
        }
        return RunState::Stopping { started };
    }
    if started.is_some() {
        return RunState::Running { started };
    }
    RunState::Starting
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use rstest::rstest;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    /// A pod whose worker (the native sidecar) and agent containers are in the given states.
    fn pod_of(worker: ContainerState, agent: ContainerState) -> Pod {
        let status = |name: &str, state| ContainerStatus {
            name: name.into(),
            state: Some(state),
            ..Default::default()
        };
        Pod {
            status: Some(PodStatus {
                init_container_statuses: Some(vec![status(WORKER_CONTAINER, worker)]),
                container_statuses: Some(vec![status(AGENT_CONTAINER, agent)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn worker_mut(p: &mut Pod) -> &mut ContainerStatus {
        &mut p
            .status
            .as_mut()
            .unwrap()
            .init_container_statuses
            .as_mut()
            .unwrap()[0]
    }

    #[test]
    fn a_worker_from_a_pod_made_before_the_sidecar_is_still_read() {
        let mut p = pod_of(
            ended(0, "Completed", r#"{"reason":"idle_timeout"}"#),
            ended(0, "Completed", ""),
        );
        let status = p.status.as_mut().unwrap();
        let worker = status.init_container_statuses.take().unwrap();
        status.container_statuses.as_mut().unwrap().extend(worker);
        assert_eq!(
            reason(&run_state(&job_with(None, 0), Some(&p), false)),
            Some(StopReason::IdleTimeout)
        );
    }

    /// The agent container can exit 0 on its own (kill its shim, or exit before the worker
    /// asks): the Job completes, but only the worker vouches for the run.
    #[test]
    fn the_agent_exiting_0_is_not_a_completed_run() {
        let complete = job_with(Some(("Complete", "CompletionsReached")), 0);
        // The worker is still being stopped: wait for its report.
        let p = pod_of(
            running(),
            ended(0, "Completed", r#"{"reason":"idle_timeout"}"#),
        );
        assert!(
            matches!(
                run_state(&complete, Some(&p), false),
                RunState::Running { started: Some(_) }
            ),
            "{:?}",
            run_state(&complete, Some(&p), false)
        );
        // The worker was stopped mid-run by the kubelet (SIGTERM, as the agent ended).
        let p = pod_of(
            ended(143, "Error", r#"{"message":"terminated: SIGTERM"}"#),
            ended(0, "Completed", ""),
        );
        assert_eq!(
            reason(&run_state(&complete, Some(&p), false)),
            Some(StopReason::Failed)
        );
        // The pod is gone and with it the worker's report.
        assert_eq!(
            reason(&run_state(&complete, None, false)),
            Some(StopReason::Failed)
        );
        assert_eq!(
            reason(&run_state(&complete, None, true)),
            Some(StopReason::Stopped)
        );
    }

    #[rstest]
    #[case::crashed(1, "Error", StopReason::Failed)]
    #[case::out_of_memory(137, "OOMKilled", StopReason::Oom)]
    #[case::never_ready(137, "Error", StopReason::Failed)]
    fn a_restarted_worker_fails_the_run_whatever_comes_after(
        #[case] code: i32,
        #[case] why: &str,
        #[case] expected: StopReason,
    ) {
        // The new worker runs and the agent exits 0; or both report success afterwards.
        for (worker_now, agent_now) in [
            (running(), ended(0, "Completed", "")),
            (
                ended(0, "Completed", r#"{"reason":"idle_timeout"}"#),
                ended(0, "Completed", ""),
            ),
        ] {
            let mut p = pod_of(worker_now, agent_now);
            let w = worker_mut(&mut p);
            w.restart_count = 1;
            w.last_state = Some(ended(code, why, ""));
            let state = run_state(
                &job_with(Some(("Complete", "CompletionsReached")), 0),
                Some(&p),
                false,
            );
            assert_eq!(reason(&state), Some(expected), "{state:?}");
            let RunState::Finished { message, .. } = state else {
                unreachable!()
            };
            assert!(message.contains("never runs twice"), "{message}");
            assert!(message.contains(&format!("code {code}")), "{message}");
        }
    }

    #[test]
    fn the_agent_having_ended_while_the_worker_reports_is_not_starting_again() {
        let p = pod_of(running(), ended(3, "Error", ""));
        assert!(matches!(
            run_state(&job_with(None, 1), Some(&p), false),
            RunState::Running { started: Some(_) }
        ));
    }

    /// A pod whose two containers are both in `state`.
    fn pod(state: ContainerState) -> Pod {
        pod_of(state.clone(), state)
    }

    fn ended(code: i32, reason: &str, message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                message: Some(message.into()),
                started_at: Some(t(1)),
                finished_at: Some(t(9)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(t(1)),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_workers_message_counts_a_forged_one_from_the_agent_is_ignored() {
        let forged = r#"{"reason":"completed","provenance":[{"workspace":"ws","base":"a","result":"f0f0"}]}"#;
        let state = run_state(
            &job_with(None, 0),
            Some(&pod_of(
                ended(1, "Error", r#"{"reason":"failed","message":"boom"}"#),
                ended(0, "Completed", forged),
            )),
            false,
        );
        assert_eq!(reason(&state), Some(StopReason::Failed));
        assert!(provenance(&state).is_empty(), "{state:?}");
    }

    #[test]
    fn the_workers_token_count_is_kept_and_the_agents_is_not_read() {
        let state = run_state(
            &job_with(None, 0),
            Some(&pod_of(
                ended(
                    0,
                    "Completed",
                    r#"{"reason":"idle_timeout","usage":{"inputTokens":40,"outputTokens":25,"requests":1}}"#,
                ),
                ended(
                    0,
                    "Completed",
                    r#"{"usage":{"inputTokens":0,"outputTokens":0,"requests":0}}"#,
                ),
            )),
            false,
        );
        let RunState::Finished { usage, .. } = state else {
            unreachable!("{state:?}")
        };
        assert_eq!(
            usage,
            Some(ModelUsage {
                input_tokens: 40,
                output_tokens: 25,
                requests: 1
            })
        );
    }

    #[test]
    fn the_agent_running_out_of_memory_is_oom_whatever_the_worker_says() {
        let state = run_state(
            &job_with(None, 0),
            Some(&pod_of(
                ended(
                    1,
                    "Error",
                    r#"{"reason":"failed","message":"the agent container closed the connection"}"#,
                ),
                ended(137, "OOMKilled", ""),
            )),
            false,
        );
        assert_eq!(reason(&state), Some(StopReason::Oom));
    }

    #[test]
    fn an_agent_image_that_cannot_be_pulled_fails_the_start_and_names_the_container() {
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ErrImageNeverPull".into()),
                message: Some("image not present".into()),
            }),
            ..Default::default()
        };
        let state = run_state(&job_with(None, 1), Some(&pod_of(running(), waiting)), false);
        assert_eq!(reason(&state), Some(StopReason::StartFailed));
        let RunState::Finished { message, .. } = state else {
            unreachable!()
        };
        assert!(
            message.contains("the agent container cannot start"),
            "{message}"
        );
    }

    #[test]
    fn running_needs_both_sides() {
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        };
        let only_worker = pod_of(running(), waiting);
        assert_eq!(
            run_state(&job_with(None, 1), Some(&only_worker), false),
            RunState::Starting
        );
        let both = pod_of(running(), running());
        assert!(matches!(
            run_state(&job_with(None, 1), Some(&both), false),
            RunState::Running { .. }
        ));
    }

    fn terminated(code: i32, reason: &str, message: &str) -> Pod {
        pod(ended(code, reason, message))
    }

    fn job_with(cond: Option<(&str, &str)>, active: i32) -> Job {
        Job {
            status: Some(JobStatus {
                active: Some(active),
                conditions: cond.map(|(type_, reason)| {
                    vec![JobCondition {
                        type_: type_.into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        last_transition_time: Some(t(10)),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn reason(s: &RunState) -> Option<StopReason> {
        match s {
            RunState::Finished { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[rstest]
    #[case::idle(
        terminated(0, "Completed", r#"{"reason":"idle_timeout"}"#),
        false,
        StopReason::IdleTimeout
    )]
    #[case::idle_from_an_older_worker(
        terminated(0, "Completed", "idle_timeout"),
        false,
        StopReason::IdleTimeout
    )]
    #[case::completed(terminated(0, "Completed", ""), false, StopReason::Completed)]
    #[case::stop_turn(
        terminated(0, "Completed", r#"{"reason":"stopped"}"#),
        false,
        StopReason::Stopped
    )]
    #[case::stop_turn_from_an_older_worker(
        terminated(0, "Completed", "stopped"),
        false,
        StopReason::Stopped
    )]
    #[case::a_clean_exit_cannot_claim_a_failure(
        terminated(0, "Completed", r#"{"reason":"oom"}"#),
        false,
        StopReason::Completed
    )]
    #[case::failed(
        terminated(2, "Error", r#"{"reason":"failed","message":"boom"}"#),
        false,
        StopReason::Failed
    )]
    #[case::failed_from_an_older_worker(terminated(2, "Error", "boom"), false, StopReason::Failed)]
    #[case::sigterm_without_a_stop(
        terminated(143, "Error", r#"{"message":"terminated: SIGTERM"}"#),
        false,
        StopReason::Failed
    )]
    #[case::oom(terminated(137, "OOMKilled", ""), false, StopReason::Oom)]
    #[case::never_started(
        terminated(
            128,
            "StartError",
            "exec: \"vexa-agent-worker\": executable file not found"
        ),
        false,
        StopReason::StartFailed
    )]
    #[case::stopped(terminated(143, "Error", ""), true, StopReason::Stopped)]
    fn container_endings(#[case] p: Pod, #[case] stop: bool, #[case] expected: StopReason) {
        let s = run_state(&job_with(None, 1), Some(&p), stop);
        assert_eq!(reason(&s), Some(expected), "{s:?}");
    }

    #[rstest]
    #[case::report(r#"{"reason":"failed","message":"line one\nno such plan: x.md"}"#)]
    #[case::plain_text("line one\nno such plan: x.md")]
    fn failure_keeps_the_exit_code_and_last_log_line(#[case] termination: &str) {
        let s = run_state(
            &job_with(None, 0),
            Some(&terminated(3, "Error", termination)),
            false,
        );
        let RunState::Finished {
            exit_code,
            message,
            started,
            finished,
            ..
        } = s
        else {
            panic!()
        };
        assert_eq!(exit_code, Some(3));
        assert!(message.contains("code 3: no such plan: x.md"), "{message}");
        assert_eq!((started, finished), (Some(t(1)), Some(t(9))));
    }

    const BASE: &str = "1111111111111111111111111111111111111111";
    const RESULT: &str = "2222222222222222222222222222222222222222";

    fn report(reason: &str) -> String {
        format!(
            r#"{{"reason":"{reason}","provenance":[{{"workspace":"alice-notes","base":"{BASE}","result":"{RESULT}"}}]}}"#
        )
    }

    fn provenance(s: &RunState) -> Vec<CommitRange> {
        match s {
            RunState::Finished { provenance, .. } => provenance.clone(),
            other => panic!("not finished: {other:?}"),
        }
    }

    /// The worker's provenance reaches the run's state however the run ended.
    #[rstest]
    #[case::idle(job_with(None, 0), terminated(0, "Completed", &report("idle_timeout")))]
    #[case::failed(job_with(None, 0), terminated(1, "Error", &report("failed")))]
    #[case::deadline(
        job_with(Some(("Failed", "DeadlineExceeded")), 0),
        terminated(143, "Error", r#"{"message":"terminated: SIGTERM","provenance":[{"workspace":"alice-notes","base":"1111111111111111111111111111111111111111","result":"2222222222222222222222222222222222222222"}]}"#)
    )]
    fn the_workers_provenance_is_kept(#[case] job: Job, #[case] p: Pod) {
        let want = vec![CommitRange {
            workspace: "alice-notes".into(),
            base: Some(BASE.into()),
            result: Some(RESULT.into()),
        }];
        assert_eq!(provenance(&run_state(&job, Some(&p), false)), want);
    }

    #[test]
    fn a_plain_text_message_has_no_provenance() {
        let s = run_state(
            &job_with(None, 0),
            Some(&terminated(0, "Completed", "idle_timeout")),
            false,
        );
        assert_eq!(provenance(&s), []);
    }

    #[test]
    fn a_container_that_never_started_has_no_start_time() {
        let mut p = terminated(128, "StartError", "exec failed");
        let state = worker_mut(&mut p).state.as_mut().unwrap();
        state.terminated.as_mut().unwrap().started_at =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let RunState::Finished {
            reason,
            started,
            message,
            ..
        } = run_state(&job_with(None, 0), Some(&p), false)
        else {
            panic!()
        };
        assert_eq!((reason, started), (StopReason::StartFailed, None));
        assert!(message.contains("exec failed"), "{message}");
    }

    #[test]
    fn deadline_is_max_lifetime_even_without_a_pod() {
        let s = run_state(
            &job_with(Some(("Failed", "DeadlineExceeded")), 0),
            None,
            false,
        );
        assert_eq!(reason(&s), Some(StopReason::MaxLifetime));
    }

    #[rstest]
    #[case::failure_target("FailureTarget")]
    #[case::failed("Failed")]
    fn a_deadline_wins_over_the_exit_it_caused(#[case] condition: &str) {
        let s = run_state(
            &job_with(Some((condition, "DeadlineExceeded")), 0),
            Some(&terminated(137, "Error", "")),
            false,
        );
        let RunState::Finished {
            reason, exit_code, ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!((reason, exit_code), (StopReason::MaxLifetime, Some(137)));
    }

    #[test]
    fn a_pod_killed_from_outside_waits_for_the_jobs_verdict() {
        let mut p = terminated(137, "Error", "");
        p.metadata.deletion_timestamp = Some(t(9));
        assert!(matches!(
            run_state(&job_with(None, 1), Some(&p), false),
            RunState::Stopping { .. }
        ));
        // The agent's own failure in a pod nobody deletes is final at once.
        assert_eq!(
            reason(&run_state(
                &job_with(None, 1),
                Some(&terminated(137, "Error", "")),
                false
            )),
            Some(StopReason::Failed)
        );
    }

    #[rstest]
    #[case("ImagePullBackOff")]
    #[case("ErrImageNeverPull")]
    #[case("CreateContainerConfigError")]
    fn start_failures(#[case] why: &str) {
        let p = pod(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(why.into()),
                message: Some("x".into()),
            }),
            ..Default::default()
        });
        assert_eq!(
            reason(&run_state(&job_with(None, 1), Some(&p), false)),
            Some(StopReason::StartFailed)
        );
    }

    #[test]
    fn a_first_pull_error_is_still_starting() {
        let p = pod(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ErrImagePull".into()),
                message: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            run_state(&job_with(None, 1), Some(&p), false),
            RunState::Starting
        );
    }

    #[test]
    fn running_and_stopping() {
        let p = pod(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(t(2)),
            }),
            ..Default::default()
        });
        assert_eq!(
            run_state(&job_with(None, 1), Some(&p), false),
            RunState::Running {
                started: Some(t(2))
            }
        );
        assert_eq!(
            run_state(&job_with(None, 1), Some(&p), true),
            RunState::Stopping {
                started: Some(t(2))
            }
        );
        assert_eq!(
            reason(&run_state(
                &job_with(Some(("Suspended", "JobSuspended")), 0),
                None,
                true
            )),
            Some(StopReason::Stopped)
        );
    }
}
