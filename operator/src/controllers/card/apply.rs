//! Carries out a decision about one card event: create the Card (adopting one that exists, so
//! a replay of the stream doubles nothing) and mark it pending, or publish the refusal. I/O
//! only.

use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::Recorder;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use vexa_crds::Dispatch;
use vexa_crds::card::{Card, CardPhase};
use vexa_stream::follow::EntryId;

use super::decide::{MAX_CARDS_PER_DISPATCH, Refusal};
use super::error::Error;
use super::status;
use crate::FIELD_MANAGER;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::events::{self, Note};

/// What became of a Card to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created now.
    New,
    /// It existed already (a replay after a restart): adopted as it is.
    Adopted,
    /// The API server refused it as invalid: a refusal, not a retry.
    Invalid,
}

/// Creates `card`, proposed by `dispatch`. `AlreadyExists` is adoption: the name is derived
/// from the event, so the Card there is this one.
pub async fn create(
    ctx: &Context,
    recorder: &Recorder,
    dispatch: &Dispatch,
    card: &Card,
) -> Result<Created, Error> {
    let ns = card.namespace().ok_or(Error::Malformed)?;
    let name = card.metadata.name.clone().ok_or(Error::Malformed)?;
    let api = Api::<Card>::namespaced(ctx.client.clone(), &ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let created = match api.create(&params, card).await {
        Ok(created) => created,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A crash between the create and the status write left a Card without a status:
            // it is written now (a Card with one is left as it is).
            let existing = api.get(&name).await?;
            if existing.status.is_none() {
                mark_pending(&api, &existing).await?;
            }
            return Ok(Created::Adopted);
        }
        Err(kube::Error::Api(e)) if e.code == 422 => {
            ctx.metrics.card_refused("CardInvalid");
            let note = Note::warning(
                "CardInvalid",
                Some(format!(
                    "The proposed Card {name} is not a valid Card: {}; no Card was created.",
                    e.message
                )),
                "ProposeCard",
            );
            events::publish(recorder, dispatch, vec![note]).await;
            return Ok(Created::Invalid);
        }
        Err(e) => return Err(e.into()),
    };
    mark_pending(&api, &created).await?;
    ctx.metrics.card_created();
    let note = Note::normal(
        "CardProposed",
        Some(format!(
            "Card {name} ({:?}: {}) awaits {}.",
            card.spec.kind, card.spec.title, card.spec.owner
        )),
        "ProposeCard",
    );
    events::publish(recorder, dispatch, vec![note]).await;
    Ok(Created::New)
}

/// Writes the status of a new Card: `pending`, `Ready=False` (awaiting a decision).
async fn mark_pending(api: &Api<Card>, card: &Card) -> Result<(), Error> {
    let status = json!({
        "apiVersion": Card::api_version(&()),
        "kind": Card::kind(&()),
        "status": {
            "phase": CardPhase::Pending,
            "observedGeneration": card.metadata.generation,
            "conditions": status::conditions(card, CardPhase::Pending, None, &now()),
        },
    });
    api.patch_status(
        &card.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(())
}

/// Counts a refused card event and tells the Dispatch's reader why, once per event (beyond the
/// limit, only the first one is told: a flood must not become a flood of Events).
pub async fn refuse(
    ctx: &Context,
    recorder: &Recorder,
    dispatch: &Dispatch,
    entry: EntryId,
    index: usize,
    refusal: &Refusal,
) {
    ctx.metrics.card_refused(refusal.reason());
    tracing::info!(dispatch = %dispatch.name_any(), namespace = ?dispatch.namespace(), %entry, reason = refusal.reason(), "card event refused");
    if *refusal == Refusal::TooMany && index > MAX_CARDS_PER_DISPATCH {
        return;
    }
    let note = Note::warning(
        refusal.reason(),
        Some(refusal.message(entry)),
        "ProposeCard",
    );
    events::publish(recorder, dispatch, vec![note]).await;
}
