//! The operator survives crashes: a burst of Dispatches is created while the in-process operator
//! is killed (its runtime dropped with reconciles in flight, like a crash) and started again,
//! ten times. Afterwards there is exactly one Job per Dispatch, never re-created, each owned by
//! its Dispatch, and every run completed.
//!
//! The pods are as cheap as the node allows (the fake worker's `exit 0`, 1m CPU and 16Mi
//! requested), because 200 of them go through one 2-core kubelet.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use vexa_crds::{Dispatch, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, describe, fake_runner, phase, stop_reason, workspace,
    workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client};

const DISPATCHES: usize = 200;
const RESTARTS: usize = 10;
/// Dispatches are created in batches of this size, one batch a second, so the crashes fall
/// while Jobs are being created and while runs are being followed.
const BATCH: usize = 10;
/// Everything, including 200 pods through one kubelet, must be done within this.
const HARD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Finished Jobs are kept for the whole eval, so the final count sees every one of them.
const OPERATOR_ARGS: &[&str] = &[
    "--job-ttl-seconds",
    "3600",
    "--worker-image",
    FAKE_WORKER_IMAGE,
];
/// The operator's run objects (Jobs and pods of Dispatches; not the Workspace's prepare Job).
const MANAGED: &str =
    "app.kubernetes.io/managed-by=vexa-operator,app.kubernetes.io/name=vexa-dispatch";

/// A small xorshift generator: crash intervals vary from run to run, and the seed is printed
/// so a failing sequence can be told apart.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Milliseconds in `[lo, hi)`.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: run hack/test"]
async fn a_burst_through_ten_operator_crashes_makes_exactly_one_job_per_dispatch() {
    tokio::time::timeout(HARD_TIMEOUT, burst_through_crashes())
        .await
        .expect("the restart eval did not finish within its hard timeout");
}

