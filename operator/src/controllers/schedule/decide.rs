//! The Schedule's decisions, pure: from the Schedule, its Dispatches, its subject's Identity and
//! the time (given, never read from a clock), which Dispatches to create, which to ask to stop,
//! which finished ones to delete, the new status, the events and when to look again.
//!
//! Every nominal time the plan reaches is decided exactly once: fired (a Dispatch named after
//! it; one that exists already is adopted), buffered (it starts when the active run ends), or
//! skipped with a reason. `status.consideredUntil` is the cursor: after a restart the plan goes
//! on from there, so the catch-up policy decides what downtime missed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::{Resource, ResourceExt};
use vexa_core::names::{SCHEDULED_TIME_ANNOTATION, TEST_CRON_SECONDS_ANNOTATION};
use vexa_crds::{
    ActionRecord, CatchUpPolicy as SpecCatchUp, Dispatch, Identity, MissedRun, RecentRun, Schedule,
    ScheduleStatus,
};

use super::actions::{self, Action, Kind, What};
use super::overlap::{Work, backfill};
use super::plan::{self, Cadence, CatchUp, CatchUpPolicy, PlanError};
use super::run::{
    authorize, failed, floor_seconds, from_time, is_active, jitter, pauses, phase, rfc3339,
    scheduled_time, to_time,
};
use crate::runtime::conditions::{ConditionType, Conditions, find};
use crate::runtime::events::Note;

/// The most skipped runs `status.missed` lists.
pub const MAX_MISSED: usize = 10;
/// The most runs `status.recent` lists.
pub const MAX_RECENT: usize = 20;
/// The most runs waiting in `status.buffered`.
pub const MAX_BUFFERED: usize = 100;
/// The longest wait before the schedule is looked at again, so a clock that jumped is noticed.
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);
/// Default `successfulHistoryLimit`.
const DEFAULT_SUCCESSFUL_HISTORY: i32 = 3;
/// Default `failedHistoryLimit`.
const DEFAULT_FAILED_HISTORY: i32 = 1;
/// Default `catchUp.limit` for `All`.
const DEFAULT_CATCH_UP_LIMIT: i32 = 10;

/// Skip reasons beyond the plan's (`MissedCatchupWindow`, `Superseded`).
pub mod reason {
    /// A run was active and the policy does not start another.
    pub const OVERLAP: &str = "Overlap";
    /// `spec.suspend` was true.
    pub const SUSPENDED: &str = "Suspended";
    /// A failed run paused the schedule.
    pub const PAUSED: &str = "Paused";
    /// The subject's grant does not cover the template.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// A newer run took its place.
    pub const SUPERSEDED: &str = "Superseded";
    /// Every reason a nominal time is skipped for (these and the plan's).
    pub const ALL: [&str; 6] = [
        OVERLAP,
        SUSPENDED,
        PAUSED,
        UNAUTHORIZED,
        SUPERSEDED,
        "MissedCatchupWindow",
    ];
}

/// Operator settings the decision depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// `--schedule-seconds-field`: honour `vexa.ai/test-cron-seconds`.
    pub seconds_field: bool,
}

/// What observe read.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The Dispatches this Schedule controls (by owner UID).
    pub dispatches: Vec<Dispatch>,
    /// The Identity whose subject is the Schedule's subject, if any.
    pub identity: Option<Identity>,
    /// The events of its bound sources, each source's in order (see `events`).
    pub events: Vec<super::events::Event>,
    /// Sources read from their cursor by observe (mailboxes), with the position to keep.
    pub advance: Vec<vexa_crds::EventCursor>,
    /// Bound sources that could not be read, with why (a Warning event each).
    pub source_errors: Vec<String>,
}

/// A Dispatch to create (its `Fired` event is published by `apply` once the create succeeded:
/// an adopted Dispatch was fired before).
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The object.
    pub dispatch: Dispatch,
    /// When it was due: its nominal time plus its jitter (for the lateness metric); `None` for
    /// a run-now.
    pub due: Option<DateTime<Utc>>,
}

