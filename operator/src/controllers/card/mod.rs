//! The Card controller, part one: proposals become Cards. A dispatch's agent proposes by
//! streaming `card` events on its output stream (`unit:<id>:out`); the operator follows the
//! stream of every dispatch that has one (until a while after it stopped) and turns each card
//! event into a Card named `<dispatch>-<card id>`, owned by the dispatch's subject (never by a
//! field the agent wrote), with the Dispatch as its owner reference. A replay of the stream
//! (the follow starts from the stream's start after any restart) adopts the Cards it created
//! before. Hostile events (unknown kinds, oversize content, foreign workspaces or owners, unsafe
//! paths, `send` cards, a decision, more than 50 cards) are refused with a Warning event on
//! the Dispatch and `vexa_cards_refused_total{reason}`; no Card is created.
//!
//! Shape: `observe` (which dispatches; follow their streams) → `decide` (pure: the Card or a
//! refusal) → `apply` (create or adopt, events, metrics). Decided Cards: `approved` (I/O)
//! around `applier` (pure): an approved record is committed by a trusted Job, as the approver;
//! an approved `email.send` card is sent once from its owner's mailbox (`--mail-config`).

pub mod applier;
pub mod apply;
pub mod approved;
pub mod decide;
pub mod error;
pub mod observe;
pub mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use kube::runtime::events::Recorder;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use vexa_crds::Dispatch;

pub use error::Error;

use crate::runtime::context::Context;
use crate::runtime::watch::cached;

/// How often the set of followed streams is brought up to date (and a follow that ended is
/// started again).
const TICK: Duration = Duration::from_secs(5);
/// How long after a dispatch stopped its stream is still followed (its last events may be
/// read late, after a restart of the operator or of Redis).
const LINGER: Duration = Duration::from_secs(600);

/// Runs the Card controller until `shutdown` resolves: proposals from the streams become
/// Cards, and decided Cards are carried out (`approved`).
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    futures::join!(
        follow_proposals(ctx.clone(), shutdown.clone()),
        approved::run(ctx, shutdown),
    );
}

/// Follows the streams of the dispatches and turns their card events into Cards.
async fn follow_proposals(ctx: Context, shutdown: impl Future<Output = ()> + Send + 'static) {
    ctx.metrics.known_card_refusals(&decide::Refusal::REASONS);
    let redis = match ctx.config.admin_redis_client() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the Card controller cannot reach Redis; no card event becomes a Card");
            return;
        }
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let (dispatches, watch) = cached::<Dispatch>(ctx.client.clone());
    let mut follows: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
    futures::pin_mut!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(TICK) => {}
        }
        let Some(store) = dispatches.store() else {
            continue;
        };
        let wanted = observe::followed(&store.state(), &crate::runtime::conditions::now(), LINGER);
        follows.retain(|uid, task| {
            let keep = wanted.contains_key(uid) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (uid, (dispatch, out)) in wanted {
            if follows.contains_key(&uid) {
                continue;
            }
            let (ctx, recorder, redis) = (ctx.clone(), recorder.clone(), redis.clone());
            follows.insert(
                uid,
                tokio::spawn(async move {
                    if let Err(e) =
                        observe::follow_cards(&ctx, &recorder, redis, dispatch.clone(), out).await
                    {
                        warn!(dispatch = ?dispatch.metadata.name, namespace = ?dispatch.metadata.namespace, reason = e.reason(), error = %e, "creating a Card failed; the stream is followed again shortly");
                    }
                }),
            );
        }
    }
    for task in follows.into_values() {
        task.abort();
    }
    watch.abort();
    info!("Card controller stopped");
}
