//! Who may propose and who may decide a Card, on a real cluster: the chart's admission policies
//! (`card-custody`, `card-status`) meet real users (client certificates the cluster signed),
//! each with RBAC that would let them do more, so what refuses them is admission. No operator
//! runs: the admin (exempt) plays the operator and creates the Cards.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use vexa_crds::card::{Card, Verdict};
use vexa_evals::admission::ChartAdmission;
use vexa_evals::cards::{decision, refused};
use vexa_evals::users::{grant_role, user_client};
use vexa_evals::{TestNamespace, client, wait_for};

fn card(name: &str, owner: &str) -> Card {
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Card", "metadata": {"name": name},
        "spec": {
            "kind": "record", "owner": owner, "sourceDispatch": "triage-1",
            "title": "Action items",
            "record": {"workspace": "alice-notes", "path": "meetings/a.md", "content": "# A\n"},
        },
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn only_the_owner_or_an_approver_decides_once_and_nobody_plants_a_card() {
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "cards").await;
    let _policies = ChartAdmission::install(&[]);
    // Everyone here may create, update and patch Cards and their status as far as RBAC goes.
    let everything = json!([
        {"apiGroups": ["vexa.ai"], "resources": ["cards"], "verbs": ["create", "get", "list", "update", "patch"]},
        {"apiGroups": ["vexa.ai"], "resources": ["cards/status"], "verbs": ["get", "update", "patch"]},
    ]);
    for user in ["alice", "bob", "carol"] {
        grant_role(
            &admin,
            &ns.name,
            user,
            &format!("cards-{user}"),
            everything.clone(),
        )
        .await;
    }
    // carol may approve one card of alice's: the custom verb on that name only.
    grant_role(
        &admin,
        &ns.name,
        "carol",
        "carol-approves",
        json!([{"apiGroups": ["vexa.ai"], "resources": ["cards"], "resourceNames": ["for-carol"], "verbs": ["approve"]}]),
    )
    .await;
    let as_admin = Api::<Card>::namespaced(admin.clone(), &ns.name);
    for name in ["proposal", "for-carol", "not-for-carol"] {
        as_admin
            .create(&PostParams::default(), &card(name, "alice"))
            .await
            .unwrap();
    }
    let alice = Api::<Card>::namespaced(user_client(&admin, "alice").await, &ns.name);
    let bob = Api::<Card>::namespaced(user_client(&admin, "bob").await, &ns.name);
    let carol = Api::<Card>::namespaced(user_client(&admin, "carol").await, &ns.name);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };

    // The binding takes effect once the API server's informers have it.
    wait_for(
        "the chart's card policy to be in force",
        Duration::from_secs(30),
        || async {
            match alice.create(&dry_run, &card("planted", "alice")).await {
                Err(kube::Error::Api(s)) if s.message.contains("CardCreateReserved") => Some(()),
                _ => None,
            }
        },
    )
    .await;

    // Nobody plants a proposal in someone's queue, their own included.
    let planted = refused(
        bob.create(&PostParams::default(), &card("planted", "alice"))
            .await,
    );
    assert!(planted.contains("CardCreateReserved"), "{planted}");

    // bob may patch Cards, but not decide alice's.
    let p = PatchParams::default();
    let by_bob = refused(bob.patch("proposal", &p, &decision("approve", "bob")).await);
    assert!(
        by_bob.contains("DecisionNotOwner") && by_bob.contains("not bob"),
        "{by_bob}"
    );
    // Nor write its status.
    let status = refused(
        bob.patch_status(
            "proposal",
            &p,
            &Patch::Merge(json!({"status": {"phase": "applied"}})),
        )
        .await,
    );
    assert!(status.contains("StatusReserved"), "{status}");

    // alice decides, but only in her own name.
    let unsigned = refused(
        alice
            .patch("proposal", &p, &decision("approve", "bob"))
            .await,
    );
    assert!(unsigned.contains("DecisionNotSigned"), "{unsigned}");
    let approved = alice
        .patch("proposal", &p, &decision("approve", "alice"))
        .await
        .unwrap();
    let d = approved.spec.decision.unwrap();
    assert_eq!(
        (d.verdict, d.by.as_deref()),
        (Verdict::Approve, Some("alice"))
    );

    // A decision is final, for alice too.
    let changed = refused(
        alice
            .patch(
                "proposal",
                &p,
                &Patch::Merge(json!({"spec": {"decision": {"verdict": "reject"}}})),
            )
            .await,
    );
    assert!(changed.contains("a decision is final"), "{changed}");

    // carol decides the one card she was granted `approve` on, and no other.
    carol
        .patch("for-carol", &p, &decision("reject", "carol"))
        .await
        .unwrap();
    let other = refused(
        carol
            .patch("not-for-carol", &p, &decision("approve", "carol"))
            .await,
    );
    assert!(other.contains("DecisionNotOwner"), "{other}");
    assert_eq!(
        as_admin.get("not-for-carol").await.unwrap().spec.decision,
        None
    );
}

