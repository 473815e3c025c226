//! The worker's side of the unit streams (SPEC §4): [`Publisher`] appends events to
//! `unit:<id>:out`, [`Inbox`] reads the next turn from `unit:<id>:in`.
//!
//! # Exactly once, in order, across Redis restarts
//!
//! A write whose connection fails is ambiguous: Redis may have appended the entry before the
//! failure or not. Retrying a plain `XADD * …` would then risk a duplicate. The publisher
//! therefore chooses every entry id itself (`<ms>-<seq>`, strictly increasing, above whatever
//! the stream held when it started) and retries a failed append with the *same* ids. The append
//! is a Redis function ([`crate::acl::APPEND_FUNCTION`], which the operator loads; a dispatch's
//! ACL user may call it but not run Lua of its own), atomic in Redis: for each (id, event) it runs `XADD` with that id, and
//! when Redis refuses the id (not above the stream's top) it looks at the entry with that id; its
//! own event there means an earlier attempt landed, so it counts as done and is not written
//! again. Anything else there (another writer) stops the function at that event, and the publisher
//! renumbers what is left above the new top. An event is never written twice, and never after
//! an event published later.
//!
//! Connection failures (refused, reset, timed out, Redis loading its data after a restart) are
//! retried with exponential backoff, on a new connection, until [`RetryOptions::give_up_after`]
//! has passed without one success; then the call fails with an error saying so. Requests Redis
//! rejects for good (the key is not a stream, …) fail at once.
//!
//! What survives a Redis restart is what Redis persisted: with `appendfsync always` every
//! acknowledged append; with `everysec` (the local cluster's setting) a crash of Redis itself,
//! not a restart, can lose up to a second of acknowledged appends.
//!
//! # Capped
//!
//! Every append trims the stream to about [`DEFAULT_MAX_LEN`] entries (approximate trimming:
//! Redis drops whole nodes, so the stream can be a node, ~100 entries, longer);
//! [`Publisher::set_max_len`] changes that.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use serde_json::Value as Json;

use crate::acl::{self, APPEND_FUNCTION};
use crate::follow::EntryId;
use crate::wire::{Backoff, bytes, field, pairs, retryable};
use crate::{EVENT_FIELD, TURN_FIELD};

/// How a publisher or an inbox retries when Redis cannot be reached.
#[derive(Debug, Clone)]
pub struct RetryOptions {
    /// The first wait before trying again; doubled after each failure.
    pub min_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Give up after failing this long without one success.
    pub give_up_after: Duration,
    /// How long one request may take before the connection counts as dead (an `XREAD BLOCK`
    /// gets its blocking time on top).
    pub response_timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a publisher or an inbox failed. Both end the stream's use: the worker reports and exits.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Redis could not be reached (or kept failing) for longer than
    /// [`RetryOptions::give_up_after`].
    #[error(
        "Redis at {addr} failed for {failing_for:?} while {doing} {topic}; giving up (check that Redis is running and reachable from the pod): {source}"
    )]
    Unreachable {
        /// The server's address (never its credentials).
        addr: String,
        /// The stream.
        topic: String,
        /// What was being done.
        doing: &'static str,
        /// How long it failed.
        failing_for: Duration,
        /// The last error.
        source: RedisError,
    },
    /// Redis refused a request in a way no retry can fix.
    #[error("Redis at {addr} refused {doing} {topic}: {source}")]
    Refused {
        /// The server's address.
        addr: String,
        /// The stream.
        topic: String,
        /// What was being done.
        doing: &'static str,
        /// The error.
        source: RedisError,
    },
}

