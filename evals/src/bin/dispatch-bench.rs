//! dispatch-bench: how fast the real operator binary turns Dispatches into Jobs, and what it
//! costs in memory. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release -p vexa-operator
//! eval "$(hack/cluster env)"
//! cargo run --release -p vexa-evals --bin dispatch-bench
//! ```
//!
//! What it measures, in one run:
//! 1. baseline: the rate at which this client creates Dispatches through the API server with no
//!    operator running (the ceiling for everything after);
//! 2. the operator (`target/release/vexa-operator`, leader election off, metrics on loopback)
//!    idle: RSS and CPU once its cache has synced;
//! 3. a burst of Dispatches: create → Job-created latency p50/p99 (seen by a watch, ms; and from
//!    the server's creationTimestamps, which have 1 s resolution) and Jobs per second; then the
//!    platform floor: as many plain Jobs with the same pod template, created with no operator in
//!    the path, and the controller manager's Job → Pod latency and rate;
//! 4. a larger sustained batch: Jobs per second in the steady middle (10th to 90th percentile);
//! 5. RSS after the bench namespace is deleted, and with `--present` Dispatches that asked to
//!    stop before they started (`spec.stop: true`: reconciled to `stopped`, then `destroyed`; no Job).
//!
//! With `--tracing`, only the cost of tracing instead: bursts of `--burst` Dispatches against
//! the operator with tracing off and on (OTLP to a real Jaeger on loopback), alternating for
//! `--rounds` rounds each, with create → Job latency, Jobs per second, CPU and RSS per round and
//! the on/off ratios of their means.
//!
//! The bench namespace has a ResourceQuota of 0 pods: Jobs are created but never get a pod, so
//! the figures are the operator's and the API server's, not the kubelet's.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use vexa_crds::{Dispatch, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, fake_runner, phase, workspace, workspace_ready,
    workspace_volume,
};
use vexa_evals::operator::assert_no_operator_in_cluster;
use vexa_evals::{TestNamespace, client, repo_root, wait_for};

/// The Jobs of Dispatches (not the Workspace controller's prepare Jobs).
const MANAGED: &str =
    "app.kubernetes.io/managed-by=vexa-operator,app.kubernetes.io/name=vexa-dispatch";

