//! Pod identity, the worker's side (issue "Trust, part 2", eval 2), against the local cluster's
//! real SPIRE: the worker is the pod's native sidecar and holds its X.509 SVID before the agent
//! container starts (the SVID's time, streamed by the worker, and the worker's start are before
//! the agent container's start in the pod status), the SVID names the dispatch's SPIFFE ID, and
//! a prompt-injected agent finds no credential: not the Workload API socket (not mounted in its
//! container), and none of the dispatch Secret's values in its environment, `/proc` or any file
//! it can read. Also prints Dispatch created → SVID held → agent started.
//!
//! Needs `eval "$(hack/cluster env)"` (KUBECONFIG, REDIS_URL, VEXA_SPIRE_SERVER_SOCKET), the
//! cluster's SPIRE server and agent and the CSI driver (`hack/cluster up`), and the worker
//! image (`hack/images/agent-worker`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use vexa_core::pod::layout::secret_key;
use vexa_crds::Dispatch;
use vexa_evals::fixtures::{
    chat_dispatch, describe, test_agent_runner, wait_dispatch, workspace, workspace_ready,
    workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env};
use vexa_stream::follow::{EntryId, follow};
use vexa_stream::{Event, UnitEvent};

const TIMEOUT: Duration = Duration::from_secs(180);
const TRUST_DOMAIN: &str = "vexa.local";
/// The worker's note, before the SPIFFE ID and the time.
const SVID_NOTE: &str = "workload identity: the worker holds the X.509 SVID of ";

