//! What the Dispatch evals run against: the fake worker image, a runner on it, a PVC with
//! prepared folders, Workspaces, Dispatches built from the golden chat message, and a record
//! of the phases a Dispatch goes through.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use vexa_crds::{AgentRunner, Dispatch, DispatchPhase, Workspace};

use crate::{TestNamespace, repo_root, wait_for};

/// The fake worker image (`evals/fake-worker`): a busybox script that obeys its prompt.
pub const FAKE_WORKER_IMAGE: &str = "localhost/vexa-fake-worker:dev";
/// The field manager of the objects the evals apply.
pub const EVAL_MANAGER: &str = "vexa-evals";
/// The claim the Workspaces of an eval live on.
pub const WORKSPACE_CLAIM: &str = "workspaces";

/// Builds and imports the fake worker image once per process (`evals/fake-worker/build`, which
/// skips the import when containerd already has it), and returns its name.
pub fn fake_worker_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = repo_root().join("evals/fake-worker/build");
        let out = std::process::Command::new(&script)
            .output()
            .expect("run evals/fake-worker/build");
        assert!(
            out.status.success(),
            "{} failed (it needs root and the hack/ cluster's containerd):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    FAKE_WORKER_IMAGE
}

/// The first document of a golden file, e.g. `goldens/dispatches/valid/chat-message.yaml`.
pub fn golden_doc(path: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.remove(0)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(EVAL_MANAGER).force()
}

/// Creates the AgentRunner `name`: the golden `test-agent` runner on the fake worker image,
/// with `spec` merged over it. Runners are cluster-scoped, so it is owned by the test's
/// namespace and the garbage collector removes it with the namespace.
pub async fn fake_runner(
    client: &Client,
    ns: &TestNamespace,
    name: &str,
    spec: Value,
) -> AgentRunner {
    let mut doc = golden_doc("goldens/agentrunners/valid/test-agent.yaml");
    doc["metadata"] = json!({
        "name": name,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": ns.name, "uid": ns.uid}],
    });
    doc["spec"]["image"] = json!(fake_worker_image());
    merge(&mut doc["spec"], spec);
    Api::<AgentRunner>::all(client.clone())
        .patch(name, &apply_params(), &Patch::Apply(&doc))
        .await
        .unwrap_or_else(|e| panic!("apply AgentRunner {name}: {e}"))
}

/// Creates the AgentRunner `name` from the runner the project ships for its test agent
/// (`runners/vexa-test-agent.yaml`, on the real agent worker image that
/// `hack/images/agent-worker` builds), with `spec` merged over it; owned by the test's
/// namespace like [`fake_runner`].
pub async fn test_agent_runner(
    client: &Client,
    ns: &TestNamespace,
    name: &str,
    spec: Value,
) -> AgentRunner {
    runner_from_file(client, ns, "vexa-test-agent.yaml", name, spec).await
}

/// JSON merge: `patch`'s fields replace `target`'s, recursively for objects.
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Creates the PVC [`WORKSPACE_CLAIM`] on the default StorageClass. Nothing is prepared by
/// hand: the Workspace controller makes each Workspace's folder (as the agents' non-root user).
pub async fn workspace_volume(client: &Client, ns: &str) {
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": WORKSPACE_CLAIM},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("create PVC");
}

/// Waits until the Workspace `name` is `Ready` (its folder prepared by the operator's prepare
/// Job) and returns it; a failed preparation fails the test with the Workspace's message.
pub async fn workspace_ready(client: &Client, ns: &str, name: &str) -> Workspace {
    let api = Api::<Workspace>::namespaced(client.clone(), ns);
    wait_for(
        &format!("Workspace {name} to be Ready"),
        Duration::from_secs(120),
        || async {
            let ws = api.get(name).await.ok()?;
            let ready = ws
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            if ready.reason == "PrepareFailed" {
                panic!("Workspace {name}: {}", ready.message);
            }
            (ready.status == "True").then_some(ws)
        },
    )
    .await
}

/// Creates the Workspace `name` on [`WORKSPACE_CLAIM`] at `sub_path`, with `default_mode`
/// (`ro` or `rw`).
pub async fn workspace(
    client: &Client,
    ns: &str,
    name: &str,
    sub_path: &str,
    default_mode: &str,
) -> Workspace {
    let ws: Workspace = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {
            "id": name,
            "owner": "alice",
            "defaultMode": default_mode,
            "storage": {"persistentVolumeClaim": {"claimName": WORKSPACE_CLAIM, "subPath": sub_path}},
        },
    }))
    .unwrap();
    Api::<Workspace>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &ws)
        .await
        .unwrap_or_else(|e| panic!("create Workspace {name}: {e}"))
}

/// The golden chat Dispatch (`goldens/dispatches/valid/chat-message.yaml`), renamed, on
/// `runner`, with `prompt` as its inline entrypoint (the fake worker's commands).
pub fn chat_dispatch(name: &str, runner: &str, prompt: &str) -> Dispatch {
    let mut doc = golden_doc("goldens/dispatches/valid/chat-message.yaml");
    doc["metadata"] = json!({"name": name});
    doc["spec"]["runner"] = json!(runner);
    doc["spec"]["start"] = json!({"entrypoint": {"inline": prompt}});
    serde_json::from_value(doc).expect("the golden is a Dispatch")
}

