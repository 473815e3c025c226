//! schedule-bench: how late a Schedule's runs start against their nominal times, beside the
//! floor measured in the same run: a Dispatch this client creates itself, from the create call
//! to the same watch seeing it. Prints p50/p99 of both and their difference; asserts nothing.
//!
//! ```text
//! eval "$(hack/cluster env)"
//! cargo run --release -p vexa-evals --bin schedule-bench -- --fires 100
//! ```
//!
//! The operator runs in this process in the test-only seconds mode; `--schedules` Schedules fire
//! every `--every` seconds (on the same second: the worst case for one reconciler). Lateness is
//! what this client sees: a watch event for the Dispatch minus its nominal time (an upper bound
//! of the operator's own `vexa_schedule_fire_lateness_seconds`). The Dispatches name a runner
//! that does not exist, so no Job or pod is started: only scheduling is measured.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use vexa_core::names::{SCHEDULE_LABEL, SCHEDULED_TIME_ANNOTATION, TEST_CRON_SECONDS_ANNOTATION};
use vexa_crds::{Dispatch, Identity, Schedule};
use vexa_evals::bench::report;
use vexa_evals::fixtures::chat_dispatch;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env};

#[derive(Debug, Parser)]
struct Args {
    /// Scheduled runs to measure.
    #[arg(long, default_value_t = 100)]
    fires: usize,
    /// Schedules firing together.
    #[arg(long, default_value_t = 10)]
    schedules: usize,
    /// Seconds between two fires of a Schedule.
    #[arg(long, default_value_t = 2)]
    every: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin = client().await;
    let operator = Operator::start(&[
        "--redis-url",
        &cluster_env("POD_REDIS_URL"),
        "--schedule-seconds-field",
    ]);
    operator.ready().await;
    let ns = TestNamespace::new(&admin, "sched-bench").await;
    let grants: Vec<_> = (0..args.schedules)
        .map(|i| {
            json!({"name": format!("s{i}"), "launcher": format!("schedule:{}/s{i}", ns.name),
                        "workspaces": [{"name": "notes", "mode": "ro"}]})
        })
        .collect();
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": grants},
    }))?;
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await?;
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);

    // One watch sees every Dispatch of the namespace as it is created.
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, DateTime<Utc>)>();
    let watch = watcher(dispatches.clone(), watcher::Config::default())
        .applied_objects()
        .for_each(move |d| {
            if let Ok(d) = d {
                let _ = tx.send((d.name_any(), Utc::now()));
            }
            async {}
        });
    let watch = tokio::spawn(watch);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The floor: this client creates a Dispatch and waits for the watch to see it.
    let mut floor = Vec::new();
    for i in 0..20 {
        let name = format!("floor-{i}");
        let mut d = chat_dispatch(&name, "no-such-runner", "exit 0");
        d.spec.identity.subject = "alice".into();
        let t0 = Utc::now();
        dispatches.create(&PostParams::default(), &d).await?;
        loop {
            let (n, at) = seen.recv().await.expect("the watch runs");
            if n == name {
                floor.push((at - t0).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                break;
            }
        }
    }

    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    for i in 0..args.schedules {
        let s: Schedule = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Schedule",
            "metadata": {"name": format!("s{i}"),
                         "annotations": {TEST_CRON_SECONDS_ANNOTATION: format!("*/{} * * * * *", args.every)}},
            "spec": {"schedule": "0 0 1 1 *", "subject": "alice", "grant": format!("s{i}"),
                     "concurrencyPolicy": "Allow", "successfulHistoryLimit": 100, "failedHistoryLimit": 100,
                     "template": {"runner": "no-such-runner", "workspaces": [{"name": "notes", "mode": "ro"}],
                                  "start": {"entrypoint": {"inline": "exit 0"}}}},
        }))?;
        schedules.create(&PostParams::default(), &s).await?;
    }
    let mut first_seen: HashMap<String, DateTime<Utc>> = HashMap::new();
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(
            60 + u64::from(args.every) * args.fires as u64 / args.schedules as u64,
        );
    while first_seen.len() < args.fires && tokio::time::Instant::now() < deadline {
        if let Ok(Some((n, at))) = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await
            && !n.starts_with("floor-")
        {
            first_seen.entry(n).or_insert(at);
        }
    }
    let all = dispatches
        .list(&ListParams::default().labels(SCHEDULE_LABEL))
        .await?
        .items;
    let mut late = Vec::new();
    for d in &all {
        let (Some(at), Some(nominal)) = (
            first_seen.get(&d.name_any()),
            d.annotations()
                .get(SCHEDULED_TIME_ANNOTATION)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
        ) else {
            continue;
        };
        late.push((*at - nominal.to_utc()).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    late.truncate(args.fires);
    println!(
        "schedule-bench: {} Schedules every {} s, in-process operator",
        args.schedules, args.every
    );
    let (f50, f99) = report("floor (create -> watch)", floor);
    let (l50, l99) = report("fire lateness (nominal -> watch)", late);
    println!(
        "lateness minus floor: p50 {:.1} ms, p99 {:.1} ms (goal: p99 lateness <= 1000 ms)",
        l50 - f50,
        l99 - f99
    );
    watch.abort();
    drop(operator);
    Ok(())
}
