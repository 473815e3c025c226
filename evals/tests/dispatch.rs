//! Stage 1 proofs of the Dispatch controller on a real cluster: what a Dispatch creates, how
//! its run is followed to the end, and what is refused, queued, stopped or cleaned up.
//!
//! One in-process operator serves every test of this binary (leader election off, finished
//! Jobs kept 5 s so `destroyed` can be observed). Each test has its own namespace, runner and
//! workspace volume; the pods run the fake worker (`evals/fake-worker`), whose prompt is a
//! list of commands such as `sleep 4; idle`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use vexa_crds::{Dispatch, Trigger, Workspace, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, PhaseLog, WORKSPACE_CLAIM, chat_dispatch, condition, describe, fake_runner,
    fake_worker_image, golden_doc, phase, stop_reason, wait_dispatch, workspace, workspace_ready,
    workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, wait_for};

/// Long enough for a pod to be scheduled and started on the 2-core `hack/` node under load.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
const JOB_TTL_SECONDS: &str = "5";
const MANAGED: &str = "app.kubernetes.io/managed-by=vexa-operator";

/// The in-process operator, started once for this test binary.
async fn operator() {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR
        .get_or_init(|| {
            Operator::start(&[
                "--job-ttl-seconds",
                JOB_TTL_SECONDS,
                "--worker-image",
                FAKE_WORKER_IMAGE,
            ])
        })
        .ready()
        .await;
}

/// One test's world: a namespace with a runner on the fake worker, a bound workspace volume
/// and the golden `alice-notes` Workspace (rw by default) on it.
struct World {
    client: Client,
    ns: TestNamespace,
    runner: String,
    dispatches: Api<Dispatch>,
}

impl World {
    async fn new(prefix: &str) -> Self {
        operator().await;
        let client = client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let runner = format!("fake-{}", ns.name);
        fake_runner(&client, &ns, &runner, json!({})).await;
        workspace_volume(&client, &ns.name).await;
        let mut notes = golden_doc("goldens/workspaces/valid/alice-notes.yaml");
        assert_eq!(
            notes["spec"]["storage"]["persistentVolumeClaim"]["claimName"],
            WORKSPACE_CLAIM
        );
        notes["metadata"]["namespace"] = json!(ns.name);
        Api::<Workspace>::namespaced(client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &serde_json::from_value(notes).unwrap(),
            )
            .await
            .expect("create the golden Workspace alice-notes");
        workspace_ready(&client, &ns.name, "alice-notes").await;
        let dispatches = Api::namespaced(client.clone(), &ns.name);
        Self {
            client,
            ns,
            runner,
            dispatches,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// The golden chat Dispatch named `name`, running `prompt` on the fake worker.
    fn chat(&self, name: &str, prompt: &str) -> Dispatch {
        chat_dispatch(name, &self.runner, prompt)
    }

    async fn create(&self, d: &Dispatch) -> Dispatch {
        self.dispatches
            .create(&PostParams::default(), d)
            .await
            .unwrap_or_else(|e| panic!("create Dispatch {}: {e}", d.name_any()))
    }

    async fn wait_phase(&self, name: &str, wanted: &str) -> Dispatch {
        wait_dispatch(
            &self.dispatches,
            name,
            &format!("phase {wanted}"),
            PHASE_TIMEOUT,
            |d| phase(d) == wanted,
        )
        .await
    }

    /// Waits until the run is over (`stopped`, or already `destroyed`).
    async fn wait_finished(&self, name: &str) -> Dispatch {
        wait_dispatch(
            &self.dispatches,
            name,
            "a stop reason",
            PHASE_TIMEOUT,
            |d| !stop_reason(d).is_empty(),
        )
        .await
    }

    /// The Jobs of Dispatches (the Workspace controller's prepare Jobs are not runs).
    async fn jobs(&self) -> Vec<Job> {
        self.api::<Job>()
            .list(&ListParams::default().labels("app.kubernetes.io/name=vexa-dispatch"))
            .await
            .unwrap()
            .items
    }

    async fn managed_secrets(&self) -> Vec<Secret> {
        self.api::<Secret>()
            .list(&ListParams::default().labels(MANAGED))
            .await
            .unwrap()
            .items
    }

    async fn pods_of(&self, dispatch: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("vexa.ai/dispatch={dispatch}"));
        self.api::<Pod>().list(&lp).await.unwrap().items
    }

    /// `kubectl get dsp NAME`: the cells of the printed row, keyed by column header.
    fn kubectl_row(&self, name: &str) -> BTreeMap<String, String> {
        let out = Command::new("kubectl")
            .args(["get", "dsp", name, "-n", &self.ns.name])
            .output()
            .expect("kubectl on PATH (eval \"$(hack/cluster env)\")");
        assert!(
            out.status.success(),
            "kubectl get dsp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        table_row(&String::from_utf8(out.stdout).unwrap())
    }
}

/// Parses kubectl's table output (a header and one row) by column position, so empty cells
/// stay empty.
fn table_row(text: &str) -> BTreeMap<String, String> {
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let row = lines.next().expect("a row");
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts
                .get(n + 1)
                .copied()
                .unwrap_or(header.len().max(row.len()));
            let cell = |s: &str| {
                s.get(start..end.min(s.len()))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            (cell(header), cell(row))
        })
        .collect()
}

fn env_of(job: &Job) -> BTreeMap<String, String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .expect("the worker, a native sidecar")[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn golden_chat_dispatch_runs_one_locked_down_job_until_idle() {
    let w = World::new("chat").await;
    let name = "agent-alice-chat-main";
    let log = PhaseLog::start(&w.dispatches, name);
    let created = w.create(&w.chat(name, "sleep 4; idle")).await;

    let starting = wait_dispatch(&w.dispatches, name, "a Job", PHASE_TIMEOUT, |d| {
        d.status.as_ref().is_some_and(|s| s.job_name.is_some())
    })
    .await;
    let jobs = w.jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "exactly one Job: {:?}",
        jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );
    let job = &jobs[0];
    let status = starting.status.clone().unwrap();
    assert_eq!(status.job_name.as_deref(), Some(job.name_any().as_str()));
    assert_eq!(
        job.name_any(),
        name,
        "a short dispatch name is its Job's name"
    );

    // Owned by the Dispatch (garbage collection) and labelled for the operator's watches.
    let owners = job.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Dispatch", name)
    );
    assert_eq!(Some(&owners[0].uid), created.metadata.uid.as_ref());
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(
        job.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("vexa-operator")
    );
    assert_eq!(
        job.labels().get("vexa.ai/dispatch").map(String::as_str),
        Some(name)
    );