/// A phase as the API shows it (`running`, `stopped`, …).
pub fn phase_name(p: Option<DispatchPhase>) -> String {
    p.and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The phases one Dispatch went through, in order, as seen by a watch (so short-lived phases
/// are not missed the way polling could miss them).
#[derive(Debug)]
pub struct PhaseLog {
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseLog {
    /// Starts recording the phases of Dispatch `name` (which may not exist yet).
    pub fn start(api: &Api<Dispatch>, name: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let Ok(d) = event else { continue };
                let phase = phase_name(d.status.as_ref().and_then(|s| s.phase));
                let mut log = log.lock().unwrap();
                if !phase.is_empty() && log.last() != Some(&phase) {
                    log.push(phase);
                }
            }
        });
        Self { seen, task }
    }

    /// The phases so far.
    pub fn phases(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether `wanted` appear in this order (other phases may come between them).
    pub fn saw_in_order(&self, wanted: &[&str]) -> bool {
        let phases = self.phases();
        let mut it = phases.iter();
        wanted.iter().all(|w| it.any(|p| p == w))
    }

    /// Whether `wanted` appear in this order within `timeout`: the watch may deliver a phase a
    /// moment after a GET has already shown it.
    pub async fn saw_in_order_within(&self, wanted: &[&str], timeout: Duration) -> bool {
        let start = std::time::Instant::now();
        while !self.saw_in_order(wanted) {
            if start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }
}

impl Drop for PhaseLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until Dispatch `name` satisfies `done`, and returns it; on timeout, panics with the
/// status it had last.
pub async fn wait_dispatch(
    api: &Api<Dispatch>,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Dispatch) -> bool,
) -> Dispatch {
    let start = std::time::Instant::now();
    let mut last = None;
    loop {
        if let Ok(Some(d)) = api.get_opt(name).await {
            if done(&d) {
                return d;
            }
            last = Some(d);
        }
        if start.elapsed() > timeout {
            let status = last
                .as_ref()
                .map(|d| serde_json::to_string_pretty(&d.status).unwrap());
            panic!(
                "timed out after {timeout:?} waiting for dispatch {name}: {what}; last status: {}",
                status.unwrap_or_else(|| "(not found)".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The phase of a Dispatch, as the API shows it.
pub fn phase(d: &Dispatch) -> String {
    phase_name(d.status.as_ref().and_then(|s| s.phase))
}

/// A condition of a Dispatch: `(status, reason, message)`.
pub fn condition(d: &Dispatch, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The stop reason of a Dispatch, as the API shows it (`completed`, `oom`, …).
pub fn stop_reason(d: &Dispatch) -> String {
    d.status
        .as_ref()
        .and_then(|s| s.stop_reason)
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Short form for failure messages: `name phase/reason`.
pub fn describe(d: &Dispatch) -> String {
    format!("{} {}/{}", d.name_any(), phase(d), stop_reason(d))
}

/// A folder of a claim, on the host: the hostPath the local cluster's provisioner gave it.
pub async fn claim_folder(client: &Client, ns: &str, claim: &str, folder: &str) -> PathBuf {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(claim)
        .await
        .unwrap_or_else(|e| panic!("claim {claim}: {e}"));
    let volume = pvc.spec.and_then(|s| s.volume_name).expect("a bound claim");
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .unwrap_or_else(|e| panic!("volume {volume}: {e}"));
    PathBuf::from(
        pv.spec
            .and_then(|s| s.host_path)
            .expect("a hostPath volume")
            .path,
    )
    .join(folder)
}

/// `git` in a workspace folder, as the host's root (the repository belongs to the agents' user).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(dir)
        .args(args)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A free port on this machine for the in-process gateway.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The node's address as pods reach this machine (the host of POD_REDIS_URL).
pub fn node_ip() -> String {
    let url = crate::cluster_env("POD_REDIS_URL");
    let host = url
        .split("://")
        .nth(1)
        .unwrap()
        .split(['/', ':'])
        .next()
        .unwrap();
    host.rsplit('@').next().unwrap().to_owned()
}

/// An AgentRunner from `runners/<file>` named `name`, owned by `ns` (gone with it), with
/// `spec` merged over the file's.
pub async fn runner_from_file(
    client: &Client,
    ns: &TestNamespace,
    file: &str,
    name: &str,
    spec: Value,
) -> AgentRunner {
    let path = repo_root().join("runners").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["metadata"] = json!({
        "name": name,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": ns.name, "uid": ns.uid}],
    });
    merge(&mut doc["spec"], spec);
    Api::<AgentRunner>::all(client.clone())
        .patch(name, &apply_params(), &Patch::Apply(&doc))
        .await
        .unwrap_or_else(|e| panic!("apply AgentRunner {name}: {e}"))
}