/// One connection to Redis, re-made after a failure, with the retry bookkeeping.
struct Link {
    client: Client,
    addr: String,
    topic: String,
    options: RetryOptions,
    /// Extra response time for blocking reads.
    block_margin: Duration,
    conn: Option<MultiplexedConnection>,
    backoff: Backoff,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.addr)
            .field("topic", &self.topic)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Link {
    fn new(client: Client, topic: String, options: RetryOptions, block_margin: Duration) -> Self {
        Self {
            addr: client.get_connection_info().addr().to_string(),
            client,
            topic,
            backoff: Backoff::new(options.min_backoff, options.max_backoff),
            options,
            block_margin,
            conn: None,
        }
    }

    /// The connection, made if needed. A failure to connect is returned like a failed request.
    async fn conn(&mut self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.response_timeout))
            .set_response_timeout(Some(self.options.response_timeout + self.block_margin));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    fn succeeded(&mut self) {
        if let Some(after) = self.backoff.succeeded() {
            tracing::info!(topic = %self.topic, addr = %self.addr, ?after, "Redis is reachable again");
        }
    }

    /// Handles a failed request: `Ok(())` after the backoff means "try again on a new
    /// connection", an error ends the caller's operation.
    async fn failed(&mut self, e: RedisError, doing: &'static str) -> Result<(), StreamError> {
        self.conn = None;
        if !retryable(&e) {
            return Err(StreamError::Refused {
                addr: self.addr.clone(),
                topic: self.topic.clone(),
                doing,
                source: e,
            });
        }
        let failing_for = self.backoff.failing_for();
        if failing_for >= self.options.give_up_after {
            return Err(StreamError::Unreachable {
                addr: self.addr.clone(),
                topic: self.topic.clone(),
                doing,
                failing_for,
                source: e,
            });
        }
        tracing::warn!(
            topic = %self.topic,
            addr = %self.addr,
            retry_in = ?self.backoff.next_wait(),
            error = %e,
            "{doing} failed; reconnecting"
        );
        self.backoff.wait().await;
        Ok(())
    }
}

