//! What the publisher and the follower share about talking to Redis: which failures a new
//! connection may fix, the reconnect backoff, and reading RESP2/RESP3 replies by hand.

use std::time::{Duration, Instant};

use redis::{RedisError, RetryMethod, Value};

/// Whether a new connection may fix the error: connection, I/O and timeout failures, and the
/// server's transient states (loading its data after a restart, busy, ...). Requests Redis
/// rejects (wrong type, bad id) are not.
pub(crate) fn retryable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
        )
}

/// Bounded exponential backoff between reconnection attempts, and since when they fail.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    failing_since: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
            failing_since: None,
        }
    }

    /// A request succeeded: the next failure starts from the shortest wait. Returns how long
    /// requests had been failing, if they had.
    pub(crate) fn succeeded(&mut self) -> Option<Duration> {
        self.next = self.min;
        self.failing_since.take().map(|since| since.elapsed())
    }

    /// A request failed: how long requests have been failing, this one included.
    pub(crate) fn failing_for(&mut self) -> Duration {
        self.failing_since
            .get_or_insert_with(Instant::now)
            .elapsed()
    }

    /// The wait before the next attempt.
    pub(crate) fn next_wait(&self) -> Duration {
        self.next
    }

    /// Waits before the next attempt, and doubles the wait after it (up to the maximum).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// The (key, value) pairs of a RESP2 flat list or a RESP3 map.
pub(crate) fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        }
        Value::Map(pairs) => pairs,
        _ => Vec::new(),
    }
}

/// The bytes of field `name` among an entry's fields.
pub(crate) fn field(fields: Value, name: &str) -> Option<Vec<u8>> {
    pairs(fields)
        .into_iter()
        .find(|(k, _)| bytes(k) == Some(name.as_bytes()))
        .and_then(|(_, v)| bytes(&v).map(<[u8]>::to_vec))
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_wait_doubles_up_to_the_maximum_and_resets_on_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(1), ms(3));
        assert_eq!(b.succeeded(), None);
        b.failing_for();
        b.wait().await;
        assert_eq!(b.next_wait(), ms(2));
        b.wait().await;
        b.wait().await;
        assert_eq!(b.next_wait(), ms(3));
        assert!(b.succeeded().is_some());
        assert_eq!(b.next_wait(), ms(1));
    }

    #[test]
    fn fields_are_read_from_resp2_lists_and_resp3_maps() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        let flat = Value::Array(vec![s("a"), s("1"), s("event"), s("{}")]);
        assert_eq!(field(flat, "event"), Some(b"{}".to_vec()));
        let map = Value::Map(vec![(s("event"), s("x"))]);
        assert_eq!(field(map, "event"), Some(b"x".to_vec()));
        assert_eq!(field(Value::Nil, "event"), None);
    }
}
