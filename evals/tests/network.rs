//! Eval 6 of the Stage 2 walls (issue "close the boundaries"): what an agent's pod can reach on
//! the network. The chart's NetworkPolicies, rendered by `helm template` exactly as they ship,
//! are applied to the eval's tenant namespace; a prompt-injected test agent then tries the API
//! server (its ClusterIP and its endpoint), a listener in another pod of the namespace (by pod
//! IP and through its Service), and DNS. The same agent runs once before the policies exist, so
//! every probe that must fail is first shown to succeed. Its run still streams through Redis.
//!
//! Traffic goes only to this cluster's own addresses: the API server, a pod of this eval, the
//! cluster DNS. Nothing outside, no metadata address.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use vexa_crds::Dispatch;
use vexa_evals::brokered::{KEY_SECRET, REAL_KEY, model_credential};
use vexa_evals::fake_model::{FakeModel, Step};
use vexa_evals::fixtures::{
    chat_dispatch, describe, fake_worker_image, free_port, node_ip, stop_reason, test_agent_runner,
    wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, network, wait_for};
use vexa_stream::follow::{EntryId, follow};
use vexa_stream::{Event, UnitEvent};

const TIMEOUT: Duration = Duration::from_secs(180);
const LISTENER_PORT: u16 = 8080;

/// The reply of turn `t0` of `name`, read from its stream (so the worker reached Redis).
async fn first_reply(ns: &str, name: &str) -> String {
    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let topic = vexa_policy::names::out_topic(&vexa_policy::names::dispatch_id(ns, name));
    let stream = follow::<UnitEvent>(redis, topic.clone(), EntryId::ZERO);
    let mut stream = std::pin::pin!(stream);
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(item) = stream.next().await {
            let (_, e) = item.expect("a well-formed unit event");
            if let Event::Done { reply, .. } = e.event {
                return reply;
            }
        }
        String::new()
    })
    .await;
    found.unwrap_or_else(|_| panic!("no done event on {topic} within {TIMEOUT:?}"))
}

/// The API server as a pod sees it: the `kubernetes` Service's ClusterIP and port, and the
/// address the Service sends that to (on this cluster, the node's 10.88.0.1:6443).
async fn api_server(client: &kube::Client) -> (String, String) {
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap();
    let spec = svc.spec.unwrap();
    let cluster = format!(
        "{}:{}",
        spec.cluster_ip.unwrap(),
        spec.ports.unwrap()[0].port
    );
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .unwrap();
    let slice = &slices.items[0];
    let endpoint = format!(
        "{}:{}",
        slice.endpoints.as_ref().unwrap()[0].addresses[0],
        slice.ports.as_ref().unwrap()[0].port.unwrap()
    );
    (cluster, endpoint)
}

/// A plain TCP listener in its own pod of the namespace (and a Service in front of it): another
/// workload an agent must not reach. Returns its pod IP.
async fn listener(client: &kube::Client, ns: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "listener", "labels": {"app": "listener"}},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "httpd", "image": fake_worker_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", format!("exec httpd -f -p {LISTENER_PORT} -h /tmp")],
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}},
                "readinessProbe": {"tcpSocket": {"port": LISTENER_PORT}, "periodSeconds": 1},
            }],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "listener"},
        "spec": {"selector": {"app": "listener"},
            "ports": [{"port": 80, "targetPort": LISTENER_PORT}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    wait_for("the listener pod to be ready", TIMEOUT, || async {
        let p = pods.get("listener").await.ok()?;
        let status = p.status?;
        let ready = status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(status.pod_ip?)
    })
    .await
}

/// Runs one dispatch of the test agent with `prompt` and returns its reply once it has
/// stopped (its workspace is free again for the next one).
async fn run_agent(
    client: &kube::Client,
    ns: &str,
    runner: &str,
    name: &str,
    prompt: &str,
) -> String {
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), ns);
    let mut dispatch = chat_dispatch(name, runner, prompt);
    // Idle for 3 s after its turn, the run ends and frees the workspace.
    dispatch
        .spec
        .limits
        .get_or_insert_default()
        .idle_timeout_seconds = Some(3);
    dispatches
        .create(&PostParams::default(), &dispatch)
        .await
        .unwrap();
    let reply = first_reply(ns, name).await;
    let done = wait_dispatch(&dispatches, name, "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
    reply
}

/// The line of `reply` that reports on `target` (`connect T: …` or `resolve T: …`).
fn outcome<'r>(reply: &'r str, step: &str, target: &str) -> &'r str {
    let prefix = format!("{step} {target}: ");
    reply
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in the agent's reply:\n{reply}"))
}

