//! IMAP IDLE for `email.received` (the operator's `--mail-idle`) on a real cluster with the real
//! IMAP/SMTP servers of `hack/mail`, with the poll set to an hour so that only IDLE can be what
//! fires a run within seconds: with `--mail-idle=false` new mail fires nothing for a while;
//! with it on, each new message fires its run within seconds, one after the other (the watcher
//! re-arms after each wake).
//!
//! The operator runs in this process with `--mail-config` naming alice's triage mailbox.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vexa_core::names::SCHEDULE_LABEL;
use vexa_crds::{Dispatch, Identity, Schedule};
use vexa_evals::fixtures::{fake_runner, workspace, workspace_ready, workspace_volume};
use vexa_evals::mail::MailServer;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

/// Well under the poll (an hour): only IDLE can fire a run this soon.
const IDLE_LATENCY: Duration = Duration::from_secs(15);
const TIMEOUT: Duration = Duration::from_secs(60);

/// The operator's mail config: `triage` is alice's.
fn mail_config(mail: &MailServer) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vexa-eval-mail-idle-{}", std::process::id()));
    mail.operator_config(&dir, &[("triage", "alice")])
}

fn start_operator(config: &std::path::Path, idle: bool) -> Operator {
    Operator::start(&[
        "--redis-url",
        &cluster_env("POD_REDIS_URL"),
        "--mail-config",
        config.to_str().unwrap(),
        "--mail-poll-seconds",
        "3600",
        if idle {
            "--mail-idle=true"
        } else {
            "--mail-idle=false"
        },
    ])
}

/// Mail from `outside` to triage, with a unique subject starting `[idle]`.
async fn deliver(mail: &MailServer) {
    mail.deliver("outside", "triage", "[idle]", "Is anyone there?")
        .await;
}

async fn runs(api: &Api<Dispatch>) -> usize {
    api.list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}=triage")))
        .await
        .unwrap()
        .items
        .len()
}

/// Waits until the Schedule has `n` runs; how long that took.
async fn runs_reach(api: &Api<Dispatch>, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{n} runs"), within, || async {
        (runs(api).await >= n).then_some(())
    })
    .await;
    start.elapsed()
}

#[tokio::test]
#[ignore = "needs the hack/ cluster and hack/mail"]
async fn new_mail_fires_within_seconds_over_imap_idle_not_at_the_hourly_poll() {
    let admin: Client = client().await;
    let mail = MailServer::from_env();
    let config = mail_config(&mail);
    // IDLE off first (the Workspace needs an operator to become ready).
    let operator = start_operator(&config, false);
    operator.ready().await;
    let ns = TestNamespace::new(&admin, "mail-idle").await;
    let runner = format!("fake-{}", ns.name);
    fake_runner(&admin, &ns, &runner, json!({})).await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "notes", "alice/notes", "rw").await;
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": [{
            "name": "triage", "launcher": format!("schedule:{}/triage", ns.name),
            "workspaces": [{"name": "notes", "mode": "ro"}]}]},
    }))
    .unwrap();
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    workspace_ready(&admin, &ns.name, "notes").await;
    let schedule: Schedule = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule", "metadata": {"name": "triage"},
        "spec": {
            "events": [{"type": "email.received", "mailbox": "triage",
                        "subjectPattern": "^\\[idle\\]"}],
            "subject": "alice", "grant": "triage",
            "template": {"runner": runner, "workspaces": [{"name": "notes", "mode": "ro"}],
                         "start": {"entrypoint": {"inline": "exit 0"}}},
        },
    }))
    .unwrap();
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);

    // IDLE off: the first look sets the cursor, and then nothing reads the mailbox for an hour.
    schedules
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap();
    wait_for("the triage cursor", TIMEOUT, || async {
        schedules
            .get("triage")
            .await
            .unwrap()
            .status
            .is_some_and(|s| !s.event_cursors.is_empty())
            .then_some(())
    })
    .await;
    deliver(&mail).await;
    tokio::time::sleep(IDLE_LATENCY).await;
    assert_eq!(
        runs(&dispatches).await,
        0,
        "without IDLE, only the poll reads"
    );
    operator.kill().await;

    // IDLE on: the start reads the waiting message (one run); each new one fires at once.
    let operator = start_operator(&config, true);
    operator.ready().await;
    runs_reach(&dispatches, 1, TIMEOUT).await;
    // Let the watcher arm before the next message (it starts from the Schedule's cursor, so
    // even a message before that would wake it; this keeps the timing about IDLE alone).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in 2..=3 {
        deliver(&mail).await;
        let latency = runs_reach(&dispatches, n, IDLE_LATENCY).await;
        eprintln!("email delivered → Dispatch created: {latency:?} (IDLE; poll 1 h)");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&dispatches).await, 3, "each message once");
    drop(operator);
}
