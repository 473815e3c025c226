//! A run's trace: from the Dispatch's creation to its first turn's commit, as one trace of
//! contiguous spans (admitted → Job created → pod scheduled → worker ready → first event →
//! turn complete → commit) under a root span that lasts the whole run.
//!
//! The spans are assembled once the run has ended, from what the API server recorded (the
//! Dispatch's, the Job's and the pod's timestamps, to the second) and what the worker reported
//! in its termination message (its milestones, to the millisecond): the worker exports nothing
//! itself, so the agent, which shares the pod's network, is never given a path to the trace
//! collector. The ids are derived from the Dispatch's UID ([`vexa_core::trace`]), so they do
//! not depend on which replica saw the end.
//!
//! Attributes name the run (dispatch, subject, launcher, runner, trigger, stop reason, commit):
//! never a prompt, a reply, a path or a credential.

use std::time::SystemTime;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use vexa_core::trace::{self, Milestones, ROOT_SPAN, TraceParent};
use vexa_crds::{Dispatch, DispatchStatus};

use crate::runtime::conditions::{ConditionType, find};

/// One span of a run's trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub name: &'static str,
    pub span_id: [u8; 8],
    /// The root span's parent is the caller's span (when the caller started the trace).
    pub parent: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
}

/// A run's spans: the root first, then the steps in order.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTrace {
    pub context: TraceParent,
    pub spans: Vec<Span>,
}

/// The steps, in order: each span runs from the step before to its own.
pub const STEPS: [&str; 7] = [
    "admitted",
    "job created",
    "pod scheduled",
    "worker ready",
    "first event",
    "turn complete",
    "commit",
];

/// The run's trace context (what the worker gets as `TRACEPARENT`), `None` without a UID.
pub fn context(d: &Dispatch) -> Option<TraceParent> {
    let annotation = d.annotations().get(trace::ANNOTATION).map(String::as_str);
    trace::run_context(d.metadata.uid.as_deref()?, annotation).map(|(ctx, _)| ctx)
}

/// Why the Dispatch's `vexa.ai/traceparent` is not used, when it has one that is not valid
/// (the message names the rule broken, never the value).
pub fn ignored_annotation(d: &Dispatch) -> Option<String> {
    let value = d.annotations().get(trace::ANNOTATION)?;
    let e = TraceParent::parse(value).err()?;
    Some(format!(
        "{} is not a valid W3C traceparent ({e}): the run is traced under its own id, its UID",
        trace::ANNOTATION
    ))
}

/// The trace of a run that has ended (`status` is its final status, `m` what its worker
/// reported), or `None` when it is not to be exported: no UID, or a caller that asked for it
/// not to be sampled.
pub fn finished(
    d: &Dispatch,
    status: &DispatchStatus,
    job: &Job,
    pod: Option<&Pod>,
    m: Milestones,
) -> Option<RunTrace> {
    let uid = d.metadata.uid.as_deref()?;
    let annotation = d.annotations().get(trace::ANNOTATION).map(String::as_str);
    let (ctx, caller) = trace::run_context(uid, annotation)?;
    if !ctx.sampled {
        return None;
    }
    let created = time(d.metadata.creation_timestamp.as_ref())?;
    let admitted = find(&status.conditions, ConditionType::Authorized)
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.0.into());
    let job_created = time(job.metadata.creation_timestamp.as_ref());
    let scheduled = pod.and_then(scheduled_at);
    let ready = ms(m.ready).or_else(|| time(status.start_time.as_ref()));
    // Each step at the time it happened, in order; a step not reached is left out, and a clock
    // that disagrees (the API's seconds against the worker's milliseconds) is clamped so that
    // no step starts before the one it follows.
    let at = [
        admitted,
        job_created,
        scheduled,
        ready,
        ms(m.first_event),
        ms(m.done),
        ms(m.commit),
    ];
    // Steps measured from a start of their own rather than the step before: the first turn
    // begins when its prompt arrives, which for a chat may be long after the worker is ready.
    let own_start = [None, None, None, None, ms(m.turn), ms(m.turn), None];
    // Whose clock timed each step: the API server's (whole seconds) or the worker's (ms).
    let from_worker = [false, false, false, m.ready.is_some(), true, true, true];
    let ended = time(status.stop_time.as_ref());
    let mut spans = Vec::new();
    let mut previous = created;
    for (((name, when), own), worker) in STEPS.iter().zip(at).zip(own_start).zip(from_worker) {
        let Some(when) = when else { continue };
        let end = when.max(previous);
        let start = own.map_or(previous, |s| s.clamp(previous, end));
        spans.push(Span {
            name,
            span_id: trace::span_id(uid, name),
            parent: Some(ctx.span_id),
            start,
            end,
            attributes: vec![(
                "vexa.clock",
                if worker {
                    "worker (ms)"
                } else {
                    "api-server (s)"
                }
                .to_owned(),
            )],
        });
        previous = end;
    }
    if let Some(commit) = spans.iter_mut().find(|s| s.name == "commit")
        && let Some(sha) = status
            .provenance
            .iter()
            .find_map(|p| p.result_commit.clone())
    {
        commit.attributes.push(("vexa.commit", sha));
    }
    let end = ended.unwrap_or(previous).max(previous);
    spans.insert(
        0,
        Span {
            name: ROOT_SPAN,
            span_id: ctx.span_id,
            parent: caller,
            start: created,
            end,
            attributes: attributes(d, status, job, pod),
        },
    );
    Some(RunTrace {
        context: ctx,
        spans,
    })
}

