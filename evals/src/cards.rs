//! Deciding Cards in the evals: the decision patch a person sends, and what a refusal said.

use std::time::Duration;

use kube::Api;
use kube::api::Patch;
use serde_json::{Value, json};
use vexa_crds::card::{Card, CardPhase};

/// The merge patch that sets a Card's decision (`approve` or `reject`) by `by`.
pub fn decision(verdict: &str, by: &str) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"decision": {"verdict": verdict, "by": by}}}))
}

/// The error message of a refused request (panics when it was allowed).
pub fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The Card `name` once its phase is `phase` (panics after `within`).
pub async fn card_in(cards: &Api<Card>, name: &str, phase: CardPhase, within: Duration) -> Card {
    crate::wait_for(&format!("Card {name} {phase:?}"), within, || async {
        let c = cards.get(name).await.ok()?;
        (c.status.as_ref()?.phase == Some(phase)).then_some(c)
    })
    .await
}
