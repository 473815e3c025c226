//! A client's side of the unit streams (SPEC §4): follow a dispatch's `out` stream from an entry
//! id, and send turns and stop requests on its `in` stream.
//!
//! [`follow`] reads with `XREAD BLOCK` and remembers the id of the last entry it handed out. When
//! the connection fails (Redis restarts, the connection is killed, the network drops) it
//! reconnects with a bounded exponential backoff and reads again after that id, so the reader
//! sees every entry exactly once and in order. An entry that is not a unit event becomes an error
//! item naming the entry; the stream goes on after it.
//!
//! The event type is a parameter so this crate does not depend on the worker's crate (whose
//! binary publishes through this one); clients use [`crate::UnitEvent`].

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use futures::Stream;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use serde::de::DeserializeOwned;

use crate::wire::{Backoff, bytes, field, retryable};
use crate::{EVENT_FIELD, TURN_FIELD};

/// The id of a stream entry, `<milliseconds>-<sequence>`. Ordered as Redis orders entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// The milliseconds part.
    pub ms: u64,
    /// The sequence number within the millisecond.
    pub seq: u64,
}

impl EntryId {
    /// `0-0`: reading after it replays the whole stream.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not a stream entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stream entry id: expected <milliseconds>-<sequence>, e.g. 1700000000000-0")]
pub struct BadEntryId(String);

impl FromStr for EntryId {
    type Err = BadEntryId;

    /// Parses `<ms>-<seq>`, or `<ms>` alone (sequence 0, as Redis reads it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |n: &str| {
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse::<u64>().ok())
                .flatten()
        };
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (number(ms), number(seq)),
            None => (number(s), Some(0)),
        };
        match (ms, seq) {
            (Some(ms), Some(seq)) => Ok(EntryId { ms, seq }),
            _ => Err(BadEntryId(s.to_owned())),
        }
    }
}

/// Why a follow yielded an error.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// One entry is not a unit event; following goes on after it.
    #[error("entry {id} of {topic} is not a unit event: {reason}")]
    Malformed {
        /// The stream.
        topic: String,
        /// The entry.
        id: EntryId,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis could not be reached for longer than [`FollowOptions::give_up_after`]; the follow
    /// ends. Resume later after [`FollowError::Unreachable::last`].
    #[error(
        "Redis at {addr} unreachable for {failing_for:?} while following {topic} (last entry read: {last}): {source}"
    )]
    Unreachable {
        /// The server's address (never its credentials).
        addr: String,
        /// The stream.
        topic: String,
        /// The last entry handed out (or the starting id).
        last: EntryId,
        /// How long it failed.
        failing_for: Duration,
        /// The last error.
        source: RedisError,
    },
    /// Redis refused the read in a way a retry cannot fix (the key is not a stream, an invalid
    /// id, a reply that is not a stream); the follow ends.
    #[error("reading {topic} from Redis at {addr} failed: {source}")]
    Redis {
        /// The server's address.
        addr: String,
        /// The stream.
        topic: String,
        /// The error.
        source: RedisError,
    },
}

impl FollowError {
    /// Whether the follow goes on after this error (a malformed entry) or has ended.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FollowError::Malformed { .. })
    }
}

/// How a follow reads and reconnects.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// How long one `XREAD` blocks waiting for new entries.
    pub block: Duration,
    /// The most entries one `XREAD` returns.
    pub count: usize,
    /// The first wait before reconnecting; doubled after each failure.
    pub min_backoff: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Give up after failing this long without one successful read; `None` retries forever.
    pub give_up_after: Option<Duration>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            block: Duration::from_secs(5),
            count: 256,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            give_up_after: Some(Duration::from_secs(60)),
        }
    }
}

/// One item of a follow: an entry's id and its event, or why it could not be read.
pub type FollowItem<T> = Result<(EntryId, T), FollowError>;