/// What a reconcile does.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Dispatches to create (an existing one of the same name is adopted).
    pub create: Vec<NewRun>,
    /// Active Dispatches to ask to stop (`spec.stop = true`).
    pub stop: Vec<String>,
    /// Finished Dispatches beyond the history limits.
    pub delete: Vec<String>,
    /// The new status.
    pub status: ScheduleStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Every nominal time skipped in this reconcile, oldest first, with its reason.
    pub skipped: Vec<(DateTime<Utc>, &'static str)>,
    /// Every nominal time buffered in this reconcile.
    pub buffered: Vec<DateTime<Utc>>,
    /// When to look again.
    pub requeue: Duration,
}

/// The cadence of `schedule`: `spec.schedule`, or in test mode the seconds annotation. `None`
/// for a schedule of events only. The `Option<String>` is a note for a person (an annotation
/// that was ignored).
fn cadence(
    schedule: &Schedule,
    settings: Settings,
) -> (Result<Option<Cadence>, PlanError>, Option<String>) {
    let zone = schedule.spec.time_zone.as_deref();
    let seconds = schedule.annotations().get(TEST_CRON_SECONDS_ANNOTATION);
    let mut note = None;
    if let Some(expression) = seconds {
        if settings.seconds_field {
            return (
                Cadence::parse_with_seconds(expression, zone).map(Some),
                None,
            );
        }
        note = Some(format!(
            "the annotation {TEST_CRON_SECONDS_ANNOTATION} is ignored: the operator runs \
             without --schedule-seconds-field (a test-only mode)"
        ));
    }
    let parsed = match &schedule.spec.schedule {
        Some(expression) => Cadence::parse(expression, zone).map(Some),
        None => Ok(None),
    };
    (parsed, note)
}

/// Checks what the schema cannot: each event trigger's `subjectPattern` is a valid regex.
fn events_valid(schedule: &Schedule) -> Result<(), (&'static str, String)> {
    for e in &schedule.spec.events {
        if let Some(p) = &e.subject_pattern
            && let Err(err) = regex::Regex::new(p)
        {
            return Err((
                "InvalidSubjectPattern",
                format!("events[].subjectPattern {p:?} is not a valid regular expression: {err}"),
            ));
        }
    }
    Ok(())
}

