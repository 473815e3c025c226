//! The streams API (`streams.vexa.ai/v1`): how people read a dispatch's stream and send it
//! turns without Redis credentials (SPEC §4). The operator serves it behind the Kubernetes API
//! server (an aggregated API), the CLI and the console call it. This module is the contract
//! both sides share: paths, the lines of a log, and the answer to a turn.
//!
//! - `GET …/namespaces/<ns>/dispatches/<name>/log?from=<entry id>`: newline-delimited JSON, one
//!   line per entry after `from` (`0-0`, the default, replays everything), as long as the
//!   dispatch runs: [`LogLine`]. The last line is `{"end": "<phase>"}` once the dispatch has ended
//!   and every entry was sent; a connection that closes without it can resume after the last
//!   id received, with no gap and no repeat. Empty lines keep an idle connection open.
//!   `follow=false` sends what the stream holds now, then closes (it answers for a name with no
//!   Dispatch too: whether a previous run of that name left a stream behind).
//! - `POST …/namespaces/<ns>/dispatches/<name>/turns` with `{"prompt": …}` or `{"type":
//!   "stop"}`: [`TurnAccepted`].
//!
//! Reading needs `get` on the Dispatch (group `vexa.ai`); sending a turn or a stop needs
//! `create` on `dispatches/turns` (group `vexa.ai`). The API server first checks the same verbs
//! on the `streams.vexa.ai` resources `dispatches/log` and `dispatches/turns`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::Client;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::UnitEvent;
use crate::follow::{EntryId, FollowError, FollowItem, FollowOptions, follow_with, last_id};

/// The API group.
pub const GROUP: &str = "streams.vexa.ai";
/// The version.
pub const VERSION: &str = "v1";
/// The subresource that reads a dispatch's stream (named like `pods/log`, which the API server
/// also treats as a long-running request, so a follow is not cut after a minute).
pub const LOG: &str = "log";
/// The subresource that takes turns and stops.
pub const TURNS: &str = "turns";
/// The subresource that reads a dispatch's audit records (`vexa_audit::DispatchAudit`).
pub const AUDIT: &str = "audit";
/// The cluster-scoped resource that exports every audit chain with its keys
/// (`vexa_audit::Export`).
pub const AUDIT_LOG: &str = "auditlog";
/// The resource the subresources hang off.
pub const DISPATCHES: &str = "dispatches";
/// The resource a workspace's reads and uploads hang off (`vexa_core::knowledge::ops`).
pub const WORKSPACES: &str = "workspaces";

/// `/apis/streams.vexa.ai/v1`.
pub fn group_version_path() -> String {
    format!("/apis/{GROUP}/{VERSION}")
}

/// The path of a dispatch's `subresource`.
pub fn path(namespace: &str, name: &str, subresource: &str) -> String {
    format!(
        "{}/namespaces/{namespace}/{DISPATCHES}/{name}/{subresource}",
        group_version_path()
    )
}

/// The path of a workspace's `subresource` (a read of `vexa_core::knowledge::ops`, or
/// `uploads`).
pub fn workspace_path(namespace: &str, name: &str, subresource: &str) -> String {
    format!(
        "{}/namespaces/{namespace}/{WORKSPACES}/{name}/{subresource}",
        group_version_path()
    )
}

/// One line of a log response.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    /// An entry and its event.
    Event(EntryId, UnitEvent),
    /// An entry that is not a unit event, and why.
    Malformed(EntryId, String),
    /// The dispatch has ended (its phase) and every entry was sent.
    End(String),
    /// Nothing new (keeps the connection open).
    Idle,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

impl LogLine {
    /// The line, with its newline: `{"id": "<entry id>", "event": {…}}`, `{"id": …, "error":
    /// …}`, `{"end": "<phase>"}`, or an empty line.
    pub fn encode(&self) -> String {
        match self {
            // By hand, so the id comes first and the event is the published JSON.
            LogLine::Event(id, unit) => {
                format!("{{\"id\":\"{id}\",\"event\":{}}}\n", unit.to_json())
            }
            LogLine::Malformed(id, reason) => {
                format!(
                    "{{\"id\":\"{id}\",\"error\":{}}}\n",
                    Value::from(reason.as_str())
                )
            }
            LogLine::End(phase) => format!("{{\"end\":{}}}\n", Value::from(phase.as_str())),
            LogLine::Idle => "\n".into(),
        }
    }

    /// Reads one line (without its newline); the error says what is wrong with it.
    pub fn decode(line: &str) -> Result<Self, String> {
        if line.trim().is_empty() {
            return Ok(LogLine::Idle);
        }
        let wire: Wire = serde_json::from_str(line).map_err(|e| format!("not a log line ({e})"))?;
        let id = |id: Option<String>| -> Result<EntryId, String> {
            let id = id.ok_or("a log line without an entry id")?;
            id.parse().map_err(|e| format!("{e}"))
        };
        match wire {
            Wire { end: Some(end), .. } => Ok(LogLine::End(end)),
            Wire {
                id: i,
                event: Some(event),
                ..
            } => {
                let id = id(i)?;
                match serde_json::from_value::<UnitEvent>(event) {
                    Ok(unit) => Ok(LogLine::Event(id, unit)),
                    Err(e) => Ok(LogLine::Malformed(id, format!("not a unit event: {e}"))),
                }
            }
            Wire {
                id: i,
                error: Some(error),
                ..
            } => Ok(LogLine::Malformed(id(i)?, error)),
            _ => Err(format!("a log line of no known shape: {line:?}")),
        }
    }
}

