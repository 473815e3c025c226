//! Reading a Dispatch the way the commands need it: its id and streams, where it is in its
//! lifecycle, and what its conditions say. Pure: no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use vexa_crds::{Dispatch, DispatchPhase};

/// The dispatch id `<namespace>/<name>`.
pub fn id(d: &Dispatch) -> String {
    vexa_core::dispatch_id(d.namespace().as_deref().unwrap_or_default(), &d.name_any())
}

/// The `out` and `in` streams: as the status names them, else as the contract derives them
/// (a dispatch the operator has not described yet).
pub fn topics(d: &Dispatch) -> (String, String) {
    match d.status.as_ref().and_then(|s| s.streams.as_ref()) {
        Some(s) => (s.out.clone(), s.input.clone()),
        None => {
            let id = id(d);
            (vexa_core::out_topic(&id), vexa_core::in_topic(&id))
        }
    }
}

/// The phase; `None` before the operator has looked at it.
pub fn phase(d: &Dispatch) -> Option<DispatchPhase> {
    d.status.as_ref().and_then(|s| s.phase)
}

/// Whether the run is over: nothing more will be written to its stream.
pub fn is_over(d: &Dispatch) -> bool {
    phase(d).is_some_and(DispatchPhase::is_terminal)
}

/// Whether the run is, or will be, taking turns: not over, not stopping, no stop requested.
pub fn is_live(d: &Dispatch) -> bool {
    d.spec.stop != Some(true) && !is_over(d) && phase(d) != Some(DispatchPhase::Stopping)
}

/// Whether the run starts with a turn `t0` of its own (an entrypoint, or a session start with a
/// prompt); without one the first turn comes from the input stream.
pub fn has_first_turn(d: &Dispatch) -> bool {
    d.spec.start.entrypoint.is_some()
        || d.spec
            .start
            .session
            .as_ref()
            .is_some_and(|s| s.prompt.is_some())
}

/// The phase as the CRD spells it (`pending` before the operator looked at it).
pub fn phase_name(d: &Dispatch) -> String {
    phase(d)
        .unwrap_or(DispatchPhase::Pending)
        .as_str()
        .to_owned()
}

/// Why it was refused: the `Authorized` condition's message (or `Valid`'s), when it was.
pub fn refusal(d: &Dispatch) -> Option<String> {
    if phase(d) != Some(DispatchPhase::Refused) {
        return None;
    }
    Some(
        ["Authorized", "Valid"]
            .iter()
            .find_map(|t| condition(d, t).filter(|c| c.status == "False"))
            .map_or_else(
                || "the operator refused it (no condition says why)".to_owned(),
                |c| format!("{} ({})", c.message, c.reason),
            ),
    )
}

/// What it waits for, when it waits: `Queued` (a workspace held by another dispatch) or
/// `Valid=False` (a runner, workspace or tool that does not exist yet).
pub fn waiting(d: &Dispatch) -> Option<String> {
    if is_over(d) {
        return None;
    }
    if let Some(c) = condition(d, "Queued").filter(|c| c.status == "True") {
        return Some(format!("dispatch {} is queued: {}", id(d), c.message));
    }
    condition(d, "Valid")
        .filter(|c| c.status == "False")
        .map(|c| format!("dispatch {} is waiting: {}", id(d), c.message))
}

/// How it ended, e.g. `stopped (completed)`.
pub fn how_it_ended(d: &Dispatch) -> String {
    let reason = d.status.as_ref().and_then(|s| s.stop_reason);
    match (refusal(d), reason) {
        (Some(why), _) => format!("refused: {why}"),
        (None, Some(r)) => format!("{} ({})", phase_name(d), r.as_str()),
        (None, None) => phase_name(d),
    }
}

