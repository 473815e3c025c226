//! A Card's conditions, pure: `Ready` from its phase (what `kubectl wait --for=condition=Ready`
//! and the Argo CD health check read) and `Applied` where the applier reported one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use vexa_crds::card::{Card, CardPhase};

use crate::runtime::conditions::{ConditionType, Conditions};

/// What the applier said about applying (`Applied`): status, reason, message.
pub type Applied<'a> = (bool, &'a str, &'a str);

/// The conditions of `card` once it is in `phase`. `Applied` is present only when given (a
/// phase that applies nothing has none); transition times carry over from the card's status.
pub fn conditions(
    card: &Card,
    phase: CardPhase,
    applied: Option<Applied<'_>>,
    now: &Time,
) -> Vec<Condition> {
    let old = card
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut list: Vec<Condition> = old
        .into_iter()
        .filter(|c| {
            c.type_ == ConditionType::Ready.as_str()
                || (applied.is_some() && c.type_ == ConditionType::Applied.as_str())
        })
        .collect();
    let mut set = Conditions::new(&mut list, card.metadata.generation, now);
    if let Some((ok, reason, message)) = applied {
        set.set(ConditionType::Applied, ok, reason, message);
    }
    let by = card
        .spec
        .decision
        .as_ref()
        .and_then(|d| d.by.clone())
        .unwrap_or_else(|| "a person".into());
    let applied_message = applied.map(|(_, _, m)| m.to_owned());
    let has_effect = card.spec.record.is_some() || card.spec.send.is_some();
    match phase {
        CardPhase::Pending => set.ready(
            false,
            "AwaitingDecision",
            format!("awaits a decision by {}", card.spec.owner),
        ),
        CardPhase::Approved if has_effect => set.ready(
            false,
            "Applying",
            applied_message.unwrap_or_else(|| format!("approved by {by}; being applied")),
        ),
        CardPhase::Approved => set.ready(
            true,
            "Approved",
            format!("approved by {by}; there is nothing to apply"),
        ),
        CardPhase::Applied => set.ready(
            true,
            "Applied",
            applied_message.unwrap_or_else(|| "applied".into()),
        ),
        CardPhase::Rejected => set.ready(
            false,
            "Rejected",
            format!("rejected by {by}; nothing is applied"),
        ),
        CardPhase::Failed => set.ready(
            false,
            "ApplyFailed",
            applied_message.unwrap_or_else(|| "applying it failed".into()),
        ),
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    fn card(spec: Value, status: Value) -> Card {
        let mut base = json!({"kind": "record", "owner": "alice", "sourceDispatch": "d", "title": "T",
                              "record": {"workspace": "w", "path": "a.md", "content": "x"}});
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Card",
            "metadata": {"name": "d-1", "namespace": "team", "generation": 2},
            "spec": base, "status": status,
        }))
        .unwrap()
    }

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn get<'a>(list: &'a [Condition], type_: &str) -> Option<&'a Condition> {
        list.iter().find(|c| c.type_ == type_)
    }

    #[rstest]
    #[case::pending(json!({}), CardPhase::Pending, None, "False", "AwaitingDecision")]
    #[case::applying(json!({"decision": {"verdict": "approve", "by": "alice"}}), CardPhase::Approved, Some((false, "Applying", "the record is being committed")), "False", "Applying")]
    #[case::applied(json!({"decision": {"verdict": "approve", "by": "alice"}}), CardPhase::Applied, Some((true, "Committed", "committed as abc")), "True", "Applied")]
    #[case::rejected(json!({"decision": {"verdict": "reject", "by": "alice"}}), CardPhase::Rejected, None, "False", "Rejected")]
    #[case::failed(json!({"decision": {"verdict": "approve", "by": "alice"}}), CardPhase::Failed, Some((false, "SendRefused", "550")), "False", "ApplyFailed")]
    #[case::approved_draft(json!({"kind": "draft", "record": null, "decision": {"verdict": "approve", "by": "alice"}}), CardPhase::Approved, None, "True", "Approved")]
    fn ready_follows_the_phase(
        #[case] spec: Value,
        #[case] phase: CardPhase,
        #[case] applied: Option<Applied<'_>>,
        #[case] status: &str,
        #[case] reason: &str,
    ) {
        let list = conditions(&card(spec, json!({})), phase, applied, &at(10));
        let ready = get(&list, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (status, reason)
        );
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(get(&list, "Applied").is_some(), applied.is_some());
        if let Some((_, _, message)) = applied {
            assert_eq!(ready.message, message);
        }
    }

    #[test]
    fn transition_times_carry_over_and_a_phase_without_applied_drops_it() {
        let status = json!({"phase": "approved", "conditions": [
            {"type": "Ready", "status": "False", "reason": "Applying", "message": "m",
             "lastTransitionTime": "1970-01-01T00:00:05Z"},
            {"type": "Applied", "status": "False", "reason": "Applying", "message": "m",
             "lastTransitionTime": "1970-01-01T00:00:05Z"},
            {"type": "Foreign", "status": "True", "reason": "X", "message": "m",
             "lastTransitionTime": "1970-01-01T00:00:05Z"},
        ]});
        let c = card(
            json!({"decision": {"verdict": "approve", "by": "alice"}}),
            status,
        );
        let list = conditions(
            &c,
            CardPhase::Approved,
            Some((false, "WaitingForWorkspace", "held")),
            &at(10),
        );
        assert_eq!(get(&list, "Ready").unwrap().last_transition_time, at(5));
        assert_eq!(get(&list, "Applied").unwrap().last_transition_time, at(5));
        assert!(get(&list, "Foreign").is_none());
        let list = conditions(
            &c,
            CardPhase::Applied,
            Some((true, "Committed", "c")),
            &at(10),
        );
        assert_eq!(get(&list, "Ready").unwrap().last_transition_time, at(10));
        let rejected = conditions(&c, CardPhase::Rejected, None, &at(10));
        assert!(get(&rejected, "Applied").is_none());
    }
}
