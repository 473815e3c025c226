//! The Schedule's decisions over simulated days, in milliseconds: a small world (the Schedule,
//! its Dispatches, the subject's Identity) that applies each decision the way `apply` and the
//! API server would, and a clock the tests move.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;
use rstest::rstest;
use serde_json::{Value, json};
use vexa_core::names::{
    SCHEDULE_BACKFILL_ANNOTATION, SCHEDULE_LABEL, SCHEDULE_RESUME_ANNOTATION,
    SCHEDULE_RUN_NOW_ANNOTATION, SCHEDULED_TIME_ANNOTATION, TEST_CRON_SECONDS_ANNOTATION,
};
use vexa_crds::{Dispatch, DispatchPhase, DispatchStatus, Identity, Schedule, StopReason};

use super::decide::{Decision, Observed, Settings, decide};
use super::plan::dispatch_name;
use super::run::{jitter, to_time};
use crate::runtime::conditions::{ConditionType, find};

const NS: &str = "team";
const NAME: &str = "digest";
const UID: &str = "6f1c2a9e-0000-4000-8000-000000000001";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn t0() -> DateTime<Utc> {
    at("2026-06-01T00:00:00Z")
}

fn min(m: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(m)
}

/// A Schedule `*/5 * * * *` created at `t0`, for alice under grant `nightly`, with `spec`
/// merged over the defaults.
fn schedule(spec: Value) -> Schedule {
    let mut base = json!({
        "schedule": "*/5 * * * *",
        "subject": "alice",
        "grant": "nightly",
        "template": {
            "runner": "claude-code",
            "workspaces": [{"name": "alice-notes", "mode": "rw"}],
            "tools": ["search"],
            "start": {"entrypoint": {"path": "routines/digest.md"}}
        }
    });
    if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1",
        "kind": "Schedule",
        "metadata": {
            "name": NAME, "namespace": NS, "uid": UID, "generation": 1,
            "creationTimestamp": "2026-06-01T00:00:00Z"
        },
        "spec": base
    }))
    .unwrap()
}

/// Alice's Identity with one grant `grant` (merged over: launcher `schedule:team/digest`,
/// `alice-notes` rw, tool `search`).
fn identity(grant: Value) -> Identity {
    let mut g = json!({
        "name": "nightly",
        "launcher": format!("schedule:{NS}/{NAME}"),
        "workspaces": [{"name": "alice-notes", "mode": "rw"}],
        "tools": ["search"]
    });
    if let (Some(b), Some(s)) = (g.as_object_mut(), grant.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1",
        "kind": "Identity",
        "metadata": {"name": "alice", "namespace": NS},
        "spec": {"subject": "alice", "grants": [g]}
    }))
    .unwrap()
}

/// The Schedule, its Dispatches and the subject's Identity, changed only by decisions.
struct World {
    schedule: Schedule,
    dispatches: Vec<Dispatch>,
    identity: Option<Identity>,
    settings: Settings,
    created: Vec<String>,
    events: Vec<super::events::Event>,
}

impl World {
    fn new(schedule: Schedule) -> Self {
        Self {
            schedule,
            dispatches: Vec::new(),
            identity: Some(identity(json!({}))),
            settings: Settings::default(),
            created: Vec::new(),
            events: Vec::new(),
        }
    }

    fn step(&mut self, now: DateTime<Utc>) -> Decision {
        let seen = Observed {
            dispatches: self.dispatches.clone(),
            identity: self.identity.clone(),
            events: self.events.clone(),
            advance: Vec::new(),
            source_errors: Vec::new(),
        };
        let d = decide(&self.schedule, &seen, self.settings, now);
        for c in &d.create {
            let name = c.dispatch.name_any();
            assert!(
                !self.dispatches.iter().any(|x| x.name_any() == name),
                "{name} created twice"
            );
            let mut x = c.dispatch.clone();
            x.metadata.creation_timestamp = Some(to_time(now));
            x.status = Some(DispatchStatus {
                phase: Some(DispatchPhase::Running),
                ..Default::default()
            });
            self.dispatches.push(x);
            self.created.push(name);
        }
        for name in &d.stop {
            let x = self.get(name);
            assert!(
                x.status.as_ref().and_then(|s| s.phase) != Some(DispatchPhase::Stopped),
                "{name} is over: nothing to stop"
            );
            x.spec.stop = Some(true);
        }
        self.dispatches
            .retain(|x| !d.delete.contains(&x.name_any()));
        self.schedule.status = Some(d.status.clone());
        d
    }

    fn get(&mut self, name: &str) -> &mut Dispatch {
        self.dispatches
            .iter_mut()
            .find(|x| x.name_any() == name)
            .unwrap_or_else(|| panic!("no Dispatch {name}"))
    }

    fn finish(&mut self, name: &str, reason: StopReason, when: DateTime<Utc>) {
        let x = self.get(name);
        x.status = Some(DispatchStatus {
            phase: Some(DispatchPhase::Stopped),
            stop_reason: Some(reason),
            stop_time: Some(to_time(when)),
            ..Default::default()
        });
    }

