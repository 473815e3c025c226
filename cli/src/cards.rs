//! `kubectl vexa cards` and `kubectl vexa card approve|reject`: the table of Cards (pure), the
//! decision a person sets (pure), and the calls that read and decide them.

use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use vexa_crds::card::{Card, CardPhase, Verdict};

use crate::error::CliError;
use crate::safe::for_terminal;

/// The longest title shown in the table.
const TITLE_WIDTH: usize = 48;

/// Which Cards to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only those without a decision.
    pub pending: bool,
}

impl Filter {
    /// Whether `card` is listed.
    pub fn keeps(&self, card: &Card) -> bool {
        self.owner.as_ref().is_none_or(|o| *o == card.spec.owner)
            && (!self.pending || is_pending(card))
    }
}

/// Whether the Card still waits for a decision (the kinds that take one, undecided).
pub fn is_pending(card: &Card) -> bool {
    use vexa_crds::card::CardKind::{Draft, Record, Send};
    card.spec.decision.is_none() && matches!(card.spec.kind, Record | Draft | Send)
}

/// The table `kubectl vexa cards` prints: name, kind, title, owner, source, decision, phase,
/// age; oldest first. Every cell is made safe for a terminal (titles come from agents).
pub fn table(cards: &[Card], now: Timestamp) -> String {
    let mut sorted: Vec<&Card> = cards.iter().collect();
    sorted.sort_by_key(|c| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.name_any(),
        )
    });
    let mut rows = vec![
        [
            "NAME", "KIND", "TITLE", "OWNER", "SOURCE", "DECISION", "PHASE", "AGE",
        ]
        .map(str::to_owned),
    ];
    for c in sorted {
        let decision = c.spec.decision.as_ref().map_or_else(
            || "-".to_owned(),
            |d| {
                let verdict = match d.verdict {
                    Verdict::Approve => "approved",
                    Verdict::Reject => "rejected",
                };
                match &d.by {
                    Some(by) => format!("{verdict} by {by}"),
                    None => verdict.to_owned(),
                }
            },
        );
        let phase = c
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map_or("-", phase_word);
        let age = c.metadata.creation_timestamp.as_ref().map_or_else(
            || "-".to_owned(),
            |t| age(now.duration_since(t.0).as_secs()),
        );
        rows.push(
            [
                c.name_any(),
                json_word(&c.spec.kind),
                shorten(&c.spec.title, TITLE_WIDTH),
                c.spec.owner.clone(),
                c.spec.source_dispatch.clone().unwrap_or_else(|| "-".into()),
                decision,
                phase.to_owned(),
                age,
            ]
            .map(|cell| one_line(&for_terminal(&cell))),
        );
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn phase_word(p: CardPhase) -> &'static str {
    match p {
        CardPhase::Pending => "Pending",
        CardPhase::Approved => "Approved",
        CardPhase::Rejected => "Rejected",
        CardPhase::Applied => "Applied",
        CardPhase::Failed => "Failed",
    }
}