/// The agent worker image with `apply-record` (built from this checkout under its own tag, so
/// the cluster's `:dev` image is left alone): `VEXA_CARDS_WORKER_IMAGE`, else
/// `localhost/vexa-agent-worker:dev`.
fn worker_image() -> String {
    std::env::var("VEXA_CARDS_WORKER_IMAGE")
        .unwrap_or_else(|_| "localhost/vexa-agent-worker:dev".into())
}

/// One in-process operator for the evals of this file (two at once would race each other).
async fn operator() {
    use std::sync::OnceLock;
    use vexa_evals::operator::Operator;
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR
        .get_or_init(|| Operator::start(&["--workspace-init-image", &worker_image()]))
        .ready()
        .await;
}

/// The Card's `Applied` condition, once its reason is `reason` (a failed card fails the test).
async fn applied_reason(
    cards: &Api<Card>,
    name: &str,
    reason: &str,
) -> vexa_crds::card::CardStatus {
    wait_for(
        &format!("card {name}: Applied reason {reason}"),
        Duration::from_secs(180),
        || async {
            let status = cards.get(name).await.ok()?.status?;
            if status.phase == Some(vexa_crds::card::CardPhase::Failed) {
                panic!("the card failed: {:?}", status.conditions);
            }
            let c = status.conditions.iter().find(|c| c.type_ == "Applied")?;
            (c.reason == reason).then_some(status.clone())
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_record_waits_while_a_live_dispatch_holds_the_workspace() {
    use vexa_evals::fixtures::{workspace, workspace_ready, workspace_volume};
    use vexa_operator::controllers::workspace::storage::{LOCK_LABEL, Storage};

    operator().await;
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "card-wait").await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    let ws = workspace_ready(&admin, &ns.name, "alice-notes").await;
    // A Dispatch that never starts (its runner does not exist) but is alive, holding the
    // workspace's write lock as a running rw dispatch would.
    let holder: vexa_crds::Dispatch = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Dispatch", "metadata": {"name": "writer"},
        "spec": {
            "identity": {"subject": "alice", "launcher": "user:alice"},
            "runner": "no-such-runner",
            "workspaces": [{"name": "alice-notes", "mode": "rw"}],
            "trigger": "message",
            "start": {"entrypoint": {"inline": "write"}},
        },
    }))
    .unwrap();
    let dispatches = Api::<vexa_crds::Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches
        .create(&PostParams::default(), &holder)
        .await
        .unwrap();
    let folder = Storage::of(&ws.spec);
    let lock: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
        "metadata": {"name": folder.lock_name(), "labels": {LOCK_LABEL: "true"},
                     "annotations": folder.annotations()},
        "spec": {"holderIdentity": "writer"},
    }))
    .unwrap();
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), &ns.name);
    match leases.create(&PostParams::default(), &lock).await {
        Ok(_) => {}
        // The Dispatch controller took it for the writer already: as good.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("lock: {e}"),
    }

    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name);
    cards
        .create(&PostParams::default(), &card("waits", "alice"))
        .await
        .unwrap();
    cards
        .patch(
            "waits",
            &PatchParams::default(),
            &decision("approve", "alice"),
        )
        .await
        .unwrap();
    let waiting = applied_reason(&cards, "waits", "WaitingForWorkspace").await;
    assert!(
        waiting.conditions[0].message.contains("writer"),
        "{waiting:?}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        cards
            .get("waits")
            .await
            .unwrap()
            .status
            .unwrap()
            .applied_commit,
        None,
        "nothing is committed while the workspace is held"
    );

    // The writer goes: the record is committed.
    dispatches
        .delete("writer", &Default::default())
        .await
        .unwrap();
    let applied = applied_reason(&cards, "waits", "Committed").await;
    assert!(applied.applied_commit.is_some());
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn an_approved_record_is_committed_once_as_the_approver() {
    use vexa_crds::card::CardPhase;
    use vexa_evals::fixtures::{
        WORKSPACE_CLAIM, claim_folder, git, workspace, workspace_ready, workspace_volume,
    };

    operator().await;
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "card-apply").await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&admin, &ns.name, "alice-notes").await;
    grant_role(
        &admin,
        &ns.name,
        "alice",
        "cards-alice",
        json!([{"apiGroups": ["vexa.ai"], "resources": ["cards"], "verbs": ["get", "list", "patch"]}]),
    )
    .await;
    let as_admin = Api::<Card>::namespaced(admin.clone(), &ns.name);
    // The operator plays its own part: it creates the card (the admin stands in for the
    // stream); alice approves it as herself.
    as_admin
        .create(&PostParams::default(), &card("triage-1-notes", "alice"))
        .await
        .unwrap();
    let alice = Api::<Card>::namespaced(user_client(&admin, "alice").await, &ns.name);
    alice
        .patch(
            "triage-1-notes",
            &PatchParams::default(),
            &decision("approve", "alice"),
        )
        .await
        .unwrap();

    let applied = wait_for(
        "the approved record to be Applied",
        Duration::from_secs(180),
        || async {
            let c = as_admin.get("triage-1-notes").await.ok()?;
            let status = c.status?;
            match status.phase? {
                CardPhase::Applied => Some(status),
                CardPhase::Failed => panic!("the card failed: {:?}", status.conditions),
                _ => None,
            }
        },
    )
    .await;
    let sha = applied.applied_commit.clone().expect("the commit");
    let applied_condition = applied
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .expect("condition Applied");
    assert_eq!(applied_condition.status, "True");
    assert_eq!(applied.decided_by.as_deref(), Some("alice"));

    let dir = claim_folder(&admin, &ns.name, WORKSPACE_CLAIM, "alice/notes").await;
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), sha);
    assert_eq!(git(&dir, &["show", "HEAD:meetings/a.md"]), "# A");
    assert_eq!(git(&dir, &["log", "-1", "--format=%an"]), "alice");
    let message = git(&dir, &["log", "-1", "--format=%B"]);
    let card_id = format!("Vexa-Card: {}/triage-1-notes", ns.name);
    assert!(
        message.contains(&card_id)
            && message.contains("Vexa-Source-Dispatch: triage-1")
            && message.contains("Vexa-Approved-By: alice"),
        "{message}"
    );

    // Exactly once: a later look at the Card (a resync, an operator restart) applies nothing.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let carrying = git(
        &dir,
        &["log", "--format=%H", "--grep", &card_id, "--fixed-strings"],
    );
    assert_eq!(carrying.lines().count(), 1, "{carrying}");
    // The workspace's lock is free again for the next run.
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), &ns.name)
            .list(&Default::default())
            .await
            .unwrap();
    assert!(
        leases.items.iter().all(|l| l
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_none()),
        "{leases:?}"
    );
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn card_events_become_cards_once_and_hostile_ones_are_refused() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::ListParams;

    operator().await;
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "card-stream").await;
    // A dispatch that never starts (no such runner); its output stream is written here as its
    // worker would write it.
    let d: vexa_crds::Dispatch = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Dispatch", "metadata": {"name": "triage"},
        "spec": {
            "identity": {"subject": "alice", "launcher": "user:alice"},
            "runner": "no-such-runner",
            "workspaces": [{"name": "alice-notes", "mode": "ro"}],
            "trigger": "message",
            "start": {"entrypoint": {"inline": "triage"}},
        },
    }))
    .unwrap();
    let dispatches = Api::<vexa_crds::Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches.create(&PostParams::default(), &d).await.unwrap();
    let id = vexa_core::dispatch_id(&ns.name, "triage");
    let out = vexa_core::out_topic(&id);
    dispatches
        .patch_status(
            "triage",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"streams": {"out": out, "in": vexa_core::in_topic(&id)}}}),
            ),
        )
        .await
        .unwrap();

    let audit = format!(
        "--audit-dir={}",
        vexa_evals::operator::default_audit_dir().display()
    );
    let config =
        <vexa_operator::config::Config as clap::Parser>::parse_from(["vexa-operator", &audit]);
    let redis = config.admin_redis_client().unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let record = json!({"id": "notes", "kind": "record", "title": "Notes",
        "record": {"workspace": "alice-notes", "path": "meetings/a.md", "content": "# A\n"}});
    let events = [
        record.clone(),
        json!({"kind": "alert", "title": "Calendar clash on Thursday"}),
        json!({"kind": "suggestion", "title": "For bob", "owner": "bob"}),
        json!({"kind": "send", "title": "Send it", "send": {"tool": "mail", "arguments": "{}"}}),
        // The same proposal again (an agent that repeats itself, or a replay): one Card.
        record,
    ];
    for card in events {
        let event = json!({"type": "card", "card": card, "turn_id": "t0"}).to_string();
        let _: String = redis::cmd("XADD")
            .arg(&out)
            .arg("*")
            .arg("event")
            .arg(event)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name);
    let made = wait_for(
        "two Cards from the stream",
        Duration::from_secs(60),
        || async {
            let list = cards.list(&ListParams::default()).await.ok()?.items;
            (list.len() >= 2).then_some(list)
        },
    )
    .await;
    let notes = made
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("triage-notes"))
        .expect("the record card, named from its id");
    assert_eq!(notes.spec.owner, "alice");
    assert_eq!(notes.spec.source_dispatch.as_deref(), Some("triage"));
    assert_eq!(
        notes.metadata.owner_references.as_ref().unwrap()[0].name,
        "triage"
    );
    let events = Api::<Event>::namespaced(admin.clone(), &ns.name);
    for reason in ["CardForeignOwner", "CardSendFromStream"] {
        wait_for(
            &format!("a Warning {reason} on the Dispatch"),
            Duration::from_secs(30),
            || async {
                events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.involved_object.name.as_deref() == Some("triage")
                    })
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = cards.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2, "{all:#?}");
    let _: i64 = redis::cmd("DEL")
        .arg(&out)
        .query_async(&mut conn)
        .await
        .unwrap();
}