    fn finish_all(&mut self, when: DateTime<Utc>) {
        for n in self.active() {
            self.finish(&n, StopReason::Completed, when);
        }
    }

    fn active(&self) -> Vec<String> {
        self.dispatches
            .iter()
            .filter(|x| {
                !x.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
            })
            .map(|x| x.name_any())
            .collect()
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.schedule
            .annotations_mut()
            .insert(key.to_owned(), value.to_owned());
    }

    fn status(&self) -> &vexa_crds::ScheduleStatus {
        self.schedule.status.as_ref().unwrap()
    }

    fn condition(&self, t: ConditionType) -> (String, String, String) {
        let c = find(&self.status().conditions, t).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }
}

fn run(m: i64) -> String {
    dispatch_name(NAME, min(m))
}

fn names(d: &Decision) -> Vec<String> {
    d.create.iter().map(|c| c.dispatch.name_any()).collect()
}

fn skips(d: &Decision) -> Vec<(DateTime<Utc>, &'static str)> {
    d.skipped.clone()
}

#[test]
fn a_dispatch_is_named_labelled_annotated_owned_and_launched_by_the_schedule() {
    let mut w = World::new(schedule(json!({})));
    let d = w.step(min(5));
    assert_eq!(names(&d), vec![run(5)]);
    let x = &d.create[0].dispatch;
    assert_eq!(x.namespace().as_deref(), Some(NS));
    assert_eq!(
        x.labels().get(SCHEDULE_LABEL).map(String::as_str),
        Some(NAME)
    );
    assert_eq!(
        x.annotations()
            .get(SCHEDULED_TIME_ANNOTATION)
            .map(String::as_str),
        Some("2026-06-01T00:05:00Z")
    );
    let owner = &x.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Schedule", UID, Some(true))
    );
    assert_eq!(x.spec.identity.subject, "alice");
    assert_eq!(x.spec.identity.launcher, "schedule:team/digest");
    assert_eq!(x.spec.trigger, vexa_crds::Trigger::Scheduled);
    assert_eq!(x.spec.tools, vec!["search".to_owned()]);
    assert!(
        d.notes.is_empty(),
        "Fired is published by apply, once created"
    );
    let s = w.status();
    assert_eq!(s.active, vec![run(5)]);
    assert_eq!(s.last_schedule_time, Some(to_time(min(5))));
    assert_eq!(s.next_schedule_time, Some(to_time(min(10))));
    assert_eq!(s.considered_until, Some(to_time(min(5))));
    assert_eq!(w.condition(ConditionType::Ready).0, "True");
    // Due again at 00:10: the requeue says when. Nothing happened: the status is the same
    // (no write, no timestamp that moves by itself).
    w.step(min(5) + TimeDelta::seconds(10));
    let before = w.status().clone();
    let d = w.step(min(5) + TimeDelta::seconds(20));
    assert!(d.create.is_empty() && d.notes.is_empty());
    assert_eq!(d.requeue, std::time::Duration::from_secs(280));
    assert_eq!(w.status(), &before);
}

#[test]
fn a_lost_status_write_adopts_the_dispatch_instead_of_doubling_it() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "Forbid"})));
    let before = w.schedule.clone();
    w.step(min(5));
    // The status write did not land: the next reconcile plans 00:05 again.
    w.schedule.status = before.status;
    let d = w.step(min(5) + TimeDelta::seconds(1));
    assert!(d.create.is_empty());
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(w.status().active, vec![run(5)]);
}

#[rstest]
#[case::allow("Allow", &[5, 10], &[], &[], &[])]
#[case::forbid("Forbid", &[5], &[], &[10], &[])]
#[case::replace("Replace", &[5, 10], &[5], &[], &[])]
#[case::buffer_one("BufferOne", &[5], &[], &[], &[10])]
#[case::buffer_all("BufferAll", &[5], &[], &[], &[10])]
#[case::cancel_other("CancelOther", &[5], &[5], &[], &[10])]
fn a_run_due_while_one_is_active(
    #[case] policy: &str,
    #[case] created: &[i64],
    #[case] stopped: &[i64],
    #[case] overlap: &[i64],
    #[case] buffered: &[i64],
) {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": policy})));
    w.step(min(5));
    let d = w.step(min(10));
    assert_eq!(
        w.created,
        created.iter().map(|m| run(*m)).collect::<Vec<_>>()
    );
    assert_eq!(d.stop, stopped.iter().map(|m| run(*m)).collect::<Vec<_>>());
    let want: Vec<_> = overlap.iter().map(|m| (min(*m), "Overlap")).collect();
    assert_eq!(skips(&d), want);
    let b: Vec<_> = w.status().buffered.iter().map(|b| b.name.clone()).collect();
    assert_eq!(b, buffered.iter().map(|m| run(*m)).collect::<Vec<_>>());
    if !overlap.is_empty() {
        assert_eq!(w.status().missed[0].reason, "Overlap");
        assert!(d.notes.iter().any(|n| n.warning && n.reason == "Overlap"));
    }
}