    // One pod, never retried, bounded in time, removed after the TTL.
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.ttl_seconds_after_finished, Some(5));
    assert_eq!(
        spec.active_deadline_seconds,
        Some(3600),
        "the golden runner's maxLifetimeSeconds"
    );
    assert_eq!(spec.suspend, Some(false));

    // Locked down: no API token, non-root, read-only root, no privilege, no capabilities.
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(
        (psc.run_as_non_root, psc.run_as_user, psc.fs_group),
        (Some(true), Some(65532), Some(65532))
    );
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    // Two containers: the trusted worker (a native sidecar, started first) and the agent's,
    // sharing no process namespace.
    assert_eq!(pod.share_process_namespace, Some(false));
    let init = pod.init_containers.as_deref().unwrap_or_default();
    let names: Vec<&str> = init
        .iter()
        .chain(&pod.containers)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["worker", "agent"]);
    let (worker, agent) = (&init[0], &pod.containers[0]);
    assert_eq!(worker.restart_policy.as_deref(), Some("Always"));
    assert_eq!(worker.image.as_deref(), Some(fake_worker_image()));
    assert_eq!(worker.command, Some(vec!["vexa-agent-worker".to_owned()]));
    assert_eq!(agent.image.as_deref(), Some(fake_worker_image()));
    assert_eq!(agent.command, Some(vec!["vexa-agent-shim".to_owned()]));
    for c in [worker, agent] {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
    }
    // The run's resources are the agent's; the worker has the operator's small default.
    let resources = serde_json::to_value(agent.resources.as_ref().unwrap()).unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    let resources = serde_json::to_value(worker.resources.as_ref().unwrap()).unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "512Mi"}})
    );
    let mounts_of =
        |c: &k8s_openapi::api::core::v1::Container| -> BTreeMap<String, (Option<String>, bool)> {
            c.volume_mounts
                .iter()
                .flatten()
                .map(|m| {
                    (
                        m.mount_path.clone(),
                        (m.sub_path.clone(), m.read_only.unwrap_or(false)),
                    )
                })
                .collect()
        };
    let (worker_mounts, agent_mounts) = (mounts_of(worker), mounts_of(agent));
    for mounts in [&worker_mounts, &agent_mounts] {
        assert_eq!(
            mounts.get("/workspaces/alice-notes"),
            Some(&(Some("alice/notes".to_owned()), false))
        );
        assert!(mounts.contains_key("/tmp"), "{mounts:?}");
        assert!(mounts.contains_key("/var/run/vexa/agent"), "{mounts:?}");
    }
    assert!(agent_mounts.contains_key("/home/agent"), "{agent_mounts:?}");
    assert_eq!(
        worker_mounts.get("/var/run/vexa/dispatch"),
        Some(&(None, true)),
        "the dispatch's Secret, read-only, in the worker only"
    );
    assert!(!agent_mounts.contains_key("/var/run/vexa/dispatch"));

    // The worker contract (SPEC §4).
    let env = env_of(job);
    let id = format!("{}/{name}", w.ns.name);
    assert_eq!(
        json_of(&env["VEXA_START"]),
        json!({"entrypoint": {"inline": "sleep 4; idle"}})
    );
    assert_eq!(env["VEXA_UNIT_ID"], id);
    assert_eq!(env["VEXA_UNIT_TRIGGER"], "message");
    assert_eq!(env["VEXA_UNIT_OUT_TOPIC"], format!("unit:{id}:out"));
    assert_eq!(env["VEXA_UNIT_IN_TOPIC"], format!("unit:{id}:in"));
    assert_eq!(
        json_of(&env["VEXA_WORKSPACES"]),
        json!([{"name": "alice-notes", "id": "alice-notes", "mode": "rw", "path": "/workspaces/alice-notes"}])
    );
    assert_eq!(env["VEXA_WORKSPACE_PATH"], "/workspaces/alice-notes");
    assert_eq!(env["VEXA_OWNER"], "alice");
    assert_eq!(env["VEXA_LAUNCHER"], "user:alice");
    assert_eq!(env["VEXA_RUNNER"], w.runner);
    assert_eq!(
        json_of(&env["VEXA_CONTEXT"]),
        json!({"kind": "none", "session": "main"})
    );
    assert_eq!(env["VEXA_CHAT_SESSION"], "main");
    assert_eq!(env["VEXA_IDLE_TIMEOUT_SEC"], "120");
    assert!(env["REDIS_URL"].starts_with("redis://"), "{env:?}");
    assert!(
        !env.contains_key("VEXA_TOKEN"),
        "the dispatch token never reaches the agent container"
    );

    // Its credentials Secret, owned the same way.
    let secret = w
        .api::<Secret>()
        .get(&format!("{name}-credentials"))
        .await
        .expect("the dispatch's Secret");
    assert_eq!(
        secret.owner_references()[0].uid,
        created.metadata.uid.clone().unwrap()
    );

    // The pod really runs as the agent user.
    let running = w.wait_phase(name, "running").await;
    let pod_name = running
        .status
        .as_ref()
        .unwrap()
        .pod_name
        .clone()
        .expect("status.podName while running");
    assert!(pod_name.starts_with(&format!("{name}-")), "{pod_name}");
    // The worker is ready (so the run is `running`) before the agent container has started;
    // it prints who it runs as once it has, so its log is waited for, not read once.
    let pods = w.api::<Pod>();
    let logs = wait_for(
        "the worker to say who it runs as",
        Duration::from_secs(60),
        || {
            let (pods, pod_name) = (pods.clone(), pod_name.clone());
            async move {
                let params = LogParams {
                    container: Some("worker".into()),
                    ..LogParams::default()
                };
                let logs = pods.logs(&pod_name, &params).await.ok()?;
                logs.contains("uid=").then_some(logs)
            }
        },
    )
    .await;
    assert!(logs.contains("uid=65532 gid=65532"), "{logs}");

    let row = w.kubectl_row(name);
    assert_eq!(
        row.get("PHASE").map(String::as_str),
        Some("running"),
        "{row:?}"
    );

    // The run ends on its own: idle timeout.
    let done = w.wait_finished(name).await;
    let s = done.status.clone().unwrap();
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
    assert_eq!(s.exit_code, Some(0));
    assert!(
        log.saw_in_order_within(&["starting", "running", "stopped"], Duration::from_secs(10))
            .await,
        "phases: {:?}",
        log.phases()
    );
    let (start, stop) = (
        s.start_time.clone().expect("startTime").0,
        s.stop_time.clone().expect("stopTime").0,
    );
    assert!(start <= stop, "{start} > {stop}");
    assert!(
        stop.duration_since(start).as_secs_f64() >= 3.0,
        "it slept 4 s: {start} → {stop}"
    );
    assert_eq!(s.job_name.as_deref(), Some(name));
    assert_eq!(s.pod_name.as_deref(), Some(pod_name.as_str()));
    assert_eq!(
        serde_json::to_value(s.trust).unwrap(),
        json!("trusted"),
        "an rw run is trusted"
    );
    let streams = s.streams.clone().expect("status.streams");
    assert_eq!(
        (streams.out, streams.input),
        (format!("unit:{id}:out"), format!("unit:{id}:in"))
    );
    assert_eq!(
        s.session_ref.as_deref(),
        Some(".claude/sessions/main.session")
    );
    assert_eq!(s.observed_generation, Some(1));
    for (t, expected) in [
        ("Valid", "True"),
        ("Authorized", "True"),
        ("Finished", "True"),
        ("Ready", "False"),
    ] {
        assert_eq!(
            condition(&done, t).map(|c| c.0).as_deref(),
            Some(expected),
            "{t}: {:?}",
            s.conditions
        );
    }
    assert_eq!(condition(&done, "Finished").unwrap().1, "Succeeded");
    if phase(&done) == "stopped" {
        let row = w.kubectl_row(name);
        assert_eq!(
            row.get("PHASE").map(String::as_str),
            Some("stopped"),
            "{row:?}"
        );
        assert_eq!(
            row.get("REASON").map(String::as_str),
            Some("idle_timeout"),
            "{row:?}"
        );
    }
    assert!(w.jobs().await.len() <= 1, "never a second Job");
    assert!(w.pods_of(name).await.len() <= 1, "never a second pod");
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn an_untrusted_trigger_that_writes_is_refused_and_creates_nothing() {
    let w = World::new("refused").await;
    let mut d = w.chat("from-email", "idle");
    d.spec.trigger = Trigger::Event;
    d.spec.workspaces = vec![WorkspaceUse {
        name: "alice-notes".into(),
        mode: Some(WorkspaceMode::ReadWrite),
    }];
    w.create(&d).await;

    let refused = w.wait_phase("from-email", "refused").await;
    let (status, reason, message) =
        condition(&refused, "Authorized").expect("an Authorized condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UntrustedTriggerWrites")
    );
    assert!(
        message.contains("propose-only") && message.contains("\"alice-notes\""),
        "{message}"
    );

    let events: Api<Event> = w.api();
    let warning = wait_for(
        "a Warning event on the Dispatch",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some("from-email")
                    && e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("UntrustedTriggerWrites")
            })
        },
    )
    .await;
    assert!(warning.message.unwrap_or_default().contains("propose-only"));

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(w.jobs().await.is_empty(), "a refused dispatch has no Job");
    assert!(
        w.managed_secrets().await.is_empty(),
        "a refused dispatch has no Secret"
    );
    let later = w.dispatches.get("from-email").await.unwrap();
    assert_eq!(phase(&later), "refused");
    assert_eq!(later.status.unwrap().job_name, None);
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_second_writer_queues_until_the_first_stops_while_a_reader_never_waits() {
    let w = World::new("queue").await;
    let workspaces: Api<Workspace> = w.api();
    let first_log = PhaseLog::start(&w.dispatches, "first");
    w.create(&w.chat("first", "sleep 12")).await;
    w.wait_phase("first", "running").await;
    let held = workspaces.get("alice-notes").await.unwrap();
    assert_eq!(
        held.status.and_then(|s| s.held_by).as_deref(),
        Some("first")
    );

    let second_log = PhaseLog::start(&w.dispatches, "second");
    w.create(&w.chat("second", "sleep 1")).await;
    let queued = w.wait_phase("second", "queued").await;
    let (status, reason, message) = condition(&queued, "Queued").expect("a Queued condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "WorkspaceBusy")
    );
    assert!(message.contains("\"first\""), "{message}");
    assert!(
        w.jobs().await.iter().all(|j| j.name_any() != "second"),
        "a queued dispatch has no Job"
    );

    // A reader of the same workspace starts at once, while the writer still waits.
    let reader_log = PhaseLog::start(&w.dispatches, "reader");
    let mut reader = w.chat("reader", "sleep 1");
    reader.spec.workspaces[0].mode = Some(WorkspaceMode::ReadOnly);
    w.create(&reader).await;
    let reader_started = wait_dispatch(&w.dispatches, "reader", "a Job", PHASE_TIMEOUT, |d| {
        d.status.as_ref().is_some_and(|s| s.job_name.is_some())
    })
    .await;
    assert_eq!(
        serde_json::to_value(reader_started.status.unwrap().trust).unwrap(),
        json!("proposeOnly")
    );
    let second_now = w.dispatches.get("second").await.unwrap();
    let first_now = w.dispatches.get("first").await.unwrap();
    assert_eq!(
        phase(&second_now),
        "queued",
        "the writer still waits while the reader starts"
    );
    assert!(
        stop_reason(&first_now).is_empty(),
        "the first writer still runs: {}",
        describe(&first_now)
    );

    // The first writer ends; the second takes the workspace.
    let first_done = w.wait_finished("first").await;
    assert_eq!(stop_reason(&first_done), "completed");
    let second_started = w.wait_phase("second", "running").await;
    let s = second_started.status.clone().unwrap();
    assert_eq!(
        condition(&second_started, "Queued").map(|c| (c.0, c.1)),
        Some(("False".into(), "WorkspaceClaimed".into()))
    );
    assert!(
        s.start_time.unwrap().0 >= first_done.status.unwrap().stop_time.unwrap().0,
        "the second writer started only after the first stopped"
    );
    let reader_done = w.wait_finished("reader").await;
    assert_eq!(stop_reason(&reader_done), "completed");
    let second_done = w.wait_finished("second").await;
    assert_eq!(stop_reason(&second_done), "completed");

    assert!(
        !first_log.phases().contains(&"queued".to_owned()),
        "first: {:?}",
        first_log.phases()
    );
    assert!(
        second_log
            .saw_in_order_within(
                &["queued", "starting", "running", "stopped"],
                Duration::from_secs(10)
            )
            .await,
        "second: {:?}",
        second_log.phases()
    );
    assert!(
        !reader_log.phases().contains(&"queued".to_owned()),
        "reader: {:?}",
        reader_log.phases()
    );
    wait_for(
        "the workspace to be released",
        Duration::from_secs(30),
        || async {
            let ws = workspaces.get("alice-notes").await.ok()?;
            ws.status.and_then(|s| s.held_by).is_none().then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn deleting_a_running_dispatch_removes_its_job_pod_and_secret() {
    let w = World::new("delete").await;
    w.create(&w.chat("doomed", "sleep 300")).await;
    let running = w.wait_phase("doomed", "running").await;
    let pod_name = running.status.unwrap().pod_name.expect("podName");
    assert_eq!(w.managed_secrets().await.len(), 1);

    w.dispatches
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the Job, pod and Secret to be garbage-collected",
        Duration::from_secs(90),
        || async {
            let job = w.api::<Job>().get_opt("doomed").await.ok()?;
            let pod = w.api::<Pod>().get_opt(&pod_name).await.ok()?;
            let secrets = w.managed_secrets().await;
            (job.is_none() && pod.is_none() && secrets.is_empty()).then_some(())
        },
    )
    .await;
    assert!(w.dispatches.get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_run_over_its_memory_limit_stops_with_oom() {
    let w = World::new("oom").await;
    let mut d = w.chat("hungry", "oom");
    let limits = d.spec.limits.get_or_insert_with(Default::default);
    limits.resources = Some(
        serde_json::from_value(
            json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}),
        )
        .unwrap(),
    );
    w.create(&d).await;
    let done = w.wait_finished("hungry").await;
    assert_eq!(stop_reason(&done), "oom", "{}", describe(&done));
    let (status, reason, message) = condition(&done, "Finished").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Failed"));
    assert!(message.contains("memory"), "{message}");
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_run_past_its_lifetime_stops_with_max_lifetime() {
    let w = World::new("deadline").await;
    let mut d = w.chat("slow", "sleep 60");
    d.spec
        .limits
        .get_or_insert_with(Default::default)
        .max_lifetime_seconds = Some(5);
    w.create(&d).await;
    let done = w.wait_finished("slow").await;
    assert_eq!(stop_reason(&done), "max_lifetime", "{}", describe(&done));
    let s = done.status.unwrap();
    let stop = s.stop_time.expect("stopTime").0;
    let created = done.metadata.creation_timestamp.unwrap().0;
    assert!(
        stop.duration_since(created).as_secs_f64() < 50.0,
        "stopped long before the 60 s sleep: {created} → {stop}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_stop_request_stops_the_run_and_removes_its_pod() {
    let w = World::new("stop").await;
    let log = PhaseLog::start(&w.dispatches, "stoppable");
    w.create(&w.chat("stoppable", "sleep 300")).await;
    let running = w.wait_phase("stoppable", "running").await;
    let pod_name = running.status.unwrap().pod_name.expect("podName");

    let patch = json!({"spec": {"stop": true}});
    w.dispatches
        .patch("stoppable", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let done = w.wait_finished("stoppable").await;
    assert_eq!(stop_reason(&done), "stopped", "{}", describe(&done));
    assert!(
        log.saw_in_order_within(&["running", "stopping", "stopped"], Duration::from_secs(10))
            .await,
        "phases: {:?}",
        log.phases()
    );
    assert_eq!(condition(&done, "Finished").unwrap().1, "Succeeded");
    wait_for("the pod to be gone", Duration::from_secs(60), || async {
        w.api::<Pod>()
            .get_opt(&pod_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let stop = done.status.unwrap().stop_time.unwrap().0;
    let asked = done.metadata.creation_timestamp.unwrap().0;
    assert!(
        stop.duration_since(asked).as_secs_f64() < 290.0,
        "stopped long before the sleep ended"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_failing_worker_stops_the_run_as_failed_with_its_exit_code() {
    let w = World::new("failed").await;
    w.create(&w.chat("broken", "echo about to fail; exit 3"))
        .await;
    let done = w.wait_finished("broken").await;
    assert_eq!(stop_reason(&done), "failed", "{}", describe(&done));
    assert_eq!(done.status.as_ref().unwrap().exit_code, Some(3));
    let (status, reason, message) = condition(&done, "Finished").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Failed"));
    assert!(message.contains("code 3"), "{message}");
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_finished_dispatch_keeps_its_status_after_its_job_is_gone() {
    let w = World::new("ttl").await;
    let log = PhaseLog::start(&w.dispatches, "short");
    w.create(&w.chat("short", "exit 0")).await;
    let done = w.wait_finished("short").await;
    assert_eq!(stop_reason(&done), "completed", "{}", describe(&done));
    let destroyed = w.wait_phase("short", "destroyed").await;
    assert!(
        w.api::<Job>().get_opt("short").await.unwrap().is_none(),
        "the Job's TTL removed it"
    );
    assert!(
        log.saw_in_order_within(&["stopped", "destroyed"], Duration::from_secs(10))
            .await,
        "phases: {:?}",
        log.phases()
    );
    assert!(
        w.managed_secrets().await.is_empty(),
        "the run's credentials went with its Job"
    );
    let (before, after) = (done.status.unwrap(), destroyed.status.unwrap());
    assert_eq!(after.stop_reason, before.stop_reason);
    assert_eq!(after.exit_code, Some(0));
    assert_eq!(
        (after.start_time.is_some(), after.stop_time.is_some()),
        (true, true)
    );
    assert_eq!(
        (after.job_name, after.pod_name),
        (before.job_name, before.pod_name)
    );
    assert_eq!(
        after
            .conditions
            .iter()
            .find(|c| c.type_ == "Finished")
            .map(|c| c.reason.as_str()),
        Some("Succeeded")
    );
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn workspaces_are_writable_only_in_rw_and_the_root_filesystem_never() {
    let w = World::new("mounts").await;
    workspace(
        &w.client,
        &w.ns.name,
        "team-handbook",
        "team/handbook",
        "ro",
    )
    .await;
    workspace_ready(&w.client, &w.ns.name, "team-handbook").await;
    let ro = |name: &str, prompt: &str| {
        let mut d = w.chat(name, prompt);
        d.spec.workspaces = vec![WorkspaceUse {
            name: "team-handbook".into(),
            mode: Some(WorkspaceMode::ReadOnly),
        }];
        d
    };
    let mut writer = w.chat(
        "writer",
        "write /workspaces/alice-notes/hello.md hello; write /tmp/scratch ok",
    );
    writer.spec.workspaces.push(WorkspaceUse {
        name: "team-handbook".into(),
        mode: None,
    });
    w.create(&writer).await;
    w.create(&ro("reader", "write /workspaces/team-handbook/x no"))
        .await;
    w.create(&ro("rootfs", "write /usr/local/x no")).await;

    let done = w.wait_finished("writer").await;
    assert_eq!(
        stop_reason(&done),
        "completed",
        "rw workspace and /tmp are writable: {}",
        describe(&done)
    );
    for name in ["reader", "rootfs"] {
        let done = w.wait_finished(name).await;
        assert_eq!(stop_reason(&done), "failed", "{}", describe(&done));
        let message = condition(&done, "Finished").unwrap().2;
        assert!(
            message.contains("Read-only file system"),
            "{name}: {message}"
        );
    }
}
