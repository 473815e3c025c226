//! Which dispatches to follow, and the follow of one dispatch's output stream. The choice is
//! pure; the follow reads Redis and hands each `card` event to decide and apply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::Recorder;
use vexa_crds::Dispatch;
use vexa_stream::follow::{EntryId, FollowError, follow};
use vexa_stream::{Event, UnitEvent};

use super::apply::{self, Created};
use super::decide;
use super::error::Error;
use crate::runtime::context::Context;

/// The dispatches whose output streams are followed, by UID, with their `out` topics: each one
/// that has streams, is not being deleted, and did not stop more than `linger` before `now`.
pub fn followed(
    dispatches: &[Arc<Dispatch>],
    now: &Time,
    linger: Duration,
) -> BTreeMap<String, (Arc<Dispatch>, String)> {
    dispatches
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter_map(|d| {
            let status = d.status.as_ref()?;
            let out = status.streams.as_ref()?.out.clone();
            let stopped_long_ago = status
                .stop_time
                .as_ref()
                .is_some_and(|t| now.0.duration_since(t.0).as_secs_f64() > linger.as_secs_f64());
            if stopped_long_ago {
                return None;
            }
            Some((d.uid()?, (d.clone(), out)))
        })
        .collect()
}

/// Follows `out` of `dispatch` from the stream's start and turns its card events into Cards.
/// Returns when the stream cannot be read any more or a Card cannot be created: the caller
/// starts again from the start, which adopts what exists and doubles nothing.
pub async fn follow_cards(
    ctx: &Context,
    recorder: &Recorder,
    redis: redis::Client,
    dispatch: Arc<Dispatch>,
    out: String,
) -> Result<(), Error> {
    let events = follow::<UnitEvent>(redis, out, EntryId::ZERO);
    futures::pin_mut!(events);
    let mut index = 0usize;
    while let Some(item) = events.next().await {
        let (entry, card) = match item {
            Ok((
                entry,
                UnitEvent {
                    event: Event::Card { card },
                    ..
                },
            )) => (entry, card),
            Ok(_) => continue,
            Err(e @ FollowError::Malformed { .. }) => {
                tracing::debug!(error = %e, "skipping an entry that is not a unit event");
                continue;
            }
            Err(e) => {
                tracing::warn!(dispatch = %dispatch.name_any(), error = %e, "following the dispatch's stream for cards stopped; it is followed again shortly");
                return Ok(());
            }
        };
        match decide::decide(&dispatch, entry, index, &card) {
            Ok(card) => {
                if apply::create(ctx, recorder, &dispatch, &card).await? == Created::Invalid {
                    tracing::info!(dispatch = %dispatch.name_any(), %entry, "card event refused by the API server");
                }
            }
            Err(refusal) => apply::refuse(ctx, recorder, &dispatch, entry, index, &refusal).await,
        }
        index += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use serde_json::json;

    use super::*;

    fn dispatch(name: &str, status: serde_json::Value) -> Arc<Dispatch> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "vexa.ai/v1", "kind": "Dispatch",
                "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
                "spec": {
                    "identity": {"subject": "alice", "launcher": "user:alice"},
                    "runner": "claude",
                    "workspaces": [{"name": "notes", "mode": "ro"}],
                    "trigger": "message",
                    "start": {"entrypoint": {"inline": "hi"}},
                },
                "status": status,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn followed_are_the_dispatches_with_streams_not_stopped_long_ago() {
        let now = Time(Timestamp::now());
        let streams = json!({"out": "unit:team/x:out", "in": "unit:team/x:in"});
        let ago = |mins: i64| Time(now.0 - SignedDuration::from_mins(mins));
        let all = vec![
            dispatch("running", json!({"streams": streams})),
            dispatch("pending", json!({})),
            dispatch(
                "just-stopped",
                json!({"streams": streams, "stopTime": ago(1)}),
            ),
            dispatch(
                "stopped-long-ago",
                json!({"streams": streams, "stopTime": ago(60)}),
            ),
        ];
        let chosen = followed(&all, &now, Duration::from_secs(600));
        assert_eq!(
            chosen.keys().cloned().collect::<Vec<_>>(),
            ["uid-just-stopped", "uid-running"]
        );
        assert_eq!(chosen["uid-running"].1, "unit:team/x:out");
    }
}