#[test]
fn buffer_one_keeps_one_and_skips_the_rest_then_starts_it_when_the_run_ends() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "BufferOne"})));
    w.step(min(5));
    w.step(min(10));
    let d = w.step(min(15));
    assert_eq!(skips(&d), vec![(min(15), "Overlap")]);
    assert_eq!(w.status().buffered.len(), 1);
    w.finish(&run(5), StopReason::Completed, min(16));
    // The run's end (an owned Dispatch changed) reconciles at once: the waiting run starts.
    let d = w.step(min(16));
    assert_eq!(names(&d), vec![run(10)]);
    assert!(w.status().buffered.is_empty());
    assert_eq!(d.create[0].due, None, "a buffered run has no lateness");
}

#[test]
fn buffer_all_starts_the_waiting_runs_oldest_first_one_at_a_time() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "BufferAll"})));
    w.step(min(5));
    w.step(min(10));
    w.step(min(15));
    assert_eq!(w.status().buffered.len(), 2);
    w.finish(&run(5), StopReason::Completed, min(16));
    assert_eq!(names(&w.step(min(16))), vec![run(10)]);
    assert!(w.step(min(17)).create.is_empty(), "one at a time");
    w.finish(&run(10), StopReason::Completed, min(18));
    assert_eq!(names(&w.step(min(18))), vec![run(15)]);
    // 00:20 is due while 00:15 runs: it waits too.
    w.step(min(20));
    assert_eq!(w.status().buffered[0].name, run(20));
}

#[test]
fn cancel_other_stops_the_run_and_starts_the_new_one_once_it_has_ended() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "CancelOther"})));
    w.step(min(5));
    let d = w.step(min(10));
    assert_eq!(d.stop, vec![run(5)]);
    assert!(d.create.is_empty());
    // Still stopping: asked once, not again.
    let d = w.step(min(10) + TimeDelta::seconds(5));
    assert!(d.stop.is_empty() && d.create.is_empty());
    w.finish(&run(5), StopReason::Stopped, min(11));
    assert_eq!(names(&w.step(min(11))), vec![run(10)]);
}

#[test]
fn replace_stops_the_active_run_and_creates_the_new_one_at_once() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "Replace"})));
    w.step(min(5));
    let d = w.step(min(10));
    assert_eq!(d.stop, vec![run(5)]);
    assert_eq!(names(&d), vec![run(10)]);
    assert_eq!(w.get(&run(5)).spec.stop, Some(true));
}

// The operator was down from 00:00 to 01:02 (hourly would be boring: every five minutes,
// twelve runs missed).
#[rstest]
#[case::latest_unbounded(json!({}), &[60], 11, &[])]
#[case::all_limited(json!({"catchUp": {"policy": "All", "limit": 3}, "concurrencyPolicy": "Allow"}), &[50, 55, 60], 9, &[])]
#[case::window(json!({"startingDeadlineSeconds": 600, "catchUp": {"policy": "All"}, "concurrencyPolicy": "Allow"}), &[55, 60], 10, &["MissedCatchupWindow"])]
#[case::window_too_short(json!({"startingDeadlineSeconds": 60}), &[], 10, &["MissedCatchupWindow"])]
#[case::all_forbid(json!({"catchUp": {"policy": "All", "limit": 3}}), &[50], 9, &["Overlap"])]
fn catch_up_after_downtime(
    #[case] spec: Value,
    #[case] fired: &[i64],
    #[case] listed_skips: usize,
    #[case] reasons: &[&str],
) {
    let mut w = World::new(schedule(spec));
    // Considered until 00:00 (creation): 00:05 … 01:00 are missed.
    let d = w.step(min(62));
    assert_eq!(names(&d), fired.iter().map(|m| run(*m)).collect::<Vec<_>>());
    assert!(d.skipped.len() >= listed_skips.min(10), "{:?}", d.skipped);
    for r in reasons {
        assert!(
            d.skipped.iter().any(|(_, rr)| rr == r),
            "{r} in {:?}",
            d.skipped
        );
    }
    for (t, _) in &d.skipped {
        assert!(!fired.iter().any(|m| min(*m) == *t));
    }
    assert!(w.status().missed.len() <= 10);
    assert_eq!(w.status().considered_until, Some(to_time(min(62))));
    // After the catch-up the schedule goes on from its cursor: 01:05 fires normally.
    w.finish_all(min(63));
    let d = w.step(min(65));
    assert_eq!(names(&d), vec![run(65)]);
    assert!(d.skipped.is_empty());
    // One Warning per reason, not one per run.
    let warnings: Vec<_> = d
        .notes
        .iter()
        .filter(|n| n.warning)
        .map(|n| n.reason.clone())
        .collect();
    let distinct: BTreeSet<_> = warnings.iter().cloned().collect();
    assert_eq!(warnings.len(), distinct.len(), "{warnings:?}");
}

