//! `kubectl vexa schedule next | history | run-now | backfill | resume`: a Schedule's plan and
//! history as its status says (the operator's view, never recomputed here), and the imperative
//! actions the operator carries out once per id.
//!
//! An action is an annotation on the Schedule carrying an id: the operator processes each id
//! once and records it in `status.actions`, so re-applying the same manifest (GitOps) does
//! nothing. The command sets the annotation, then waits for the record and prints it.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use vexa_core::names::{
    SCHEDULE_BACKFILL_ANNOTATION, SCHEDULE_RESUME_ANNOTATION, SCHEDULE_RUN_NOW_ANNOTATION,
};
use vexa_crds::{ActionRecord, Schedule};

use crate::error::CliError;
use crate::safe::for_terminal;

/// An imperative action on a Schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a run now, outside the cadence.
    RunNow,
    /// Run every nominal time in [`from`, `to`].
    Backfill {
        /// The first nominal time.
        from: Timestamp,
        /// The last nominal time.
        to: Timestamp,
    },
    /// Lift a pause after a failed run.
    Resume,
}

impl Action {
    /// The annotation that asks for it.
    pub fn annotation(&self) -> &'static str {
        match self {
            Action::RunNow => SCHEDULE_RUN_NOW_ANNOTATION,
            Action::Backfill { .. } => SCHEDULE_BACKFILL_ANNOTATION,
            Action::Resume => SCHEDULE_RESUME_ANNOTATION,
        }
    }

    /// The annotation's value for `id`: the id itself, or for a backfill a JSON object.
    pub fn value(&self, id: &str) -> String {
        match self {
            Action::Backfill { from, to } => {
                json!({"id": id, "from": from.to_string(), "to": to.to_string()}).to_string()
            }
            Action::RunNow | Action::Resume => id.to_owned(),
        }
    }

    /// The merge patch that sets the annotation.
    pub fn patch(&self, id: &str) -> Value {
        json!({"metadata": {"annotations": {self.annotation(): self.value(id)}}})
    }
}

/// An action id unique enough for one person's commands: the time in milliseconds.
pub fn new_id(now: Timestamp) -> String {
    format!("cli-{}", now.as_millisecond())
}

/// The record of action `id`, once the operator has carried it out.
pub fn record<'a>(s: &'a Schedule, id: &str) -> Option<&'a ActionRecord> {
    s.status.as_ref()?.actions.iter().find(|a| a.id == id)
}

fn time(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
}

fn condition<'a>(
    s: &'a Schedule,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

/// `schedule next`: when the next run is due and what would stop it.
pub fn render_next(s: &Schedule) -> String {
    let status = s.status.clone().unwrap_or_default();
    let mut out = String::new();
    let cadence = match (&s.spec.schedule, &s.spec.time_zone) {
        (Some(c), Some(z)) => format!("{c} ({z})"),
        (Some(c), None) => format!("{c} (UTC)"),
        (None, _) => "events only".to_owned(),
    };
    let _ = writeln!(out, "schedule:   {}", for_terminal(&cadence));
    let _ = writeln!(
        out,
        "next:       {}",
        time(status.next_schedule_time.as_ref())
    );
    let _ = writeln!(
        out,
        "last:       {}",
        time(status.last_schedule_time.as_ref())
    );
    let _ = writeln!(
        out,
        "policy:     {:?}{}",
        s.spec.concurrency_policy,
        s.spec
            .jitter_seconds
            .filter(|j| *j > 0)
            .map_or_else(String::new, |j| format!(", jitter up to {j}s"))
    );
    let _ = writeln!(
        out,
        "active:     {}",
        if status.active.is_empty() {
            "-".to_owned()
        } else {
            status.active.join(", ")
        }
    );
    if !status.buffered.is_empty() {
        let waiting: Vec<String> = status
            .buffered
            .iter()
            .map(|b| format!("{} ({})", b.name, b.scheduled_time.0))
            .collect();
        let _ = writeln!(out, "waiting:    {}", waiting.join(", "));
    }
    // What would keep the next run from starting, in the order the operator checks it.
    let mut blockers = Vec::new();
    if s.spec.suspend {
        blockers.push("suspended (spec.suspend)".to_owned());
    }
    for kind in ["Valid", "Authorized", "Paused"] {
        if let Some(c) = condition(s, kind) {
            let bad = if kind == "Paused" {
                c.status == "True"
            } else {
                c.status == "False"
            };
            if bad {
                blockers.push(format!("{kind}: {} ({})", c.message, c.reason));
            }
        }
    }
    if let Some(end) = &s.spec.end_time
        && status
            .next_schedule_time
            .as_ref()
            .is_none_or(|n| n.0 > end.0)
    {
        blockers.push(format!("ends at {}", end.0));
    }
    for b in blockers {
        let _ = writeln!(out, "blocked:    {}", for_terminal(&b));
    }
    out
}