fn condition<'a>(d: &'a Dispatch, type_: &str) -> Option<&'a Condition> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::{Value, json};

    /// A Dispatch from the chat golden's spec with `status` (and `extra` spec fields) merged in.
    pub(crate) fn dispatch(name: &str, spec: Value, status: Value) -> Dispatch {
        let mut base = json!({
            "apiVersion": "vexa.ai/v1",
            "kind": "Dispatch",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {
                "identity": {"subject": "alice", "launcher": "user:alice"},
                "runner": "test-agent",
                "workspaces": [{"name": "alice-notes", "mode": "rw"}],
                "trigger": "message",
                "context": {"kind": "none", "session": "main"},
                "start": {"entrypoint": {"inline": "hi"}}
            },
            "status": status
        });
        if let (Some(into), Value::Object(from)) = (base["spec"].as_object_mut(), spec) {
            into.extend(from);
        }
        serde_json::from_value(base).unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2025-01-01T00:00:00Z"})
    }

    #[test]
    fn streams_come_from_the_status_or_the_contract() {
        let fresh = dispatch("agent-alice-chat-main", json!({}), json!({}));
        assert_eq!(
            topics(&fresh),
            (
                "unit:team-a/agent-alice-chat-main:out".into(),
                "unit:team-a/agent-alice-chat-main:in".into()
            )
        );
        let described = dispatch("x", json!({}), json!({"streams": {"out": "o", "in": "i"}}));
        assert_eq!(topics(&described), ("o".into(), "i".into()));
    }

    #[test]
    fn lifecycle() {
        let at = |phase: &str| dispatch("x", json!({}), json!({"phase": phase}));
        for p in ["pending", "queued", "starting", "running"] {
            assert!(is_live(&at(p)) && !is_over(&at(p)), "{p}");
        }
        assert!(!is_live(&at("stopping")) && !is_over(&at("stopping")));
        for p in ["stopped", "destroyed", "refused"] {
            assert!(!is_live(&at(p)) && is_over(&at(p)), "{p}");
        }
        let stop_asked = dispatch("x", json!({"stop": true}), json!({"phase": "running"}));
        assert!(!is_live(&stop_asked));
        assert_eq!(phase_name(&dispatch("x", json!({}), json!({}))), "pending");
    }

    #[test]
    fn a_refusal_quotes_the_authorized_condition() {
        let d = dispatch(
            "x",
            json!({}),
            json!({"phase": "refused", "conditions": [
                cond("Valid", "True", "ReferencesResolved", "ok"),
                cond("Authorized", "False", "LauncherNotSubject", "user:bob may not launch for alice"),
            ]}),
        );
        assert_eq!(
            refusal(&d).unwrap(),
            "user:bob may not launch for alice (LauncherNotSubject)"
        );
        assert_eq!(
            how_it_ended(&d),
            "refused: user:bob may not launch for alice (LauncherNotSubject)"
        );
        let running = dispatch("x", json!({}), json!({"phase": "running"}));
        assert_eq!(refusal(&running), None);
    }

    #[test]
    fn waiting_says_what_for() {
        let queued = dispatch(
            "x",
            json!({}),
            json!({"phase": "queued", "conditions": [
                cond("Queued", "True", "WorkspaceBusy", "waiting for workspace \"alice-notes\"")]}),
        );
        assert_eq!(
            waiting(&queued).unwrap(),
            "dispatch team-a/x is queued: waiting for workspace \"alice-notes\""
        );
        let missing = dispatch(
            "x",
            json!({}),
            json!({"phase": "pending", "conditions": [
                cond("Valid", "False", "RunnerNotFound", "AgentRunner \"nope\" not found")]}),
        );
        assert_eq!(
            waiting(&missing).unwrap(),
            "dispatch team-a/x is waiting: AgentRunner \"nope\" not found"
        );
        assert_eq!(
            waiting(&dispatch("x", json!({}), json!({"phase": "running"}))),
            None
        );
    }

    #[test]
    fn how_it_ended_names_the_stop_reason() {
        let d = dispatch(
            "x",
            json!({}),
            json!({"phase": "stopped", "stopReason": "idle_timeout"}),
        );
        assert_eq!(how_it_ended(&d), "stopped (idle_timeout)");
    }

    #[test]
    fn first_turns() {
        assert!(has_first_turn(&dispatch("x", json!({}), json!({}))));
        let session = |start: Value| dispatch("x", json!({"start": start}), json!({}));
        assert!(has_first_turn(&session(
            json!({"session": {"ref": "s", "prompt": "go on"}})
        )));
        assert!(!has_first_turn(&session(json!({"session": {"ref": "s"}}))));
    }
}
