//! `kubectl vexa cards` as a person sees it: the table, from Cards as the API server returns
//! them (an agent's title with a line break and a control sequence included), compared with
//! golden text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use rstest::rstest;
use serde_json::{Value, json};
use vexa_cli::cards::{Filter, is_pending, table};
use vexa_crds::card::Card;

fn card(name: &str, created: i64, spec: Value, status: Value) -> Card {
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Card",
        "metadata": {
            "name": name, "namespace": "team",
            "creationTimestamp": Timestamp::from_second(created).unwrap().to_string(),
        },
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn cards() -> Vec<Card> {
    vec![
        card(
            "triage-1-reply",
            1_000,
            json!({"kind": "draft", "owner": "alice", "sourceDispatch": "triage-1",
                   "title": "Reply to Carol", "decision": {"verdict": "approve", "by": "alice"}}),
            json!({"phase": "approved"}),
        ),
        card(
            "meet-2-notes",
            500,
            json!({"kind": "record", "owner": "alice", "sourceDispatch": "meet-2",
                   "title": "Action items from the stand-up, with every decision taken and who owns it",
                   "record": {"workspace": "notes", "path": "a.md", "content": "x"}}),
            json!({"phase": "pending"}),
        ),
        card(
            "gate-0a1b",
            2_000,
            json!({"kind": "send", "owner": "bob", "title": "user:bob asks to call email.send\n\u{1b}[31mred",
                   "send": {"tool": "mail", "arguments": "{}"}}),
            json!({}),
        ),
    ]
}

#[test]
fn the_table_lists_oldest_first_with_safe_one_line_titles() {
    let now = Timestamp::from_second(1_000 + 7_200).unwrap();
    let expected = "\
NAME             KIND     TITLE                                              OWNER   SOURCE     DECISION            PHASE      AGE
meet-2-notes     record   Action items from the stand-up, with every deci…   alice   meet-2     -                   Pending    2h
triage-1-reply   draft    Reply to Carol                                     alice   triage-1   approved by alice   Approved   2h
gate-0a1b        send     user:bob asks to call email.send ^[[31mred         bob     -          -                   -          1h
";
    assert_eq!(table(&cards(), now), expected);
}

#[rstest]
#[case::all(None, false, &["triage-1-reply", "meet-2-notes", "gate-0a1b"])]
#[case::pending(None, true, &["meet-2-notes", "gate-0a1b"])]
#[case::owner(Some("alice"), false, &["triage-1-reply", "meet-2-notes"])]
#[case::owner_pending(Some("alice"), true, &["meet-2-notes"])]
fn filters(#[case] owner: Option<&str>, #[case] pending: bool, #[case] names: &[&str]) {
    let f = Filter {
        owner: owner.map(str::to_owned),
        pending,
    };
    let kept: Vec<String> = cards()
        .iter()
        .filter(|c| f.keeps(c))
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(kept, names);
}

#[test]
fn an_informational_card_is_never_pending() {
    let alert = card(
        "a",
        0,
        json!({"kind": "alert", "owner": "alice", "title": "disk"}),
        json!({}),
    );
    assert!(!is_pending(&alert));
}