#[test]
fn suspended_runs_are_skipped_and_the_cursor_moves_so_nothing_replays_on_resume() {
    let mut w = World::new(schedule(json!({"suspend": true})));
    let d = w.step(min(12));
    assert!(d.create.is_empty());
    // 00:05 lost to the catch-up policy (Latest), 00:10 to the suspension.
    assert_eq!(
        skips(&d),
        vec![(min(5), "Superseded"), (min(10), "Suspended")]
    );
    assert_eq!(w.status().considered_until, Some(to_time(min(12))));
    assert_eq!(w.condition(ConditionType::Ready).1, "Suspended");
    w.schedule.spec.suspend = false;
    let d = w.step(min(13));
    assert!(d.create.is_empty(), "no replay of suspended runs");
    assert_eq!(names(&w.step(min(15))), vec![run(15)]);
}

#[test]
fn nothing_runs_before_the_start_time_or_after_the_end_time() {
    let mut w = World::new(schedule(json!({
        "startTime": "2026-06-01T00:20:00Z",
        "endTime": "2026-06-01T00:30:00Z",
        "concurrencyPolicy": "Allow"
    })));
    assert!(w.step(min(16)).create.is_empty());
    assert_eq!(w.status().next_schedule_time, Some(to_time(min(20))));
    assert_eq!(names(&w.step(min(20))), vec![run(20)]);
    assert_eq!(names(&w.step(min(25))), vec![run(25)]);
    assert_eq!(names(&w.step(min(30))), vec![run(30)]);
    assert!(w.step(min(35)).create.is_empty());
    assert!(w.step(min(120)).create.is_empty());
    assert_eq!(w.status().next_schedule_time, None);
    assert_eq!(w.condition(ConditionType::Ready).1, "NoMoreRuns");
}

#[test]
fn a_failed_run_pauses_the_schedule_until_a_resume_annotation() {
    let mut w = World::new(schedule(json!({"pauseOnFailure": true})));
    w.step(min(5));
    w.finish(&run(5), StopReason::Oom, min(7));
    let d = w.step(min(7));
    assert_eq!(w.status().paused_by, Some(run(5)));
    let (status, reason, _) = w.condition(ConditionType::Paused);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "RunFailed"));
    assert!(d.notes.iter().any(|n| n.warning && n.reason == "Paused"));
    let d = w.step(min(10));
    assert_eq!(skips(&d), vec![(min(10), "Paused")]);
    assert!(d.create.is_empty());
    // The failed run is kept for a person even past the failed history limit.
    assert!(d.delete.is_empty());
    w.annotate(SCHEDULE_RESUME_ANNOTATION, "r1");
    let d = w.step(min(11));
    assert_eq!(w.status().paused_by, None);
    assert_eq!(w.condition(ConditionType::Paused).0, "False");
    assert_eq!(w.status().actions[0].kind, "Resume");
    assert!(d.create.is_empty(), "00:10 was decided already");
    assert_eq!(names(&w.step(min(15))), vec![run(15)]);
    // The old failure does not pause it again; the same id again does nothing.
    w.finish(&run(15), StopReason::Completed, min(16));
    w.step(min(16));
    assert_eq!(w.status().paused_by, None);
    assert_eq!(w.status().actions.len(), 1);
}

#[rstest]
#[case::completed(StopReason::Completed, false)]
#[case::idle(StopReason::IdleTimeout, false)]
#[case::stopped(StopReason::Stopped, false)]
#[case::failed(StopReason::Failed, true)]
#[case::oom(StopReason::Oom, true)]
#[case::start_failed(StopReason::StartFailed, true)]
#[case::max_lifetime(StopReason::MaxLifetime, true)]
fn which_endings_pause(#[case] reason: StopReason, #[case] pauses: bool) {
    let mut w = World::new(schedule(json!({"pauseOnFailure": true})));
    w.step(min(5));
    w.finish(&run(5), reason, min(6));
    w.step(min(6));
    assert_eq!(w.status().paused_by.is_some(), pauses);
}

#[test]
fn jitter_delays_the_run_deterministically_and_keeps_its_nominal_name() {
    let mut offsets = BTreeSet::new();
    for m in (5..600).step_by(5) {
        let j = jitter(UID, min(m), 120);
        assert_eq!(j, jitter(UID, min(m), 120));
        assert!(j >= TimeDelta::zero() && j <= TimeDelta::seconds(120));
        offsets.insert(j);
    }
    assert!(offsets.len() > 20, "offsets spread: {offsets:?}");
    assert_eq!(jitter(UID, min(5), 0), TimeDelta::zero());

    let mut w = World::new(schedule(
        json!({"jitterSeconds": 120, "concurrencyPolicy": "Allow"}),
    ));
    let (nominal, offset) = (5..600)
        .step_by(5)
        .map(|m| (min(m), jitter(UID, min(m), 120)))
        .find(|(_, j)| *j > TimeDelta::seconds(2))
        .unwrap();
    w.schedule.metadata.creation_timestamp = Some(to_time(nominal - TimeDelta::minutes(1)));
    let d = w.step(nominal);
    assert!(d.create.is_empty(), "not before its offset");
    assert_eq!(d.requeue, offset.to_std().unwrap());
    assert!(w.status().considered_until < Some(to_time(nominal)));
    let d = w.step(nominal + offset);
    assert_eq!(names(&d), vec![dispatch_name(NAME, nominal)]);
    assert_eq!(d.create[0].due, Some(nominal + offset));
}

