//! `Schedule`: the scheduler as a reconciled object. It creates Dispatches on a cron schedule
//! or when events arrive, under a delegation grant of the subject.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{OBJECT_NAME_PATTERN, RunLimits, SUBJECT_PATTERN};
use crate::dispatch::{DispatchContext, Start, WorkspaceUse};

// Five space-separated fields made of digits, names, `*`, `/`, `,`, `-` and `?`, or a macro.
// Ranges and names are checked fully by the operator's validate step.
const CRON_PATTERN: &str =
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4})$";

/// Runs Dispatches unattended.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Schedule",
    doc = "Creates Dispatches on a cron schedule or on events, under a delegation grant of the subject.",
    namespaced,
    shortname = "sched",
    category = "vexa",
    status = "ScheduleStatus",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(name = "Next", type_ = "date", json_path = ".status.nextScheduleTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.schedule) || (has(self.events) && size(self.events) > 0)")
    .message("a Schedule needs a cron schedule, event triggers, or both"))]
pub struct ScheduleSpec {
    /// Cron expression (five fields: minute hour day-of-month month day-of-week, or a macro
    /// such as `@daily`). Field ranges are checked by the operator, which reports a bad
    /// expression in the `Valid` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in, for example `Europe/Berlin` (default `UTC`).
    /// Checked against the operator's time-zone database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: Option<String>,
    /// Stop creating new Dispatches while true; running ones are not touched.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a run is due while an earlier one is still active.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// The catch-up window: a run missed by more than this many seconds (for example while
    /// the operator was down) is skipped with reason `MissedCatchupWindow`. Unset: every run
    /// missed since the schedule was last considered is inside the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub starting_deadline_seconds: Option<i64>,
    /// Which missed runs inside the catch-up window still fire (default `Latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// Each run starts up to this many seconds after its nominal time, by an offset derived
    /// from the schedule's UID and the nominal time (the same run always gets the same
    /// offset), so that many schedules on the same minute do not all start at once. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub jitter_seconds: Option<i32>,
    /// No run is nominally due before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// No run is nominally due after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// When a run of this schedule fails, pause it (condition `Paused`, reason `RunFailed`)
    /// until a person resumes it with the `vexa.ai/resume` annotation; due runs meanwhile are
    /// skipped with reason `Paused`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_on_failure: bool,
    /// How many finished successful Dispatches to keep (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_history_limit: Option<i32>,
    /// How many finished failed Dispatches to keep (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_history_limit: Option<i32>,
    /// Events that also fire the schedule, for example `email.received`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub events: Vec<EventTrigger>,
    /// The subject the Dispatches run for.
    #[schemars(length(min = 1, max = 128), regex(pattern = SUBJECT_PATTERN))]
    pub subject: String,
    /// Name of the delegation grant in the subject's Identity that this schedule launches
    /// under. Each Dispatch may only narrow it.
    #[schemars(length(min = 1, max = 63), regex(pattern = OBJECT_NAME_PATTERN))]
    pub grant: String,
    /// The Dispatch to create. Its launcher is `schedule:<namespace>/<name>`, and its trigger
    /// is `scheduled` for cron runs and `event` for event runs.
    pub template: DispatchTemplate,
}

/// What to do when runs overlap.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start the new run alongside the active one.
    Allow,
    /// Skip the new run and record it as skipped.
    #[default]
    Forbid,
    /// Ask the active run to stop and create the new one at once (it may queue behind the
    /// stopping run for a read-write workspace).
    Replace,
    /// Keep one run waiting: it starts when the active run ends. A run due while one is
    /// already waiting is skipped with reason `Overlap`.
    BufferOne,
    /// Keep every run waiting (at most 100), oldest first; each starts when the one before
    /// it ends.
    BufferAll,
    /// Ask the active run to stop, and start the new one once it has ended.
    CancelOther,
}

/// Which missed runs still fire after downtime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    /// `Latest` fires only the newest missed run inside the window; `All` fires up to
    /// `limit` of them, oldest first. The others are skipped with reason `Superseded`.
    #[serde(default)]
    pub policy: CatchUpPolicy,
    /// For `All`: how many missed runs fire at most (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i32>,
}

