//! The dispatches' Redis users against a real redis-server: the operator creates a user its
//! worker logs in with, removes it at the end with the streams' retention, and the sweep removes
//! only the users of dispatches that are gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use redis::Client;
use vexa_operator::redis_users::{DispatchKey, RedisUsers};
use vexa_stream::acl;
use vexa_stream::testing::RedisServer;

fn dispatch(name: &str) -> DispatchKey {
    DispatchKey {
        namespace: "team-a".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

async fn logs_in(server: &RedisServer, user: &acl::DispatchUser) -> bool {
    let Ok(client) = acl::client_as(&server.url(), &user.username, &user.password) else {
        return false;
    };
    match client.get_multiplexed_async_connection().await {
        Ok(mut conn) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_user_lives_as_long_as_its_dispatch() {
    let server = RedisServer::start();
    let users = RedisUsers::new(
        Client::open(server.url()).unwrap(),
        b"admin-password".to_vec(),
        Some(Duration::from_secs(600)),
    );
    let (a, b) = (dispatch("a"), dispatch("b"));
    let (user_a, _) = users.create(&a).await.unwrap();
    let (user_b, _) = users.create(&b).await.unwrap();
    // A retried start gives the same password: a pod that read the Secret still logs in.
    let (again, _) = users.create(&a).await.unwrap();
    assert_eq!(again, user_a);
    assert!(logs_in(&server, &user_a).await);

    // The sweep keeps the live dispatch's user and removes the other's.
    let swept = users.sweep(|| HashSet::from([b.clone()])).await.unwrap();
    assert_eq!(swept, (1, 0));
    assert!(!logs_in(&server, &user_a).await);
    assert!(logs_in(&server, &user_b).await);

    // Redis lost its users (a restart): the sweep makes the live one's again, same password.
    let mut admin = Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user_b.username)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(!logs_in(&server, &user_b).await);
    let swept = users.sweep(|| HashSet::from([b.clone()])).await.unwrap();
    assert_eq!(swept, (0, 1));
    assert!(logs_in(&server, &user_b).await);

    users.remove(&b).await.unwrap();
    assert!(!logs_in(&server, &user_b).await);
    // Removing again (a clean-up retried) is fine.
    users.remove(&b).await.unwrap();
}