/// `schedule history`: recent runs, skipped runs and actions, newest first.
pub fn render_history(s: &Schedule) -> String {
    let status = s.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "RUNS");
    if status.recent.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    } else {
        let _ = writeln!(
            out,
            "  {:<34} {:<22} {:<22} {:<10} STOP REASON",
            "DISPATCH", "SCHEDULED", "CREATED", "PHASE"
        );
        for r in &status.recent {
            let _ = writeln!(
                out,
                "  {:<34} {:<22} {:<22} {:<10} {}",
                r.name,
                r.scheduled_time.0.to_string(),
                time(r.created_time.as_ref()),
                r.phase.as_deref().unwrap_or("-"),
                r.stop_reason.as_deref().unwrap_or("-")
            );
        }
    }
    let _ = writeln!(out, "SKIPPED");
    if status.missed.is_empty() {
        let _ = writeln!(out, "  (none)");
    } else {
        for m in &status.missed {
            let _ = writeln!(
                out,
                "  {:<22} {:<20} {}",
                m.scheduled_time.0.to_string(),
                m.reason,
                for_terminal(m.message.as_deref().unwrap_or(""))
            );
        }
    }
    if !status.actions.is_empty() {
        let _ = writeln!(out, "ACTIONS");
        for a in &status.actions {
            let _ = writeln!(
                out,
                "  {:<22} {:<9} {:<20} {}",
                a.time.0.to_string(),
                a.kind,
                for_terminal(&a.id),
                for_terminal(a.message.as_deref().unwrap_or(""))
            );
        }
    }
    out
}

/// Reads Schedule `namespace/name`, with errors in the user's terms.
pub async fn get(api: &Api<Schedule>, namespace: &str, name: &str) -> Result<Schedule, CliError> {
    match api.get(name).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(CliError::Usage(format!(
            "schedule {namespace}/{name} not found (list them with `kubectl get schedules -n {namespace}`)"
        ))),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(CliError::Forbidden {
            action: format!("reading schedule {namespace}/{name}"),
            needs: format!("get on schedules (vexa.ai) in namespace {namespace}"),
            message: s.message,
        }),
        Err(e) => Err(CliError::kube(
            format!("reading schedule {namespace}/{name}"),
            e,
        )),
    }
}

