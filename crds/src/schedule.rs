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
    /// A run missed by more than this many seconds (for example while the operator was down)
    /// is skipped and recorded as missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub starting_deadline_seconds: Option<i64>,
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
    /// Stop the active run and start the new one.
    Replace,
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
    /// Why it did not run: `MissedDeadline`, `ConcurrencyForbid`, `Suspended`, `Unauthorized`.
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
    /// Standard conditions: `Valid`, `Authorized`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