/// The events of turn `turn` of `topic`, up to its `turn-complete`.
async fn turn_events(redis: &redis::Client, topic: &str, turn: &str) -> Vec<Event> {
    let stream = follow::<UnitEvent>(redis.clone(), topic.to_owned(), EntryId::ZERO);
    let mut stream = std::pin::pin!(stream);
    let mut events = Vec::new();
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(item) = stream.next().await {
            let (_, e) = item.expect("a well-formed unit event");
            if e.turn_id.to_string() != turn {
                continue;
            }
            let complete = matches!(e.event, Event::TurnComplete {});
            events.push(e.event);
            if complete {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "turn {turn} of {topic} did not complete: {events:?}"
    );
    events
}

fn reply(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            Event::Done { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn second(t: &Timestamp) -> i64 {
    t.as_second()
}

#[tokio::test]
#[ignore = "needs a cluster with SPIRE: hack/cluster up, the worker image, and hack/cluster env"]
async fn the_worker_holds_its_svid_before_the_agent_starts_and_the_agent_finds_no_credential() {
    let client = client().await;
    // The operator's own namespace: its token keys live there, so every run gets a dispatch
    // token (one more credential the agent must not find).
    let home = TestNamespace::new(&client, "sidecar-home").await;
    let operator = Operator::start(&[
        "--namespace",
        &home.name,
        "--job-ttl-seconds",
        "60",
        "--redis-url",
        &cluster_env("POD_REDIS_URL"),
        "--spire-server-socket",
        &cluster_env("VEXA_SPIRE_SERVER_SOCKET"),
        "--spire-trust-domain",
        TRUST_DOMAIN,
    ]);
    operator.ready().await;
    let ns = TestNamespace::new(&client, "sidecar").await;
    let runner = format!("sidecar-{}", ns.name);
    test_agent_runner(
        &client,
        &ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": 60}}),
    )
    .await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&client, &ns.name, "alice-notes").await;

    // Turn t0: the Workload API from the agent's side.
    let prompt = [
        "read /run/spire/agent/api.sock",
        "search api.sock /run",
        "search api.sock /var/run",
    ]
    .join("\n");
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns.name);
    let created = Timestamp::now();
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("probe", &runner, &prompt),
        )
        .await
        .unwrap();
    let id = vexa_core::dispatch_id(&ns.name, "probe");
    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let t0 = turn_events(&redis, &vexa_core::out_topic(&id), "t0").await;

    // The worker's SVID: the dispatch's SPIFFE ID, and when the worker got it.
    let want_id = vexa_core::identity::spiffe_id(TRUST_DOMAIN, &ns.name, "probe");
    let note = t0
        .iter()
        .find_map(|e| match e {
            Event::Note { note } if note.starts_with(SVID_NOTE) => Some(note.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SVID note in t0: {t0:?}"));
    let held = note[SVID_NOTE.len()..].to_owned();
    let (svid_id, rest) = held.split_once(" since ").expect("… since <time>");
    assert_eq!(svid_id, want_id, "{note}");
    let svid_at: Timestamp = rest
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .expect("an RFC 3339 time");
    let t0_reply = reply(&t0);
    for line in [
        "Could not read /run/spire/agent/api.sock",
        "search /run: api.sock not found",
        "search /var/run: api.sock not found",
    ] {
        assert!(t0_reply.contains(line), "{line:?} not in:\n{t0_reply}");
    }

    // The pod: the worker (sidecar) started and got its SVID before the agent container.
    // The kubelet reports a container's start a moment after it happens (its status sync), so
    // a turn can be over before the pod says its agent runs: wait for the report.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let pod = vexa_evals::wait_for(
        "the pod to report its agent container started",
        Duration::from_secs(30),
        || async {
            pods.list(&ListParams::default().labels("job-name=probe"))
                .await
                .unwrap()
                .items
                .pop()
                .filter(|p| {
                    p.status
                        .iter()
                        .flat_map(|s| s.container_statuses.iter().flatten())
                        .any(|c| {
                            c.name == "agent"
                                && c.state.as_ref().is_some_and(|st| {
                                    st.running.is_some() || st.terminated.is_some()
                                })
                        })
                })
        },
    )
    .await;
    let status = pod.status.clone().unwrap();
    let started_at = |statuses: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                      name: &str| {
        let c = statuses
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} status: {status:?}"));
        let state = c.state.as_ref().unwrap();
        state
            .running
            .as_ref()
            .and_then(|r| r.started_at.clone())
            .or_else(|| state.terminated.as_ref().and_then(|t| t.started_at.clone()))
            .unwrap_or_else(|| panic!("{name} has not started: {c:?}"))
            .0
    };
    let worker_started = started_at(&status.init_container_statuses, "worker");
    let agent_started = started_at(&status.container_statuses, "agent");
    // The pod status has whole seconds; the worker's note has milliseconds.
    assert!(
        second(&worker_started) <= second(&svid_at),
        "worker started {worker_started}, SVID {svid_at}"
    );
    assert!(
        second(&svid_at) <= second(&agent_started),
        "the SVID ({svid_at}) came after the agent container started ({agent_started})"
    );
    assert!(worker_started <= agent_started);
    println!(
        "sidecar: Dispatch created {created} → worker started {worker_started} → SVID {svid_at} (+{} ms) → agent started {agent_started} (+{} s)",
        svid_at.duration_since(created).as_millis(),
        agent_started.duration_since(created).as_secs_f64()
    );

    // Turn t1: every value of the dispatch's Secret (its credentials: the dispatch token,
    // Redis password, model token, as many as this operator writes), searched for by the agent
    // in its environment, its processes' environments and every file it can read.
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("probe-credentials")
        .await
        .unwrap();
    let values: Vec<(String, String)> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .filter(|(_, v)| v.len() >= 8)
        .collect();
    assert!(
        values.iter().any(|(k, _)| k == secret_key::DISPATCH_TOKEN),
        "the Secret holds no dispatch token to look for: {:?}",
        values.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    println!(
        "sidecar: the agent looks for {:?}",
        values.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let mut steps = Vec::new();
    for (_, value) in &values {
        for place in ["/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"] {
            steps.push(format!("grep {value} {place}"));
        }
        for dir in [
            "/run",
            "/var/run",
            "/tmp",
            "/home/agent",
            "/workspaces",
            "/etc",
        ] {
            steps.push(format!("search {value} {dir}"));
        }
    }
    let turn = json!({"prompt": steps.join("\n")}).to_string();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(vexa_core::in_topic(&id))
        .arg("*")
        .arg("turn")
        .arg(&turn)
        .query_async(&mut conn)
        .await
        .unwrap();
    let t1 = reply(&turn_events(&redis, &vexa_core::out_topic(&id), "t1").await);
    assert!(!t1.contains("FOUND"), "the agent found a credential:\n{t1}");
    for (key, value) in &values {
        assert!(!t1.contains(&format!("contains {value}")), "{key}:\n{t1}");
    }
    assert!(t1.contains("not found ("), "{t1}");
    let stop = json!({"type": "stop"}).to_string();
    let _: String = redis::cmd("XADD")
        .arg(vexa_core::in_topic(&id))
        .arg("*")
        .arg("turn")
        .arg(&stop)
        .query_async(&mut conn)
        .await
        .unwrap();
    let done = wait_dispatch(&dispatches, "probe", "stopped", TIMEOUT, |d| {
        d.status.as_ref().and_then(|s| s.phase) == Some(vexa_crds::DispatchPhase::Stopped)
    })
    .await;
    assert_eq!(
        vexa_evals::fixtures::stop_reason(&done),
        "stopped",
        "{}",
        describe(&done)
    );
}