/// Benchmark of the Dispatch controller against the local cluster.
#[derive(Parser, Debug)]
#[command(name = "dispatch-bench")]
struct Args {
    /// Dispatches in the latency burst (and in the baseline create run).
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// Dispatches in the sustained-throughput batch.
    #[arg(long, default_value_t = 1000)]
    sustained: usize,
    /// Dispatches present for the memory figure.
    #[arg(long, default_value_t = 2000)]
    present: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Reconciles the operator runs in parallel (its `--concurrency`).
    #[arg(long, default_value_t = 32)]
    operator_concurrency: u16,
    /// The operator binary (default: `release/vexa-operator` in `$CARGO_TARGET_DIR`, else in
    /// the repository's `target/`; relative paths are from the repository root).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Measure tracing's cost instead (see above).
    #[arg(long)]
    tracing: bool,
    /// Rounds of each (off, on) with `--tracing`.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match &args.operator {
        Some(path) => repo_root().join(path),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo_root().join("target"), PathBuf::from)
            .join("release/vexa-operator"),
    };
    ensure!(
        binary.is_file(),
        "{} not found: build it with `cargo build --release -p vexa-operator`",
        binary.display()
    );
    let client = client().await;
    assert_no_operator_in_cluster(&client).await;
    let clk_tck = clock_ticks()?;
    if args.tracing {
        return tracing_overhead(&args, &client, &binary, clk_tck).await;
    }

    // 1. Baseline: creates alone, before any operator runs.
    let raw = TestNamespace::new(&client, "bench-raw").await;
    let raw_api: Api<Dispatch> = Api::namespaced(client.clone(), &raw.name);
    let names = (0..args.burst).map(|i| format!("raw-{i:05}")).collect();
    let (raw_elapsed, _) = create_all(&raw_api, names, args.concurrency, |n| {
        bench_dispatch(n, "none", true)
    })
    .await;
    let raw_rate = args.burst as f64 / raw_elapsed.as_secs_f64();
    delete_all(
        &raw_api,
        "the baseline Dispatches",
        Duration::from_secs(120),
    )
    .await?;
    drop(raw);

    // The bench namespace: a runner, a Workspace (prepared by the operator: its folder is made
    // by a pod, before the quota leaves no room for pods).
    let ns = TestNamespace::new(&client, "bench").await;
    let runner = format!("bench-{}", ns.name);
    fake_runner(&client, &ns, &runner, json!({})).await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "shared", "shared", "ro").await;

    // 2. The operator, idle.
    let mut operator = OperatorProcess::start(&binary, args.operator_concurrency, None)?;
    let t_ready = Instant::now();
    operator.wait_ready(Duration::from_secs(60))?;
    let ready_after = t_ready.elapsed();
    workspace_ready(&client, &ns.name, "shared").await;
    no_pods(&client, &ns.name).await?;
    let dispatches: Api<Dispatch> = Api::namespaced(client.clone(), &ns.name);
    let jobs_seen = Clock::jobs(Api::namespaced(client.clone(), &ns.name));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = operator.sample(clk_tck)?;

    // 3. Burst.
    let names: Vec<String> = (0..args.burst).map(|i| format!("burst-{i:05}")).collect();
    let t_burst = Instant::now();
    let (burst_create, created) = create_all(&dispatches, names.clone(), args.concurrency, |n| {
        bench_dispatch(n, &runner, false)
    })
    .await;
    jobs_seen.wait_for(&names, Duration::from_secs(300)).await;
    let burst_all_jobs = t_burst.elapsed();
    let seen = jobs_seen.times();
    let mut watch_latency: Vec<f64> = names
        .iter()
        .map(|n| (seen[n] - created[n]).as_secs_f64() * 1000.0)
        .collect();
    let server_latency = server_side_latencies(&client, &ns.name).await?;
    let after_burst = operator.sample(clk_tck)?;

    // 3b. The platform floor: the same number of plain Jobs, same pod template, no operator
    // in the path.
    let template = Api::<Job>::namespaced(client.clone(), &ns.name)
        .get(&names[0])
        .await?;
    let (mut floor_latency, floor_all) =
        platform_floor(&client, &template, args.burst, args.concurrency).await?;
    floor_latency.sort_by(f64::total_cmp);

    // 4. Sustained.
    let names: Vec<String> = (0..args.sustained)
        .map(|i| format!("sustained-{i:05}"))
        .collect();
    let (sustained_create, _) = create_all(&dispatches, names.clone(), args.concurrency, |n| {
        bench_dispatch(n, &runner, false)
    })
    .await;
    jobs_seen.wait_for(&names, Duration::from_secs(900)).await;
    let seen = jobs_seen.times();
    let mut times: Vec<Instant> = names.iter().map(|n| seen[n]).collect();
    times.sort();
    let (p10, p90) = (times[times.len() / 10], times[times.len() * 9 / 10]);
    let steady_rate = (times.len() * 8 / 10) as f64 / (p90 - p10).as_secs_f64();
    let after_sustained = operator.sample(clk_tck)?;

    // 5. Memory after churn, and with `present` Dispatches.
    let bench_ns = ns.name.clone();
    jobs_seen.stop();
    drop(ns);
    let namespaces = Api::<Namespace>::all(client.clone());
    wait_for(
        "the bench namespace is gone",
        Duration::from_secs(600),
        || async { matches!(namespaces.get_opt(&bench_ns).await, Ok(None)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after_churn = operator.sample(clk_tck)?;

    let many = TestNamespace::new(&client, "bench-present").await;
    workspace(&client, &many.name, "shared", "shared", "ro").await;
    let many_api: Api<Dispatch> = Api::namespaced(client.clone(), &many.name);
    let names: Vec<String> = (0..args.present)
        .map(|i| format!("present-{i:05}"))
        .collect();
    create_all(&many_api, names, args.concurrency, |n| {
        bench_dispatch(n, &runner, true)
    })
    .await;
    wait_for(
        "every present Dispatch is over (stopped, or destroyed once nothing is left of it)",
        Duration::from_secs(900),
        || async {
            let list = many_api.list(&ListParams::default()).await.ok()?;
            (list.items.len() == args.present
                && list
                    .items
                    .iter()
                    .all(|d| matches!(phase(d).as_str(), "stopped" | "destroyed")))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let present = operator.sample(clk_tck)?;
    operator.stop();
    drop(many);

    // Figures.
    watch_latency.sort_by(f64::total_cmp);
    let pct = percentile;
    let burst_rate = args.burst as f64 / burst_all_jobs.as_secs_f64();
    let sustained_create_rate = args.sustained as f64 / sustained_create.as_secs_f64();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "dispatch-bench (operator {}, {} reconciles in parallel, {} creates in flight)",
        binary.display(),
        args.operator_concurrency,
        args.concurrency
    );
    println!(
        "baseline  create {} Dispatches, no operator:   {:>7.1} /s ({:.2} s)",
        args.burst,
        raw_rate,
        raw_elapsed.as_secs_f64()
    );
    println!(
        "operator  ready after {:.2} s; idle RSS {:.1} MiB",
        ready_after.as_secs_f64(),
        mib(idle.rss_kib)
    );
    println!(
        "burst     {} Dispatches created in {:.2} s ({:.1} /s); all Jobs after {:.2} s: {:.1} Jobs/s = {:.2} x baseline",
        args.burst,
        burst_create.as_secs_f64(),
        args.burst as f64 / burst_create.as_secs_f64(),
        burst_all_jobs.as_secs_f64(),
        burst_rate,
        burst_rate / raw_rate
    );
    println!(
        "          create -> Job, seen by a watch:  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        pct(&watch_latency, 0.5),
        pct(&watch_latency, 0.99),
        watch_latency.last().copied().unwrap_or_default()
    );
    let floor_rate = args.burst as f64 / floor_all.as_secs_f64();
    println!(
        "floor     {} plain Jobs, same pod template, no operator: all pods after {:.2} s: {:.1} pods/s; Job create -> pod p50 {:.0} ms  p99 {:.0} ms",
        args.burst,
        floor_all.as_secs_f64(),
        floor_rate,
        pct(&floor_latency, 0.5),
        pct(&floor_latency, 0.99),
    );
    println!(
        "          operator burst vs floor: {:.2} x the floor's rate; p99 {:.2} x the floor's",
        burst_rate / floor_rate,
        pct(&watch_latency, 0.99) / pct(&floor_latency, 0.99).max(1.0),
    );
    println!(
        "          create -> Job, creationTimestamps (1 s resolution): p50 {:.0} s  p99 {:.0} s  max {:.0} s",
        pct(&server_latency, 0.5),
        pct(&server_latency, 0.99),
        server_latency.last().copied().unwrap_or_default()
    );
    println!(
        "sustained {} Dispatches offered at {:.1} /s: steady {:.1} Jobs/s (10th..90th pct) = {:.2} x baseline",
        args.sustained,
        sustained_create_rate,
        steady_rate,
        steady_rate / raw_rate
    );
    println!(
        "memory    RSS idle {:.1} MiB (peak so far {:.1})",
        mib(idle.rss_kib),
        mib(idle.hwm_kib)
    );
    println!(
        "          after burst ({} Dispatches + Jobs) {:.1} MiB; after sustained ({}) {:.1} MiB; after deleting them {:.1} MiB",
        args.burst,
        mib(after_burst.rss_kib),
        args.burst + args.sustained,
        mib(after_sustained.rss_kib),
        mib(after_churn.rss_kib)
    );
    println!(
        "          with {} stopped Dispatches (spec.stop, no Jobs): {:.1} MiB = {:.2} x idle; peak {:.1} MiB",
        args.present,
        mib(present.rss_kib),
        present.rss_kib as f64 / idle.rss_kib as f64,
        mib(present.hwm_kib)
    );
    println!(
        "cpu       operator CPU: burst {:.1} s, sustained {:.1} s, {} stopped {:.1} s (total {:.1} s)",
        after_burst.cpu_s - idle.cpu_s,
        after_sustained.cpu_s - after_burst.cpu_s,
        args.present,
        present.cpu_s - after_churn.cpu_s,
        present.cpu_s
    );
    Ok(())
}

/// A bench Dispatch: the golden chat message, read-only on `shared`.
fn bench_dispatch(name: &str, runner: &str, stop: bool) -> Dispatch {
    let mut d = chat_dispatch(name, runner, "exit 0");
    d.spec.workspaces = vec![WorkspaceUse {
        name: "shared".into(),
        mode: Some(WorkspaceMode::ReadOnly),
    }];
    d.spec.stop = stop.then_some(true);
    d
}

/// Creates one Dispatch per name, `concurrency` at a time. Returns the wall time and when
/// each create returned.
async fn create_all(
    api: &Api<Dispatch>,
    names: Vec<String>,
    concurrency: usize,
    make: impl Fn(&str) -> Dispatch,
) -> (Duration, BTreeMap<String, Instant>) {
    let start = Instant::now();
    let done: BTreeMap<String, Instant> = futures::stream::iter(names)
        .map(|n| {
            let d = make(&n);
            async move {
                api.create(&PostParams::default(), &d)
                    .await
                    .unwrap_or_else(|e| panic!("create Dispatch {n}: {e}"));
                (n, Instant::now())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (start.elapsed(), done)
}

/// Seconds from each Dispatch's creationTimestamp to its Job's (server clocks, 1 s steps).
async fn server_side_latencies(client: &Client, ns: &str) -> anyhow::Result<Vec<f64>> {
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(MANAGED))
        .await?;
    let created: BTreeMap<String, _> = Api::<Dispatch>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|d| Some((d.name_any(), d.metadata.creation_timestamp?.0)))
        .collect();
    let mut out: Vec<f64> = jobs
        .items
        .iter()
        .filter_map(|j| {
            let job = j.metadata.creation_timestamp.as_ref()?.0;
            Some(
                job.duration_since(*created.get(&j.name_any())?)
                    .as_secs_f64(),
            )
        })
        .collect();
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// When each object of a kind was first seen by a watch, keyed by `key` (a Job's name, or the
/// Job a pod belongs to).
struct Clock {
    seen: Arc<Mutex<BTreeMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Clock {
    /// The Jobs of Dispatches in the namespace of `api`.
    fn jobs(api: Api<Job>) -> Self {
        Self::start(api, MANAGED, |j: &Job| Some(j.name_any()))
    }

    fn start<K>(api: Api<K>, selector: &str, key: fn(&K) -> Option<String>) -> Self
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let seen: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let log = seen.clone();
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            let _ = watcher(api, config)
                .default_backoff()
                .touched_objects()
                .try_for_each(|o| {
                    if let Some(k) = key(&o) {
                        log.lock().unwrap().entry(k).or_insert_with(Instant::now);
                    }
                    async { Ok(()) }
                })
                .await;
        });
        Self { seen, task }
    }

    fn times(&self) -> BTreeMap<String, Instant> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, names: &[String], timeout: Duration) {
        wait_for("every object to be seen", timeout, || async {
            let seen = self.seen.lock().unwrap();
            names.iter().all(|n| seen.contains_key(n)).then_some(())
        })
        .await;
    }

    fn stop(&self) {
        self.task.abort();
    }
}

/// Label the job controller puts on a Job's pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The platform floor, in the same run: `n` plain Jobs with the pod template the operator built
/// (`template`), created straight through the API server in a namespace of their own; returns
/// each Job's create → pod-created latency (ms, seen by a watch) and the time until every pod
/// existed. The pods cannot be scheduled (a node selector nothing matches), so this is the
/// controller manager's Job → Pod path, not the kubelet's.
async fn platform_floor(
    client: &Client,
    template: &Job,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let ns = TestNamespace::new(client, "bench-floor").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let pods = Clock::start(
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns.name),
        JOB_NAME_LABEL,
        |p| p.labels().get(JOB_NAME_LABEL).cloned(),
    );
    let mut spec = template
        .spec
        .clone()
        .context("the operator's Job has a spec")?;
    // What the API server added to the operator's Job is not part of a template.
    spec.selector = None;
    spec.manual_selector = None;
    if let Some(meta) = spec.template.metadata.as_mut() {
        meta.labels = Some(BTreeMap::from([(
            "app".to_owned(),
            "bench-floor".to_owned(),
        )]));
    }
    if let Some(pod) = spec.template.spec.as_mut() {
        pod.node_selector = Some(BTreeMap::from([(
            "vexa.ai/bench".to_owned(),
            "never".to_owned(),
        )]));
    }
    spec.suspend = Some(false);
    let names: Vec<String> = (0..n).map(|i| format!("floor-{i:05}")).collect();
    let start = Instant::now();
    let created: BTreeMap<String, Instant> = futures::stream::iter(names.clone())
        .map(|name| {
            let job = Job {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
                ..Job::default()
            };
            let jobs = jobs.clone();
            async move {
                jobs.create(&PostParams::default(), &job)
                    .await
                    .unwrap_or_else(|e| panic!("create Job {name}: {e}"));
                (name, Instant::now())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    pods.wait_for(&names, Duration::from_secs(300)).await;
    let all = start.elapsed();
    let seen = pods.times();
    pods.stop();
    let latency = names
        .iter()
        .map(|n| (seen[n].saturating_duration_since(created[n])).as_secs_f64() * 1000.0)
        .collect();
    Ok((latency, all))
}

/// The operator binary as a child process, its log in `dispatch-bench-operator.log` in the
/// temporary folder.
struct OperatorProcess {
    child: Child,
    http: std::net::SocketAddr,
}

/// RSS, its peak, and CPU time used, of the operator process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
}

impl OperatorProcess {
    /// Starts the operator; with `otlp`, exporting traces there.
    fn start(
        binary: &std::path::Path,
        concurrency: u16,
        otlp: Option<&str>,
    ) -> anyhow::Result<Self> {
        // A free loopback port: bind, read, release.
        let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log_path = std::env::temp_dir().join("dispatch-bench-operator.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let mut command = Command::new(binary);
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        if let Some(endpoint) = otlp {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        // The audit log in a folder of its own; no Keycloak (not what is measured).
        let audit = std::env::temp_dir().join(format!("dispatch-bench-audit-{}", http.port()));
        let child = command
            .args(["--leader-election=false", "--http-addr", &http.to_string()])
            .arg(format!("--audit-dir={}", audit.display()))
            .arg("--keycloak-url=")
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--worker-image", FAKE_WORKER_IMAGE])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self { child, http })
    }

    /// Polls `/readyz` until it answers 200.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the operator exited ({status}); see its log in the temporary folder (dispatch-bench-operator.log)"
                );
            }
            if http_status(self.http, "/readyz").is_ok_and(|s| s == 200) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the operator was not ready after {timeout:?}; see dispatch-bench-operator.log in the temporary folder"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sample(&self, clk_tck: f64) -> anyhow::Result<Sample> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or_default()
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which is in parentheses): utime is the 14th field of
        // the whole line, stime the 15th.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = f
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
            + f.get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default();
        Ok(Sample {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            cpu_s: ticks as f64 / clk_tck,
        })
    }

    /// SIGTERM (a graceful stop), then SIGKILL after 15 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Deletes every Dispatch of `api`'s namespace and waits until they are gone.
async fn delete_all(api: &Api<Dispatch>, what: &str, timeout: Duration) -> anyhow::Result<()> {
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    wait_for(&format!("{what} are deleted"), timeout, || async {
        api.list(&ListParams::default().limit(1))
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
    Ok(())
}

/// A ResourceQuota of 0 pods in `ns`: Jobs are created, never a pod.
async fn no_pods(client: &Client, ns: &str) -> anyhow::Result<()> {
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}},
    }))?;
    Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &quota)
        .await?;
    Ok(())
}

