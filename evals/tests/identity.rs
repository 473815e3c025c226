//! Pod identity against the local cluster's real SPIRE (issue "Trust, part 2", eval 2, the
//! operator's side): a dispatch's pod waits behind the scheduling gate `vexa.ai/identity` until
//! SPIRE holds its entry; the entry has the dispatch's SPIFFE ID, the node alias as parent and
//! exactly the two selectors (pod UID, worker container); it is gone after the run. A gated
//! look-alike pod a tenant creates (owner reference copied from the real Job, its own worker
//! image) gets no entry and stays gated. Also prints Dispatch created → entry registered → gate
//! released over several runs (p50).
//!
//! Needs `eval "$(hack/cluster env)"` (KUBECONFIG, VEXA_SPIRE_SERVER_SOCKET) and the cluster's
//! SPIRE server and agent (`hack/cluster up`); runs as root, which may open the admin socket.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use vexa_core::identity::{IDENTITY_GATE, entry_id, node_alias, spiffe_id};
use vexa_crds::{Dispatch, Workspace};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, describe, fake_runner, golden_doc, wait_dispatch,
    workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};
use vexa_spire::{Entry, EntryClient, Selector, SpiffeId};

const TIMEOUT: Duration = Duration::from_secs(120);
const TRUST_DOMAIN: &str = "vexa.local";

async fn operator() {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    let socket = cluster_env("VEXA_SPIRE_SERVER_SOCKET");
    OPERATOR
        .get_or_init(|| {
            Operator::start(&[
                "--job-ttl-seconds",
                "5",
                "--worker-image",
                FAKE_WORKER_IMAGE,
                "--spire-server-socket",
                &socket,
                "--spire-trust-domain",
                TRUST_DOMAIN,
            ])
        })
        .ready()
        .await;
}

struct World {
    client: Client,
    ns: TestNamespace,
    runner: String,
    dispatches: Api<Dispatch>,
    pods: Api<Pod>,
    spire: EntryClient,
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
        notes["metadata"]["namespace"] = json!(ns.name);
        Api::<Workspace>::namespaced(client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &serde_json::from_value(notes).unwrap(),
            )
            .await
            .expect("create the golden Workspace alice-notes");
        workspace_ready(&client, &ns.name, "alice-notes").await;
        Self {
            dispatches: Api::namespaced(client.clone(), &ns.name),
            pods: Api::namespaced(client.clone(), &ns.name),
            spire: EntryClient::new(cluster_env("VEXA_SPIRE_SERVER_SOCKET")),
            client,
            ns,
            runner,
        }
    }

    /// Our entry for the pod with `uid`, if SPIRE holds one.
    async fn entry(&self, uid: &str) -> Option<Entry> {
        let parent = SpiffeId::parse(&node_alias(TRUST_DOMAIN)).unwrap();
        let id = entry_id(uid);
        self.spire
            .list_by_parent(&parent)
            .await
            .expect("list SPIRE entries (is spire-server up? hack/cluster status)")
            .into_iter()
            .find(|e| e.id == id)
    }

    /// The pod of dispatch `name`'s Job, once it exists.
    async fn pod_of(&self, name: &str) -> Pod {
        wait_for(&format!("the pod of dispatch {name}"), TIMEOUT, || async {
            self.pods
                .list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        })
        .await
    }
}

fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|gs| gs.iter().any(|g| g.name == IDENTITY_GATE))
}

/// What one run showed: times from the Dispatch's creation (client side) to the entry in SPIRE
/// and to the gate released, each first seen by polling both every few milliseconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    entry: Duration,
    released: Duration,
}

