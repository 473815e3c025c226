//! What an AgentRunner's status (`Ready`, `observedGeneration`) and events say about whether
//! dispatches can use it: today, whether the model credential it names can be brokered (the
//! model gateway reads it from a Secret of the operator's namespace, on each request). Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vexa_crds::{AgentRunner, AgentRunnerStatus};

use crate::runtime::conditions::{ConditionType, Conditions, find};
use crate::runtime::events::Note;

/// What was found of the runner's model credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The runner brokers none.
    None,
    /// The Secret exists and holds the key.
    Found,
    /// `secretRef.namespace` names another namespace than the operator's.
    OtherNamespace(String),
    /// No such Secret in the operator's namespace.
    SecretNotFound,
    /// The Secret exists without the key.
    KeyMissing,
}

/// The Secret of the operator's namespace to read for `runner`'s credential (name, key), or
/// what is known without reading anything: it brokers none, or it names another namespace
/// (which is never read).
pub fn secret_to_read<'a>(
    runner: &'a AgentRunner,
    operator_ns: &str,
) -> Result<(&'a str, &'a str), Credential> {
    let Some(credential) = &runner.spec.model_credential else {
        return Err(Credential::None);
    };
    let reference = &credential.secret_ref;
    match reference.namespace.as_deref() {
        Some(ns) if ns != operator_ns => Err(Credential::OtherNamespace(ns.to_owned())),
        _ => Ok((&reference.name, &reference.key)),
    }
}

/// The reasons of `Ready`.
pub mod reason {
    /// Dispatches can use the runner.
    pub const READY: &str = "Ready";
    /// The credential's Secret is not in the operator's namespace.
    pub const NAMESPACE: &str = "CredentialNamespace";
    /// The credential's Secret does not exist.
    pub const NOT_FOUND: &str = "CredentialNotFound";
    /// The credential's Secret lacks the key.
    pub const KEY_MISSING: &str = "CredentialKeyMissing";
}

/// The status to write (`None`: unchanged) and the events to publish.
#[derive(Debug, PartialEq)]
pub struct Decision {
    pub status: Option<AgentRunnerStatus>,
    pub notes: Vec<Note>,
}