/// One burst of `--tracing`.
struct Round {
    on: bool,
    p50_ms: f64,
    p99_ms: f64,
    jobs_per_s: f64,
    cpu_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

/// `--tracing`: the same burst against the operator with tracing off and on, alternating.
async fn tracing_overhead(
    args: &Args,
    client: &Client,
    binary: &std::path::Path,
    clk_tck: f64,
) -> anyhow::Result<()> {
    let jaeger = vexa_evals::jaeger::Jaeger::start().await;
    let ns = TestNamespace::new(client, "bench-tracing").await;
    let runner = format!("bench-{}", ns.name);
    fake_runner(client, &ns, &runner, json!({})).await;
    workspace_volume(client, &ns.name).await;
    workspace(client, &ns.name, "shared", "shared", "ro").await;
    {
        // The Workspace is prepared by a pod, before the quota leaves no room for pods.
        let mut operator = OperatorProcess::start(binary, args.operator_concurrency, None)?;
        operator.wait_ready(Duration::from_secs(60))?;
        workspace_ready(client, &ns.name, "shared").await;
        operator.stop();
    }
    no_pods(client, &ns.name).await?;
    let dispatches: Api<Dispatch> = Api::namespaced(client.clone(), &ns.name);
    let jobs_seen = Clock::jobs(Api::namespaced(client.clone(), &ns.name));
    let mut rounds = Vec::new();
    for round in 0..args.rounds * 2 {
        let on = round % 2 == 1;
        let mut operator = OperatorProcess::start(
            binary,
            args.operator_concurrency,
            on.then_some(jaeger.otlp.as_str()),
        )?;
        operator.wait_ready(Duration::from_secs(60))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = operator.sample(clk_tck)?;
        let names: Vec<String> = (0..args.burst)
            .map(|i| format!("r{round}-{i:05}"))
            .collect();
        let start = Instant::now();
        let (_, created) = create_all(&dispatches, names.clone(), args.concurrency, |n| {
            bench_dispatch(n, &runner, false)
        })
        .await;
        jobs_seen.wait_for(&names, Duration::from_secs(300)).await;
        let all = start.elapsed();
        let after = operator.sample(clk_tck)?;
        let seen = jobs_seen.times();
        let mut latency: Vec<f64> = names
            .iter()
            .map(|n| (seen[n] - created[n]).as_secs_f64() * 1000.0)
            .collect();
        latency.sort_by(f64::total_cmp);
        rounds.push(Round {
            on,
            p50_ms: percentile(&latency, 0.5),
            p99_ms: percentile(&latency, 0.99),
            jobs_per_s: args.burst as f64 / all.as_secs_f64(),
            cpu_s: after.cpu_s - before.cpu_s,
            rss_kib: after.rss_kib,
            hwm_kib: after.hwm_kib,
        });
        // Gone while this operator runs (it releases what they hold), and their Jobs with them
        // (a cache holding the last round's would weigh on the next one's RSS).
        delete_all(
            &dispatches,
            "the round's Dispatches",
            Duration::from_secs(300),
        )
        .await?;
        let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
        wait_for(
            "the round's Jobs are deleted",
            Duration::from_secs(300),
            || async {
                jobs.list(&ListParams::default().labels(MANAGED).limit(1))
                    .await
                    .ok()
                    .filter(|l| l.items.is_empty())
            },
        )
        .await;
        operator.stop();
    }
    jobs_seen.stop();
    let traces = vexa_evals::http_get(&format!(
        "{}/api/traces?service=vexa-operator&limit=100000",
        jaeger.query
    ))
    .await
    .ok()
    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    .and_then(|v| v["data"].as_array().map(Vec::len))
    .unwrap_or_default();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "dispatch-bench --tracing (operator {}, {} Dispatches per burst, {} creates in flight, {} rounds each)",
        binary.display(),
        args.burst,
        args.concurrency,
        args.rounds
    );
    for r in &rounds {
        println!(
            "  tracing {:<3}  create -> Job p50 {:>5.0} ms  p99 {:>5.0} ms  {:>6.1} Jobs/s  CPU {:>5.2} s  RSS {:>5.1} MiB (peak {:.1})",
            if r.on { "on" } else { "off" },
            r.p50_ms,
            r.p99_ms,
            r.jobs_per_s,
            r.cpu_s,
            mib(r.rss_kib),
            mib(r.hwm_kib)
        );
    }
    let mean = |on: bool, f: fn(&Round) -> f64| {
        let v: Vec<f64> = rounds.iter().filter(|r| r.on == on).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let ratio = |f: fn(&Round) -> f64| mean(true, f) / mean(false, f).max(f64::EPSILON);
    println!(
        "  on / off (means): p50 {:.2} x  p99 {:.2} x  Jobs/s {:.2} x  CPU {:.2} x  RSS {:.2} x ({:.1} vs {:.1} MiB)",
        ratio(|r| r.p50_ms),
        ratio(|r| r.p99_ms),
        ratio(|r| r.jobs_per_s),
        ratio(|r| r.cpu_s),
        ratio(|r| r.rss_kib as f64),
        mean(true, |r| r.rss_kib as f64) / 1024.0,
        mean(false, |r| r.rss_kib as f64) / 1024.0,
    );
    println!("  Jaeger holds {traces} traces of vexa-operator (one per traced Dispatch)");
    drop(ns);
    Ok(())
}

/// The status code of `GET path` on `addr` (HTTP/1.0, no dependencies).
fn http_status(addr: std::net::SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// Kernel clock ticks per second, for /proc CPU times.
fn clock_ticks() -> anyhow::Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}
