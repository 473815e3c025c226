//! The worker's side of the unit streams against a real redis-server: appends are exactly-once
//! and ordered through restarts, crashes and ambiguous failures; the inbox reads every turn once,
//! from the stream's start, and says when nothing came in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use redis::{Client, Commands};
use vexa_stream::follow::EntryId;
use vexa_stream::publish::{Inbox, Inboxed, Publisher, RetryOptions, StreamError, Turn};
use vexa_stream::testing::RedisServer;

const OUT: &str = "unit:team-a/d1:out";
const IN: &str = "unit:team-a/d1:in";

fn options() -> RetryOptions {
    RetryOptions {
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        give_up_after: Duration::from_secs(30),
        response_timeout: Duration::from_secs(2),
    }
}

/// Every entry of `topic`: (id, the `event` field).
fn entries(url: &str, topic: &str) -> Vec<(String, String)> {
    let mut conn = Client::open(url).unwrap().get_connection().unwrap();
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(topic)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    raw.into_iter()
        .map(|(id, fields)| {
            assert_eq!(fields.len(), 2, "{fields:?}");
            assert_eq!(fields[0], "event");
            (id, fields[1].clone())
        })
        .collect()
}

fn event(i: usize) -> String {
    format!(r#"{{"type":"message-delta","text":"{i}","turn_id":"t0"}}"#)
}

/// The payloads are exactly event(0..n), in order, with strictly increasing ids.
fn assert_exactly_once(url: &str, n: usize) {
    let got = entries(url, OUT);
    let ids: Vec<EntryId> = got.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    let payloads: Vec<String> = got.into_iter().map(|(_, e)| e).collect();
    let want: Vec<String> = (0..n).map(event).collect();
    if payloads != want {
        let missing: Vec<_> = want.iter().filter(|w| !payloads.contains(w)).collect();
        panic!(
            "{} entries for {n} events; missing {:?}; first entries {:?}",
            payloads.len(),
            &missing[..missing.len().min(5)],
            &payloads[..payloads.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_ordered_and_stay_above_what_the_stream_held() {
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    // Something written earlier, with an id far in the future: the publisher must stay above.
    let mut sync = client.get_connection().unwrap();
    let _: String = sync
        .xadd(OUT, "99999999999999-5", &[("event", "old")])
        .unwrap();

    let mut publisher = Publisher::connect(client, OUT, options()).await.unwrap();
    assert_eq!(
        publisher.last_id(),
        Some(EntryId {
            ms: 99_999_999_999_999,
            seq: 5
        })
    );
    let first = publisher.publish(&event(0)).await.unwrap();
    let second = publisher.publish(&event(1)).await.unwrap();
    assert_eq!(
        first,
        EntryId {
            ms: 99_999_999_999_999,
            seq: 6
        }
    );
    assert_eq!(
        second,
        EntryId {
            ms: 99_999_999_999_999,
            seq: 7
        }
    );
    let got = entries(&server.url(), OUT);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], (first.to_string(), event(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_moving_the_top_does_not_lose_an_event() {
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut publisher = Publisher::connect(client.clone(), OUT, options())
        .await
        .unwrap();
    publisher.publish(&event(0)).await.unwrap();
    // A foreign entry far ahead of the clock: the next id the publisher picks is refused.
    let mut sync = client.get_connection().unwrap();
    let _: String = sync
        .xadd(OUT, "99999999999999-0", &[("event", "foreign")])
        .unwrap();
    let id = publisher.publish(&event(1)).await.unwrap();
    assert_eq!(
        id,
        EntryId {
            ms: 99_999_999_999_999,
            seq: 1
        }
    );
    let payloads: Vec<String> = entries(&server.url(), OUT)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(payloads, [event(0), "foreign".into(), event(1)]);
    assert_eq!(publisher.deduplicated(), 0);
}

/// A foreign entry lands among the ids a batch will use: Redis refuses any id not above it, so
/// the whole batch is renumbered above it and keeps its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_meets_a_foreign_entry_keeps_its_order() {
    const FUTURE: &str = "99999999999999";
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut sync = client.get_connection().unwrap();
    // A top in the future pins the ids the publisher picks: FUTURE-1, FUTURE-2, …
    let _: String = sync
        .xadd(OUT, format!("{FUTURE}-0"), &[("event", "start")])
        .unwrap();
    let mut publisher = Publisher::connect(client.clone(), OUT, options())
        .await
        .unwrap();
    publisher.publish(&event(0)).await.unwrap();
    // Where the batch's third event would go: its first id (FUTURE-2) is now below the top.
    let _: String = sync
        .xadd(OUT, format!("{FUTURE}-4"), &[("event", "foreign")])
        .unwrap();
    let events: Vec<String> = (1..6).map(event).collect();
    let ids = publisher.publish_all(&events).await.unwrap();
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(
        ids,
        ["5", "6", "7", "8", "9"].map(|s| format!("{FUTURE}-{s}"))
    );
    let payloads: Vec<String> = entries(&server.url(), OUT)
        .into_iter()
        .map(|e| e.1)
        .collect();
    let want = [
        "start".to_owned(),
        event(0),
        "foreign".into(),
        event(1),
        event(2),
        event(3),
        event(4),
        event(5),
    ];
    assert_eq!(payloads, want);
    assert_eq!(publisher.deduplicated(), 0);
}

/// Redis restarts (gracefully, then by SIGKILL) three times while a publisher appends, one
/// event at a time or in batches: every event is on the stream exactly once, in order.
#[rstest::rstest]
#[case::one_by_one(1)]
#[case::batches(50)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_crashes_in_the_middle_lose_and_duplicate_nothing(#[case] batch: usize) {
    const N: usize = 3000;
    let mut server = RedisServer::start();
    let url = server.url();
    let client = Client::open(url.clone()).unwrap();
    let mut publisher = Publisher::connect(client, OUT, options()).await.unwrap();
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<usize>();

    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        let events: Vec<String> = (0..N).map(event).collect();
        for (k, chunk) in events.chunks(batch).enumerate() {
            publisher.publish_all(chunk).await.unwrap();
            // Let the restarts interleave with batches too.
            tokio::task::yield_now().await;
            let _ = progress_tx.send((k + 1) * batch);
        }
        (publisher, started.elapsed())
    });
    // Restart at roughly a quarter, half and three quarters of the way.
    let restarts = std::thread::spawn(move || {
        let mut done = 0;
        for (k, at) in [N / 4, N / 2, 3 * N / 4].into_iter().enumerate() {
            while done < at {
                done = progress_rx.recv().unwrap();
            }
            if k == 1 {
                server.kill();
                std::thread::sleep(Duration::from_millis(300));
                server.restart();
            } else {
                server.restart();
            }
        }
        while progress_rx.recv().is_ok() {}
        server
    });
    let (publisher, took) = publishing.await.unwrap();
    let server = restarts.join().unwrap();
    assert_exactly_once(&server.url(), N);
    println!(
        "{N} events in batches of {batch} through 3 Redis restarts in {took:?}; {} retried events had landed",
        publisher.deduplicated()
    );
}

/// A request that times out after Redis has received it: Redis stalls (DEBUG SLEEP) with the
/// append in its socket buffer, the publisher gives up on the connection, Redis then executes
/// the append. The retry with the same id is recognised as already done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_landed_after_its_timeout_is_not_written_twice() {
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut publisher = Publisher::connect(
        client.clone(),
        OUT,
        RetryOptions {
            response_timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .await
    .unwrap();
    publisher.publish(&event(0)).await.unwrap();

    let staller = std::thread::spawn(move || {
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1")
            .query(&mut conn)
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    publisher.publish(&event(1)).await.unwrap();
    publisher.publish(&event(2)).await.unwrap();
    staller.join().unwrap();

    assert_exactly_once(&server.url(), 3);
    assert_eq!(
        publisher.deduplicated(),
        1,
        "the timed-out append had landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_gives_up_after_its_deadline_with_a_clear_error() {
    let mut server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut publisher = Publisher::connect(
        client,
        OUT,
        RetryOptions {
            give_up_after: Duration::from_millis(700),
            ..options()
        },
    )
    .await
    .unwrap();
    publisher.publish(&event(0)).await.unwrap();
    server.stop();
    let started = Instant::now();
    let err = publisher.publish(&event(1)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StreamError::Unreachable { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("while appending to unit:team-a/d1:out"),
        "{message}"
    );
    assert!(message.contains("giving up"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_a_stream_is_refused_at_once() {
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut sync = client.get_connection().unwrap();
    let _: () = sync.set(OUT, "a string").unwrap();
    let err = Publisher::connect(client, OUT, options())
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[rstest::rstest]
#[case::one_by_one(1)]
#[case::batches_of_64(64)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_throughput(#[case] batch: usize) {
    const N: usize = 5000;
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut publisher = Publisher::connect(client, OUT, options()).await.unwrap();
    let events: Vec<String> = (0..N).map(event).collect();
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        publisher.publish_all(chunk).await.unwrap();
    }
    let took = started.elapsed();
    assert_exactly_once(&server.url(), N);
    println!(
        "published {N} events in batches of {batch} in {took:?}: {:.0} events/s (acknowledged, appendfsync always)",
        N as f64 / took.as_secs_f64()
    );
}

fn send(url: &str, turn: &str) -> String {
    let mut conn = Client::open(url).unwrap().get_connection().unwrap();
    conn.xadd(IN, "*", &[("turn", turn)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_reads_turns_sent_before_it_started_then_waits_for_more() {
    let server = RedisServer::start();
    let url = server.url();
    send(&url, r#"{"prompt":"first"}"#);
    send(&url, r#"{"hello":1}"#);
    send(&url, r#"{"prompt":"second; $(rm -rf /)\n\"quoted\""}"#);
    let mut inbox = Inbox::new(
        Client::open(url.clone()).unwrap(),
        IN,
        "worker-1",
        options(),
    );

    let first = inbox.next(Duration::from_secs(1)).await.unwrap();
    assert!(
        matches!(first, Some(Inboxed::Turn(_, Turn::Prompt(ref p))) if p == "first"),
        "{first:?}"
    );
    let malformed = inbox.next(Duration::from_secs(1)).await.unwrap();
    assert!(
        matches!(malformed, Some(Inboxed::Malformed { ref problem, .. }) if problem.contains("no \"prompt\"")),
        "{malformed:?}"
    );
    let second = inbox.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        second.map(|t| match t {
            Inboxed::Turn(_, turn) => turn,
            other => panic!("{other:?}"),
        }),
        Some(Turn::Prompt("second; $(rm -rf /)\n\"quoted\"".into()))
    );

    // Nothing more: `None` after the wait, not before.
    let started = Instant::now();
    assert_eq!(inbox.next(Duration::from_millis(400)).await.unwrap(), None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    // A zero wait only looks.
    assert_eq!(inbox.next(Duration::ZERO).await.unwrap(), None);

    // A turn sent while it blocks arrives at once.
    let sender_url = url.clone();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        send(&sender_url, r#"{"type":"stop"}"#);
        sent
    });
    let got = inbox.next(Duration::from_secs(10)).await.unwrap();
    let latency = sender.join().unwrap().elapsed();
    assert!(matches!(got, Some(Inboxed::Turn(_, Turn::Stop))), "{got:?}");
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    println!("a turn sent to a blocked inbox arrived after {latency:?}");
}

/// Redis restarts between two turns and again while the inbox blocks: the old turn is not read
/// twice and the new one arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_survives_a_restart_without_rereading() {
    let mut server = RedisServer::start();
    let url = server.url();
    send(&url, r#"{"prompt":"one"}"#);
    let mut inbox = Inbox::new(
        Client::open(url.clone()).unwrap(),
        IN,
        "worker-1",
        options(),
    );
    let one = inbox.next(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(one, Some(Inboxed::Turn(_, Turn::Prompt(_)))));

    server.restart();
    let waiting = tokio::spawn(async move {
        let got = inbox.next(Duration::from_secs(20)).await;
        (inbox, got)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&url, r#"{"prompt":"two"}"#);
    let (mut inbox, got) = waiting.await.unwrap();
    assert!(
        matches!(got.unwrap(), Some(Inboxed::Turn(_, Turn::Prompt(ref p))) if p == "two"),
        "the first turn was not replayed"
    );
    assert_eq!(inbox.next(Duration::from_millis(100)).await.unwrap(), None);
}

/// A later worker on the same `in` stream (the same dispatch id again) continues after the turns
/// the earlier one read, instead of replaying them; the first worker on a stream gets the turns
/// sent before it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_inbox_on_the_same_stream_does_not_replay_read_turns() {
    let server = RedisServer::start();
    let url = server.url();
    send(&url, r#"{"prompt":"one"}"#);
    send(&url, r#"{"prompt":"two"}"#);
    let client = Client::open(url.clone()).unwrap();
    let mut first = Inbox::new(client.clone(), IN, "pod-a", options());
    let one = first.next(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(one, Some(Inboxed::Turn(_, Turn::Prompt(ref p))) if p == "one"));
    drop(first);

    let mut later = Inbox::new(client, IN, "pod-b", options());
    let two = later.next(Duration::from_secs(1)).await.unwrap();
    assert!(
        matches!(two, Some(Inboxed::Turn(_, Turn::Prompt(ref p))) if p == "two"),
        "{two:?}"
    );
    assert_eq!(later.next(Duration::from_millis(100)).await.unwrap(), None);
    send(&url, r#"{"type":"stop"}"#);
    let stop = later.next(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(stop, Some(Inboxed::Turn(_, Turn::Stop))));
}
