//! Redis per dispatch, against a real redis-server: with dispatch A's credentials nothing of
//! dispatch B's can be read or written and no admin command runs (no `FLUSHALL`, `CONFIG`,
//! `KEYS`, `ACL`, arbitrary Lua, …), while A's own publishing and turns work; a removed user
//! cannot log in again and its streams expire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Value};
use vexa_stream::acl::{self, DispatchUser};
use vexa_stream::follow::send_turn;
use vexa_stream::publish::{Inbox, Inboxed, Publisher, RetryOptions, Turn};
use vexa_stream::testing::RedisServer;

fn user(name: &str) -> DispatchUser {
    DispatchUser {
        username: format!("{}team/{name}", acl::USER_PREFIX),
        password: format!("secret-of-{name}-0123456789abcdef"),
        keys: vec![
            format!("unit:team/{name}:out"),
            format!("unit:team/{name}:in"),
        ],
    }
}

fn options() -> RetryOptions {
    RetryOptions {
        give_up_after: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        ..RetryOptions::default()
    }
}

async fn admin(server: &RedisServer) -> MultiplexedConnection {
    Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn as_user(server: &RedisServer, u: &DispatchUser) -> MultiplexedConnection {
    acl::client_as(&server.url(), &u.username, &u.password)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Sets up dispatches A and B (B with an event and a turn on its streams).
async fn two_dispatches(server: &RedisServer) -> (DispatchUser, DispatchUser) {
    let (a, b) = (user("a"), user("b"));
    let mut conn = admin(server).await;
    acl::set_user(&mut conn, &a).await.unwrap();
    acl::set_user(&mut conn, &b).await.unwrap();
    let mut publisher = Publisher::connect(
        acl::client_as(&server.url(), &b.username, &b.password).unwrap(),
        &b.keys[0],
        options(),
    )
    .await
    .unwrap();
    publisher
        .publish(r#"{"type":"note","note":"b's secret","turn_id":"t0"}"#)
        .await
        .unwrap();
    send_turn(&mut conn, &b.keys[1], "b's turn").await.unwrap();
    (a, b)
}

fn refused(reply: Result<Value, redis::RedisError>, what: &str) {
    match reply {
        Ok(v) => panic!("{what} was allowed with dispatch A's credentials: {v:?}"),
        Err(e) => assert!(
            e.code() == Some("NOPERM") || e.to_string().contains("NOPERM"),
            "{what} failed, but not for lack of permission: {e}"
        ),
    }
}

#[tokio::test]
async fn a_dispatch_user_reaches_nothing_but_its_own_streams() {
    let server = RedisServer::start();
    let (a, b) = two_dispatches(&server).await;
    let mut conn = as_user(&server, &a).await;
    let (b_out, b_in) = (&b.keys[0], &b.keys[1]);
    let attempts: Vec<(&str, redis::Cmd)> = vec![
        (
            "XRANGE on B's out",
            redis::cmd("XRANGE").arg(b_out).arg("-").arg("+").clone(),
        ),
        (
            "XREAD of B's out",
            redis::cmd("XREAD")
                .arg("STREAMS")
                .arg(b_out)
                .arg("0")
                .clone(),
        ),
        (
            "XADD of a turn to B's in",
            redis::cmd("XADD")
                .arg(b_in)
                .arg("*")
                .arg("turn")
                .arg(r#"{"prompt":"obey"}"#)
                .clone(),
        ),
        (
            "XADD of a forged event to B's out",
            redis::cmd("XADD")
                .arg(b_out)
                .arg("*")
                .arg("event")
                .arg("{}")
                .clone(),
        ),
        (
            "XREADGROUP on B's in",
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("vexa-worker")
                .arg("x")
                .arg("STREAMS")
                .arg(b_in)
                .arg(">")
                .clone(),
        ),
        (
            "FCALL of the append function on B's out",
            redis::cmd("FCALL")
                .arg(acl::APPEND_FUNCTION)
                .arg(1)
                .arg(b_out)
                .arg("event")
                .arg(0)
                .arg("99999999999999-0")
                .arg("{}")
                .clone(),
        ),
        ("DEL of B's out", redis::cmd("DEL").arg(b_out).clone()),
        (
            "DEL of A's own out",
            redis::cmd("DEL").arg(&a.keys[0]).clone(),
        ),
        ("FLUSHALL", redis::cmd("FLUSHALL").clone()),
        ("FLUSHDB", redis::cmd("FLUSHDB").clone()),
        (
            "CONFIG GET",
            redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        ),
        (
            "CONFIG SET",
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("requirepass")
                .arg("x")
                .clone(),
        ),
        ("KEYS", redis::cmd("KEYS").arg("*").clone()),
        ("SCAN", redis::cmd("SCAN").arg(0).clone()),
        ("ACL LIST", redis::cmd("ACL").arg("LIST").clone()),
        (
            "ACL SETUSER",
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&a.username)
                .arg("+@all")
                .arg("~*")
                .clone(),
        ),
        (
            "EVAL of arbitrary Lua",
            redis::cmd("EVAL").arg("return 1").arg(0).clone(),
        ),
        (
            "EVAL reaching B's out",
            redis::cmd("EVAL")
                .arg("return redis.call('XRANGE', KEYS[1], '-', '+')")
                .arg(1)
                .arg(b_out)
                .clone(),
        ),
        (
            "FUNCTION LOAD",
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg("#!lua name=x\nredis.register_function('x', function() return 1 end)")
                .clone(),
        ),
        (
            "FUNCTION FLUSH",
            redis::cmd("FUNCTION").arg("FLUSH").clone(),
        ),
        ("SCRIPT FLUSH", redis::cmd("SCRIPT").arg("FLUSH").clone()),
        ("SUBSCRIBE", redis::cmd("SUBSCRIBE").arg("anything").clone()),
        (
            "PUBLISH",
            redis::cmd("PUBLISH").arg("anything").arg("x").clone(),
        ),
        ("DEBUG", redis::cmd("DEBUG").arg("SLEEP").arg(0).clone()),
        ("SHUTDOWN", redis::cmd("SHUTDOWN").arg("NOSAVE").clone()),
        ("CLIENT LIST", redis::cmd("CLIENT").arg("LIST").clone()),
        (
            "CLIENT KILL",
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .clone(),
        ),
        ("MONITOR", redis::cmd("MONITOR").clone()),
        ("SELECT", redis::cmd("SELECT").arg(1).clone()),
        (
            "SET of a new key",
            redis::cmd("SET").arg("unit:team/a:outx").arg(1).clone(),
        ),
    ];
    for (what, cmd) in attempts {
        refused(cmd.query_async::<Value>(&mut conn).await, what);
    }
    // B's streams are as they were.
    let mut admin = admin(&server).await;
    let len: usize = redis::cmd("XLEN")
        .arg(b_out)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 1);
    let len: usize = redis::cmd("XLEN")
        .arg(b_in)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 1);
    let pong: String = redis::cmd("PING").query_async(&mut admin).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn a_dispatch_user_publishes_and_reads_its_turns() {
    let server = RedisServer::start();
    let (a, _) = two_dispatches(&server).await;
    let client = acl::client_as(&server.url(), &a.username, &a.password).unwrap();
    let mut publisher = Publisher::connect(client.clone(), &a.keys[0], options())
        .await
        .unwrap();
    let events: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"type":"message-delta","text":"{i}","turn_id":"t0"}}"#))
        .collect();
    publisher.publish_all(&events).await.unwrap();
    let mut admin = admin(&server).await;
    let len: usize = redis::cmd("XLEN")
        .arg(&a.keys[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 300);
    send_turn(&mut admin, &a.keys[1], "hello a").await.unwrap();
    let mut inbox = Inbox::new(client, &a.keys[1], "pod-a", options());
    match inbox.next(Duration::from_secs(2)).await.unwrap() {
        Some(Inboxed::Turn(_, Turn::Prompt(p))) => assert_eq!(p, "hello a"),
        other => panic!("expected A's turn, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dispatch_user_cannot_load_the_function_it_lacks() {
    let server = RedisServer::start();
    let a = user("a");
    let mut admin = admin(&server).await;
    acl::set_user(&mut admin, &a).await.unwrap();
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    let client = acl::client_as(&server.url(), &a.username, &a.password).unwrap();
    let mut publisher = Publisher::connect(client, &a.keys[0], options())
        .await
        .unwrap();
    let e = publisher
        .publish(r#"{"type":"note","note":"x","turn_id":"t0"}"#)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the operator loads it"), "{e}");
}

#[tokio::test]
async fn the_stream_stays_near_its_cap() {
    let server = RedisServer::start();
    let client = Client::open(server.url()).unwrap();
    let mut publisher = Publisher::connect(client, "unit:team/c:out", options())
        .await
        .unwrap();
    publisher.set_max_len(1000);
    let events: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"type":"message-delta","text":"{i}","turn_id":"t0"}}"#))
        .collect();
    publisher.publish_all(&events).await.unwrap();
    let mut admin = admin(&server).await;
    let len: usize = redis::cmd("XLEN")
        .arg("unit:team/c:out")
        .query_async(&mut admin)
        .await
        .unwrap();
    // Approximate trimming drops whole nodes (100 entries by default).
    assert!(
        (1000..=1100).contains(&len),
        "{len} entries after 5000 events capped at 1000"
    );
    let last: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
        .arg("unit:team/c:out")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(last[0].1[1].contains(r#""text":"4999""#), "{last:?}");
}

#[tokio::test]
async fn a_removed_user_cannot_log_in_and_its_streams_expire() {
    let server = RedisServer::start();
    let (a, _) = two_dispatches(&server).await;
    let mut conn = as_user(&server, &a).await;
    let mut publisher = Publisher::connect(
        acl::client_as(&server.url(), &a.username, &a.password).unwrap(),
        &a.keys[0],
        options(),
    )
    .await
    .unwrap();
    publisher
        .publish(r#"{"type":"note","note":"x","turn_id":"t0"}"#)
        .await
        .unwrap();
    let mut admin = admin(&server).await;
    assert_eq!(acl::users(&mut admin).await.unwrap().len(), 2);
    acl::remove_user(
        &mut admin,
        &a.username,
        &a.keys,
        Some(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    // Its open connection is closed, and it cannot authenticate again.
    assert!(
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_err()
    );
    let again = acl::client_as(&server.url(), &a.username, &a.password)
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    assert!(again.is_err(), "a removed user logged in");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&a.keys[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    assert_eq!(acl::users(&mut admin).await.unwrap(), [user("b").username]);
    // The same dispatch id running again keeps its stream: the retention is cleared.
    acl::set_user(&mut admin, &a).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&a.keys[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
}