fn json_word(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shorten(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// `kubectl`'s way of saying how old: `45s`, `12m`, `3h`, `2d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The merge patch that decides a Card: `verdict`, the optional `reason`, and `by`, the
/// requesting user (admission refuses any other name).
pub fn decision_patch(verdict: Verdict, reason: Option<&str>, by: &str) -> Value {
    let mut decision = json!({"verdict": verdict, "by": by});
    if let Some(r) = reason {
        decision["reason"] = json!(r);
    }
    json!({"spec": {"decision": decision}})
}

/// What the user reads when the cluster refuses a decision: admission's reason as it is (it
/// names the rule), or what RBAC lacks.
pub fn refused(id: &str, code: u16, message: &str) -> CliError {
    if code == 403 && message.contains("denied request") {
        CliError::CardRefused {
            card: id.to_owned(),
            message: message.to_owned(),
        }
    } else if code == 403 {
        CliError::Forbidden {
            action: format!("deciding card {id}"),
            needs: "patch on cards (vexa.ai) in that namespace (the chart's ClusterRole \
                    <release>-card-decider)"
                .into(),
            message: message.to_owned(),
        }
    } else if code == 422 && message.contains("a decision is final") {
        CliError::CardRefused {
            card: id.to_owned(),
            message: "it was already decided, and a decision is final".into(),
        }
    } else {
        CliError::Api {
            action: format!("deciding card {id}"),
            message: message.to_owned(),
        }
    }
}

/// The Cards of `namespace` that `filter` keeps.
pub async fn list(
    client: &Client,
    namespace: &str,
    filter: &Filter,
) -> Result<Vec<Card>, CliError> {
    let cards = Api::<Card>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => CliError::Forbidden {
                action: format!("listing the cards of {namespace}"),
                needs: format!("list on cards (vexa.ai) in namespace {namespace}"),
                message: s.message,
            },
            e => CliError::kube(format!("listing the cards of {namespace}"), e),
        })?;
    Ok(cards
        .items
        .into_iter()
        .filter(|c| filter.keeps(c))
        .collect())
}

/// Sets the decision on `namespace/name` as `by`. A Card decided already is said so before
/// asking (a decision is final).
pub async fn decide(
    client: &Client,
    namespace: &str,
    name: &str,
    verdict: Verdict,
    reason: Option<&str>,
    by: &str,
) -> Result<Card, CliError> {
    let id = format!("{namespace}/{name}");
    let api = Api::<Card>::namespaced(client.clone(), namespace);
    let card = match api.get(name).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(CliError::Usage(format!(
                "card {id} not found (list them with `kubectl vexa cards -n {namespace}`)"
            )));
        }
        Err(kube::Error::Api(s)) => return Err(refused(&id, s.code, &s.message)),
        Err(e) => return Err(CliError::kube(format!("reading card {id}"), e)),
    };
    if let Some(d) = &card.spec.decision {
        return Err(CliError::CardRefused {
            card: id,
            message: format!(
                "it was already {} by {}, and a decision is final",
                json_word(&d.verdict),
                d.by.as_deref().unwrap_or("someone")
            ),
        });
    }
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(decision_patch(verdict, reason, by)),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(s) => refused(&id, s.code, &s.message),
        e => CliError::kube(format!("deciding card {id}"), e),
    })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[test]
    fn the_decision_names_the_requesting_user() {
        assert_eq!(
            decision_patch(Verdict::Approve, Some("ok"), "alice"),
            json!({"spec": {"decision": {"verdict": "approve", "reason": "ok", "by": "alice"}}})
        );
        assert_eq!(
            decision_patch(Verdict::Reject, None, "bob"),
            json!({"spec": {"decision": {"verdict": "reject", "by": "bob"}}})
        );
    }

    #[rstest]
    #[case::admission(
        403,
        "ValidatingAdmissionPolicy 'vexa-card-custody' with binding 'vexa-card-custody' denied request: DecisionNotOwner: only the Card's owner",
        "DecisionNotOwner"
    )]
    #[case::rbac(
        403,
        "cards.vexa.ai \"x\" is forbidden: User \"bob\" cannot patch",
        "card-decider"
    )]
    #[case::final_decision(
        422,
        "Card.vexa.ai \"x\" is invalid: spec: Invalid value: \"object\": a decision is final",
        "already decided"
    )]
    fn refusals_say_why(#[case] code: u16, #[case] message: &str, #[case] says: &str) {
        let e = refused("team/x", code, message).to_string();
        assert!(e.contains(says), "{e}");
    }

    #[rstest]
    #[case(0, "0s")]
    #[case(59, "59s")]
    #[case(60, "1m")]
    #[case(7_199, "1h")]
    #[case(86_400 * 3, "3d")]
    #[case(-5, "0s")]
    fn ages(#[case] seconds: i64, #[case] shown: &str) {
        assert_eq!(age(seconds), shown);
    }
}
