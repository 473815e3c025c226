//! The Transcript controller: a meeting's segments live in its Redis stream (`tc:meeting:<id>`,
//! written by the meeting integration); the Transcript's status says how far it got: phase
//! `live` until the stream's `session_end`, then `completed` with the completion time, the
//! count of completed segments, the last segment seen and a chained digest over the completed
//! segments (see [`tally`]).
//!
//! The stream is read with `XRANGE` from the last entry read, every
//! `--transcript-poll-seconds` while the meeting is live, at most [`MAX_ENTRIES_PER_RECONCILE`]
//! entries a reconcile. What was read is kept in memory; after a restart the stream is read
//! again from its start, which gives the same tally (the digest is a function of the stream).
//! A completed Transcript is final: it is never read again.
//!
//! Shape: observe (I/O: which stream, who else claims it, read it) → `decide` (pure) → apply
//! (I/O: status, events).

pub mod decide;
pub mod tally;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use redis::aio::ConnectionManager;
use serde_json::json;
use tracing::{info, warn};
use vexa_crds::{Transcript, TranscriptPhase};

use crate::FIELD_MANAGER;
use crate::runtime::backoff::Backoff;
use crate::runtime::conditions::now;
use crate::runtime::context::Context;
use crate::runtime::events;
use crate::runtime::watch::{by_generation, drive};
use decide::{Decision, Observed, stream_of};
use tally::Tally;

/// The most stream entries one reconcile reads; the rest wait for the next (at once).
pub const MAX_ENTRIES_PER_RECONCILE: usize = 5_000;
const BATCH: usize = 500;

/// Why a Transcript reconcile did not finish; retried with backoff. A failing Redis is not
/// one: it is the `Ready` condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a namespace or name.
    #[error("object without namespace or name")]
    Malformed,
}

impl Error {
    /// A short, bounded reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::runtime::errors::kube_reason(e),
            Error::Malformed => "Malformed",
        }
    }
}

/// What the Transcript reconciler shares across reconciles.
pub struct Reconciler {
    base: Context,
    store: Store<Transcript>,
    redis: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// What was read of each Transcript's stream, by UID (a re-created Transcript starts over).
    tallies: Mutex<HashMap<String, (Tally, usize)>>,
    recorder: Recorder,
    backoff: Backoff<Transcript>,
    poll: Duration,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("transcript::Reconciler")
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

/// The Transcript (`namespace/name`) that reads `stream`: the oldest one naming it (then by
/// namespace and name), so a later Transcript cannot take over a meeting another one reads.
fn claimant(all: &[Arc<Transcript>], stream: &str) -> Option<String> {
    all.iter()
        .filter(|t| stream_of(t).is_ok_and(|s| s == stream))
        .min_by_key(|t| {
            (
                t.metadata.creation_timestamp.clone().map(|c| c.0),
                t.namespace(),
                t.name_any(),
            )
        })
        .map(|t| format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any()))
}

impl Reconciler {
    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = ConnectionManager::new(self.redis.clone()).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Reads the entries of `stream` after `tally`'s cursor into it, bounded.
    async fn read(&self, stream: &str, tally: &mut Tally) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let mut read = 0;
        while read < MAX_ENTRIES_PER_RECONCILE && !tally.ended {
            let start = tally
                .cursor
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| format!("({c}"));
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await?;
            let n = reply.ids.len();
            for entry in reply.ids {
                let payload = match entry.map.get("payload") {
                    Some(redis::Value::BulkString(b)) => Some(b.clone()),
                    Some(redis::Value::SimpleString(s)) => Some(s.clone().into_bytes()),
                    _ => None,
                };
                tally.feed(&entry.id, payload.as_deref());
            }
            read += n;
            if n < BATCH {
                break;
            }
        }
        Ok(())
    }

    async fn observe(&self, t: &Transcript) -> Observed {
        if t.status.as_ref().and_then(|s| s.phase) == Some(TranscriptPhase::Completed) {
            return Observed::Final;
        }
        let stream = match stream_of(t) {
            Ok(s) => s,
            Err(why) => return Observed::StreamNotAllowed(why),
        };
        let me = format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any());
        if let Some(by) = claimant(&self.store.state(), &stream).filter(|by| *by != me) {
            return Observed::StreamClaimed { stream, by };
        }
        let uid = t.uid().unwrap_or_default();
        let session = t
            .spec
            .meeting
            .session_uid
            .clone()
            .unwrap_or_else(|| t.spec.meeting.meeting_id.clone());
        let (mut tally, reported) = self
            .tallies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| (Tally::new(&session), 0));
        // The connection manager reconnects on its own; a failed read is retried at the next
        // poll from the same cursor.
        let error = self
            .read(&stream, &mut tally)
            .await
            .err()
            .map(|e| e.to_string());
        let total: u64 = tally.refused.values().sum();
        let new_refusals = if total as usize > reported {
            tally
                .refused
                .iter()
                .map(|(r, n)| (r.as_str(), *n))
                .collect()
        } else {
            Vec::new()
        };
        for (reason, _) in &new_refusals {
            self.base.metrics.transcript_refused(reason);
        }
        self.tallies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid, (tally.clone(), total as usize));
        Observed::Read {
            stream,
            tally: Box::new(tally),
            new_refusals,
            error,
        }
    }

    async fn apply(&self, t: &Transcript, decision: &Decision) -> Result<(), Error> {
        let ns = t.namespace().ok_or(Error::Malformed)?;
        if let Some(status) = &decision.status {
            let body = json!({
                "apiVersion": Transcript::api_version(&()),
                "kind": Transcript::kind(&()),
                "status": status,
            });
            Api::<Transcript>::namespaced(self.base.client.clone(), &ns)
                .patch_status(
                    &t.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await?;
        }
        events::publish(&self.recorder, t, decision.notes.clone()).await;
        Ok(())
    }
}