async fn burst_through_crashes() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "restarts").await;
    let runner = format!("fake-{}", ns.name);
    let cheap = json!({"defaults": {"resources": {
        "requests": {"cpu": "1m", "memory": "16Mi"},
        "limits": {"memory": "32Mi"},
    }}});
    fake_runner(&client, &ns, &runner, cheap).await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "shared", "shared", "ro").await;
    let dispatches: Api<Dispatch> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);

    // Every Job the API server ever shows in the namespace, by name: a second uid under one
    // name would be a Job deleted and created again.
    let job_uids: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let seen = job_uids.clone();
    let job_watch = tokio::spawn(
        watcher(jobs.clone(), watcher::Config::default().labels(MANAGED))
            .default_backoff()
            .touched_objects()
            .try_for_each(move |job| {
                let uid = job.uid().unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .entry(job.name_any())
                    .or_default()
                    .insert(uid);
                async { Ok(()) }
            }),
    );

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Xorshift(seed);
    let t0 = Instant::now();
    let mut operator = Operator::start(OPERATOR_ARGS);
    operator.ready().await;

    let creator = {
        let dispatches = dispatches.clone();
        let runner = runner.clone();
        tokio::spawn(async move {
            for batch in 0..DISPATCHES / BATCH {
                let next = tokio::time::sleep(Duration::from_secs(1));
                futures::stream::iter(0..BATCH)
                    .for_each_concurrent(BATCH, |i| {
                        let mut d = chat_dispatch(
                            &format!("burst-{:03}", batch * BATCH + i),
                            &runner,
                            "exit 0",
                        );
                        d.spec.workspaces = vec![WorkspaceUse {
                            name: "shared".into(),
                            mode: Some(WorkspaceMode::ReadOnly),
                        }];
                        let dispatches = dispatches.clone();
                        async move {
                            dispatches
                                .create(&PostParams::default(), &d)
                                .await
                                .expect("create Dispatch");
                        }
                    })
                    .await;
                next.await;
            }
        })
    };

    let mut crash_times = Vec::new();
    for _ in 0..RESTARTS {
        tokio::time::sleep(rng.millis(300, 3000)).await;
        operator.kill().await;
        crash_times.push(t0.elapsed());
        // Some incarnations die before their cache syncs, some after.
        tokio::time::sleep(rng.millis(0, 500)).await;
        operator = Operator::start(OPERATOR_ARGS);
        if rng.next().is_multiple_of(2) {
            operator.ready().await;
        }
    }
    creator.await.expect("the creator panicked");
    let created = t0.elapsed();
    operator.ready().await;

    // Wait until every run is over (or the hard timeout says what is left).
    let mut all_jobs_at = None;
    let finished = loop {
        let list = dispatches.list(&ListParams::default()).await.unwrap().items;
        let with_job = list
            .iter()
            .filter(|d| d.status.as_ref().is_some_and(|s| s.job_name.is_some()))
            .count();
        if with_job == DISPATCHES && all_jobs_at.is_none() {
            all_jobs_at = Some(t0.elapsed());
        }
        if list.len() == DISPATCHES && list.iter().all(|d| !stop_reason(d).is_empty()) {
            break list;
        }
        let mut phases = BTreeMap::<String, usize>::new();
        for d in &list {
            *phases
                .entry(format!("{}/{}", phase(d), stop_reason(d)))
                .or_default() += 1;
        }
        eprintln!(
            "[{:>5.1}s] {} dispatches, {with_job} with a Job: {phases:?}",
            t0.elapsed().as_secs_f64(),
            list.len()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let done = t0.elapsed();
    job_watch.abort();

    // Exactly one Job per Dispatch, named after it and owned by it.
    let jobs = jobs
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap()
        .items;
    let by_name: BTreeMap<String, &Job> = jobs.iter().map(|j| (j.name_any(), j)).collect();
    assert_eq!(jobs.len(), DISPATCHES, "Jobs in the namespace");
    assert_eq!(by_name.len(), DISPATCHES, "distinct Job names");
    for d in &finished {
        let job = by_name
            .get(&d.name_any())
            .unwrap_or_else(|| panic!("no Job for {}", d.name_any()));
        let owners = job.owner_references();
        assert_eq!(owners.len(), 1, "{}", job.name_any());
        assert_eq!(
            Some(&owners[0].uid),
            d.metadata.uid.as_ref(),
            "{} is owned by its Dispatch",
            job.name_any()
        );
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(
            d.status.as_ref().unwrap().job_name.as_deref(),
            Some(job.name_any().as_str())
        );
    }
    let recreated: Vec<_> = job_uids
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, uids)| uids.len() > 1)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(
        recreated.is_empty(),
        "Jobs created more than once: {recreated:?}"
    );
    assert_eq!(job_uids.lock().unwrap().len(), DISPATCHES, "Jobs ever seen");

    // One pod each: a Job never retried, and never a second Job's pod.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap()
        .items;
    let mut pods_per_dispatch = BTreeMap::<String, usize>::new();
    for p in &pods {
        *pods_per_dispatch
            .entry(
                p.labels()
                    .get("vexa.ai/dispatch")
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    let extra: Vec<_> = pods_per_dispatch.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        extra.is_empty() && pods_per_dispatch.len() == DISPATCHES,
        "pods per dispatch: {extra:?} ({} dispatches with pods)",
        pods_per_dispatch.len()
    );

    // Every run completed.
    let wrong: Vec<_> = finished
        .iter()
        .filter(|d| {
            stop_reason(d) != "completed" || d.status.as_ref().unwrap().exit_code != Some(0)
        })
        .map(describe)
        .collect();
    assert!(wrong.is_empty(), "runs that did not complete: {wrong:?}");

    eprintln!(
        "restart eval: seed {seed:#x}; {DISPATCHES} dispatches created over {:.1}s; crashes at {:?}; \
         all Jobs after {:.1}s; all runs over after {:.1}s",
        created.as_secs_f64(),
        crash_times
            .iter()
            .map(|t| format!("{:.1}s", t.as_secs_f64()))
            .collect::<Vec<_>>(),
        all_jobs_at.unwrap_or(done).as_secs_f64(),
        done.as_secs_f64(),
    );
}
