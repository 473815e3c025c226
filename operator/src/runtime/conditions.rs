//! Standard conditions (`type`, `status`, `reason`, `message`, `lastTransitionTime`,
//! `observedGeneration`), set through one typed setter by every controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types the operator writes. One list, so a typo cannot invent a new type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// The object does what it is for (a run is live; a workspace can be mounted).
    Ready,
    /// Everything the object refers to exists and is usable.
    Valid,
    /// The dispatch may run as specified.
    Authorized,
    /// The dispatch waits for a workspace (held by another run, or not ready yet).
    Queued,
    /// The run is over (reason `Succeeded` or `Failed`).
    Finished,
    /// A Tool's MCP server answers.
    Reachable,
    /// A Tool's audience is a client the gateway can exchange tokens for.
    AudienceKnown,
    /// An Identity's subject is a user of the identity provider, linked to the dispatch-token
    /// issuer (what the gateway's JWT grant needs).
    Linked,
    /// A Schedule is paused after a failed run.
    Paused,
    /// An approved Card was carried out (its record committed, its message sent).
    Applied,
}

impl ConditionType {
    /// The `type` string written to the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Valid => "Valid",
            ConditionType::Authorized => "Authorized",
            ConditionType::Queued => "Queued",
            ConditionType::Finished => "Finished",
            ConditionType::Reachable => "Reachable",
            ConditionType::AudienceKnown => "AudienceKnown",
            ConditionType::Linked => "Linked",
            ConditionType::Paused => "Paused",
            ConditionType::Applied => "Applied",
        }
    }
}

/// The conditions of one object being reconciled at one moment: every `set` stamps the same
/// generation and time.
#[derive(Debug)]
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: i64,
    now: &'a Time,
}

impl<'a> Conditions<'a> {
    /// The conditions in `list`, for the spec of `generation`, observed at `now`.
    pub fn new(list: &'a mut Vec<Condition>, generation: Option<i64>, now: &'a Time) -> Self {
        Self {
            list,
            generation: generation.unwrap_or_default(),
            now,
        }
    }

    /// Sets condition `type_`. Its `lastTransitionTime` changes only when its status does, so
    /// an unchanged state produces an identical status (and no write).
    pub fn set(&mut self, type_: ConditionType, status: bool, reason: &str, message: &str) {
        self.set_status(
            type_,
            if status { "True" } else { "False" },
            reason,
            message,
        );
    }

    /// Sets condition `type_` to `Unknown`: it could not be found out (see `reason`).
    pub fn set_unknown(&mut self, type_: ConditionType, reason: &str, message: &str) {
        self.set_status(type_, "Unknown", reason, message);
    }

    fn set_status(&mut self, type_: ConditionType, status: &str, reason: &str, message: &str) {
        match self.list.iter_mut().find(|c| c.type_ == type_.as_str()) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = self.now.clone();
                    c.status = status.into();
                }
                c.reason = reason.into();
                c.message = message.into();
                c.observed_generation = Some(self.generation);
            }
            None => self.list.push(Condition {
                type_: type_.as_str().into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: Some(self.generation),
                last_transition_time: self.now.clone(),
            }),
        }
    }

    /// Sets `Ready`, the condition every kind has.
    pub fn ready(&mut self, status: bool, reason: &str, message: impl AsRef<str>) {
        self.set(ConditionType::Ready, status, reason, message.as_ref());
    }

    /// Whether condition `type_` is present.
    pub fn has(&self, type_: ConditionType) -> bool {
        self.list.iter().any(|c| c.type_ == type_.as_str())
    }
}

/// The condition `type_` in `list`, if present.
pub fn find(list: &[Condition], type_: ConditionType) -> Option<&Condition> {
    list.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether condition `type_` is present and `True`.
pub fn is_true(list: &[Condition], type_: ConditionType) -> bool {
    find(list, type_).is_some_and(|c| c.status == "True")
}

/// The current time, as conditions and status timestamps carry it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut list = Vec::new();
        let t1 = at(1_000);
        Conditions::new(&mut list, Some(1), &t1).set(
            ConditionType::Ready,
            false,
            "Preparing",
            "the folder is being prepared",
        );
        let t2 = at(2_000);
        Conditions::new(&mut list, Some(2), &t2).set(
            ConditionType::Ready,
            false,
            "Preparing",
            "still preparing",
        );
        let c = find(&list, ConditionType::Ready).unwrap();
        assert_eq!(c.last_transition_time, t1);
        assert_eq!(c.message, "still preparing");
        assert_eq!(c.observed_generation, Some(2));
        let t3 = at(3_000);
        Conditions::new(&mut list, Some(2), &t3).set(ConditionType::Ready, true, "Ready", "ok");
        let c = find(&list, ConditionType::Ready).unwrap();
        assert_eq!(c.last_transition_time, t3);
        assert!(is_true(&list, ConditionType::Ready));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn conditions_of_other_types_are_kept_apart() {
        let mut list = Vec::new();
        let t = at(1);
        let mut c = Conditions::new(&mut list, None, &t);
        c.set(ConditionType::Valid, true, "ReferencesResolved", "");
        c.set(ConditionType::Queued, true, "WorkspaceBusy", "");
        assert!(c.has(ConditionType::Queued));
        assert!(!c.has(ConditionType::Finished));
        assert_eq!(list.len(), 2);
        assert!(is_true(&list, ConditionType::Valid));
        assert!(!is_true(&list, ConditionType::Ready));
    }
}
