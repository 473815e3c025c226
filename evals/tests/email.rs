//! Send Cards (issue 12) against the real IMAP/SMTP server of `hack/mail`: an approved `send`
//! card for an `email.send` Tool is sent from its owner's mailbox exactly once, with the
//! Message-ID `card-<uid>@vexa.local`; nothing leaves before the decision, nothing leaves for a
//! rejected card, and an operator that crashed before writing the card's status (its status
//! put back to `approved`) finds the message in Sent and sends nothing again.
//!
//! The operator runs in this process, with a mail config naming alice's mailbox. The admin
//! plays the operator's part of creating the Cards and, for brevity, alice's decision (who may
//! decide is proven in `cards.rs`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vexa_crds::Tool;
use vexa_crds::card::{Card, CardPhase, CardStatus};
use vexa_email::{Mailbox, search};
use vexa_evals::mail::MailServer;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

/// How many messages of `folder` have the subject `text`, or the Message-ID `text` when
/// `by_message_id`.
async fn count(mb: &Mailbox, folder: &str, text: &str, by_message_id: bool) -> usize {
    search(mb, folder, text, 50)
        .await
        .unwrap()
        .iter()
        .filter(|h| {
            if by_message_id {
                h.message_id.as_deref() == Some(text)
            } else {
                h.subject.as_deref() == Some(text)
            }
        })
        .count()
}

fn unique(what: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what} {n:x}")
}

fn send_card(name: &str, tool: &str, arguments: &Value) -> Card {
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Card", "metadata": {"name": name},
        "spec": {
            "kind": "send", "owner": "alice", "sourceDispatch": "triage-1",
            "title": "Reply to bob",
            "send": {"tool": tool, "arguments": arguments.to_string()},
        },
    }))
    .unwrap()
}

fn decide(verdict: &str) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"decision": {"verdict": verdict, "by": "alice"}}}))
}

/// The card's status once its phase is `phase`.
async fn phase(cards: &Api<Card>, name: &str, phase: CardPhase) -> CardStatus {
    wait_for(
        &format!("card {name} in phase {phase:?}"),
        TIMEOUT,
        || async {
            let status = cards.get(name).await.ok()?.status?;
            (status.phase == Some(phase)).then_some(status)
        },
    )
    .await
}

fn applied(status: &CardStatus) -> &Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .expect("condition Applied")
}

#[tokio::test]
#[ignore = "needs the hack/ cluster and hack/mail"]
async fn an_approved_send_card_is_sent_once_even_across_a_crash() {
    let mail = MailServer::from_env();
    let dir = std::env::temp_dir().join(format!("vexa-eval-email-{}", std::process::id()));
    let config = mail.operator_config(&dir, &[("alice", "alice")]);
    let flags = ["--mail-config", config.to_str().unwrap()];
    let operator = Operator::start(&flags);
    operator.ready().await;
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "email").await;
    let tools = Api::<Tool>::namespaced(admin.clone(), &ns.name);
    for (name, tool_name) in [("mail-send", "email.send"), ("chat-post", "chat.post")] {
        let tool: Tool = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Tool", "metadata": {"name": name},
            "spec": {"toolName": tool_name, "scope": "email:send", "grant": "gate",
                     "server": {"url": "http://127.0.0.1:9/mcp"}, "audience": "mail"},
        }))
        .unwrap();
        tools.create(&PostParams::default(), &tool).await.unwrap();
    }
    let (alice, bob) = (mail.mailbox("alice"), mail.mailbox("bob"));
    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name);
    let p = PatchParams::default();

    // A proposal: nothing leaves before the decision.
    let subject = unique("Re: Thursday");
    let arguments = json!({"to": [mail.address("bob")], "subject": subject,
                           "body": "Thursday works for me.\n"});
    let card = cards
        .create(
            &PostParams::default(),
            &send_card("reply", "mail-send", &arguments),
        )
        .await
        .unwrap();
    let message_id = format!("card-{}@vexa.local", card.metadata.uid.unwrap());
    // A rejected one and one for another tool, alongside.
    let rejected_subject = unique("Rejected");
    let rejected_args = json!({"to": [mail.address("bob")], "subject": rejected_subject,
                               "body": "never\n"});
    cards
        .create(
            &PostParams::default(),
            &send_card("rejected", "mail-send", &rejected_args),
        )
        .await
        .unwrap();
    let other_subject = unique("Other tool");
    let other_args = json!({"to": [mail.address("bob")], "subject": other_subject,
                            "body": "never\n"});
    cards
        .create(
            &PostParams::default(),
            &send_card("other-tool", "chat-post", &other_args),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(count(&bob, "INBOX", &subject, false).await, 0);
    assert_eq!(count(&alice, "Sent", &message_id, true).await, 0);
    assert_eq!(cards.get("reply").await.unwrap().status, None);

    cards
        .patch("rejected", &p, &decide("reject"))
        .await
        .unwrap();
    cards
        .patch("other-tool", &p, &decide("approve"))
        .await
        .unwrap();
    phase(&cards, "rejected", CardPhase::Rejected).await;
    let failed = phase(&cards, "other-tool", CardPhase::Failed).await;
    assert_eq!(applied(&failed).reason, "UnsupportedTool");

    // alice approves: exactly one message, in bob's INBOX and alice's Sent.
    cards.patch("reply", &p, &decide("approve")).await.unwrap();
    let status = phase(&cards, "reply", CardPhase::Applied).await;
    let condition = applied(&status);
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "Sent")
    );
    assert!(condition.message.contains(&message_id), "{condition:?}");
    wait_for("the message in bob's INBOX", TIMEOUT, || async {
        (count(&bob, "INBOX", &subject, false).await > 0).then_some(())
    })
    .await;
    // A late duplicate would have had the time to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&bob, "INBOX", &subject, false).await, 1);
    assert_eq!(count(&bob, "INBOX", &message_id, true).await, 1);
    assert_eq!(count(&alice, "Sent", &message_id, true).await, 1);

    // A crash before the status write: the operator is gone, the card is back at approved.
    operator.kill().await;
    cards
        .patch_status(
            "reply",
            &p,
            &Patch::Merge(json!({"status": {"phase": "approved", "conditions": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        cards.get("reply").await.unwrap().status.unwrap().phase,
        Some(CardPhase::Approved)
    );
    let operator = Operator::start(&flags);
    operator.ready().await;
    let again = wait_for("the card applied again", TIMEOUT, || async {
        let status = cards.get("reply").await.ok()?.status?;
        let c = status.conditions.iter().find(|c| c.type_ == "Applied")?;
        (status.phase == Some(CardPhase::Applied) && c.reason == "AlreadySent").then_some(c.clone())
    })
    .await;
    assert!(again.message.contains(&message_id), "{again:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&bob, "INBOX", &subject, false).await, 1);
    assert_eq!(count(&alice, "Sent", &message_id, true).await, 1);

    // Nothing for the rejected card or the other tool's, ever.
    assert_eq!(count(&bob, "INBOX", &rejected_subject, false).await, 0);
    assert_eq!(count(&bob, "INBOX", &other_subject, false).await, 0);
    operator.kill().await;
    let _ = std::fs::remove_file(&config);
}
