//! `email.received` (issue 12, evals 4 and 6, the trigger half) on a real cluster with the real
//! IMAP/SMTP servers of `hack/mail`: mail delivered to alice's triage mailbox fires her bound
//! Schedule within seconds, one propose-only run per message its filters keep (trigger
//! `event`, read-only workspace, an `imap://` reference as context, never the message); mail
//! the filters drop fires nothing; a Schedule of alice's naming bob's mailbox reads nothing;
//! and mail arriving while the operator is down and Redis restarts fires exactly once after
//! both are back, and never again after a second restart of both (the mailbox cursor lives
//! in the Schedule's status, not in Redis).
//!
//! The operator runs in this process with `--mail-config` naming the two mailboxes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use vexa_core::names::{EVENT_ID_ANNOTATION, SCHEDULE_LABEL};
use vexa_crds::{Dispatch, Identity, Schedule, Trigger, WorkspaceMode};
use vexa_evals::fixtures::{fake_runner, workspace, workspace_ready, workspace_volume};
use vexa_evals::mail::MailServer;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, restart_redis, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The operator's mail config: `triage` is alice's, `bob` is bob's.
fn mail_config(mail: &MailServer) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vexa-eval-mail-{}", std::process::id()));
    mail.operator_config(&dir, &[("triage", "alice"), ("bob", "bob")])
}

fn start_operator(config: &std::path::Path) -> Operator {
    Operator::start(&[
        "--redis-url",
        &cluster_env("POD_REDIS_URL"),
        "--mail-config",
        config.to_str().unwrap(),
        "--mail-poll-seconds",
        "1",
    ])
}

/// Mail from `outside` to `to`, with a unique subject starting `subject`.
async fn deliver(mail: &MailServer, to: &str, subject: &str) -> String {
    mail.deliver(
        "outside",
        to,
        subject,
        "Please look at the attached numbers.",
    )
    .await
}

async fn runs(api: &Api<Dispatch>, schedule: &str) -> Vec<Dispatch> {
    api.list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
        .await
        .unwrap()
        .items
}

fn schedule(name: &str, runner: &str, mailbox: &str) -> Schedule {
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule", "metadata": {"name": name},
        "spec": {
            "events": [{"type": "email.received", "mailbox": mailbox,
                        "subjectPattern": "^\\[triage\\]"}],
            "subject": "alice", "grant": name,
            "template": {"runner": runner, "workspaces": [{"name": "notes", "mode": "ro"}],
                         "start": {"entrypoint": {"inline": "exit 0"}}},
        },
    }))
    .unwrap()
}

async fn has_cursor(api: &Api<Schedule>, name: &str) -> bool {
    api.get(name)
        .await
        .unwrap()
        .status
        .is_some_and(|s| !s.event_cursors.is_empty())
}

#[tokio::test]
#[ignore = "needs the hack/ cluster and hack/mail"]
async fn mail_fires_one_propose_only_run_per_kept_message_once_across_an_operator_restart() {
    let admin: Client = client().await;
    let mail = MailServer::from_env();
    let config = mail_config(&mail);
    let operator = start_operator(&config);
    operator.ready().await;
    let ns = TestNamespace::new(&admin, "mail").await;
    let runner = format!("fake-{}", ns.name);
    fake_runner(&admin, &ns, &runner, json!({})).await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "notes", "alice/notes", "rw").await;
    let grants: Vec<_> = ["triage", "snoop"]
        .iter()
        .map(|g| {
            json!({"name": g, "launcher": format!("schedule:{}/{g}", ns.name),
                        "workspaces": [{"name": "notes", "mode": "ro"}]})
        })
        .collect();
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": grants},
    }))
    .unwrap();
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    workspace_ready(&admin, &ns.name, "notes").await;
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    for (name, mb) in [("triage", "triage"), ("snoop", "bob")] {
        schedules
            .create(&PostParams::default(), &schedule(name, &runner, mb))
            .await
            .unwrap();
    }
    // The first look sets the cursor at the mailbox's end: older mail does not fire.
    wait_for("the triage cursor", TIMEOUT, || async {
        has_cursor(&schedules, "triage").await.then_some(())
    })
    .await;

    let sent = Instant::now();
    deliver(&mail, "triage", "[triage] Q3 numbers").await;
    deliver(&mail, "triage", "lunch on friday?").await;
    deliver(&mail, "bob", "[triage] for bob only").await;
    let first = wait_for("one run for the kept message", TIMEOUT, || async {
        let r = runs(&dispatches, "triage").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    let latency = sent.elapsed();
    eprintln!("email delivered → Dispatch created: {latency:?} (poll 1 s)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = runs(&dispatches, "triage").await;
    assert_eq!(r.len(), 1, "the filtered-out message fires nothing");
    let d = &first[0];
    assert_eq!(d.spec.trigger, Trigger::Event);
    assert!(
        d.spec
            .workspaces
            .iter()
            .all(|w| w.mode == Some(WorkspaceMode::ReadOnly))
    );
    let uri = d
        .spec
        .context
        .as_ref()
        .and_then(|c| c.source.as_ref())
        .map(|s| s.uri.clone())
        .unwrap();
    assert!(uri.starts_with("imap://triage/INBOX;UIDVALIDITY="), "{uri}");
    assert!(
        !serde_json::to_string(&d.spec)
            .unwrap()
            .contains("Q3 numbers"),
        "headers never reach the run"
    );
    assert!(d.annotations().contains_key(EVENT_ID_ANNOTATION));
    assert!(
        runs(&dispatches, "snoop").await.is_empty(),
        "alice's Schedule never reads bob's mailbox"
    );
    let snoop = schedules.get("snoop").await.unwrap();
    assert!(
        snoop
            .status
            .map(|s| s.event_cursors.is_empty())
            .unwrap_or(true)
    );

    // Mail while the operator is down, and Redis restarted meanwhile (eval 6): one run, once
    // both are back. The mailbox cursor lives in the Schedule's status, not in Redis.
    operator.kill().await;
    deliver(&mail, "triage", "[triage] while you were out").await;
    restart_redis();
    let operator = start_operator(&config);
    operator.ready().await;
    wait_for(
        "the run for the mail that came while down",
        TIMEOUT,
        || async { (runs(&dispatches, "triage").await.len() == 2).then_some(()) },
    )
    .await;
    // Both restarted again once its Dispatch exists: nothing fires twice.
    operator.kill().await;
    restart_redis();
    let operator = start_operator(&config);
    operator.ready().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        runs(&dispatches, "triage").await.len(),
        2,
        "nothing doubled"
    );
    drop(operator);
}
