//! The entry client against a real spire-server (the cached v1.13.3 binary, started per test
//! from the local cluster's own config template): what we create is what SPIRE holds (checked
//! with SPIRE's own CLI too), a repeated create or delete is harmless, listing by parent finds
//! ours and only ours, and a server that is down is an error, not a hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vexa_spire::testing::SpireServer;
use vexa_spire::{Entry, EntryClient, Error, Selector, SpiffeId};

const TD: &str = "vexa.local";

fn node() -> SpiffeId {
    SpiffeId::parse("spiffe://vexa.local/vexa/node").unwrap()
}

fn in_an_hour() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (now + Duration::from_secs(3600)).as_secs() as i64
}

fn pod_entry(uid: &str, name: &str) -> Entry {
    Entry {
        id: format!("vexa-pod-{uid}"),
        spiffe_id: SpiffeId::parse(&format!("spiffe://vexa.local/ns/team/dispatch/{name}"))
            .unwrap(),
        parent_id: node(),
        selectors: vec![
            Selector::new("k8s", format!("pod-uid:{uid}")),
            Selector::new("k8s", "container-name:worker"),
        ],
        expires_at: in_an_hour(),
        hint: String::new(),
    }
}

#[tokio::test]
async fn created_entries_are_what_spire_holds_and_retries_are_harmless() {
    let server = SpireServer::start(TD);
    let client = EntryClient::new(server.socket());
    let a = pod_entry("11111111-2222-3333-4444-555555555555", "chat-a");
    let b = pod_entry("66666666-7777-8888-9999-000000000000", "chat-b");

    client.create(&[a.clone(), b.clone()]).await.unwrap();
    // A retry after a lost answer: the same entry under the same ID is success.
    client.create(std::slice::from_ref(&a)).await.unwrap();

    let mut listed = client.list_by_parent(&node()).await.unwrap();
    listed.sort_by(|x, y| x.id.cmp(&y.id));
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    for entry in &mut listed {
        entry.selectors.sort();
    }
    for entry in &mut want {
        entry.selectors.sort();
    }
    assert_eq!(listed, want);

    // SPIRE's own CLI sees the same entry: ID, SPIFFE ID, parent and both selectors.
    let shown = server.cli(&["entry", "show", "-entryID", &a.id]);
    assert!(
        shown.contains(&format!("Entry ID         : {}", a.id)),
        "{shown}"
    );
    assert!(
        shown.contains("spiffe://vexa.local/ns/team/dispatch/chat-a"),
        "{shown}"
    );
    assert!(shown.contains("spiffe://vexa.local/vexa/node"), "{shown}");
    assert!(
        shown.contains("k8s:pod-uid:11111111-2222-3333-4444-555555555555"),
        "{shown}"
    );
    assert!(shown.contains("k8s:container-name:worker"), "{shown}");

    let removed = client.delete(std::slice::from_ref(&a.id)).await.unwrap();
    assert_eq!(removed, vec![a.id.clone()]);
    // Deleting what is already gone is success too, and says nothing was removed.
    let removed = client.delete(std::slice::from_ref(&a.id)).await.unwrap();
    assert!(removed.is_empty());
    let left: Vec<String> = client
        .list_by_parent(&node())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, vec![b.id.clone()]);
}

#[tokio::test]
async fn listing_by_parent_leaves_out_other_parents_entries() {
    let server = SpireServer::start(TD);
    let client = EntryClient::new(server.socket());
    let ours = pod_entry("aaaaaaaa-0000-0000-0000-000000000001", "ours");
    let mut other = pod_entry("aaaaaaaa-0000-0000-0000-000000000002", "theirs");
    other.parent_id = SpiffeId::parse("spiffe://vexa.local/some/other/agent").unwrap();
    client.create(&[ours.clone(), other]).await.unwrap();
    let listed: Vec<String> = client
        .list_by_parent(&node())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, vec![ours.id]);
}

#[tokio::test]
async fn a_similar_entry_under_another_id_is_a_conflict_and_bad_entries_are_refused() {
    let server = SpireServer::start(TD);
    let client = EntryClient::new(server.socket());
    let a = pod_entry("bbbbbbbb-0000-0000-0000-000000000001", "x");
    client.create(std::slice::from_ref(&a)).await.unwrap();
    let mut twin = a.clone();
    twin.id = "someone-elses-id".into();
    match client.create(&[twin]).await {
        Err(Error::Conflict { existing, .. }) => assert_eq!(existing, a.id),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let mut bad = pod_entry("bbbbbbbb-0000-0000-0000-000000000002", "y");
    bad.id = "not/allowed".into();
    let err = client.create(&[bad]).await.unwrap_err();
    assert!(matches!(err, Error::Item { .. }), "{err:?}");
    assert_eq!(err.reason(), "SpireRefusedEntry");
}

#[tokio::test]
async fn a_server_that_is_down_is_an_error_and_a_restarted_one_is_reached_again() {
    let mut server = SpireServer::start(TD);
    let client = EntryClient::new(server.socket());
    let a = pod_entry("cccccccc-0000-0000-0000-000000000001", "z");
    client.create(std::slice::from_ref(&a)).await.unwrap();

    server.kill();
    let err = tokio::time::timeout(Duration::from_secs(30), client.list_by_parent(&node()))
        .await
        .expect("a call to a dead server must fail, not hang")
        .unwrap_err();
    assert_eq!(err.reason(), "SpireUnavailable", "{err}");

    server.restart();
    let listed = client.list_by_parent(&node()).await.unwrap();
    assert_eq!(listed.len(), 1, "the entry survives a restart: {listed:?}");
}

#[tokio::test]
async fn the_expiry_we_set_is_the_one_spire_stores() {
    // What bounds an entry whose operator died is its expiry: SPIRE prunes expired entries.
    let server = SpireServer::start(TD);
    let client = EntryClient::new(server.socket());
    let a = pod_entry("dddddddd-0000-0000-0000-000000000001", "exp");
    client.create(std::slice::from_ref(&a)).await.unwrap();
    let listed = client.list_by_parent(&node()).await.unwrap();
    assert_eq!(listed[0].expires_at, a.expires_at);
}