#[test]
fn history_limits_delete_the_oldest_finished_runs() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "Allow"})));
    for m in (5..=35).step_by(5) {
        w.step(min(m));
    }
    for m in (5..=25).step_by(5) {
        w.finish(&run(m), StopReason::Completed, min(36));
    }
    w.finish(&run(30), StopReason::Failed, min(36));
    w.finish(&run(35), StopReason::Failed, min(36));
    let mut d = w.step(min(36));
    d.delete.sort();
    // Keeps 3 successes (15, 20, 25) and 1 failure (35).
    assert_eq!(d.delete, vec![run(5), run(10), run(30)]);
    let recent = &w.status().recent;
    assert_eq!(recent[0].name, run(35));
    assert_eq!(recent[0].stop_reason.as_deref(), Some("failed"));
    // Once gone, they show as Deleted.
    w.step(min(37));
    let gone = w.status().recent.iter().find(|r| r.name == run(5)).unwrap();
    assert_eq!(gone.phase.as_deref(), Some("Deleted"));
}

#[test]
fn run_now_creates_one_dispatch_per_id() {
    let mut w = World::new(schedule(json!({"schedule": "0 9 * * *"})));
    w.annotate(SCHEDULE_RUN_NOW_ANNOTATION, "manual-1");
    let d = w.step(min(3));
    assert_eq!(d.create.len(), 1);
    let name = d.create[0].dispatch.name_any();
    assert!(name.starts_with("digest-now-"), "{name}");
    assert_eq!(w.status().actions[0].kind, "RunNow");
    assert_eq!(w.status().actions[0].id, "manual-1");
    // Re-applied by GitOps: nothing.
    assert!(w.step(min(4)).create.is_empty());
    w.annotate(SCHEDULE_RUN_NOW_ANNOTATION, "manual-2");
    assert_eq!(w.step(min(5)).create.len(), 1);
    assert_eq!(w.status().actions.len(), 2);
}

#[test]
fn a_malformed_action_is_a_warning_and_a_record_once() {
    let mut w = World::new(schedule(json!({})));
    w.annotate(SCHEDULE_BACKFILL_ANNOTATION, "last tuesday");
    let d = w.step(min(1));
    assert!(
        d.notes
            .iter()
            .any(|n| n.warning && n.reason == "InvalidAction")
    );
    let rec = &w.status().actions[0];
    assert!(
        rec.message.as_deref().unwrap().contains("vexa.ai/backfill"),
        "{rec:?}"
    );
    let d = w.step(min(2));
    assert!(!d.notes.iter().any(|n| n.reason == "InvalidAction"));
    assert_eq!(w.status().actions.len(), 1);
}

#[test]
fn backfill_buffers_each_nominal_time_once_and_adopts_those_that_ran() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "Forbid"})));
    w.step(min(5));
    w.finish(&run(5), StopReason::Completed, min(6));
    w.annotate(
        SCHEDULE_BACKFILL_ANNOTATION,
        r#"{"id":"b1","from":"2026-06-01T00:00:00Z","to":"2026-06-01T00:10:00Z"}"#,
    );
    // 00:00 is queued and starts at once; 00:05 ran already; 00:10 is still ahead.
    let d = w.step(min(7));
    assert_eq!(names(&d), vec![run(0)]);
    assert!(w.status().buffered.is_empty());
    let msg = w.status().actions[0].message.clone().unwrap();
    assert!(
        msg.contains("2 runs") && msg.contains("1 queued, 1 already ran"),
        "{msg}"
    );
    w.finish(&run(0), StopReason::Completed, min(8));
    // 00:10 runs by the schedule itself, once.
    assert_eq!(names(&w.step(min(10))), vec![run(10)]);
    assert!(w.step(min(11)).create.is_empty());
}

#[test]
fn a_backfill_never_runs_a_time_still_ahead() {
    let mut w = World::new(schedule(json!({"concurrencyPolicy": "BufferAll"})));
    w.annotate(
        SCHEDULE_BACKFILL_ANNOTATION,
        r#"{"id":"b2","from":"2026-06-01T00:00:00Z","to":"2026-06-01T02:00:00Z"}"#,
    );
    let d = w.step(min(7));
    // 00:00 and 00:05 only; 00:05 is also the schedule's own due run (adopted, not doubled).
    assert_eq!(names(&d), vec![run(0)]);
    let waiting: Vec<_> = w.status().buffered.iter().map(|b| b.name.clone()).collect();
    assert_eq!(waiting, vec![run(5)]);
}