/// Follows `out_topic` after `from` (use [`EntryId::ZERO`] for the whole stream, or
/// [`last_id`] taken beforehand for only what comes next), with the default options.
///
/// The stream never ends on its own while Redis is reachable: the caller stops polling it when it
/// has seen what it waits for. It ends after a fatal error item.
pub fn follow<T: DeserializeOwned>(
    client: Client,
    out_topic: impl Into<String>,
    from: EntryId,
) -> impl Stream<Item = FollowItem<T>> {
    follow_with(client, out_topic, from, FollowOptions::default())
}

/// [`follow`] with explicit options.
pub fn follow_with<T: DeserializeOwned>(
    client: Client,
    out_topic: impl Into<String>,
    from: EntryId,
    options: FollowOptions,
) -> impl Stream<Item = FollowItem<T>> {
    let follower = Follower::<T> {
        addr: client.get_connection_info().addr().to_string(),
        client,
        topic: out_topic.into(),
        last: from,
        backoff: Backoff::new(options.min_backoff, options.max_backoff),
        options,
        conn: None,
        ready: VecDeque::new(),
        ended: false,
        event: PhantomData,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let item = f.next_item().await?;
        Some((item, f))
    })
}

struct Follower<T> {
    client: Client,
    addr: String,
    topic: String,
    /// The id of the last entry read from Redis; every entry before it is in `ready` or was
    /// handed out. Reads (and re-reads after a reconnect) start after it.
    last: EntryId,
    options: FollowOptions,
    conn: Option<MultiplexedConnection>,
    ready: VecDeque<FollowItem<T>>,
    backoff: Backoff,
    ended: bool,
    event: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Follower<T> {
    async fn next_item(&mut self) -> Option<FollowItem<T>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let read = match self.conn.take() {
                Some(conn) => Ok(conn),
                None => self.connect().await,
            };
            let result = match read {
                Ok(mut conn) => {
                    let reply = xread(&mut conn, &self.topic, self.last, &self.options).await;
                    if reply.is_ok() {
                        self.conn = Some(conn);
                    }
                    reply
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(reply) => {
                    self.backoff.succeeded();
                    self.take(reply);
                }
                Err(e) => {
                    if let Some(fatal) = self.failed(e).await {
                        self.ended = true;
                        return Some(Err(fatal));
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        // A blocked XREAD is one long request: the response timeout must outlast it.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.max_backoff.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.options.block + RESPONSE_MARGIN));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Queues the entries of one `XREAD` reply and advances `last` past them.
    fn take(&mut self, reply: Value) {
        let entries = match stream_entries(reply) {
            Ok(entries) => entries,
            Err(reason) => {
                // The reply itself is unreadable: no id to skip past, so reading again would
                // loop on it. Nothing else in this module can make sense of it either.
                self.ready.push_back(Err(FollowError::Redis {
                    addr: self.addr.clone(),
                    topic: self.topic.clone(),
                    source: RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "XREAD reply is not a stream",
                        reason,
                    )),
                }));
                self.ended = true;
                return;
            }
        };
        for (id, event) in entries {
            self.last = id;
            let item =
                decode::<T>(event)
                    .map(|e| (id, e))
                    .map_err(|reason| FollowError::Malformed {
                        topic: self.topic.clone(),
                        id,
                        reason,
                    });
            self.ready.push_back(item);
        }
    }

    /// Handles a failed connect or read: `Some(error)` ends the follow, `None` after the backoff
    /// means "try again".
    async fn failed(&mut self, e: RedisError) -> Option<FollowError> {
        if !retryable(&e) {
            return Some(FollowError::Redis {
                addr: self.addr.clone(),
                topic: self.topic.clone(),
                source: e,
            });
        }
        let failing_for = self.backoff.failing_for();
        if self
            .options
            .give_up_after
            .is_some_and(|limit| failing_for >= limit)
        {
            return Some(FollowError::Unreachable {
                addr: self.addr.clone(),
                topic: self.topic.clone(),
                last: self.last,
                failing_for,
                source: e,
            });
        }
        tracing::warn!(
            topic = %self.topic,
            addr = %self.addr,
            last = %self.last,
            retry_in = ?self.backoff.next_wait(),
            error = %e,
            "following the stream failed; reconnecting"
        );
        self.backoff.wait().await;
        None
    }
}

/// How much longer than the `BLOCK` time a read may take before the connection counts as dead.
const RESPONSE_MARGIN: Duration = Duration::from_secs(3);

async fn xread(
    conn: &mut impl ConnectionLike,
    topic: &str,
    after: EntryId,
    options: &FollowOptions,
) -> Result<Value, RedisError> {
    let block_ms = u64::try_from(options.block.as_millis()).unwrap_or(u64::MAX);
    redis::cmd("XREAD")
        .arg("COUNT")
        .arg(options.count.max(1))
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(topic)
        .arg(after.to_string())
        .query_async(conn)
        .await
}

/// An entry as read: its id and the bytes of its `event` field, if it has one.
type RawEntry = (EntryId, Option<Vec<u8>>);

/// The entries of an `XREAD` reply for one stream, as (id, the `event` field's bytes if any).
///
/// Parsed by hand rather than through `redis::streams::StreamReadReply`, which fails the whole
/// reply when one entry has a field that is not UTF-8; here such an entry is one malformed item.
fn stream_entries(reply: Value) -> Result<Vec<RawEntry>, String> {
    let streams = match reply {
        // BLOCK timed out: nothing new.
        Value::Nil => return Ok(Vec::new()),
        // RESP2: [[key, entries]]; RESP3: {key: entries}.
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(format!("unexpected stream reply {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("unexpected XREAD reply {other:?}")),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            return Err(format!("unexpected entries {entries:?}"));
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err(format!("unexpected entry {entry:?}"));
            };
            if parts.len() != 2 {
                return Err(format!("unexpected entry {parts:?}"));
            }
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = parts.pop().unwrap_or(Value::Nil);
            let id = bytes(&id)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<EntryId>().ok())
                .ok_or_else(|| format!("unexpected entry id {id:?}"))?;
            out.push((id, field(fields, EVENT_FIELD)));
        }
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(event: Option<Vec<u8>>) -> Result<T, String> {
    let raw = event.ok_or_else(|| format!("it has no {EVENT_FIELD:?} field"))?;
    serde_json::from_slice(&raw).map_err(|e| {
        let text = String::from_utf8_lossy(&raw);
        let excerpt: String = text.chars().take(120).collect();
        format!("{e} in {excerpt:?}")
    })
}

/// The id of the newest entry of `topic`, `None` when the stream is empty or absent. Follow
/// after it to see only what comes next, without a gap.
pub async fn last_id(
    conn: &mut impl ConnectionLike,
    topic: &str,
) -> Result<Option<EntryId>, RedisError> {
    Ok(last_entry(conn, topic).await?.map(|(id, _)| id))
}

/// The newest entry of `topic` with its event (or why it is not one), `None` when the stream is
/// empty or absent.
pub async fn last_event<T: DeserializeOwned>(
    conn: &mut impl ConnectionLike,
    topic: &str,
) -> Result<Option<(EntryId, Result<T, String>)>, RedisError> {
    Ok(last_entry(conn, topic)
        .await?
        .map(|(id, event)| (id, decode(event))))
}

async fn last_entry(
    conn: &mut impl ConnectionLike,
    topic: &str,
) -> Result<Option<RawEntry>, RedisError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(topic)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    // XREVRANGE answers with the entries list alone; wrap it as one XREAD stream to share the
    // parser.
    let wrapped = Value::Array(vec![Value::Array(vec![
        Value::BulkString(topic.as_bytes().to_vec()),
        reply,
    ])]);
    let entries = stream_entries(wrapped).map_err(|reason| {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "XREVRANGE reply is not a stream",
            reason,
        ))
    })?;
    Ok(entries.into_iter().next())
}

/// Sends a turn with `prompt` on a dispatch's input stream (`{"prompt": …}` in field `turn`);
/// returns the new entry's id.
pub async fn send_turn(
    conn: &mut impl ConnectionLike,
    in_topic: &str,
    prompt: &str,
) -> Result<EntryId, RedisError> {
    add_turn(conn, in_topic, &serde_json::json!({ "prompt": prompt })).await
}

/// Asks a dispatch's worker to stop (`{"type": "stop"}` in field `turn`); returns the new entry's
/// id.
pub async fn send_stop(
    conn: &mut impl ConnectionLike,
    in_topic: &str,
) -> Result<EntryId, RedisError> {
    add_turn(conn, in_topic, &serde_json::json!({ "type": "stop" })).await
}

async fn add_turn(
    conn: &mut impl ConnectionLike,
    in_topic: &str,
    turn: &serde_json::Value,
) -> Result<EntryId, RedisError> {
    let id: String = redis::cmd("XADD")
        .arg(in_topic)
        .arg("*")
        .arg(TURN_FIELD)
        .arg(turn.to_string())
        .query_async(conn)
        .await?;
    id.parse().map_err(|e: BadEntryId| {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "XADD returned no entry id",
            e.to_string(),
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn entry_ids_parse_print_and_order() {
        let id: EntryId = "1700000000000-7".parse().unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1700000000000-7");
        assert_eq!("5".parse::<EntryId>().unwrap(), EntryId { ms: 5, seq: 0 });
        assert!(EntryId { ms: 1, seq: 10 } < EntryId { ms: 2, seq: 0 });
        assert!(EntryId { ms: 2, seq: 9 } < EntryId { ms: 2, seq: 10 });
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "$",
            "1-2-3",
            "a-1",
            "+1-0",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?}");
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_in_both_protocols_give_the_event_field_of_each_entry() {
        let entry =
            |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let entries = Value::Array(vec![
            entry("1-0", vec![bulk("event"), bulk("{}")]),
            entry("1-1", vec![bulk("other"), bulk("x")]),
            entry(
                "2-0",
                vec![
                    bulk("x"),
                    bulk("y"),
                    bulk("event"),
                    Value::BulkString(vec![0xff]),
                ],
            ),
        ]);
        let want = vec![
            (EntryId { ms: 1, seq: 0 }, Some(b"{}".to_vec())),
            (EntryId { ms: 1, seq: 1 }, None),
            (EntryId { ms: 2, seq: 0 }, Some(vec![0xff])),
        ];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), entries.clone()])]);
        assert_eq!(stream_entries(resp2).unwrap(), want);
        let resp3 = Value::Map(vec![(bulk("k"), entries)]);
        assert_eq!(stream_entries(resp3).unwrap(), want);
        assert_eq!(stream_entries(Value::Nil).unwrap(), vec![]);
        assert!(stream_entries(Value::Int(3)).is_err());
    }

    #[test]
    fn decoding_names_what_is_wrong() {
        assert_eq!(
            decode::<serde_json::Value>(Some(b"{\"a\":1}".to_vec())).unwrap()["a"],
            1
        );
        assert!(
            decode::<serde_json::Value>(None)
                .unwrap_err()
                .contains("no \"event\" field")
        );
        assert!(
            decode::<serde_json::Value>(Some(b"{".to_vec()))
                .unwrap_err()
                .contains("\"{\"")
        );
    }

    #[test]
    fn connection_failures_are_retried_and_rejected_requests_are_not() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(retryable(&io));
        let refused = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(retryable(&refused));
        let wrong = RedisError::from((redis::ErrorKind::UnexpectedReturnType, "wrong"));
        assert!(!retryable(&wrong));
    }
}