/// Asks for `action` with `id` and waits up to `wait` for the operator's record of it.
pub async fn request(
    api: &Api<Schedule>,
    namespace: &str,
    name: &str,
    action: &Action,
    id: &str,
    wait: Duration,
) -> Result<ActionRecord, CliError> {
    let current = get(api, namespace, name).await?;
    if let Some(done) = record(&current, id) {
        return Ok(done.clone());
    }
    let what = format!("annotating schedule {namespace}/{name}");
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(action.patch(id)),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(CliError::Forbidden {
                action: what,
                needs: format!("patch on schedules (vexa.ai) in namespace {namespace}"),
                message: s.message,
            });
        }
        Err(e) => return Err(CliError::kube(what, e)),
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = get(api, namespace, name).await?;
        if let Some(done) = record(&s, id) {
            return Ok(done.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "the operator has not carried out {} {id} on schedule {namespace}/{name} within {}s; \
                 it stays asked for (the annotation is set): check `kubectl describe schedule -n {namespace} {name}`",
                action.annotation(),
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One line for a carried-out action.
pub fn render_record(r: &ActionRecord) -> String {
    format!(
        "{} {}: {}",
        r.kind,
        for_terminal(&r.id),
        for_terminal(r.message.as_deref().unwrap_or("done"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use vexa_crds::{MissedRun, RecentRun, ScheduleStatus};

    fn schedule(status: ScheduleStatus) -> Schedule {
        let mut s: Schedule = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Schedule",
            "metadata": {"name": "nightly", "namespace": "team-a"},
            "spec": {
                "schedule": "0 2 * * *", "timeZone": "Europe/Berlin",
                "concurrencyPolicy": "BufferOne", "jitterSeconds": 30,
                "subject": "alice", "grant": "nightly",
                "template": {"runner": "r", "workspaces": [{"name": "w", "mode": "rw"}],
                             "start": {"entrypoint": {"path": "p.md"}}}
            }
        }))
        .expect("a Schedule");
        s.status = Some(status);
        s
    }

    fn t(s: &str) -> Time {
        Time(s.parse().expect("a timestamp"))
    }

    #[test]
    fn a_backfill_asks_with_its_range_as_json_and_run_now_with_the_id_alone() {
        let b = Action::Backfill {
            from: "2026-12-01T00:00:00Z".parse().unwrap_or_default(),
            to: "2026-12-03T00:00:00Z".parse().unwrap_or_default(),
        };
        assert_eq!(
            b.patch("b1"),
            json!({"metadata": {"annotations": {SCHEDULE_BACKFILL_ANNOTATION:
                r#"{"from":"2026-12-01T00:00:00Z","id":"b1","to":"2026-12-03T00:00:00Z"}"#}}})
        );
        assert_eq!(
            Action::RunNow.patch("x"),
            json!({"metadata": {"annotations": {SCHEDULE_RUN_NOW_ANNOTATION: "x"}}})
        );
    }

    #[test]
    fn next_names_what_blocks_the_next_run() {
        let s = schedule(ScheduleStatus {
            next_schedule_time: Some(t("2026-12-07T01:00:00Z")),
            active: vec!["nightly-1796000000".into()],
            conditions: vec![Condition {
                type_: "Paused".into(),
                status: "True".into(),
                reason: "RunFailed".into(),
                message: "run nightly-1796000000 failed".into(),
                last_transition_time: t("2026-12-06T01:00:00Z"),
                observed_generation: None,
            }],
            ..ScheduleStatus::default()
        });
        let out = render_next(&s);
        assert!(out.contains("0 2 * * * (Europe/Berlin)"), "{out}");
        assert!(out.contains("next:       2026-12-07T01:00:00Z"), "{out}");
        assert!(out.contains("BufferOne, jitter up to 30s"), "{out}");
        assert!(
            out.contains("blocked:    Paused: run nightly-1796000000 failed (RunFailed)"),
            "{out}"
        );
    }

    #[test]
    fn history_lists_runs_skips_and_actions_with_hostile_text_neutralised() {
        let s = schedule(ScheduleStatus {
            recent: vec![RecentRun {
                name: "nightly-1796000000".into(),
                scheduled_time: t("2026-12-06T01:00:00Z"),
                created_time: Some(t("2026-12-06T01:00:00.2Z")),
                phase: Some("stopped".into()),
                stop_reason: Some("completed".into()),
            }],
            missed: vec![MissedRun {
                scheduled_time: t("2026-12-05T01:00:00Z"),
                reason: "Overlap".into(),
                message: Some("run \u{1b}[31mnightly-1\u{1b}[0m was active".into()),
            }],
            actions: vec![ActionRecord {
                kind: "RunNow".into(),
                id: "cli-1".into(),
                time: t("2026-12-06T02:00:00Z"),
                message: Some("created nightly-now-abc".into()),
            }],
            ..ScheduleStatus::default()
        });
        let out = render_history(&s);
        assert!(out.contains("nightly-1796000000"), "{out}");
        assert!(out.contains("completed"), "{out}");
        assert!(out.contains("Overlap"), "{out}");
        assert!(
            !out.contains('\u{1b}'),
            "an escape reached the terminal: {out}"
        );
        assert!(out.contains("created nightly-now-abc"), "{out}");
        assert_eq!(
            record(&s, "cli-1").map(render_record).as_deref(),
            Some("RunNow cli-1: created nightly-now-abc")
        );
        assert!(record(&s, "cli-2").is_none());
    }
}