/// What names the run: who, on whose behalf, with what, and how it ended.
fn attributes(
    d: &Dispatch,
    status: &DispatchStatus,
    job: &Job,
    pod: Option<&Pod>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("vexa.dispatch", d.name_any()),
        ("vexa.namespace", d.namespace().unwrap_or_default()),
        ("vexa.dispatch.uid", d.uid().unwrap_or_default()),
        ("vexa.subject", d.spec.identity.subject.clone()),
        ("vexa.launcher", d.spec.identity.launcher.clone()),
        ("vexa.runner", d.spec.runner.clone()),
        ("vexa.trigger", d.spec.trigger.as_str().to_owned()),
        ("k8s.job.name", job.name_any()),
    ];
    if let Some(p) = pod {
        out.push(("k8s.pod.name", p.name_any()));
    }
    if let Some(reason) = status.stop_reason {
        out.push(("vexa.stop_reason", reason.as_str().to_owned()));
    }
    out
}

fn scheduled_at(pod: &Pod) -> Option<SystemTime> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        .and_then(|c| time(c.last_transition_time.as_ref()))
}

fn time(t: Option<&Time>) -> Option<SystemTime> {
    t.map(|t| t.0.into())
}

/// A worker milestone, if reached (see [`trace::time_of_ms`]).
fn ms(m: Option<i64>) -> Option<SystemTime> {
    trace::time_of_ms(m?)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;
    use std::time::Duration;

    use vexa_core::trace::Milestones;
    use vexa_core::{StopReason, Termination};

    use super::super::children::WORKER_CONTAINER;
    use super::super::run_state::worker_report;
    use vexa_crds::WorkspaceProvenance;

    use super::*;

    const UID: &str = "6f1c2a34-95b1-4d7e-8a4f-0c9e2b7d1a55";
    const T0: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(T0 + seconds).unwrap())
    }

    fn dispatch(annotation: Option<&str>) -> Dispatch {
        let mut d: Dispatch = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1alpha1", "kind": "Dispatch",
            "metadata": {"name": "fix-it", "namespace": "alice", "uid": UID},
            "spec": {
                "identity": {"subject": "alice", "launcher": "alice"},
                "runner": "claude", "trigger": "message", "workspaces": [{"name": "notes"}],
                "start": {"entrypoint": {"inline": "SECRET PROMPT"}}
            }
        }))
        .unwrap();
        d.metadata.creation_timestamp = Some(at(0));
        if let Some(a) = annotation {
            d.annotations_mut()
                .insert(trace::ANNOTATION.into(), a.into());
        }
        d
    }

    fn status() -> DispatchStatus {
        DispatchStatus {
            stop_reason: Some(StopReason::Completed),
            start_time: Some(at(3)),
            stop_time: Some(at(9)),
            conditions: vec![Condition {
                type_: ConditionType::Authorized.as_str().into(),
                status: "True".into(),
                reason: "Authorized".into(),
                message: String::new(),
                last_transition_time: at(1),
                observed_generation: None,
            }],
            provenance: vec![WorkspaceProvenance {
                workspace: "notes".into(),
                mode: vexa_core::WorkspaceMode::ReadWrite,
                base_commit: Some("a".repeat(40)),
                result_commit: Some("b".repeat(40)),
            }],
            ..DispatchStatus::default()
        }
    }

    fn job() -> Job {
        let mut job = Job::default();
        job.metadata.name = Some("fix-it".into());
        job.metadata.creation_timestamp = Some(at(1));
        job
    }

    fn pod(milestones: Option<Milestones>) -> Pod {
        let report = Termination {
            reason: Some(StopReason::IdleTimeout),
            milestones,
            ..Termination::default()
        };
        let mut pod = Pod::default();
        pod.metadata.name = Some("fix-it-abcde".into());
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(at(2)),
                ..PodCondition::default()
            }]),
            init_container_statuses: Some(vec![ContainerStatus {
                name: WORKER_CONTAINER.into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        message: Some(report.encode()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn ms(seconds: f64) -> Option<i64> {
        Some(((T0 as f64 + seconds) * 1000.0) as i64)
    }

    fn full() -> Milestones {
        Milestones {
            ready: ms(3.2),
            turn: ms(3.3),
            first_event: ms(4.1),
            done: ms(6.5),
            commit: ms(6.6),
        }
    }

    /// [`finished`] with the milestones the pod's worker reported, as the reconcile reads them.
    fn finished(
        d: &Dispatch,
        status: &DispatchStatus,
        job: &Job,
        pod: Option<&Pod>,
    ) -> Option<RunTrace> {
        let m = pod.and_then(worker_report).and_then(|r| r.milestones);
        super::finished(d, status, job, pod, m.unwrap_or_default())
    }

    fn names(t: &RunTrace) -> Vec<&str> {
        t.spans.iter().map(|s| s.name).collect()
    }

    #[test]
    fn a_finished_run_is_one_trace_of_its_steps_in_order() {
        let t = finished(&dispatch(None), &status(), &job(), Some(&pod(Some(full())))).unwrap();
        assert_eq!(names(&t)[0], ROOT_SPAN);
        assert_eq!(&names(&t)[1..], STEPS);
        assert_eq!(t.context.trace_hex(), "6f1c2a3495b14d7e8a4f0c9e2b7d1a55");
        let root = &t.spans[0];
        assert_eq!(root.parent, None);
        assert_eq!(root.span_id, t.context.span_id);
        for s in &t.spans[1..] {
            assert_eq!(s.parent, Some(root.span_id), "{}", s.name);
            assert!(s.start <= s.end, "{}", s.name);
            assert!(s.start >= root.start && s.end <= root.end, "{}", s.name);
        }
        // Contiguous but for the turn's own start: each step ends where the next begins.
        let ends: Vec<_> = t.spans[1..].iter().map(|s| s.end).collect();
        assert!(ends.windows(2).all(|w| w[0] <= w[1]));
        let first_event = &t.spans[5];
        assert_eq!(first_event.name, "first event");
        assert_eq!(
            first_event.end.duration_since(first_event.start).unwrap(),
            Duration::from_millis(800)
        );
        let commit = t.spans.last().unwrap();
        assert_eq!(
            commit.attributes,
            vec![
                ("vexa.clock", "worker (ms)".to_owned()),
                ("vexa.commit", "b".repeat(40))
            ]
        );
        let scheduled = &t.spans[3];
        assert_eq!(scheduled.name, "pod scheduled");
        assert_eq!(
            scheduled.attributes,
            vec![("vexa.clock", "api-server (s)".to_owned())]
        );
    }

    #[test]
    fn the_trace_names_the_run_and_nothing_it_said() {
        let t = finished(&dispatch(None), &status(), &job(), Some(&pod(Some(full())))).unwrap();
        let root = &t.spans[0].attributes;
        let get = |k: &str| {
            root.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("vexa.subject"), Some("alice"));
        assert_eq!(get("vexa.launcher"), Some("alice"));
        assert_eq!(get("vexa.dispatch"), Some("fix-it"));
        assert_eq!(get("vexa.stop_reason"), Some("completed"));
        let everything = format!("{t:?}");
        assert!(!everything.contains("SECRET PROMPT"), "{everything}");
    }

    #[test]
    fn a_callers_trace_is_joined_and_a_not_sampled_one_is_not_exported() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = finished(&dispatch(Some(caller)), &status(), &job(), None).unwrap();
        assert_eq!(t.context.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.spans[0].parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let not_sampled = caller.replace("-01", "-00");
        assert_eq!(
            finished(&dispatch(Some(&not_sampled)), &status(), &job(), None),
            None
        );
    }

    #[test]
    fn an_ignored_annotation_is_said_without_its_value() {
        assert_eq!(ignored_annotation(&dispatch(None)), None);
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(ignored_annotation(&dispatch(Some(good))), None);
        let why = ignored_annotation(&dispatch(Some("<script>alert(1)</script>"))).unwrap();
        assert!(why.contains("not a valid W3C traceparent"), "{why}");
        assert!(!why.contains("script"), "{why}");
    }

    #[test]
    fn a_hostile_annotation_is_ignored_and_the_run_keeps_its_own_trace() {
        let hostile = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: <script>";
        let t = finished(&dispatch(Some(hostile)), &status(), &job(), None).unwrap();
        assert_eq!(t.context.trace_hex(), "6f1c2a3495b14d7e8a4f0c9e2b7d1a55");
        assert_eq!(t.spans[0].parent, None);
        assert!(!format!("{t:?}").contains("script"));
    }

    #[test]
    fn clocks_that_disagree_never_put_a_step_before_the_one_it_follows() {
        // The worker's clock says it was ready before the pod was scheduled (by the API
        // server's, truncated to the second), and its milestones are out of order.
        let skewed = Milestones {
            ready: ms(1.5),
            turn: ms(0.2),
            first_event: ms(-5.0),
            done: ms(4.0),
            commit: Some(-1),
        };
        let t = finished(&dispatch(None), &status(), &job(), Some(&pod(Some(skewed)))).unwrap();
        let steps = &t.spans[1..];
        assert!(steps.iter().all(|s| s.start <= s.end));
        assert!(
            steps
                .windows(2)
                .all(|w| w[0].end <= w[1].start || w[1].name == "turn complete")
        );
        assert!(!names(&t).contains(&"commit"), "a negative time is no time");
    }

    #[test]
    fn a_run_without_a_worker_report_has_the_api_servers_steps() {
        let t = finished(&dispatch(None), &status(), &job(), Some(&pod(None))).unwrap();
        assert_eq!(
            names(&t),
            [
                ROOT_SPAN,
                "admitted",
                "job created",
                "pod scheduled",
                "worker ready"
            ]
        );
    }
}