/// The id after `last` for an append at wall-clock time `now_ms`: the clock's millisecond when
/// it is ahead, else the next sequence number of `last`'s millisecond (so a clock that goes
/// back never breaks the order).
pub fn next_id(last: Option<EntryId>, now_ms: u64) -> EntryId {
    match last {
        Some(l) if l.ms >= now_ms => match l.seq.checked_add(1) {
            Some(seq) => EntryId { ms: l.ms, seq },
            None => EntryId {
                ms: l.ms.saturating_add(1),
                seq: 0,
            },
        },
        _ => EntryId { ms: now_ms, seq: 0 },
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The most events one function call appends, so one call never holds Redis for long.
pub const MAX_BATCH: usize = 256;

/// How many entries an `out` stream keeps when nothing else is set (about: trimming is
/// approximate).
pub const DEFAULT_MAX_LEN: u64 = 10_000;

/// Appends unit events to one `out` stream, exactly once and in order (see the module docs).
#[derive(Debug)]
pub struct Publisher {
    link: Link,
    /// The id of the last entry this publisher appended, or the stream's top when it started.
    last: Option<EntryId>,
    /// Events found already appended when an append was retried (they were not written again).
    deduplicated: u64,
    /// About how many entries the stream keeps (`0`: no trimming).
    max_len: u64,
    /// Whether this publisher loaded the append function itself (once at most).
    loaded_library: bool,
}

impl Publisher {
    /// A publisher for `topic`. Reads the stream's top (retrying while Redis is unreachable) so
    /// every id it writes is above what the stream already holds.
    pub async fn connect(
        client: Client,
        topic: impl Into<String>,
        options: RetryOptions,
    ) -> Result<Self, StreamError> {
        let mut publisher = Self {
            link: Link::new(client, topic.into(), options, Duration::ZERO),
            last: None,
            deduplicated: 0,
            max_len: DEFAULT_MAX_LEN,
            loaded_library: false,
        };
        publisher.last = publisher.top().await?;
        Ok(publisher)
    }

    /// The stream.
    pub fn topic(&self) -> &str {
        &self.link.topic
    }

    /// Trims the stream to about `max_len` entries on every append (`0`: never trims).
    pub fn set_max_len(&mut self, max_len: u64) {
        self.max_len = max_len;
    }

    /// The id of the last entry appended (or the stream's top before the first append).
    pub fn last_id(&self) -> Option<EntryId> {
        self.last
    }

    /// How many events a retried append found already on the stream (and did not repeat).
    pub fn deduplicated(&self) -> u64 {
        self.deduplicated
    }

    /// Appends `event_json` as the `event` field of a new entry; returns the entry's id once
    /// Redis has acknowledged it.
    pub async fn publish(&mut self, event_json: &str) -> Result<EntryId, StreamError> {
        let ids = self.publish_all(&[event_json]).await?;
        ids.last().copied().ok_or_else(|| no_id_error(&self.link))
    }

    /// Appends several events in order (one round trip per [`MAX_BATCH`] events); returns their
    /// ids once Redis has acknowledged them all.
    pub async fn publish_all<S: AsRef<str>>(
        &mut self,
        events: &[S],
    ) -> Result<Vec<EntryId>, StreamError> {
        let mut ids = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_BATCH) {
            ids.extend(self.append(chunk).await?);
        }
        Ok(ids)
    }

    async fn append<S: AsRef<str>>(&mut self, events: &[S]) -> Result<Vec<EntryId>, StreamError> {
        let mut ids = id_chain(self.last, now_ms(), events.len());
        // Events before `done` are on the stream.
        let mut done = 0;
        while done < events.len() {
            let attempt = async {
                let mut conn = self.link.conn().await?;
                let mut cmd = redis::cmd("FCALL");
                cmd.arg(APPEND_FUNCTION)
                    .arg(1)
                    .arg(&self.link.topic)
                    .arg(EVENT_FIELD)
                    .arg(self.max_len);
                for (id, event) in ids.iter().zip(events).skip(done) {
                    cmd.arg(id.to_string()).arg(event.as_ref());
                }
                cmd.query_async::<(usize, usize, u8)>(&mut conn).await
            };
            match attempt.await {
                Ok((appended, present, stopped)) => {
                    self.link.succeeded();
                    done += appended + present;
                    self.deduplicated += present as u64;
                    if present > 0 {
                        tracing::debug!(topic = %self.link.topic, present, "retried events had landed");
                    }
                    if stopped != 0 && done < events.len() {
                        // Something else wrote at or past the next id: that event is not there.
                        // Renumber the rest above the stream's top.
                        let top = self.top().await?;
                        let after = top.max(done.checked_sub(1).map(|i| ids[i])).max(self.last);
                        tracing::warn!(topic = %self.link.topic, top = ?top.map(|t| t.to_string()), "the stream moved past this publisher's ids; appending above it");
                        let renumbered = id_chain(after, now_ms(), events.len() - done);
                        ids.truncate(done);
                        ids.extend(renumbered);
                    }
                }
                Err(e) if missing_function(&e) && !self.loaded_library => {
                    self.load_library().await?;
                }
                Err(e) => self.link.failed(e, "appending to").await?,
            }
        }
        self.last = ids.last().copied().or(self.last);
        Ok(ids)
    }

    /// Loads the append function when Redis has none (a Redis without the operator, as in
    /// tests or a plain development setup). A dispatch's ACL user may not: its error says that
    /// the operator must load it.
    async fn load_library(&mut self) -> Result<(), StreamError> {
        self.loaded_library = true;
        let mut conn = match self.link.conn().await {
            Ok(conn) => conn,
            Err(e) => return self.link.failed(e, "loading the append function for").await,
        };
        match acl::load_library(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => Err(StreamError::Refused {
                addr: self.link.addr.clone(),
                topic: self.link.topic.clone(),
                doing: "loading the append function (the operator loads it when it creates a dispatch's Redis user) for",
                source: e,
            }),
        }
    }

    /// The id of the newest entry the stream ever had (`last-generated-id`, which stays put when
    /// entries are deleted), `None` when the stream does not exist.
    async fn top(&mut self) -> Result<Option<EntryId>, StreamError> {
        loop {
            let attempt = async {
                let mut conn = self.link.conn().await?;
                last_generated_id(&mut conn, &self.link.topic).await
            };
            match attempt.await {
                Ok(top) => {
                    self.link.succeeded();
                    return Ok(top);
                }
                Err(e) => self.link.failed(e, "reading the top of").await?,
            }
        }
    }
}

/// Redis has no append function (it was never loaded, or Redis lost it).
fn missing_function(e: &RedisError) -> bool {
    e.to_string().contains("Function not found")
}

/// `n` increasing ids after `last`.
fn id_chain(last: Option<EntryId>, now_ms: u64, n: usize) -> Vec<EntryId> {
    let mut ids: Vec<EntryId> = Vec::with_capacity(n);
    let mut prev = last;
    for _ in 0..n {
        let id = next_id(prev, now_ms);
        ids.push(id);
        prev = Some(id);
    }
    ids
}

fn no_id_error(link: &Link) -> StreamError {
    StreamError::Refused {
        addr: link.addr.clone(),
        topic: link.topic.clone(),
        doing: "appending to",
        source: RedisError::from((redis::ErrorKind::Client, "no entry id for an append")),
    }
}

async fn last_generated_id(
    conn: &mut MultiplexedConnection,
    topic: &str,
) -> Result<Option<EntryId>, RedisError> {
    let reply: Result<Value, RedisError> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(topic)
        .query_async(conn)
        .await;
    let info = match reply {
        Ok(info) => info,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    let id = pairs(info)
        .into_iter()
        .find(|(k, _)| bytes(k) == Some(b"last-generated-id".as_slice()))
        .and_then(|(_, v)| bytes(&v).and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()));
    match id {
        Some(id) if id == EntryId::ZERO => Ok(None),
        Some(id) => Ok(Some(id)),
        None => Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "XINFO STREAM reply has no last-generated-id",
        ))),
    }
}

