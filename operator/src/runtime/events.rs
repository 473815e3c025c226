//! Kubernetes Events: what a person sees in `kubectl describe`. Controllers decide which events
//! a reconcile produces (pure data); this module publishes them.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

/// One event a reconcile decided to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal, or Warning for something a person should act on.
    pub warning: bool,
    /// A short CamelCase reason (bounded set).
    pub reason: String,
    /// What happened, in the user's terms.
    pub message: Option<String>,
    /// What the operator was doing (`Create`, `Prepare`, …).
    pub action: &'static str,
}

impl Note {
    /// A Normal event.
    pub fn normal(
        reason: impl Into<String>,
        message: Option<String>,
        action: &'static str,
    ) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            message,
            action,
        }
    }

    /// A Warning event.
    pub fn warning(
        reason: impl Into<String>,
        message: Option<String>,
        action: &'static str,
    ) -> Self {
        Self {
            warning: true,
            ..Self::normal(reason, message, action)
        }
    }
}

/// Publishes `notes` about `object`. An event that cannot be published is logged, never an
/// error: events are for people, the status is the record.
pub async fn publish<K>(recorder: &Recorder, object: &K, notes: Vec<Note>)
where
    K: Resource<DynamicType = ()>,
{
    if notes.is_empty() {
        return;
    }
    let reference = object.object_ref(&());
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason,
            note: note.message,
            action: note.action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(kind = %K::kind(&()), name = %object.name_any(), error = %e, "could not publish an event");
        }
    }
}