/// How often [`log_lines`] asks whether the dispatch has ended.
pub const END_CHECK: Duration = Duration::from_secs(1);
/// An idle line after this long without an entry keeps proxies and clients from timing out.
pub const KEEPALIVE: Duration = Duration::from_secs(20);

/// The lines of a followed log (the server's side of `…/log`): every entry of `topic` after
/// `from`; `ended` is asked every [`END_CHECK`] and gives the phase once the dispatch has ended,
/// after which the entries up to the stream's last one then follow, then [`LogLine::End`].
/// The stream ends early (without an end line) when Redis stays unreachable past the follow's
/// limit: the client resumes after the last id it got.
pub fn log_lines<E, F>(
    redis: Client,
    topic: String,
    from: EntryId,
    options: FollowOptions,
    ended: E,
) -> impl Stream<Item = LogLine> + Send
where
    E: FnMut() -> F + Send + 'static,
    F: Future<Output = Option<String>> + Send,
{
    let entries = follow_with::<UnitEvent>(redis.clone(), topic.clone(), from, options).boxed();
    let mut check = tokio::time::interval(END_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = LogState {
        redis,
        topic,
        entries,
        last: from,
        end: None,
        done: false,
        check,
        ended,
    };
    futures::stream::unfold(state, |mut s| async move {
        let line = s.next_line().await?;
        Some((line, s))
    })
}

struct LogState<E> {
    redis: Client,
    topic: String,
    entries: Pin<Box<dyn Stream<Item = FollowItem<UnitEvent>> + Send>>,
    last: EntryId,
    /// Once the dispatch has ended: its phase and the stream's last entry then.
    end: Option<(String, Option<EntryId>)>,
    done: bool,
    check: tokio::time::Interval,
    ended: E,
}

impl<E, F> LogState<E>
where
    E: FnMut() -> F + Send,
    F: Future<Output = Option<String>> + Send,
{
    async fn next_line(&mut self) -> Option<LogLine> {
        if self.done {
            return None;
        }
        loop {
            if let Some((phase, stream_end)) = &self.end
                && stream_end.is_none_or(|e| self.last >= e)
            {
                self.done = true;
                return Some(LogLine::End(phase.clone()));
            }
            tokio::select! {
                _ = self.check.tick(), if self.end.is_none() => {
                    if let Some(phase) = (self.ended)().await {
                        match stream_end(self.redis.clone(), self.topic.clone()).await {
                            Ok(stream_end) => self.end = Some((phase, stream_end)),
                            Err(e) => tracing::warn!(topic = %self.topic, error = %e, "reading the end of a stream failed; retrying"),
                        }
                    }
                }
                () = tokio::time::sleep(KEEPALIVE) => return Some(LogLine::Idle),
                item = self.entries.next() => return match item {
                    Some(Ok((id, unit))) => {
                        self.last = id;
                        Some(LogLine::Event(id, unit))
                    }
                    Some(Err(FollowError::Malformed { id, reason, .. })) => {
                        self.last = id;
                        Some(LogLine::Malformed(id, reason))
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %self.topic, error = %e, "following a stream for a client failed");
                        None
                    }
                    None => None,
                },
            }
        }
    }
}

/// The id of the newest entry of `topic`, on a connection of its own.
pub async fn stream_end(
    redis: Client,
    topic: String,
) -> Result<Option<EntryId>, redis::RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = redis
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    last_id(&mut conn, &topic).await
}

/// The answer to a turn or a stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnAccepted {
    /// The id of the turn's entry on the input stream.
    pub id: String,
    /// The newest entry of the output stream just before the turn was added: the reply comes
    /// after it. `None` when nothing was written yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastEntry>,
}

/// The newest entry of a dispatch's output stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastEntry {
    /// Its id.
    pub id: String,
    /// The turn it belongs to; `None` when it is not a unit event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{Event, TurnId};

    #[test]
    fn every_line_reads_back_as_written() {
        let id = EntryId { ms: 17, seq: 3 };
        for line in [
            LogLine::Event(
                id,
                UnitEvent::new(TurnId(2), Event::Commit { sha: "ab".into() }),
            ),
            LogLine::Malformed(id, "key must be a string \"x\"".into()),
            LogLine::End("succeeded".into()),
            LogLine::Idle,
        ] {
            let text = line.encode();
            assert!(text.ends_with('\n'));
            assert_eq!(LogLine::decode(text.trim_end_matches('\n')).unwrap(), line);
        }
        assert_eq!(
            LogLine::Event(
                id,
                UnitEvent::new(TurnId(1), Event::Commit { sha: "abc".into() })
            )
            .encode(),
            "{\"id\":\"17-3\",\"event\":{\"type\":\"commit\",\"sha\":\"abc\",\"turn_id\":\"t1\"}}\n"
        );
    }

    #[test]
    fn a_line_of_no_known_shape_is_an_error() {
        for bad in [
            "{oops",
            "{}",
            "{\"event\":{}}",
            "{\"id\":\"x\",\"error\":\"e\"}",
        ] {
            assert!(LogLine::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            path("team-a", "agent-x", LOG),
            "/apis/streams.vexa.ai/v1/namespaces/team-a/dispatches/agent-x/log"
        );
    }
}