/// Catch-up policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CatchUpPolicy {
    /// Fire only the newest missed run.
    #[default]
    Latest,
    /// Fire every missed run inside the window, up to the limit.
    All,
}

/// An event that fires a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTrigger {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// For `transcript.completed`: only this Transcript (by name) fires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub transcript: Option<String>,
    /// For `email.received`: only this mailbox (an integration's mailbox id) fires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub mailbox: Option<String>,
    /// For `email.received`: only mail from this address (case-insensitive), or from any
    /// address of this domain when it starts with `@`, fires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub from: Option<String>,
    /// For `email.received`: only mail whose subject matches this regular expression fires
    /// it. Checked by the operator (condition `Valid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub subject_pattern: Option<String>,
}

/// Events a Schedule can react to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EventType {
    /// A new email arrived in a watched mailbox.
    #[serde(rename = "email.received")]
    EmailReceived,
    /// A meeting's transcript completed.
    #[serde(rename = "transcript.completed")]
    TranscriptCompleted,
}

/// The parts of a Dispatch that a Schedule fills in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatchTemplate {
    /// Name of the AgentRunner.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub runner: String,
    /// Workspaces, within the grant.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub workspaces: Vec<WorkspaceUse>,
    /// Tools, within the grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN)))]
    pub tools: Vec<String>,
    /// Context of each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DispatchContext>,
    /// How each run begins.
    pub start: Start,
    /// Limits of each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,
}

/// A run that did not happen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MissedRun {
    /// The scheduled time.
    pub scheduled_time: Time,
    /// Why it did not run: `MissedCatchupWindow`, `Superseded`, `Overlap`, `Suspended`,
    /// `Paused`, `Unauthorized`.
    pub reason: String,
    /// Details for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The observed state of a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When a Dispatch was last created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next cron run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Names of the Dispatches of this schedule that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub active: Vec<String>,
    /// Recent runs that were missed or skipped, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<MissedRun>,
    /// Every nominal time up to this instant has been decided (fired, buffered or skipped);
    /// the operator plans from here after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub considered_until: Option<Time>,
    /// Runs waiting for the active one to end (`BufferOne`, `BufferAll`, `CancelOther`,
    /// backfills), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub buffered: Vec<BufferedRun>,
    /// Recent runs with their outcome, newest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent: Vec<RecentRun>,
    /// Imperative actions (run-now, backfill, resume) already carried out, newest first (at
    /// most 20): an annotation re-applied with the same id does nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub actions: Vec<ActionRecord>,
    /// How far each event source has been read for this schedule (`transcript.completed`,
    /// `email.received:<mailbox>`): an event at or before a source's position never fires
    /// again, even after its Dispatch is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub event_cursors: Vec<EventCursor>,
    /// Set while the schedule is paused after a failed run: that run's Dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// Standard conditions: `Valid`, `Authorized`, `Paused`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A run waiting for the active one to end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BufferedRun {
    /// The nominal time it is for.
    pub scheduled_time: Time,
    /// The Dispatch it will create.
    pub name: String,
}

/// A run of the schedule and how it went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentRun {
    /// The Dispatch.
    pub name: String,
    /// The nominal time it ran for.
    pub scheduled_time: Time,
    /// When the Dispatch was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<Time>,
    /// The Dispatch's phase when last seen, or `Deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

/// An imperative action carried out once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// `RunNow`, `Backfill` or `Resume`.
    pub kind: String,
    /// The id the annotation carried.
    pub id: String,
    /// When it was carried out.
    pub time: Time,
    /// What it did, for a person (for example the Dispatches it created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How far one event source has been read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventCursor {
    /// The source: `transcript.completed` or `email.received:<mailbox>`.
    pub source: String,
    /// The source's position (for a mailbox `<uidValidity>/<uid>`; for transcripts the
    /// completion time and name of the last one that fired).
    pub position: String,
}
