//! start-bench: how long a Dispatch takes to get its agent running, against the platform floor
//! measured in the same run: a plain Job with exactly the pod template the operator built (both
//! containers, the workspace volume, the dispatch's Secret), created with no operator in the
//! path. Prints p50/p95 and their ratio; asserts nothing.
//!
//! ```text
//! eval "$(hack/cluster env)"; hack/images/agent-worker
//! cargo run --release -p vexa-evals --bin start-bench -- --runs 20
//! ```
//!
//! Latency is measured by this client: from the create call to a watch seeing the `agent`
//! container running (and, for the Dispatch, to its first unit event on `unit:<id>:out`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use vexa_crds::{Dispatch, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    chat_dispatch, test_agent_runner, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env};
use vexa_stream::UnitEvent;
use vexa_stream::follow::{EntryId, follow};

#[derive(Debug, Parser)]
struct Args {
    /// Dispatches (and plain Jobs) to start, one after the other.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (pct(&v, 0.5), pct(&v, 0.95))
}

fn agent_running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.name == "agent" && c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// Waits until a pod labelled `selector` has its agent container running.
async fn until_agent_runs(pods: &Api<Pod>, selector: &str) -> anyhow::Result<()> {
    let config = watcher::Config::default().labels(selector);
    let stream = watcher::watcher(pods.clone(), config);
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(event) = stream.next().await {
            let seen = match event? {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => agent_running(&p),
                _ => false,
            };
            if seen {
                return Ok::<_, anyhow::Error>(());
            }
        }
        anyhow::bail!("the pod watch ended")
    })
    .await
    .with_context(|| format!("no running agent container for {selector} within 120 s"))?
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pod_redis = cluster_env("POD_REDIS_URL");
    let redis = redis::Client::open(cluster_env("REDIS_URL"))?;
    let operator = Operator::start(&["--job-ttl-seconds", "30", "--redis-url", &pod_redis]);
    operator.ready().await;
    let client: Client = client().await;
    let ns = TestNamespace::new(&client, "start-bench").await;
    let runner = format!("bench-{}", ns.name);
    test_agent_runner(
        &client,
        &ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": 2}}),
    )
    .await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "bench", "bench", "ro").await;
    workspace_ready(&client, &ns.name, "bench").await;
    let dispatches: Api<Dispatch> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);

    // 1. Dispatches, one after the other (read-only: none waits for a lock).
    let (mut to_agent, mut to_event) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        let name = format!("start-{i}");
        let mut d = chat_dispatch(&name, &runner, "say hi");
        d.spec.workspaces = vec![WorkspaceUse {
            name: "bench".into(),
            mode: Some(WorkspaceMode::ReadOnly),
        }];
        let topic =
            vexa_policy::names::out_topic(&vexa_policy::names::dispatch_id(&ns.name, &name));
        let first_event = {
            let redis = redis.clone();
            tokio::spawn(async move {
                let stream = follow::<UnitEvent>(redis, topic, EntryId::ZERO);
                let mut stream = std::pin::pin!(stream);
                stream.next().await.map(|_| Instant::now())
            })
        };
        let created = Instant::now();
        dispatches.create(&PostParams::default(), &d).await?;
        until_agent_runs(&pods, &format!("vexa.ai/dispatch={name}")).await?;
        to_agent.push(ms(created.elapsed()));
        let seen = tokio::time::timeout(Duration::from_secs(120), first_event)
            .await
            .context("no first event within 120 s")??
            .context("the stream ended")?;
        to_event.push(ms(seen - created));
    }

    // 2. The floor: the same pod template as a plain Job, with a Secret of its own.
    let template = jobs
        .get("start-0")
        .await?
        .spec
        .context("a Job spec")?
        .template;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "floor-credentials"}}))?,
        )
        .await?;
    let mut floor = Vec::new();
    for i in 0..args.runs {
        let name = format!("floor-{i}");
        let mut spec = template.clone();
        let meta = spec.metadata.get_or_insert_with(Default::default);
        meta.labels = Some([("bench".to_owned(), name.clone())].into());
        meta.annotations = None;
        if let Some(pod) = spec.spec.as_mut() {
            // The floor has no pod identity: no gate for the operator to release, no SVID for
            // the worker to wait for.
            pod.scheduling_gates = None;
            for c in pod.init_containers.iter_mut().flatten() {
                if let Some(env) = c.env.as_mut() {
                    env.retain(|e| e.name != vexa_core::pod::var::SPIFFE);
                }
            }
            for v in pod.volumes.iter_mut().flatten() {
                if let Some(s) = v.secret.as_mut() {
                    s.secret_name = Some("floor-credentials".into());
                }
            }
        }
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 30, "activeDeadlineSeconds": 60,
                     "template": spec},
        }))?;
        let created = Instant::now();
        jobs.create(&PostParams::default(), &job).await?;
        until_agent_runs(&pods, &format!("bench={name}")).await?;
        floor.push(ms(created.elapsed()));
    }
    // The floor's workers have no Redis user or session to run: they exit on their own; the
    // namespace goes with the bench.
    let leftover = pods.list(&ListParams::default()).await?.items.len();

    let (a50, a95) = summary(to_agent);
    let (e50, e95) = summary(to_event);
    let (f50, f95) = summary(floor);
    println!(
        "start-bench: {} runs each (pods left at the end: {leftover})",
        args.runs
    );
    println!("  Dispatch created -> agent container running  p50 {a50:.0} ms  p95 {a95:.0} ms");
    println!("  plain Job, same pod template -> agent running p50 {f50:.0} ms  p95 {f95:.0} ms");
    println!(
        "  ratio to the floor                            p50 {:.2} x  p95 {:.2} x",
        a50 / f50,
        a95 / f95
    );
    println!("  Dispatch created -> first unit event          p50 {e50:.0} ms  p95 {e95:.0} ms");
    drop(ns);
    drop(operator);
    Ok(())
}