/// Decides a reconcile of `schedule` at `now`.
pub fn decide(
    schedule: &Schedule,
    seen: &Observed,
    settings: Settings,
    now: DateTime<Utc>,
) -> Decision {
    let name = schedule.name_any();
    let spec = &schedule.spec;
    let generation = schedule.metadata.generation;
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = generation;
    let t_now = to_time(now);

    let mut runs: Vec<&Dispatch> = seen.dispatches.iter().collect();
    runs.sort_by_key(|d| std::cmp::Reverse(scheduled_time(d)));
    let all_active: Vec<String> = runs
        .iter()
        .filter(|d| is_active(d))
        .map(|d| d.name_any())
        .collect();
    let stopping: BTreeSet<String> = runs
        .iter()
        .filter(|d| is_active(d) && d.spec.stop == Some(true))
        .map(|d| d.name_any())
        .collect();
    let mut work = Work {
        schedule,
        name: name.clone(),
        existing: runs.iter().map(|d| d.name_any()).collect(),
        active: all_active
            .iter()
            .filter(|n| !stopping.contains(*n))
            .cloned()
            .collect(),
        all_active,
        stopping,
        create: Vec::new(),
        stop: Vec::new(),
        skipped: Vec::new(),
        buffered: previous.buffered.clone(),
        newly_buffered: Vec::new(),
        notes: Vec::new(),
    };

    // Valid.
    let (cadence, ignored) = cadence(schedule, settings);
    let valid = match (&cadence, events_valid(schedule)) {
        (Err(e), _) => Err((e.reason(), e.to_string())),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(())) => Ok(()),
    };
    {
        let mut c = Conditions::new(&mut status.conditions, generation, &t_now);
        match &valid {
            Ok(()) => {
                let mut message = "the schedule and its event filters are valid".to_owned();
                if let Some(n) = &ignored {
                    message = format!("{message}; {n}");
                }
                c.set(ConditionType::Valid, true, "Valid", &message);
            }
            Err((reason, message)) => c.set(ConditionType::Valid, false, reason, message),
        }
    }
    if let Some(n) = &ignored {
        let said = find(&previous.conditions, ConditionType::Valid)
            .is_some_and(|c| c.message.contains(TEST_CRON_SECONDS_ANNOTATION));
        if !said {
            work.notes
                .push(Note::warning("TestModeOff", Some(n.clone()), "Plan"));
        }
    }
    if let Err((reason, message)) = &valid {
        let was = find(&previous.conditions, ConditionType::Valid)
            .is_some_and(|c| c.status == "False" && c.reason == *reason);
        if !was {
            work.notes
                .push(Note::warning(*reason, Some(message.clone()), "Plan"));
        }
    }

    // Authorized.
    let authorized = authorize(schedule, seen.identity.as_ref(), now);
    {
        let mut c = Conditions::new(&mut status.conditions, generation, &t_now);
        match &authorized {
            Ok(()) => c.set(
                ConditionType::Authorized,
                true,
                "Authorized",
                &format!(
                    "grant {:?} of {:?} covers the template",
                    spec.grant, spec.subject
                ),
            ),
            Err(r) => c.set(ConditionType::Authorized, false, r.reason, &r.message),
        }
    }
    if let Err(r) = &authorized {
        let was = find(&previous.conditions, ConditionType::Authorized)
            .is_some_and(|c| c.status == "False" && c.reason == r.reason);
        if !was {
            work.notes.push(Note::warning(
                r.reason,
                Some(r.message.clone()),
                "Authorize",
            ));
        }
    }

    // Actions: resume first, so a resumed schedule fires what is due now.
    let asked = actions::read(schedule.annotations());
    let mut records: Vec<(Action, String)> = Vec::new();
    let last_resume = status
        .actions
        .iter()
        .filter(|r| r.kind == Kind::Resume.as_str())
        .map(|r| from_time(&r.time))
        .max();
    let mut resumed_at = last_resume;
    for a in asked.iter().filter(|a| a.kind == Kind::Resume) {
        if actions::done(&status.actions, a) {
            continue;
        }
        let message = match &a.what {
            Err(e) => e.clone(),
            Ok(_) => {
                resumed_at = Some(now);
                match status.paused_by.take() {
                    Some(by) => format!("resumed (was paused by the failed run {by})"),
                    None => "the schedule was not paused; nothing to do".to_owned(),
                }
            }
        };
        records.push((a.clone(), message));
    }

    // Pause on failure: a failed run that ended after the last resume pauses the schedule.
    if spec.pause_on_failure && status.paused_by.is_none() {
        let failure = runs.iter().filter(|d| pauses(d)).find(|d| {
            let ended = d
                .status
                .as_ref()
                .and_then(|s| s.stop_time.as_ref())
                .map(from_time)
                .or_else(|| scheduled_time(d));
            resumed_at.is_none_or(|r| ended.is_some_and(|e| e > r))
        });
        if let Some(d) = failure {
            let by = d.name_any();
            work.notes.push(Note::warning(
                "Paused",
                Some(format!(
                    "run {by} failed; no run starts until the annotation vexa.ai/resume is set to a new id"
                )),
                "Pause",
            ));
            status.paused_by = Some(by);
        }
    }
    if !spec.pause_on_failure {
        status.paused_by = None;
    }
    let paused = status.paused_by.is_some();
    {
        let mut c = Conditions::new(&mut status.conditions, generation, &t_now);
        match &status.paused_by {
            Some(by) => c.set(
                ConditionType::Paused,
                true,
                "RunFailed",
                &format!(
                    "run {by} failed; set the annotation vexa.ai/resume to a new id to resume"
                ),
            ),
            None => c.set(
                ConditionType::Paused,
                false,
                "NotPaused",
                "runs start as scheduled",
            ),
        }
    }
    let blocked: Option<(&'static str, String)> = if let Err(r) = &authorized {
        Some((reason::UNAUTHORIZED, format!("{}: {}", r.reason, r.message)))
    } else if spec.suspend {
        Some((reason::SUSPENDED, "spec.suspend is true".to_owned()))
    } else if paused {
        Some((
            reason::PAUSED,
            format!(
                "paused after the failed run {}",
                status.paused_by.clone().unwrap_or_default()
            ),
        ))
    } else {
        None
    };

    // Run-now and backfill. An invalid schedule plans nothing.
    let cadence = cadence.ok().flatten().filter(|_| valid.is_ok());
    for a in asked.iter().filter(|a| a.kind != Kind::Resume) {
        if actions::done(&status.actions, a) {
            continue;
        }
        let message = match (&a.what, &authorized, valid.is_ok()) {
            (Err(e), _, _) => e.clone(),
            (Ok(_), Err(r), _) => format!("refused: {}", r.message),
            (Ok(What::Resume), _, _) => continue,
            (Ok(What::RunNow), Ok(()), _) => {
                let run = actions::run_now_name(&name, &a.id);
                if work.existing.contains(&run) {
                    format!("Dispatch {run} exists already")
                } else {
                    work.create_run(&run, floor_seconds(now), None);
                    format!("created Dispatch {run}")
                }
            }
            (Ok(What::Backfill { .. }), Ok(()), false) => {
                "refused: the schedule is not valid (see the Valid condition)".to_owned()
            }
            (Ok(What::Backfill { from, to }), Ok(()), true) => match &cadence {
                None => "refused: the schedule has no cron expression".to_owned(),
                Some(c) => backfill(&mut work, c, *from, *to, now),
            },
        };
        records.push((a.clone(), message));
    }
    for (a, message) in records {
        if a.what.is_err() {
            work.notes.push(Note::warning(
                "InvalidAction",
                Some(message.clone()),
                "Action",
            ));
        }
        actions::record(
            &mut status.actions,
            ActionRecord {
                kind: a.kind.as_str().into(),
                id: a.id.clone(),
                time: t_now.clone(),
                message: Some(message),
            },
            &asked,
        );
    }

    // Waiting runs start first (oldest first), so a new due run queues behind them.
    if blocked.is_none() {
        work.start_buffered();
    }

    // The plan.
    let mut next_due: Option<DateTime<Utc>> = None;
    let mut next_nominal: Option<DateTime<Utc>> = None;
    if let Some(c) = &cadence {
        let created = schedule
            .meta()
            .creation_timestamp
            .as_ref()
            .map_or(now, from_time);
        let mut since = previous
            .considered_until
            .as_ref()
            .map_or(created, from_time);
        if let Some(start) = &spec.start_time {
            since = since.max(from_time(start) - TimeDelta::nanoseconds(1));
        }
        let end = spec.end_time.as_ref().map(from_time);
        let until = end.map_or(now, |e| e.min(now));
        let jitter_max = spec.jitter_seconds.unwrap_or(0);
        let catch_up = CatchUp {
            window: spec
                .starting_deadline_seconds
                .map(|s| TimeDelta::seconds(s + i64::from(jitter_max))),
            policy: match &spec.catch_up {
                Some(cu) if cu.policy == SpecCatchUp::All => CatchUpPolicy::All {
                    max: u32::try_from(cu.limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT)).unwrap_or(1),
                },
                _ => CatchUpPolicy::Latest,
            },
        };
        match plan::plan(c, since, until, catch_up) {
            Ok(p) => {
                let uid = schedule.uid().unwrap_or_default();
                for s in p.skipped.iter().rev() {
                    work.skip(s.nominal, s.reason.as_str(), None);
                }
                if p.more_skipped {
                    work.notes.push(Note::warning(
                        "MissedMany",
                        Some("more runs were missed than are listed (the schedule was not considered for a long time)".to_owned()),
                        "Plan",
                    ));
                }
                let mut cursor = p.considered_until;
                let mut waiting = None;
                for t in &p.due {
                    let due = *t + jitter(&uid, *t, jitter_max);
                    if due > now {
                        // Not yet: this and every later time are planned again.
                        waiting = Some((*t, due));
                        cursor = *t - TimeDelta::seconds(1);
                        break;
                    }
                    match &blocked {
                        Some((r, m)) => {
                            if !work.existing.contains(&plan::dispatch_name(&name, *t)) {
                                work.skip(*t, r, Some(m.clone()));
                            }
                        }
                        None => work.due(*t),
                    }
                }
                // The cursor moves only when a time was decided: planning from an older cursor
                // with nothing in between is the same plan, and the status stays unchanged (no
                // write) while nothing happens.
                if !p.due.is_empty() || !p.skipped.is_empty() {
                    status.considered_until = Some(to_time(floor_seconds(cursor)));
                }
                next_nominal = match waiting {
                    Some((t, _)) => Some(t),
                    None => p.next.filter(|n| end.is_none_or(|e| *n <= e)),
                };
                next_due = match waiting {
                    Some((_, due)) => Some(due),
                    None => next_nominal.map(|n| n + jitter(&uid, n, jitter_max)),
                };
            }
            Err(e) => {
                let mut c = Conditions::new(&mut status.conditions, generation, &t_now);
                c.set(ConditionType::Valid, false, e.reason(), &e.to_string());
            }
        }
    }
    status.next_schedule_time = next_nominal.map(to_time);

    // Events: an invalid schedule fires none and keeps its cursors.
    for e in &seen.source_errors {
        work.notes.push(Note::warning(
            "EventSourceFailed",
            Some(e.clone()),
            "Observe",
        ));
    }
    if valid.is_ok() {
        let created = schedule
            .meta()
            .creation_timestamp
            .as_ref()
            .map_or(now, from_time);
        super::events::fire(
            &mut work,
            &seen.events,
            &seen.advance,
            &mut status.event_cursors,
            created,
            blocked.as_ref(),
        );
    }

    // History limits.
    let keep_ok = usize::try_from(
        spec.successful_history_limit
            .unwrap_or(DEFAULT_SUCCESSFUL_HISTORY),
    )
    .unwrap_or(0);
    let keep_failed =
        usize::try_from(spec.failed_history_limit.unwrap_or(DEFAULT_FAILED_HISTORY)).unwrap_or(0);
    let finished: Vec<&&Dispatch> = runs.iter().filter(|d| !is_active(d)).collect();
    let mut delete: Vec<String> = Vec::new();
    for (want_failed, keep) in [(false, keep_ok), (true, keep_failed)] {
        delete.extend(
            finished
                .iter()
                .filter(|d| failed(d) == want_failed)
                .skip(keep)
                .map(|d| d.name_any())
                // The run that paused the schedule stays for a person to look at.
                .filter(|n| status.paused_by.as_deref() != Some(n.as_str())),
        );
    }

    // Recent runs: what exists (and what was just created), then what was seen before and is
    // gone now, newest first.
    let mut recent: Vec<RecentRun> = runs
        .iter()
        .map(|d| RecentRun {
            name: d.name_any(),
            scheduled_time: to_time(scheduled_time(d).unwrap_or(now)),
            created_time: d.meta().creation_timestamp.clone(),
            phase: Some(phase(d).map_or("pending", |p| p.as_str()).to_owned()),
            stop_reason: d
                .status
                .as_ref()
                .and_then(|s| s.stop_reason)
                .map(|r| r.as_str().to_owned()),
        })
        .collect();
    for n in &work.create {
        recent.push(RecentRun {
            name: n.dispatch.name_any(),
            scheduled_time: n
                .dispatch
                .annotations()
                .get(SCHEDULED_TIME_ANNOTATION)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map_or_else(|| t_now.clone(), |t| to_time(t.with_timezone(&Utc))),
            created_time: Some(t_now.clone()),
            phase: Some("pending".to_owned()),
            stop_reason: None,
        });
    }
    for old in &previous.recent {
        if !recent.iter().any(|r| r.name == old.name) {
            recent.push(RecentRun {
                phase: Some("Deleted".to_owned()),
                ..old.clone()
            });
        }
    }
    recent.sort_by(|a, b| {
        b.scheduled_time
            .cmp(&a.scheduled_time)
            .then_with(|| b.name.cmp(&a.name))
    });
    recent.truncate(MAX_RECENT);
    status.recent = recent;

    // Skipped runs: newest first, one entry per nominal time.
    let mut missed: Vec<MissedRun> = work
        .skipped
        .iter()
        .rev()
        .map(|(t, r, m)| MissedRun {
            scheduled_time: to_time(*t),
            reason: (*r).to_owned(),
            message: m.clone(),
        })
        .collect();
    for old in &previous.missed {
        if !missed
            .iter()
            .any(|m| m.scheduled_time == old.scheduled_time)
        {
            missed.push(old.clone());
        }
    }
    missed.sort_by(|a, b| b.scheduled_time.cmp(&a.scheduled_time));
    missed.truncate(MAX_MISSED);
    status.missed = missed;

    // One Warning per skip reason, however many runs it skipped.
    let mut by_reason: BTreeMap<&'static str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (t, r, _) in &work.skipped {
        by_reason.entry(r).or_default().push(*t);
    }
    for (r, times) in &by_reason {
        let newest = times.iter().max().copied().unwrap_or(now);
        let message = if times.len() == 1 {
            format!("skipped the run of {}", rfc3339(newest))
        } else {
            format!(
                "skipped {} runs, the newest of {}",
                times.len(),
                rfc3339(newest)
            )
        };
        let detail = work
            .skipped
            .iter()
            .rev()
            .find(|(_, rr, _)| rr == r)
            .and_then(|(_, _, m)| m.clone());
        let message = match detail {
            Some(d) => format!("{message}: {d}"),
            None => message,
        };
        work.notes.push(Note::warning(*r, Some(message), "Plan"));
    }

    status.buffered = work.buffered.clone();
    status.active = work.all_active.clone();
    status.active.sort();
    if !work.create.is_empty() {
        status.last_schedule_time = Some(t_now.clone());
    }

    // Ready.
    let valid_ok =
        find(&status.conditions, ConditionType::Valid).is_some_and(|c| c.status == "True");
    let (ready, ready_reason, ready_message) = if !valid_ok {
        (false, "Invalid", "see the Valid condition".to_owned())
    } else if let Some((r, m)) = &blocked {
        (false, *r, m.clone())
    } else if cadence.is_some() && next_nominal.is_none() {
        (
            false,
            "NoMoreRuns",
            "no nominal time is ahead (endTime passed, or the expression never matches again)"
                .to_owned(),
        )
    } else {
        (
            true,
            "Scheduled",
            match next_nominal {
                Some(n) => format!("next run at {}", rfc3339(n)),
                None => "fires on events only".to_owned(),
            },
        )
    };
    Conditions::new(&mut status.conditions, generation, &t_now).ready(
        ready,
        ready_reason,
        ready_message,
    );

    // Look again when the next run is due, and at least every few minutes.
    let requeue = next_due
        .map(|d| (d - now).to_std().unwrap_or(Duration::ZERO))
        .unwrap_or(MAX_REQUEUE)
        .clamp(Duration::from_millis(50), MAX_REQUEUE);

    Decision {
        create: work.create,
        stop: work.stop,
        delete,
        notes: work.notes,
        skipped: work.skipped.iter().map(|(t, r, _)| (*t, *r)).collect(),
        buffered: work.newly_buffered,
        status,
        requeue,
    }
}
