//! trigger-bench: how fast Stage 3's triggers act, each beside a floor measured in the same
//! run. Prints p50/p99 of each; asserts nothing.
//!
//! ```text
//! eval "$(hack/cluster env)"
//! cargo run --release -p vexa-evals --bin trigger-bench -- --emails 20 --cards 10
//! ```
//!
//! - **email arrival → Dispatch**: a message delivered (SMTP accepted it) to a mailbox a
//!   Schedule watches, until a watch sees the Schedule's Dispatch. Floor: the same message
//!   delivered until an IMAP client polling every 20 ms finds it (the mail server's own
//!   delivery time). The Dispatches name a runner that does not exist: no Job starts.
//! - **Card approve → commit**: a `record` Card's decision written until its phase is
//!   `applied` (the apply Job committed the file). Floor: a bare Job in the same image (the
//!   worker printing its version), created until it succeeded.
//!
//! The operator runs in this process with `--mail-poll-seconds` (default 1) and the mail
//! config naming `hack/mail`'s triage mailbox as alice's.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use vexa_crds::card::{Card, CardPhase};
use vexa_crds::{Dispatch, Identity, Schedule};
use vexa_evals::bench::report;
use vexa_evals::fixtures::{workspace, workspace_ready, workspace_volume};
use vexa_evals::mail::MailServer;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env};

#[derive(Debug, Parser)]
struct Args {
    /// Messages to deliver, one at a time.
    #[arg(long, default_value_t = 20)]
    emails: usize,
    /// Record Cards to approve, one at a time.
    #[arg(long, default_value_t = 10)]
    cards: usize,
    /// The operator's `--mail-poll-seconds`.
    #[arg(long, default_value_t = 1)]
    poll_seconds: u64,
}

const IMAGE: &str = "localhost/vexa-agent-worker:dev";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin = client().await;
    let mail = MailServer::from_env();
    let dir = std::env::temp_dir().join(format!("vexa-trigger-bench-{}", std::process::id()));
    let config = mail.operator_config(&dir, &[("triage", "alice")]);
    let poll = args.poll_seconds.to_string();
    let operator = Operator::start(&[
        "--redis-url",
        &cluster_env("POD_REDIS_URL"),
        "--mail-config",
        config.to_str().unwrap(),
        "--mail-poll-seconds",
        &poll,
        "--job-ttl-seconds",
        "30",
    ]);
    operator.ready().await;
    let ns = TestNamespace::new(&admin, "trigger-bench").await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "notes", "alice/bench-notes", "rw").await;
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": [{
            "name": "triage", "launcher": format!("schedule:{}/triage", ns.name),
            "workspaces": [{"name": "notes", "mode": "ro"}]}]},
    }))?;
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await?;
    workspace_ready(&admin, &ns.name, "notes").await;

    // Email arrival → Dispatch.
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch = tokio::spawn(
        watcher(dispatches.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |d| {
                if let Ok(d) = d {
                    let _ = tx.send((d.name_any(), Instant::now()));
                }
                async {}
            }),
    );
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let s: Schedule = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule", "metadata": {"name": "triage"},
        "spec": {"events": [{"type": "email.received", "mailbox": "triage"}],
                 "subject": "alice", "grant": "triage",
                 "successfulHistoryLimit": 100, "failedHistoryLimit": 100,
                 "template": {"runner": "no-such-runner", "workspaces": [{"name": "notes", "mode": "ro"}],
                              "start": {"entrypoint": {"inline": "exit 0"}}}},
    }))?;
    schedules.create(&PostParams::default(), &s).await?;
    let cursor = Instant::now();
    while schedules
        .get("triage")
        .await?
        .status
        .is_none_or(|s| s.event_cursors.is_empty())
    {
        anyhow::ensure!(
            cursor.elapsed() < Duration::from_secs(60),
            "the Schedule set no mailbox cursor in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut arrival, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..args.emails {
        let t0 = Instant::now();
        let subject = mail
            .deliver("outside", "triage", "bench", "a benchmark message")
            .await;
        // The floor: an IMAP client polling for it.
        while mail.count("triage", "INBOX", &subject).await == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        floor.push(ms(t0.elapsed()));
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, seen.recv()).await {
                Ok(Some((name, at))) if name.starts_with("triage-ev-") => {
                    arrival.push(ms(at - t0));
                    break;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("no Dispatch within 60 s of a delivered message"),
            }
        }
        // Later events of the same Dispatch (its status) are not new runs.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while seen.try_recv().is_ok() {}
    }
    watch.abort();
    println!(
        "trigger-bench: in-process operator, --mail-poll-seconds {} (IMAP IDLE on)",
        args.poll_seconds
    );
    let (f50, _) = report("floor: delivered -> visible over IMAP", floor);
    let (a50, a99) = report("email delivered -> Dispatch (watch)", arrival);
    println!(
        "  arrival minus floor: p50 {:.1} ms; p99 {a99:.1} ms",
        a50 - f50
    );

    // Card approve → commit, and a bare Job's start → success.
    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name);
    let mut approve = Vec::new();
    for i in 0..args.cards {
        let name = format!("bench-{i}");
        let card: Card = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Card", "metadata": {"name": name},
            "spec": {"kind": "record", "owner": "alice", "sourceDispatch": "bench-source",
                     "title": format!("Bench record {i}"),
                     "record": {"workspace": "notes", "path": format!("bench/{i}.md"),
                                "content": format!("# {i}\n")}},
        }))?;
        cards.create(&PostParams::default(), &card).await?;
        let t0 = Instant::now();
        cards
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"decision": {"verdict": "approve", "by": "alice"}}})),
            )
            .await?;
        loop {
            let phase = cards.get(&name).await?.status.and_then(|s| s.phase);
            match phase {
                Some(CardPhase::Applied) => break,
                Some(CardPhase::Failed) => anyhow::bail!("card {name} failed to apply"),
                _ => {}
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "card {name} not applied in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        approve.push(ms(t0.elapsed()));
    }
    let jobs = Api::<Job>::namespaced(admin.clone(), &ns.name);
    let mut job_floor = Vec::new();
    for i in 0..args.cards.clamp(1, 5) {
        let name = format!("floor-{i}");
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 30, "template": {"spec": {
                "restartPolicy": "Never",
                // The tenant namespace enforces the restricted Pod Security Standard.
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "floor", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                "command": ["vexa-agent-worker", "--version"],
                                "securityContext": {"allowPrivilegeEscalation": false,
                                                    "capabilities": {"drop": ["ALL"]}}}]}}},
        }))?;
        let t0 = Instant::now();
        jobs.create(&PostParams::default(), &job).await?;
        loop {
            let status = jobs.get(&name).await?.status.unwrap_or_default();
            if status.succeeded.unwrap_or(0) > 0 {
                break;
            }
            anyhow::ensure!(
                status.failed.unwrap_or(0) == 0,
                "the floor Job {name} failed"
            );
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "the floor Job {name} did not succeed in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        job_floor.push(ms(t0.elapsed()));
    }

    let (j50, _) = report("floor: bare Job created -> succeeded", job_floor);
    let (c50, _) = report("card approved -> applied (committed)", approve);
    println!("  approve->commit over a bare Job: p50 x{:.2}", c50 / j50);
    drop(operator);
    Ok(())
}