/// Reconciles one Transcript: observe → decide → apply; again after the poll interval while
/// it is live.
pub async fn reconcile(t: Arc<Transcript>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.transcript.reconcile_started();
    let seen = ctx.observe(&t).await;
    let decision = decide::decide(&t, &seen, &now());
    ctx.apply(&t, &decision).await?;
    if decision.completed_now {
        ctx.base.metrics.transcript_completed();
        if let Some(uid) = t.uid() {
            ctx.tallies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&uid);
        }
    }
    ctx.backoff.reset(&t);
    let read_failed = matches!(&seen, Observed::Read { error: Some(_), .. });
    Ok(if decision.live || read_failed {
        Action::requeue(ctx.poll)
    } else {
        Action::await_change()
    })
}

/// Failed reconciles back off exponentially per object; the reason is counted.
pub fn error_policy(t: Arc<Transcript>, error: &Error, ctx: Arc<Reconciler>) -> Action {
    ctx.base.metrics.transcript.reconcile_failed(error.reason());
    let delay = ctx.backoff.next(&t);
    warn!(transcript = %t.name_any(), namespace = ?t.namespace(), reason = error.reason(), error = %error, retry_in = ?delay, "transcript reconcile failed");
    Action::requeue(delay)
}

/// Runs the Transcript controller until `shutdown` resolves.
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let redis = match ctx.config.admin_redis_client() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the Transcript controller has no Redis client; Transcripts get no status");
            return;
        }
    };
    let watch = by_generation::<Transcript>(ctx.client.clone());
    let concurrency = ctx.config.concurrency;
    let poll = Duration::from_secs(ctx.config.transcript_poll_seconds);
    let rctx = Arc::new(Reconciler {
        recorder: Recorder::new(ctx.client.clone(), ctx.reporter.clone()),
        base: ctx,
        store: watch.0.clone(),
        redis,
        conn: tokio::sync::Mutex::new(None),
        tallies: Mutex::new(HashMap::new()),
        backoff: Backoff::default(),
        poll,
    });
    drive(watch, concurrency, shutdown, reconcile, error_policy, rctx).await;
    info!("Transcript controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(
        ns: &str,
        name: &str,
        created: &str,
        meeting: &str,
        stream: Option<&str>,
    ) -> Arc<Transcript> {
        let mut doc = json!({
            "apiVersion": "vexa.ai/v1", "kind": "Transcript",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"meeting": {"meetingId": meeting, "platform": "google_meet"}, "owner": "alice"},
        });
        if let Some(s) = stream {
            doc["spec"]["stream"] = json!(s);
        }
        Arc::new(serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn the_oldest_transcript_of_a_meeting_reads_its_stream() {
        let all = vec![
            t(
                "team-b",
                "late",
                "2026-12-06T10:05:00Z",
                "abc-defg-hij",
                None,
            ),
            t(
                "team-a",
                "first",
                "2026-12-06T10:00:00Z",
                "abc-defg-hij",
                Some("tc:meeting:abc-defg-hij"),
            ),
            t(
                "team-c",
                "other",
                "2026-12-06T09:00:00Z",
                "zzz-zzzz-zzz",
                None,
            ),
            // Names the stream it may not read: claims nothing.
            t(
                "team-d",
                "thief",
                "2026-12-06T08:00:00Z",
                "zzz-zzzz-zzz",
                Some("tc:meeting:abc-defg-hij"),
            ),
        ];
        assert_eq!(
            claimant(&all, "tc:meeting:abc-defg-hij").as_deref(),
            Some("team-a/first")
        );
        assert_eq!(
            claimant(&all, "tc:meeting:zzz-zzzz-zzz").as_deref(),
            Some("team-c/other")
        );
    }
}
