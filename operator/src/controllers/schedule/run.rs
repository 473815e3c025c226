//! What a run of a Schedule is, pure: its Dispatch spec (the template, launcher
//! `schedule:<namespace>/<name>`, trigger `scheduled`), whether the subject's grant covers it,
//! its jitter, and what its Dispatch says about it (nominal time, active, failed).

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use vexa_core::names::{SCHEDULED_TIME_ANNOTATION, bounded_name};
use vexa_crds::{
    Dispatch, DispatchIdentity, DispatchSpec, Identity, Schedule, Trigger, WorkspaceMode,
};
use vexa_policy::{DelegationRequest, Refusal, SCHEDULE_LAUNCHER};

use crate::controllers::dispatch::decide::{identity_facts, request, unix_seconds};

/// A time as the status carries it (whole seconds: that is what the API server keeps).
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// A status time as a `DateTime`.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().unsigned_abs())
        .unwrap_or_default()
}

pub fn floor_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The launcher of a Schedule's Dispatches: `schedule:<namespace>/<name>`.
pub fn launcher(schedule: &Schedule) -> String {
    format!(
        "{SCHEDULE_LAUNCHER}{}/{}",
        schedule.namespace().unwrap_or_default(),
        schedule.name_any()
    )
}

/// The label value that marks a Schedule's Dispatches (a label value holds 63 characters).
pub fn label_value(schedule: &str) -> String {
    bounded_name(schedule, 63)
}

/// The run's start offset: whole seconds in `[0, max]`, from a hash of the schedule's UID and
/// the nominal time, so the same run always gets the same offset.
pub fn jitter(uid: &str, nominal: DateTime<Utc>, max_seconds: i32) -> TimeDelta {
    let Ok(max) = u64::try_from(max_seconds) else {
        return TimeDelta::zero();
    };
    if max == 0 {
        return TimeDelta::zero();
    }
    let digest = Sha256::digest(format!("{uid}/{}", nominal.timestamp()).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let offset = u64::from_be_bytes(first) % (max + 1);
    TimeDelta::seconds(i64::try_from(offset).unwrap_or(0))
}

/// The Dispatch spec a Schedule's template describes.
pub fn dispatch_spec(schedule: &Schedule) -> DispatchSpec {
    let t = &schedule.spec.template;
    DispatchSpec {
        identity: DispatchIdentity {
            subject: schedule.spec.subject.clone(),
            launcher: launcher(schedule),
        },
        runner: t.runner.clone(),
        workspaces: t.workspaces.clone(),
        tools: t.tools.clone(),
        trigger: Trigger::Scheduled,
        context: t.context.clone(),
        start: t.start.clone(),
        limits: t.limits.clone(),
        stop: None,
    }
}

/// Whether the template is within the subject's grant named by `spec.grant`, checked by the
/// same [`vexa_policy::delegation::authorize`] the Dispatch controller's custody check uses.
pub fn authorize(
    schedule: &Schedule,
    identity: Option<&Identity>,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let subject = &schedule.spec.subject;
    let Some(identity) = identity else {
        return Err(Refusal {
            reason: "NoDelegationGrant",
            message: format!(
                "there is no Identity with subject {subject:?} in this namespace: a Schedule \
                 launches only under a delegation grant of its subject's Identity"
            ),
        });
    };
    let facts = identity_facts(identity);
    let Some(grant) = facts.grants.iter().find(|g| g.name == schedule.spec.grant) else {
        return Err(Refusal {
            reason: "NoDelegationGrant",
            message: format!(
                "the Identity of {subject:?} has no grant named {:?}",
                schedule.spec.grant
            ),
        });
    };
    let spec = dispatch_spec(schedule);
    let asked = request(&spec);
    // A workspace without a mode is narrowed to the grant's, so its mode here does not matter.
    let delegation = DelegationRequest::of(
        &asked,
        spec.workspaces
            .iter()
            .map(|w| (w.name.as_str(), w.mode.unwrap_or(WorkspaceMode::ReadOnly))),
    );
    let now = unix_seconds(
        k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default(),
    );
    vexa_policy::delegation::authorize(&delegation, grant, &[], now).map(|_| ())
}

/// The nominal time a Dispatch of this schedule ran for: its annotation, else its creation.
pub fn scheduled_time(d: &Dispatch) -> Option<DateTime<Utc>> {
    d.annotations()
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| d.meta().creation_timestamp.as_ref().map(from_time))
}

pub fn phase(d: &Dispatch) -> Option<vexa_crds::DispatchPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

pub fn is_active(d: &Dispatch) -> bool {
    !phase(d).is_some_and(|p| p.is_terminal())
}

/// Whether a finished run counts as failed: it ended with a failure (or was refused).
pub fn failed(d: &Dispatch) -> bool {
    let reason = d.status.as_ref().and_then(|s| s.stop_reason);
    match reason {
        Some(r) => !r.is_success(),
        None => phase(d) == Some(vexa_crds::DispatchPhase::Refused),
    }
}

/// Whether a run ended in a way that pauses a `pauseOnFailure` schedule.
pub fn pauses(d: &Dispatch) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.stop_reason)
        .is_some_and(|r| !r.is_success())
}