#[test]
fn a_backfill_of_more_than_a_hundred_runs_is_refused() {
    let mut w = World::new(schedule(json!({})));
    w.annotate(
        SCHEDULE_BACKFILL_ANNOTATION,
        r#"{"id":"big","from":"2026-05-01T00:00:00Z","to":"2026-06-01T00:00:00Z"}"#,
    );
    let d = w.step(min(1));
    assert!(d.create.is_empty());
    assert!(w.status().buffered.is_empty());
    let msg = w.status().actions[0].message.clone().unwrap();
    assert!(msg.starts_with("refused") && msg.contains("100"), "{msg}");
}

// The attacker writes a Schedule whose template asks more than alice granted, or one that
// claims a grant made for another schedule: no Dispatch, Authorized=False with the policy's
// reason, due runs skipped `Unauthorized`.
#[rstest]
#[case::no_identity(None, json!({}), "NoDelegationGrant", "no Identity")]
#[case::grant_missing(Some(json!({"name": "other"})), json!({}), "NoDelegationGrant", "nightly")]
#[case::workspace_outside(Some(json!({})), json!({"template": {
    "runner": "claude-code", "workspaces": [{"name": "alice-notes", "mode": "rw"}, {"name": "bob-secrets"}],
    "tools": ["search"], "start": {}}}), "GrantTooNarrow", "bob-secrets")]
#[case::rw_where_ro(Some(json!({"workspaces": [{"name": "alice-notes", "mode": "ro"}]})), json!({}), "GrantTooNarrow", "mode 'rw'")]
#[case::extra_tool(Some(json!({})), json!({"template": {
    "runner": "claude-code", "workspaces": [{"name": "alice-notes", "mode": "rw"}],
    "tools": ["search", "email-send"], "start": {}}}), "GrantTooNarrow", "email-send")]
#[case::expired(Some(json!({"expires": "2026-05-31T00:00:00Z"})), json!({}), "GrantExpired", "expired")]
#[case::launcher_of_another_schedule(Some(json!({"launcher": "schedule:team/other-name"})), json!({}), "LauncherNotGranted", "schedule:team/other-name")]
fn a_template_outside_the_grant_gets_no_dispatch(
    #[case] grant: Option<Value>,
    #[case] spec: Value,
    #[case] reason: &str,
    #[case] names_what: &str,
) {
    let mut w = World::new(schedule(spec));
    w.identity = grant.map(identity);
    w.annotate(SCHEDULE_RUN_NOW_ANNOTATION, "sneaky");
    let d = w.step(min(5));
    assert!(d.create.is_empty(), "{:?}", names(&d));
    assert_eq!(skips(&d), vec![(min(5), "Unauthorized")]);
    let (status, r, message) = w.condition(ConditionType::Authorized);
    assert_eq!((status.as_str(), r.as_str()), ("False", reason));
    assert!(message.contains(names_what), "{message}");
    assert!(
        w.status().actions[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with("refused")
    );
    assert!(d.notes.iter().any(|n| n.warning && n.reason == reason));
    // The Warning about the refusal is not repeated each reconcile.
    let d = w.step(min(6));
    assert!(!d.notes.iter().any(|n| n.reason == reason));
}

#[rstest]
#[case::bad_cron(json!({"schedule": "61 * * * *"}), "InvalidSchedule")]
#[case::unknown_zone(json!({"timeZone": "Mars/Olympus_Mons"}), "UnknownTimeZone")]
#[case::zone_in_expression(json!({"schedule": "CRON_TZ=UTC 0 9 * * *"}), "TimeZoneInExpression")]
#[case::bad_subject_pattern(json!({"events": [{"type": "email.received", "subjectPattern": "(unclosed"}]}), "InvalidSubjectPattern")]
fn an_invalid_schedule_is_a_condition_not_a_crash(#[case] spec: Value, #[case] reason: &str) {
    let mut w = World::new(schedule(spec));
    let d = w.step(min(5));
    assert!(d.create.is_empty());
    let (status, r, _) = w.condition(ConditionType::Valid);
    assert_eq!((status.as_str(), r.as_str()), ("False", reason));
    assert_eq!(w.condition(ConditionType::Ready).0, "False");
    assert!(d.notes.iter().any(|n| n.warning && n.reason == reason));
}

#[test]
fn the_seconds_field_annotation_works_only_in_test_mode() {
    let mut w = World::new(schedule(
        json!({"schedule": "0 9 * * *", "concurrencyPolicy": "Allow"}),
    ));
    w.annotate(TEST_CRON_SECONDS_ANNOTATION, "*/10 * * * * *");
    let d = w.step(t0() + TimeDelta::seconds(25));
    assert!(d.create.is_empty());
    assert!(
        d.notes
            .iter()
            .any(|n| n.warning && n.reason == "TestModeOff")
    );
    // Said once.
    let d = w.step(t0() + TimeDelta::seconds(26));
    assert!(!d.notes.iter().any(|n| n.reason == "TestModeOff"));

    let mut w = World::new(schedule(
        json!({"schedule": "0 9 * * *", "concurrencyPolicy": "Allow"}),
    ));
    w.settings = Settings {
        seconds_field: true,
    };
    w.annotate(TEST_CRON_SECONDS_ANNOTATION, "*/10 * * * * *");
    let at = |s: i64| t0() + TimeDelta::seconds(s);
    assert_eq!(names(&w.step(at(10))), vec![dispatch_name(NAME, at(10))]);
    assert_eq!(names(&w.step(at(20))), vec![dispatch_name(NAME, at(20))]);
    assert_eq!(w.status().next_schedule_time, Some(to_time(at(30))));
    assert_eq!(w.step(at(21)).requeue, std::time::Duration::from_secs(9));

    // In test mode the annotation must have its seconds field.
    let mut w = World::new(schedule(json!({})));
    w.settings = Settings {
        seconds_field: true,
    };
    w.annotate(TEST_CRON_SECONDS_ANNOTATION, "*/5 * * * *");
    assert!(w.step(min(5)).create.is_empty());
    let (status, reason, _) = w.condition(ConditionType::Valid);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidSchedule")
    );
}

