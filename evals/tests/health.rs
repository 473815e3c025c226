//! The Argo CD health checks (charts/vexa/argocd/health/) in a real Lua 5.1: what each kind's
//! statuses map to, that no object a tenant or a half-written status can produce makes a check
//! fail, and that the shipped `argocd-cm` snippet is built from the checks as they are.
//! The same checks against the statuses a live cluster produces: the ignored tests at the end.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use rstest::rstest;
use serde_json::{Value, json};
use vexa_evals::health::{self, KINDS};

fn cond(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{reason} said so"),
           "lastTransitionTime": "2026-12-06T00:00:00Z", "observedGeneration": 1})
}

/// A `kind` at generation 1 whose status (observed at generation 1) has `status` merged in.
fn obj(kind: &str, spec: Value, status: Value) -> Value {
    let mut s = json!({"observedGeneration": 1});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), status.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "vexa.ai/v1", "kind": kind,
           "metadata": {"name": "x", "namespace": "team", "generation": 1},
           "spec": spec, "status": s})
}

fn ready(kind: &str, status: &str, reason: &str) -> Value {
    obj(
        kind,
        json!({}),
        json!({"conditions": [cond("Ready", status, reason)]}),
    )
}

#[rstest]
#[case::dispatch_running(obj("Dispatch", json!({}), json!({"phase": "running", "conditions": [cond("Authorized", "True", "Granted"), cond("Ready", "True", "Running")]})), "Progressing")]
#[case::dispatch_starting(obj("Dispatch", json!({}), json!({"phase": "starting", "conditions": [cond("Ready", "False", "Starting")]})), "Progressing")]
#[case::dispatch_queued(obj("Dispatch", json!({}), json!({"phase": "queued", "conditions": [cond("Queued", "True", "WorkspaceBusy")]})), "Progressing")]
#[case::dispatch_refused(obj("Dispatch", json!({}), json!({"phase": "refused", "conditions": [cond("Authorized", "False", "NoGrant")]})), "Degraded")]
#[case::dispatch_invalid(obj("Dispatch", json!({}), json!({"phase": "refused", "conditions": [cond("Authorized", "True", "Granted"), cond("Valid", "False", "RunnerNotFound")]})), "Degraded")]
#[case::dispatch_succeeded(obj("Dispatch", json!({}), json!({"phase": "stopped", "stopReason": "completed", "conditions": [cond("Ready", "False", "Finished"), cond("Finished", "True", "Succeeded")]})), "Healthy")]
#[case::dispatch_destroyed(obj("Dispatch", json!({}), json!({"phase": "destroyed", "conditions": [cond("Finished", "True", "Succeeded")]})), "Healthy")]
#[case::dispatch_failed(obj("Dispatch", json!({}), json!({"phase": "stopped", "stopReason": "oom", "conditions": [cond("Finished", "True", "Failed")]})), "Degraded")]
#[case::workspace_ready(ready("Workspace", "True", "Ready"), "Healthy")]
#[case::workspace_preparing(ready("Workspace", "False", "Preparing"), "Progressing")]
#[case::workspace_prepare_failed(ready("Workspace", "False", "PrepareFailed"), "Degraded")]
#[case::workspace_no_seed(ready("Workspace", "False", "SeedNotFound"), "Degraded")]
#[case::runner_ready(ready("AgentRunner", "True", "Ready"), "Healthy")]
#[case::runner_no_credential(ready("AgentRunner", "False", "CredentialNotFound"), "Degraded")]
#[case::tool_ready(ready("Tool", "True", "Ready"), "Healthy")]
#[case::tool_unreachable(ready("Tool", "False", "ServerUnreachable"), "Degraded")]
#[case::identity_ready(ready("Identity", "True", "Linked"), "Healthy")]
#[case::identity_unlinked(ready("Identity", "False", "DirectoryUnavailable"), "Degraded")]
#[case::schedule_scheduled(ready("Schedule", "True", "Scheduled"), "Healthy")]
#[case::schedule_suspended(obj("Schedule", json!({"suspend": true}), json!({"conditions": [cond("Ready", "False", "Suspended")]})), "Suspended")]
#[case::schedule_paused(obj("Schedule", json!({}), json!({"conditions": [cond("Paused", "True", "RunFailed"), cond("Ready", "False", "Paused")]})), "Degraded")]
#[case::schedule_not_granted(ready("Schedule", "False", "Unauthorized"), "Degraded")]
#[case::schedule_invalid(ready("Schedule", "False", "Invalid"), "Degraded")]
#[case::schedule_done(ready("Schedule", "False", "NoMoreRuns"), "Healthy")]
#[case::card_pending(obj("Card", json!({"owner": "alice"}), json!({"phase": "pending"})), "Suspended")]
#[case::card_approved(obj("Card", json!({}), json!({"phase": "approved", "conditions": [cond("Applied", "False", "Applying")]})), "Progressing")]
#[case::card_applied(obj("Card", json!({}), json!({"phase": "applied", "conditions": [cond("Applied", "True", "Committed")]})), "Healthy")]
#[case::card_rejected(obj("Card", json!({}), json!({"phase": "rejected"})), "Healthy")]
#[case::card_failed(obj("Card", json!({}), json!({"phase": "failed", "conditions": [cond("Applied", "False", "SendRefused")]})), "Degraded")]
#[case::transcript_live(obj("Transcript", json!({}), json!({"phase": "live", "conditions": [cond("Valid", "True", "StreamAllowed"), cond("Ready", "True", "Live")]})), "Progressing")]
#[case::transcript_completed(obj("Transcript", json!({}), json!({"phase": "completed", "conditions": [cond("Ready", "True", "Completed")]})), "Healthy")]
#[case::transcript_claimed(obj("Transcript", json!({}), json!({"conditions": [cond("Valid", "False", "StreamClaimed")]})), "Degraded")]
fn each_state_has_the_documented_health(#[case] object: Value, #[case] expected: &str) {
    let health = health::check(&object).unwrap();
    assert_eq!(health.status, expected, "{object:#}\n→ {health:?}");
}

