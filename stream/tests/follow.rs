//! Following a unit stream against a real redis-server: replay and live tail, a Redis restart and
//! crash in the middle, a killed client connection, malformed entries, and sending turns. Every
//! test checks that each event arrives exactly once and in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::aio::MultiplexedConnection;
use vexa_stream::follow::{
    EntryId, FollowError, FollowItem, FollowOptions, follow_with, last_event, last_id, send_stop,
    send_turn,
};
use vexa_stream::testing::RedisServer;
use vexa_stream::{Event, TurnId, UnitEvent};

const TOPIC: &str = "unit:team-a/agent-alice-chat-main:out";
const WAIT: Duration = Duration::from_secs(30);

type Follow = Pin<Box<dyn Stream<Item = FollowItem<UnitEvent>> + Send>>;

fn options() -> FollowOptions {
    FollowOptions {
        block: Duration::from_millis(500),
        // Small batches, so a restart lands in the middle of what the follower has to read.
        count: 3,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        give_up_after: Some(WAIT),
    }
}

fn start_follow(server: &RedisServer, from: EntryId, options: FollowOptions) -> Follow {
    let client = redis::Client::open(server.url()).unwrap();
    Box::pin(follow_with(client, TOPIC, from, options))
}

async fn connect(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn delta(n: usize) -> UnitEvent {
    UnitEvent::new(
        TurnId(0),
        Event::MessageDelta {
            text: format!("{n} "),
        },
    )
}

/// Appends events `range` to the stream; returns their ids.
async fn publish(server: &RedisServer, range: std::ops::Range<usize>) -> Vec<EntryId> {
    publish_to(&server.url(), range).await
}

/// [`publish`] by URL, for tasks that do not own the server.
async fn publish_to(url: &str, range: std::ops::Range<usize>) -> Vec<EntryId> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in range {
        let id: String = redis::cmd("XADD")
            .arg(TOPIC)
            .arg("*")
            .arg("event")
            .arg(delta(n).to_json())
            .query_async(&mut conn)
            .await
            .unwrap();
        ids.push(id.parse().unwrap());
    }
    ids
}

/// Kills every normal client connection except `admin`'s; returns how many were killed.
async fn kill_other_clients(admin: &mut MultiplexedConnection) -> i64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(admin)
        .await
        .unwrap()
}

/// The next `n` items, each an event (no error allowed).
async fn take(follow: &mut Follow, n: usize) -> Vec<(EntryId, UnitEvent)> {
    let mut got = Vec::new();
    while got.len() < n {
        let item = tokio::time::timeout(WAIT, follow.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived in {WAIT:?}", got.len()))
            .expect("the follow ended");
        got.push(item.unwrap());
    }
    got
}

/// Asserts that nothing more arrives for a while (no duplicate after a reconnect).
async fn assert_quiet(follow: &mut Follow) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(1500), follow.next()).await {
        panic!("unexpected item {item:?}");
    }
}

fn assert_exactly(got: &[(EntryId, UnitEvent)], ids: &[EntryId], range: std::ops::Range<usize>) {
    let want: Vec<(EntryId, UnitEvent)> = ids.iter().copied().zip(range.map(delta)).collect();
    assert_eq!(got, want.as_slice());
}

async fn restart(server: RedisServer) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart();
        server
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn replays_from_the_start_then_follows_live() {
    let server = RedisServer::start();
    let mut ids = publish(&server, 0..10).await;
    let mut follow = start_follow(&server, EntryId::ZERO, options());
    let mut got = take(&mut follow, 10).await;

    // The follower now blocks in XREAD; new entries arrive live.
    let late = tokio::spawn({
        let url = server.url();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            publish_to(&url, 10..15).await
        }
    });
    got.extend(take(&mut follow, 5).await);
    ids.extend(late.await.unwrap());
    assert_exactly(&got, &ids, 0..15);
    assert_quiet(&mut follow).await;
}

#[tokio::test]
async fn following_from_an_id_starts_after_it() {
    let server = RedisServer::start();
    let ids = publish(&server, 0..6).await;
    let mut follow = start_follow(&server, ids[2], options());
    let got = take(&mut follow, 3).await;
    assert_exactly(&got, &ids[3..], 3..6);
    assert_quiet(&mut follow).await;
}

#[tokio::test]
async fn a_redis_restart_in_the_middle_loses_and_repeats_nothing() {
    let server = RedisServer::start();
    let mut ids = publish(&server, 0..20).await;
    let mut follow = start_follow(&server, EntryId::ZERO, options());
    // Part of the backlog, then the server goes away mid-replay (batches of 3).
    let mut got = take(&mut follow, 7).await;
    let server = restart(server).await;
    ids.extend(publish(&server, 20..30).await);
    got.extend(take(&mut follow, 23).await);
    assert_exactly(&got, &ids, 0..30);
    assert_quiet(&mut follow).await;
}

#[tokio::test]
async fn a_redis_crash_while_blocked_live_then_a_restart_loses_and_repeats_nothing() {
    let server = RedisServer::start();
    let mut ids = publish(&server, 0..5).await;
    let mut follow = start_follow(&server, EntryId::ZERO, options());
    let mut got = take(&mut follow, 5).await;

    // The follower blocks in XREAD while Redis is killed; it keeps retrying until the server is
    // back, then sees what was written after the restart.
    let url = server.url();
    let down_and_up = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let server = tokio::task::spawn_blocking(move || {
            let mut server = server;
            server.kill();
            std::thread::sleep(Duration::from_millis(700));
            server.restart();
            server
        })
        .await
        .unwrap();
        let ids = publish_to(&url, 5..12).await;
        (server, ids)
    });
    got.extend(take(&mut follow, 7).await);
    let (_server, late) = down_and_up.await.unwrap();
    ids.extend(late);
    assert_exactly(&got, &ids, 0..12);
    assert_quiet(&mut follow).await;
}