/// What the input stream asks of the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// `{"prompt": …}`: run a turn with this prompt.
    Prompt(String),
    /// `{"type": "stop"}`: end the run.
    Stop,
}

impl Turn {
    /// Reads a turn's JSON; the error says what is wrong with it.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let v: Json = serde_json::from_slice(raw).map_err(|e| format!("not JSON ({e})"))?;
        let object = v.as_object().ok_or("not a JSON object")?;
        match (
            object.get("type").and_then(Json::as_str),
            object.get("prompt"),
        ) {
            (Some("stop"), _) => Ok(Turn::Stop),
            (None | Some("prompt"), Some(Json::String(p))) if !p.trim().is_empty() => {
                Ok(Turn::Prompt(p.clone()))
            }
            (None | Some("prompt"), Some(Json::String(_))) => Err("the prompt is empty".into()),
            (None | Some("prompt"), Some(_)) => Err("\"prompt\" is not a string".into()),
            (Some(other), _) if other != "prompt" => Err(format!(
                "unknown type {other:?}: expected {{\"prompt\": …}} or {{\"type\": \"stop\"}}"
            )),
            _ => Err("no \"prompt\": expected {\"prompt\": …} or {\"type\": \"stop\"}".into()),
        }
    }
}

/// One entry of the input stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inboxed {
    /// A turn.
    Turn(EntryId, Turn),
    /// An entry that is not a turn; reading goes on after it.
    Malformed {
        /// The entry.
        id: EntryId,
        /// What is wrong with it.
        problem: String,
    },
}

/// How long one `XREAD BLOCK` waits at most; a longer wait is several of them, so a dead
/// connection is noticed within this time plus the response timeout.
const BLOCK_SLICE: Duration = Duration::from_secs(10);

/// The consumer group of the workers on an `in` stream.
pub const INBOX_GROUP: &str = "vexa-worker";

/// Reads the turns of one `in` stream in order, each once, resuming after a Redis restart.
///
/// It reads through the consumer group [`INBOX_GROUP`], created at the stream's start when it
/// does not exist yet: the first worker on a stream gets every turn sent before it started, and a
/// later worker on the same stream (a dispatch id used again, e.g. a chat thread's) continues
/// after the last turn any earlier one read instead of replaying them. Entries are delivered
/// with `NOACK`: a turn counts as taken when it is read. The id of the last entry read is also
/// kept here, so a redelivery after Redis lost its last writes is skipped.
#[derive(Debug)]
pub struct Inbox {
    link: Link,
    consumer: String,
    group_ready: bool,
    last: EntryId,
}

impl Inbox {
    /// An inbox for `topic`; `consumer` names this reader in the group (e.g. the pod's name).
    /// Connects on the first read.
    pub fn new(
        client: Client,
        topic: impl Into<String>,
        consumer: impl Into<String>,
        options: RetryOptions,
    ) -> Self {
        Self {
            link: Link::new(client, topic.into(), options, BLOCK_SLICE),
            consumer: consumer.into(),
            group_ready: false,
            last: EntryId::ZERO,
        }
    }

    /// The id of the last entry read.
    pub fn last_id(&self) -> EntryId {
        self.last
    }