/// Creates dispatch `name` and follows its pod until the gate is released, checking at every
/// step that the gate never goes before the entry exists. Returns the pod (as released) and
/// the entry.
async fn run_until_released(w: &World, name: &str) -> (Pod, Entry, Timing) {
    let t0 = Instant::now();
    w.dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch(name, &w.runner, "sleep 1"),
        )
        .await
        .unwrap_or_else(|e| panic!("create Dispatch {name}: {e}"));
    let pod = w.pod_of(name).await;
    let uid = pod.uid().unwrap();
    let mut entry_seen: Option<(Duration, Entry)> = None;
    loop {
        assert!(
            t0.elapsed() < TIMEOUT,
            "the gate of {} was not released within {TIMEOUT:?}: {}",
            pod.name_any(),
            describe(&w.dispatches.get(name).await.unwrap())
        );
        // The pod first, then SPIRE: a released gate seen here was released before this look
        // at SPIRE, so the entry must already be there.
        let now = w.pods.get(&pod.name_any()).await.unwrap();
        let entry = w.entry(&uid).await;
        if entry_seen.is_none()
            && let Some(e) = entry.clone()
        {
            entry_seen = Some((t0.elapsed(), e));
        }
        if !gated(&now) {
            let (at, entry) = entry_seen.expect(
                "the pod's gate was released before SPIRE held its entry: its containers could start without an identity",
            );
            return (
                now,
                entry,
                Timing {
                    entry: at,
                    released: t0.elapsed(),
                },
            );
        }
        assert!(
            now.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_none_or(|cs| !cs
                    .iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "True")),
            "a gated pod was scheduled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
#[ignore = "needs a cluster with SPIRE: run hack/test"]
async fn a_dispatch_pod_starts_only_once_its_entry_exists_and_the_entry_ends_with_the_run() {
    let w = World::new("identity").await;
    let name = "agent-alice-identity";
    let (pod, entry, timing) = run_until_released(&w, name).await;
    let uid = pod.uid().unwrap();
    eprintln!(
        "created → entry {:?} → gate released {:?}",
        timing.entry, timing.released
    );

    // The entry: the dispatch's SPIFFE ID, under the node alias, exactly the pod and its worker.
    assert_eq!(
        entry.spiffe_id.to_string(),
        spiffe_id(TRUST_DOMAIN, &w.ns.name, name)
    );
    assert_eq!(entry.parent_id.to_string(), node_alias(TRUST_DOMAIN));
    let mut selectors = entry.selectors.clone();
    selectors.sort();
    assert_eq!(
        selectors,
        vec![
            Selector::new("k8s", "container-name:worker"),
            Selector::new("k8s", format!("pod-uid:{uid}")),
        ]
    );
    // Bounded: SPIRE forgets it by itself a little after the run's deadline.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        entry.expires_at > now && entry.expires_at < now + 2 * 3600,
        "expires_at {} is not within the run's deadline plus slack (now {now})",
        entry.expires_at
    );
    // The Dispatch says so.
    let d = wait_dispatch(
        &w.dispatches,
        name,
        "IdentityRegistered=True",
        TIMEOUT,
        |d| {
            d.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "IdentityRegistered" && c.status == "True")
            })
        },
    )
    .await;
    let condition = d
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "IdentityRegistered")
        .unwrap();
    assert!(condition.message.contains(&entry.spiffe_id.to_string()));

    // A look-alike: the real pod's template with the Job's controller reference copied, but its
    // own worker image. It must get no entry and stay gated.
    let job = Api::<Job>::namespaced(w.client.clone(), &w.ns.name)
        .get(name)
        .await
        .unwrap();
    let mut spec = job.spec.unwrap().template.spec.unwrap();
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        if c.name == "worker" {
            c.image = Some("localhost/someone-elses-worker:dev".into());
        }
    }
    // Without the Job's own labels: the Job controller would count it among its pods.
    let mut labels = pod.labels().clone();
    labels.retain(|k, _| !k.contains("job-name") && !k.contains("controller-uid"));
    let look_alike: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "look-alike",
            "labels": labels,
            "ownerReferences": pod.owner_references(),
        },
        "spec": spec,
    }))
    .unwrap();
    let look_alike = w
        .pods
        .create(&PostParams::default(), &look_alike)
        .await
        .expect("create the look-alike pod");
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": labels},
        "spec": serde_json::to_value(pod.spec.clone().unwrap()).unwrap(),
    }))
    .unwrap();
    let mut orphan = orphan;
    orphan.spec.as_mut().unwrap().scheduling_gates = Some(vec![
        serde_json::from_value(json!({"name": IDENTITY_GATE})).unwrap(),
    ]);
    orphan.spec.as_mut().unwrap().node_name = None;
    let orphan = w
        .pods
        .create(&PostParams::default(), &orphan)
        .await
        .expect("create the ownerless pod");

    // The run ends, and its entry goes with it.
    wait_dispatch(&w.dispatches, name, "the run to stop", TIMEOUT, |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(vexa_crds::DispatchPhase::Stopped))
    })
    .await;
    wait_for("the entry to be removed after the run", TIMEOUT, || async {
        w.entry(&uid).await.is_none().then_some(())
    })
    .await;

    // Meanwhile (a run's worth of seconds) the look-alikes got nothing and never left the gate.
    for p in [&look_alike, &orphan] {
        let uid = p.uid().unwrap();
        assert!(
            w.entry(&uid).await.is_none(),
            "{} got a SPIRE entry",
            p.name_any()
        );
        let now = w.pods.get(&p.name_any()).await.unwrap();
        assert!(gated(&now), "{} left the gate", p.name_any());
    }
}

#[tokio::test]
#[ignore = "needs a cluster with SPIRE: run hack/test"]
async fn identity_timings() {
    let w = World::new("identity-timing").await;
    let runs: usize = std::env::var("VEXA_IDENTITY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut entry = Vec::new();
    let mut released = Vec::new();
    for i in 0..runs {
        let (_, _, t) = run_until_released(&w, &format!("timing-{i}")).await;
        entry.push(t.entry);
        released.push(t.released);
    }
    entry.sort();
    released.sort();
    let p50 = |v: &[Duration]| v[v.len() / 2];
    eprintln!(
        "identity over {runs} runs: Dispatch created → entry registered p50 {:?} (min {:?}, max {:?}); → gate released p50 {:?} (min {:?}, max {:?})",
        p50(&entry),
        entry[0],
        entry[runs - 1],
        p50(&released),
        released[0],
        released[runs - 1]
    );
}