#[tokio::test]
async fn a_killed_client_connection_is_resumed_without_gap_or_duplicate() {
    let server = RedisServer::start();
    let mut ids = publish(&server, 0..12).await;
    let mut follow = start_follow(&server, EntryId::ZERO, options());
    let mut admin = connect(&server).await;

    // Mid-replay.
    let mut got = take(&mut follow, 4).await;
    assert_eq!(
        kill_other_clients(&mut admin).await,
        1,
        "the follower had a connection"
    );
    got.extend(take(&mut follow, 8).await);

    // While blocked live.
    let blocked = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill_other_clients(&mut admin).await
    });
    assert_eq!(
        blocked.await.unwrap(),
        1,
        "the follower was blocked in XREAD"
    );
    ids.extend(publish(&server, 12..16).await);
    got.extend(take(&mut follow, 4).await);
    assert_exactly(&got, &ids, 0..16);
    assert_quiet(&mut follow).await;
}

#[tokio::test]
async fn a_malformed_entry_is_an_error_item_naming_it_and_following_goes_on() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let mut add = async |fields: &[(&str, &str)]| -> EntryId {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(TOPIC).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let id: String = cmd.query_async(&mut conn).await.unwrap();
        id.parse().unwrap()
    };
    let good = add(&[("event", &delta(0).to_json())]).await;
    let no_field = add(&[("other", "x")]).await;
    let not_json = add(&[("event", "{not json")]).await;
    let unknown = add(&[("event", r#"{"type":"shout","turn_id":"t0"}"#)]).await;
    let last = add(&[("event", &delta(1).to_json())]).await;

    let mut follow = start_follow(&server, EntryId::ZERO, options());
    let mut items = Vec::new();
    for _ in 0..5 {
        items.push(
            tokio::time::timeout(WAIT, follow.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(items[0].as_ref().unwrap(), &(good, delta(0)));
    for (item, id, words) in [
        (&items[1], no_field, "no \"event\" field"),
        (&items[2], not_json, "{not json"),
        (&items[3], unknown, "shout"),
    ] {
        match item {
            Err(
                e @ FollowError::Malformed {
                    id: got,
                    topic,
                    reason,
                },
            ) => {
                assert_eq!(*got, id);
                assert_eq!(topic, TOPIC);
                assert!(reason.contains(words), "{reason}");
                assert!(!e.is_fatal());
                assert!(e.to_string().contains(&id.to_string()), "{e}");
            }
            other => panic!("expected a malformed entry {id}, got {other:?}"),
        }
    }
    assert_eq!(items[4].as_ref().unwrap(), &(last, delta(1)));
    assert_quiet(&mut follow).await;
}

#[tokio::test]
async fn gives_up_after_the_bound_when_redis_stays_down() {
    let server = RedisServer::start();
    let ids = publish(&server, 0..2).await;
    let mut follow = start_follow(
        &server,
        EntryId::ZERO,
        FollowOptions {
            give_up_after: Some(Duration::from_millis(800)),
            ..options()
        },
    );
    take(&mut follow, 2).await;
    let _stopped = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.stop();
        server
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let item = tokio::time::timeout(WAIT, follow.next())
        .await
        .unwrap()
        .unwrap();
    match item {
        Err(e @ FollowError::Unreachable { last, .. }) => {
            assert_eq!(last, ids[1], "names the last entry read, to resume from");
            assert!(e.is_fatal());
            assert!(e.to_string().contains("127.0.0.1"), "{e}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(
        follow.next().await.is_none(),
        "the follow ends after giving up"
    );
}

#[tokio::test]
async fn a_key_that_is_not_a_stream_ends_the_follow_with_an_error() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let _: () = redis::cmd("SET")
        .arg(TOPIC)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut follow = start_follow(&server, EntryId::ZERO, options());
    let item = tokio::time::timeout(WAIT, follow.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&item, Err(FollowError::Redis { .. })), "{item:?}");
    assert!(follow.next().await.is_none());
}

#[tokio::test]
async fn last_id_and_last_event_see_the_newest_entry() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    assert_eq!(last_id(&mut conn, TOPIC).await.unwrap(), None);
    let ids = publish(&server, 0..3).await;
    assert_eq!(last_id(&mut conn, TOPIC).await.unwrap(), Some(ids[2]));
    let (id, event) = last_event::<UnitEvent>(&mut conn, TOPIC)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((id, event.unwrap()), (ids[2], delta(2)));
}

#[tokio::test]
async fn turns_and_stop_requests_land_on_the_input_stream() {
    let server = RedisServer::start();
    let mut conn = connect(&server).await;
    let topic = "unit:team-a/agent-alice-chat-main:in";
    let a = send_turn(&mut conn, topic, "What's \"new\"?\nline 2")
        .await
        .unwrap();
    let b = send_stop(&mut conn, topic).await.unwrap();
    assert!(a < b);
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(topic)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let turns: Vec<(String, serde_json::Value)> = entries
        .into_iter()
        .map(|(id, fields)| {
            assert_eq!(fields.len(), 1);
            let (field, value) = &fields[0];
            assert_eq!(field, "turn");
            (id, serde_json::from_str(value).unwrap())
        })
        .collect();
    assert_eq!(
        turns,
        vec![
            (
                a.to_string(),
                serde_json::json!({"prompt": "What's \"new\"?\nline 2"})
            ),
            (b.to_string(), serde_json::json!({"type": "stop"})),
        ]
    );
}