    /// The next entry, waiting up to `wait` for one; `None` when nothing came in time. While
    /// Redis is unreachable it keeps trying (past `wait` if need be, so a turn sent in time is
    /// not lost) until [`RetryOptions::give_up_after`].
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Inboxed>, StreamError> {
        let deadline = Instant::now() + wait;
        loop {
            let block = deadline
                .saturating_duration_since(Instant::now())
                .min(BLOCK_SLICE);
            match self.read(block).await {
                Ok(reply) => {
                    self.link.succeeded();
                    let streams = match reply {
                        Value::Nil => Vec::new(),
                        other => pairs_or_list(other),
                    };
                    let entry = streams
                        .into_iter()
                        .flat_map(|(_, entries_of)| entries(entries_of))
                        .find(|(id, _)| *id > self.last);
                    if let Some((id, fields)) = entry {
                        self.last = id;
                        let turn = field(fields, TURN_FIELD)
                            .ok_or_else(|| format!("it has no {TURN_FIELD:?} field"))
                            .and_then(|raw| Turn::parse(&raw));
                        return Ok(Some(match turn {
                            Ok(turn) => Inboxed::Turn(id, turn),
                            Err(problem) => Inboxed::Malformed { id, problem },
                        }));
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                // The group is gone (Redis restarted without it): make it again and read on.
                Err(e) if e.code() == Some("NOGROUP") => self.group_ready = false,
                Err(e) => {
                    self.group_ready = false;
                    self.link.failed(e, "reading turns from").await?;
                }
            }
        }
    }

    /// One `XREADGROUP`, blocking up to `block` (not at all below a millisecond: `BLOCK 0` would
    /// wait forever).
    async fn read(&mut self, block: Duration) -> Result<Value, RedisError> {
        let mut conn = self.link.conn().await?;
        let topic = &self.link.topic;
        if !self.group_ready {
            let created: Result<Value, RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(topic)
                .arg(INBOX_GROUP)
                .arg(self.last.to_string())
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
                _ => self.group_ready = true,
            }
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(INBOX_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1);
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("NOACK").arg("STREAMS").arg(topic).arg(">");
        cmd.query_async(&mut conn).await
    }
}

/// The (stream, entries) pairs of an `XREAD` reply: a list of two-item lists in RESP2, a map in
/// RESP3.
fn pairs_or_list(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop()?;
                    Some((pair.pop()?, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    }
}

/// The (id, fields) of each entry of a list of entries; unreadable items are skipped.
fn entries(v: Value) -> Vec<(EntryId, Value)> {
    let Value::Array(list) = v else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = bytes(&parts.pop()?)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())?;
            Some((id, fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn id(ms: u64, seq: u64) -> EntryId {
        EntryId { ms, seq }
    }

    #[test]
    fn ids_follow_the_clock_and_never_go_back() {
        assert_eq!(next_id(None, 1000), id(1000, 0));
        assert_eq!(next_id(Some(id(900, 7)), 1000), id(1000, 0));
        assert_eq!(next_id(Some(id(1000, 0)), 1000), id(1000, 1));
        // The clock went back (or the stream's top is in the future): stay above the top.
        assert_eq!(next_id(Some(id(5000, 3)), 1000), id(5000, 4));
        assert_eq!(next_id(Some(id(7, u64::MAX)), 1), id(8, 0));
    }

    #[test]
    fn turns_parse() {
        assert_eq!(
            Turn::parse(br#"{"prompt":"hi \"there\"; $(x)\n"}"#),
            Ok(Turn::Prompt("hi \"there\"; $(x)\n".into()))
        );
        assert_eq!(Turn::parse(br#"{"type":"stop"}"#), Ok(Turn::Stop));
        assert_eq!(
            Turn::parse(br#"{"type":"prompt","prompt":"x"}"#),
            Ok(Turn::Prompt("x".into()))
        );
        for (raw, problem) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"prompt":"  "}"#, "empty"),
            (br#"{"prompt":3}"#, "not a string"),
            (br#"{"type":"dance"}"#, "unknown type \"dance\""),
            (br#"{"text":"hi"}"#, "no \"prompt\""),
        ] {
            let err = Turn::parse(raw).unwrap_err();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn replies_of_both_protocols_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("5-1"),
            Value::Array(vec![bulk("turn"), bulk(r#"{"type":"stop"}"#)]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("unit:a/b:in"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let resp3 = Value::Map(vec![(bulk("unit:a/b:in"), Value::Array(vec![entry]))]);
        for reply in [resp2, resp3] {
            let got: Vec<_> = pairs_or_list(reply)
                .into_iter()
                .flat_map(|(_, e)| entries(e))
                .map(|(id, f)| (id, field(f, TURN_FIELD)))
                .collect();
            assert_eq!(got, [(id(5, 1), Some(br#"{"type":"stop"}"#.to_vec()))]);
        }
    }
}
