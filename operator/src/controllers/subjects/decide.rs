//! What an Identity's status (`Linked`, `Ready`, `observedGeneration`) and events say after its
//! subject was (or could not be) linked, or when there is no directory to link it in. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vexa_crds::{Identity, IdentityStatus};

use crate::runtime::conditions::{ConditionType, Conditions, find};
use crate::runtime::events::Note;

/// The status to write (`None`: unchanged) and the events to publish.
#[derive(Debug, PartialEq)]
pub struct Decision {
    pub status: Option<IdentityStatus>,
    pub notes: Vec<Note>,
}

/// The reason of `Linked=False` when the directory could not be asked or refused.
pub const UNAVAILABLE: &str = "DirectoryUnavailable";
/// The reason of `Linked=True`.
pub const LINKED: &str = "Linked";
/// The reason of `Ready=True` when no directory is configured (nothing to link).
pub const NO_DIRECTORY: &str = "NoDirectory";

/// What linking the subject gave: the directory's answer and where it was asked; `None` when
/// the operator runs without a directory (`--keycloak-url` unset).
pub type Link<'a> = Option<(&'a Result<(), String>, &'a str)>;

/// `Linked` and `Ready` from `link`; an event when `Linked` changes.
pub fn decide(identity: &Identity, link: Link<'_>, now: &Time) -> Decision {
    let current = identity.status.clone().unwrap_or_default();
    let mut status = current.clone();
    status.observed_generation = identity.metadata.generation;
    let was = find(&current.conditions, ConditionType::Linked).map(|c| c.status.clone());
    let subject = &identity.spec.subject;
    let mut conditions = Conditions::new(&mut status.conditions, identity.metadata.generation, now);
    let mut notes = Vec::new();
    match link {
        None => conditions.ready(
            true,
            NO_DIRECTORY,
            format!(
                "subject {subject:?} may launch; no identity provider is configured, so there is \
                 nothing to link (and no tool call is exchanged at a gateway)"
            ),
        ),
        Some((Ok(()), where_)) => {
            let message = format!(
                "subject {subject:?} is a user of {where_}, linked to the dispatch-token issuer"
            );
            conditions.set(ConditionType::Linked, true, LINKED, &message);
            conditions.ready(true, LINKED, &message);
            if was.as_deref() != Some("True") {
                notes.push(Note::normal(LINKED, Some(message), "Link"));
            }
        }
        Some((Err(why), where_)) => {
            let message = format!(
                "subject {subject:?} could not be linked in {where_}: {why}; tool calls of its \
                 dispatches are refused until it is (retried with backoff)"
            );
            conditions.set(ConditionType::Linked, false, UNAVAILABLE, &message);
            conditions.ready(false, UNAVAILABLE, &message);
            if was.as_deref() != Some("False") {
                notes.push(Note::warning(UNAVAILABLE, Some(message), "Link"));
            }
        }
    }
    Decision {
        status: (status != current).then_some(status),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::conditions::{is_true, now};
    use vexa_crds::IdentitySpec;

    fn identity(status: Option<IdentityStatus>) -> Identity {
        let mut i = Identity::new(
            "carol",
            IdentitySpec {
                subject: "carol".into(),
                kubernetes_users: vec![],
                grants: vec![],
            },
        );
        i.metadata.generation = Some(3);
        i.status = status;
        i
    }

    const KC: &str = "Keycloak realm \"vexa\" at http://kc";

    #[test]
    fn a_linked_subject_is_linked_true_with_one_event() {
        let d = decide(&identity(None), Some((&Ok(()), KC)), &now());
        let status = d.status.expect("a first status is written");
        let c = find(&status.conditions, ConditionType::Linked).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", LINKED));
        assert_eq!(status.observed_generation, Some(3));
        assert!(is_true(&status.conditions, ConditionType::Ready));
        assert_eq!(d.notes.len(), 1);
        // Nothing changed: no write, no event.
        let again = decide(&identity(Some(status)), Some((&Ok(()), KC)), &now());
        assert_eq!(
            again,
            Decision {
                status: None,
                notes: vec![]
            }
        );
    }

    #[test]
    fn a_directory_that_is_down_is_linked_false_with_the_reason() {
        let down = Err("connection refused".to_owned());
        let d = decide(&identity(None), Some((&down, KC)), &now());
        let status = d.status.unwrap();
        let c = find(&status.conditions, ConditionType::Linked).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", UNAVAILABLE)
        );
        assert!(c.message.contains("connection refused"), "{}", c.message);
        assert!(c.message.contains("\"carol\""), "{}", c.message);
        let ready = find(&status.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", UNAVAILABLE)
        );
        assert!(d.notes[0].warning);
        let recovered = decide(&identity(Some(status)), Some((&Ok(()), KC)), &now());
        assert_eq!(recovered.notes.len(), 1, "the recovery is an event");
    }

    #[test]
    fn without_a_directory_an_identity_is_ready_and_never_linked() {
        let d = decide(&identity(None), None, &now());
        let status = d.status.expect("a first status is written");
        let ready = find(&status.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", NO_DIRECTORY)
        );
        assert!(find(&status.conditions, ConditionType::Linked).is_none());
        assert_eq!(status.observed_generation, Some(3));
        assert!(d.notes.is_empty());
        assert_eq!(decide(&identity(Some(status)), None, &now()).status, None);
    }
}