// Seven days of `*/5 * * * *`, reconciled at irregular moments (and once after an hour of
// downtime: longer ones are decided too, but the plan lists only the newest ten skipped times), with runs of pseudo-random length: every nominal time is decided exactly once —
// fired, buffered (and then fired or superseded), or skipped with a reason — and no Dispatch is
// ever created twice.
#[rstest]
#[case::allow("Allow", 0)]
#[case::forbid("Forbid", 0)]
#[case::replace("Replace", 0)]
#[case::buffer_one("BufferOne", 0)]
#[case::buffer_all("BufferAll", 0)]
#[case::cancel_other("CancelOther", 0)]
// With jitter a due run waits for its offset, and the cursor stays before it meanwhile.
#[case::allow_jitter("Allow", 120)]
#[case::forbid_jitter("Forbid", 120)]
#[case::buffer_all_jitter("BufferAll", 120)]
fn seven_days_decide_every_nominal_time_once(#[case] policy: &str, #[case] jitter_seconds: i32) {
    let started = std::time::Instant::now();
    let mut w = World::new(schedule(json!({
        "jitterSeconds": jitter_seconds,
        "concurrencyPolicy": policy,
        "startingDeadlineSeconds": 3600,
        "catchUp": {"policy": "All", "limit": 5},
        "successfulHistoryLimit": 2,
        "failedHistoryLimit": 1
    })));
    let end = t0() + TimeDelta::days(7);
    let mut now = t0();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: i64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        i64::try_from(seed % u64::try_from(n).unwrap()).unwrap()
    };
    let mut ends: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    // Each nominal time: how it was first decided.
    let mut decided: BTreeMap<DateTime<Utc>, &'static str> = BTreeMap::new();
    let mut buffered_then: BTreeSet<DateTime<Utc>> = BTreeSet::new();
    let mut steps = 0;
    // Runs until the last nominal time's offset has passed too.
    let last = end + TimeDelta::seconds(i64::from(jitter_seconds));
    while now < last {
        let gap = if steps == 1000 {
            60 * 60
        } else {
            1 + rand(9 * 60)
        };
        now = (now + TimeDelta::seconds(gap)).min(last);
        // Runs end on their own, or soon after a stop was asked.
        let active = w.active();
        for n in active {
            let stop = w.get(&n).spec.stop == Some(true);
            let e = *ends
                .entry(n.clone())
                .or_insert_with(|| now + TimeDelta::seconds(60 + rand(14 * 60)));
            if e <= now || stop {
                let reason = if rand(10) == 0 {
                    StopReason::Failed
                } else {
                    StopReason::Completed
                };
                w.finish(&n, reason, now);
            }
        }
        let d = w.step(now);
        steps += 1;
        for c in &d.create {
            let nominal = c
                .dispatch
                .annotations()
                .get(SCHEDULED_TIME_ANNOTATION)
                .map(|s| at(s))
                .unwrap();
            assert!(nominal <= now, "{nominal} fired at {now}");
            if let Some(due) = c.due {
                assert!(due <= now, "{nominal} fired at {now}, before its offset");
                assert_eq!(due, nominal + jitter(UID, nominal, jitter_seconds));
            }
            match decided.get(&nominal) {
                None => {
                    decided.insert(nominal, "fired");
                }
                Some(&"buffered") => {
                    assert!(buffered_then.insert(nominal), "{nominal} fired twice");
                }
                Some(how) => panic!("{nominal} fired after it was {how}"),
            }
        }
        for t in &d.buffered {
            assert!(
                decided.insert(*t, "buffered").is_none(),
                "{t} decided twice"
            );
        }
        for (t, r) in &d.skipped {
            match decided.get(t) {
                None => {
                    decided.insert(*t, r);
                }
                // A waiting run that a newer one superseded (CancelOther).
                Some(&"buffered") if *r == "Superseded" && !buffered_then.contains(t) => {
                    buffered_then.insert(*t);
                }
                Some(how) => panic!("{t} skipped ({r}) after it was {how}"),
            }
        }
        assert!(w.dispatches.len() <= 10, "history limits keep it small");
    }
    let mut expected = Vec::new();
    let mut t = t0();
    while t < end {
        t += TimeDelta::minutes(5);
        expected.push(t);
    }
    let still_waiting: BTreeSet<_> = w
        .status()
        .buffered
        .iter()
        .map(|b| super::run::from_time(&b.scheduled_time))
        .collect();
    for t in &expected {
        assert!(decided.contains_key(t), "{t} was never decided ({policy})");
        if decided[t] == "buffered" {
            assert!(
                buffered_then.contains(t) || still_waiting.contains(t),
                "{t} was buffered and lost ({policy})"
            );
        }
    }
    assert_eq!(decided.len(), expected.len());
    let fired = decided.values().filter(|h| **h == "fired").count() + buffered_then.len();
    assert!(fired > 0);
    let took = started.elapsed();
    eprintln!(
        "{policy} (jitter {jitter_seconds}s): 7 days, {} nominal times, {steps} reconciles, {} Dispatches created, {:?} skipped by reason, in {took:?}",
        expected.len(),
        w.created.len(),
        decided
            .values()
            .fold(BTreeMap::<&str, usize>::new(), |mut m, h| {
                *m.entry(*h).or_default() += 1;
                m
            })
    );
    assert!(took.as_secs() < 30, "took {took:?}");
}