/// `Ready` of `runner` from what was found of its credential in `operator_ns`; an event when
/// it changes.
pub fn decide(
    runner: &AgentRunner,
    credential: &Credential,
    operator_ns: &str,
    now: &Time,
) -> Decision {
    let current = runner.status.clone().unwrap_or_default();
    let mut status = current.clone();
    status.observed_generation = runner.metadata.generation;
    let secret = runner
        .spec
        .model_credential
        .as_ref()
        .map(|c| (c.secret_ref.name.clone(), c.secret_ref.key.clone()))
        .unwrap_or_default();
    let (name, key) = (&secret.0, &secret.1);
    let (ready, why, message) = match credential {
        Credential::None => (
            true,
            reason::READY,
            "dispatches can use it; it brokers no model credential".to_owned(),
        ),
        Credential::Found => (
            true,
            reason::READY,
            format!(
                "dispatches can use it; its model credential ({operator_ns}/{name}, key {key:?}) \
                 is brokered by the model gateway"
            ),
        ),
        Credential::OtherNamespace(ns) => (
            false,
            reason::NAMESPACE,
            format!(
                "the model credential names the namespace {ns:?}, but the model gateway reads \
                 Secrets only in the operator's namespace {operator_ns:?}: move the Secret there \
                 and drop secretRef.namespace"
            ),
        ),
        Credential::SecretNotFound => (
            false,
            reason::NOT_FOUND,
            format!(
                "the Secret {operator_ns}/{name} holding the model credential does not exist: \
                 create it (its dispatches' model requests fail until it does)"
            ),
        ),
        Credential::KeyMissing => (
            false,
            reason::KEY_MISSING,
            format!(
                "the Secret {operator_ns}/{name} has no key {key:?}: add it (its dispatches' \
                 model requests fail until it does)"
            ),
        ),
    };
    let was = find(&current.conditions, ConditionType::Ready)
        .map(|c| (c.status.clone(), c.reason.clone()));
    Conditions::new(&mut status.conditions, runner.metadata.generation, now)
        .ready(ready, why, &message);
    let now_is = (
        if ready { "True" } else { "False" }.to_owned(),
        why.to_owned(),
    );
    let mut notes = Vec::new();
    if was.as_ref() != Some(&now_is) && (!ready || was.is_some()) {
        notes.push(if ready {
            Note::normal(why, Some(message), "Check")
        } else {
            Note::warning(why, Some(message), "Check")
        });
    }
    Decision {
        status: (status != current).then_some(status),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::conditions::now;
    use rstest::rstest;
    use serde_json::json;

    fn runner(credential: bool) -> AgentRunner {
        let mut spec = json!({"image": "agent:1", "argv": ["agent", "${prompt}"],
                              "streamFormat": "claude-stream-json", "sessionPath": ".vexa/sessions"});
        if credential {
            spec["modelCredential"] = json!({"secretRef": {"name": "anthropic", "key": "api-key"},
                                             "env": "ANTHROPIC_API_KEY"});
        }
        serde_json::from_value(json!({"apiVersion": "vexa.ai/v1", "kind": "AgentRunner",
            "metadata": {"name": "claude", "generation": 4}, "spec": spec}))
        .unwrap()
    }

    #[rstest]
    #[case::no_credential(
        false,
        Credential::None,
        "True",
        reason::READY,
        "brokers no model credential"
    )]
    #[case::found(
        true,
        Credential::Found,
        "True",
        reason::READY,
        "vexa-system/anthropic"
    )]
    #[case::other_namespace(true, Credential::OtherNamespace("team".into()), "False", reason::NAMESPACE, "\"team\"")]
    #[case::not_found(
        true,
        Credential::SecretNotFound,
        "False",
        reason::NOT_FOUND,
        "Secret vexa-system/anthropic holding the model credential does not exist"
    )]
    #[case::key_missing(
        true,
        Credential::KeyMissing,
        "False",
        reason::KEY_MISSING,
        "no key \"api-key\""
    )]
    fn ready_says_whether_the_credential_can_be_brokered(
        #[case] with_credential: bool,
        #[case] credential: Credential,
        #[case] status: &str,
        #[case] why: &str,
        #[case] says: &str,
    ) {
        let d = decide(&runner(with_credential), &credential, "vexa-system", &now());
        let written = d.status.expect("a first status is written");
        assert_eq!(written.observed_generation, Some(4));
        let c = find(&written.conditions, ConditionType::Ready).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), (status, why));
        assert!(c.message.contains(says), "{}", c.message);
        assert_eq!(c.observed_generation, Some(4));
        // A broken runner is a Warning at once; a ready one is no news.
        assert_eq!(d.notes.len(), usize::from(status == "False"));
    }

    #[test]
    fn a_secret_of_another_namespace_is_never_read() {
        let mut r = runner(true);
        assert_eq!(
            secret_to_read(&r, "vexa-system"),
            Ok(("anthropic", "api-key"))
        );
        if let Some(c) = r.spec.model_credential.as_mut() {
            c.secret_ref.namespace = Some("team-b".into());
        }
        assert_eq!(
            secret_to_read(&r, "vexa-system"),
            Err(Credential::OtherNamespace("team-b".into()))
        );
        if let Some(c) = r.spec.model_credential.as_mut() {
            c.secret_ref.namespace = Some("vexa-system".into());
        }
        assert!(secret_to_read(&r, "vexa-system").is_ok());
        assert_eq!(
            secret_to_read(&runner(false), "vexa-system"),
            Err(Credential::None)
        );
    }

    #[test]
    fn only_a_change_is_written_and_told() {
        let mut r = runner(true);
        let broken = decide(&r, &Credential::SecretNotFound, "vexa-system", &now());
        r.status = broken.status;
        let again = decide(&r, &Credential::SecretNotFound, "vexa-system", &now());
        assert_eq!(
            again,
            Decision {
                status: None,
                notes: vec![]
            }
        );
        let fixed = decide(&r, &Credential::Found, "vexa-system", &now());
        assert!(fixed.status.is_some());
        assert_eq!(fixed.notes.len(), 1, "the repair is an event");
        assert!(!fixed.notes[0].warning);
    }
}