#[test]
fn a_refusal_and_a_failure_say_why() {
    let refused = obj(
        "Dispatch",
        json!({}),
        json!({"phase": "refused", "conditions": [cond("Authorized", "False", "NoGrant")]}),
    );
    assert_eq!(
        health::check(&refused).unwrap().message,
        "Refused: NoGrant: NoGrant said so"
    );
    let pending = obj(
        "Card",
        json!({"owner": "alice"}),
        json!({"phase": "pending"}),
    );
    assert_eq!(
        health::check(&pending).unwrap().message,
        "Awaiting a decision by alice"
    );
}

#[test]
fn a_spec_the_operator_has_not_observed_is_progressing() {
    for kind in KINDS {
        // A healthy-looking status of generation 1, but the spec is at generation 2.
        let mut object = obj(
            kind,
            json!({}),
            json!({"phase": "applied", "conditions": [cond("Ready", "True", "Ready")]}),
        );
        object["metadata"]["generation"] = json!(2);
        let health = health::check(&object).unwrap();
        assert_eq!(health.status, "Progressing", "{kind}: {health:?}");
        assert!(health.message.contains("generation 2"), "{health:?}");
        // No status at all: the operator has not looked yet.
        object.as_object_mut().unwrap().remove("status");
        assert_eq!(health::check(&object).unwrap().status, "Progressing");
    }
}

/// Objects no controller writes but a tenant (spec) or a half-written status can hold: every
/// check answers a status Argo CD knows instead of failing (a failing check shows as an error
/// on the whole application).
#[test]
fn no_odd_object_makes_a_check_fail() {
    let odd_statuses = [
        json!(null),
        json!({}),
        json!({"conditions": null}),
        json!({"conditions": []}),
        json!({"conditions": [{"type": "Ready"}]}),
        json!({"conditions": [{"type": "Ready", "status": "False"}]}),
        json!({"conditions": [{"type": "Finished", "status": "True"}], "phase": "stopped"}),
        json!({"conditions": [{"type": "Authorized", "status": "False"}], "phase": "refused"}),
        json!({"phase": "refused"}),
        json!({"phase": "pending"}),
        json!({"phase": "failed"}),
        json!({"phase": "completed"}),
        json!({"phase": "something-new"}),
        json!({"observedGeneration": null}),
    ];
    let odd_metadata = [json!({"name": "x"}), json!({"name": "x", "generation": 1})];
    for kind in KINDS {
        for status in &odd_statuses {
            for metadata in &odd_metadata {
                let object = json!({"apiVersion": "vexa.ai/v1", "kind": kind, "metadata": metadata,
                                    "spec": {"suspend": false}, "status": status});
                if let Err(e) = health::check(&object) {
                    panic!("{kind} on {object}: {e:#}");
                }
            }
        }
    }
}

#[test]
fn the_shipped_argocd_snippet_is_built_from_the_checks() {
    let built = health::snippet().unwrap();
    let path = health::snippet_path();
    if std::env::var_os("VEXA_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &built).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == built,
        "{} is not what charts/vexa/argocd/health/ builds; regenerate it: \
         VEXA_BLESS=1 cargo test -p vexa-evals --test health",
        path.display()
    );
    // The snippet is YAML whose every value is its kind's whole check.
    let parsed: Value = serde_saphyr::from_str(&shipped).unwrap();
    for kind in KINDS {
        let key = format!("resource.customizations.health.vexa.ai_{kind}");
        let script = parsed["data"][&key].as_str().unwrap_or_default();
        assert_eq!(
            script.trim_end(),
            health::script(kind).unwrap().trim_end(),
            "{key}"
        );
    }
}