/// A completed meeting of alice's, as `transcript_events` reads it.
fn meeting(name: &str, completed: DateTime<Utc>) -> super::events::Event {
    let t: vexa_crds::Transcript = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Transcript",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}")},
        "spec": {"meeting": {"meetingId": name, "platform": "google_meet"}, "owner": "alice"},
        "status": {"phase": "completed", "completionTime": to_time(completed)},
    }))
    .unwrap();
    let s = schedule(json!({"events": [{"type": "transcript.completed"}]}));
    super::events::transcript_events(&s, &[t]).remove(0)
}

#[test]
fn each_event_fires_one_read_only_run_once_even_after_its_dispatch_is_gone() {
    let mut w = World::new(schedule(json!({
        "schedule": null,
        "events": [{"type": "transcript.completed"}]
    })));
    // Before the schedule existed: never fires.
    let old = meeting(
        "old",
        DateTime::parse_from_rfc3339("2026-05-31T23:00:00Z")
            .unwrap()
            .to_utc(),
    );
    w.events = vec![old.clone(), meeting("standup", min(10))];
    let d = w.step(min(11));
    assert_eq!(d.create.len(), 1, "{:?}", d.create);
    let run = &d.create[0].dispatch;
    assert_eq!(run.spec.trigger, vexa_crds::Trigger::Transcription);
    assert!(
        run.spec
            .workspaces
            .iter()
            .all(|x| x.mode == Some(vexa_crds::WorkspaceMode::ReadOnly))
    );
    assert_eq!(
        run.spec
            .context
            .as_ref()
            .and_then(|c| c.meeting.as_ref())
            .map(|m| m.meeting_id.as_str()),
        Some("standup")
    );
    assert_eq!(
        run.name_any(),
        super::events::dispatch_name(NAME, "transcript/uid-standup")
    );
    // A replay of the same events: nothing new.
    assert!(w.step(min(12)).create.is_empty());
    // The run ended and the history limits deleted it: still nothing new (the cursor).
    let name = run.name_any();
    w.finish(&name, StopReason::Completed, min(13));
    w.dispatches.clear();
    assert!(w.step(min(14)).create.is_empty());
    // A later meeting fires.
    w.events.push(meeting("retro", min(20)));
    let d = w.step(min(21));
    assert_eq!(d.create.len(), 1);
    assert_eq!(w.created.len(), 2);
}

#[test]
fn a_blocked_schedule_skips_events_with_its_reason_and_moves_past_them() {
    let mut w = World::new(schedule(json!({
        "schedule": null,
        "suspend": true,
        "events": [{"type": "transcript.completed"}]
    })));
    w.events = vec![meeting("standup", min(10))];
    let d = w.step(min(11));
    assert!(d.create.is_empty());
    assert!(
        w.status().missed.iter().any(|m| m.reason == "Suspended"),
        "{:?}",
        w.status().missed
    );
    w.schedule.spec.suspend = false;
    assert!(
        w.step(min(12)).create.is_empty(),
        "a skipped event does not fire later"
    );
}