#[tokio::test]
#[ignore = "needs a cluster that enforces NetworkPolicies (hack/cluster up runs kube-router), the worker image, and KUBECONFIG from hack/cluster env"]
async fn an_agent_reaches_dns_and_redis_but_not_the_api_server_or_other_pods() {
    let client = client().await;
    let home = TestNamespace::new(&client, "network-operator").await;
    let tenant = TestNamespace::new(&client, "network").await;
    let redis_url = cluster_env("POD_REDIS_URL");
    // The model gateway runs in this process, on the node's address: the policies must let
    // the agent's model requests through to it (and only to it).
    let gateway_port = free_port();
    let gateway = format!("http://{}:{gateway_port}", node_ip());
    // One incarnation without the network gate for the open run, one with it for the run
    // under the policies (a gated worker in a namespace without policies would wait in vain).
    let start_operator = |gate_seconds: &str| {
        Operator::start(&[
            "--job-ttl-seconds",
            "30",
            "--redis-url",
            &redis_url,
            "--namespace",
            &home.name,
            "--model-gateway-addr",
            &format!("0.0.0.0:{gateway_port}"),
            "--model-gateway-url",
            &gateway,
            "--await-network-policy-seconds",
            gate_seconds,
        ])
    };
    let operator = start_operator("0");
    operator.ready().await;
    Api::<Secret>::namespaced(client.clone(), &home.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": KEY_SECRET.0},
                "stringData": {KEY_SECRET.1: REAL_KEY},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let model = FakeModel::start(
        "127.0.0.1:0",
        vec![Step::Text {
            text: "past the wall".into(),
        }],
    )
    .await;

    let runner = format!("network-{}", tenant.name);
    test_agent_runner(
        &client,
        &tenant,
        &runner,
        json!({"modelCredential": model_credential(&model.url)}),
    )
    .await;
    workspace_volume(&client, &tenant.name).await;
    workspace(&client, &tenant.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&client, &tenant.name, "alice-notes").await;
    let listener_ip = listener(&client, &tenant.name).await;
    let (api_cluster_ip, api_endpoint) = api_server(&client).await;
    let listener_pod = format!("{listener_ip}:{LISTENER_PORT}");
    let listener_svc = format!("listener.{}.svc.cluster.local:80", tenant.name);
    let dns_name = "kubernetes.default.svc.cluster.local";

    // What a prompt-injected agent tries first, one line each; the API server comes first, as
    // an attacker would go for it at once.
    let probes = [
        format!("connect {api_cluster_ip}"),
        format!("connect {api_endpoint}"),
        format!("connect {listener_pod}"),
        format!("connect {listener_svc}"),
        format!("resolve {dns_name}"),
        "model hello".to_owned(),
    ]
    .join("\n");

    // Before the policies: every path is open (so each check below can fail).
    let open = run_agent(&client, &tenant.name, &runner, "before", &probes).await;
    for target in [&api_cluster_ip, &api_endpoint, &listener_pod, &listener_svc] {
        let line = outcome(&open, "connect", target);
        assert!(line.contains(": connected to "), "without policies: {line}");
    }

    // The chart's policies for this namespace. On this cluster DNS, Redis and (for an
    // in-process operator) the model gateway are host processes on the node's address.
    let node = api_endpoint.split(':').next().unwrap().to_owned();
    let policies = network::render(
        &tenant.name,
        &[
            format!("networkPolicy.dns.peers[0].ipBlock.cidr={node}/32"),
            format!("networkPolicy.redis.peers[0].ipBlock.cidr={node}/32"),
            format!("networkPolicy.modelGateway.peers[0].ipBlock.cidr={node}/32"),
            format!("modelGateway.port={gateway_port}"),
        ],
    );
    assert!(policies.contains("kind: NetworkPolicy"), "{policies}");
    let dry = network::apply(&policies, true).expect("the policies pass a server-side dry run");
    assert!(dry.contains("(server dry run)"), "{dry}");
    network::apply(&policies, false).expect("the policies apply");

    // kube-router binds a new pod to its policy only once it has seen the pod's IP (the
    // kubelet's status update after the CNI), so a pod's very first packets may precede it:
    // measured here, a probe at container start reached the API server and the same probe a
    // second later was refused. The operator's --await-network-policy-seconds makes each
    // pod's worker hold the agent until the API server no longer answers the pod, so the
    // agent below probes at once, as an attacker would, with no pause.
    operator.kill().await;
    let operator = start_operator("20");
    operator.ready().await;
    let closed = run_agent(&client, &tenant.name, &runner, "after", &probes).await;
    eprintln!("under the policies the agent replied:\n{closed}");
    for target in [&api_cluster_ip, &api_endpoint, &listener_pod, &listener_svc] {
        let line = outcome(&closed, "connect", target);
        assert!(
            line.contains(": failed ("),
            "the agent reached {target} through the policies: {line}"
        );
    }
    // DNS still answers (the Service's name resolves), and the reply came through Redis.
    let dns = outcome(&closed, "resolve", dns_name);
    assert!(
        !dns.contains("failed")
            && dns.contains(&api_cluster_ip[..api_cluster_ip.rfind(':').unwrap()]),
        "DNS under the policies: {dns}"
    );
    // Its model request went through the worker's proxy to the gateway (allowed) and back.
    assert!(
        closed.contains("The model says: "),
        "the model request under the policies:\n{closed}"
    );
    // The listener itself is still up: only the agent is walled off from it.
    assert!(
        std::net::TcpStream::connect_timeout(
            &listener_pod.parse().unwrap(),
            Duration::from_secs(3)
        )
        .is_ok()
    );
}
