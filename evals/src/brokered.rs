//! What the evals that run a real agent CLI share: an in-process operator whose model gateway
//! listens on the node's address, the runner's credential in the operator's namespace, a fake
//! model on this machine's loopback (only the gateway, running here, reaches it), and the
//! stream of a dispatch read until its turn is complete.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use vexa_stream::follow::{EntryId, follow};
use vexa_stream::{Event, UnitEvent};

use crate::fixtures::{free_port, node_ip};
use crate::operator::Operator;
use crate::{TestNamespace, cluster_env};

/// The credential the runner brokers: it may reach the model endpoint and nothing else.
pub const REAL_KEY: &str = "sk-eval-real-key-never-in-a-tenant-namespace";
/// The Secret (in the operator's namespace) and key holding [`REAL_KEY`].
pub const KEY_SECRET: (&str, &str) = ("model-key", "api-key");

/// Starts (once per process) the operator with its model gateway for `home`, the operator's
/// namespace, and puts the runner's credential there; returns the gateway's base URL.
pub async fn operator_with_gateway(client: &Client, home: &TestNamespace) -> String {
    static OPERATOR: OnceLock<(Operator, String)> = OnceLock::new();
    let redis_url = cluster_env("POD_REDIS_URL");
    // Kept for the life of the process, like every eval's operator: the namespaces'
    // Workspaces carry its finalizer when they go.
    let (operator, gateway) = OPERATOR.get_or_init(|| {
        let port = free_port();
        let gateway = format!("http://{}:{port}", node_ip());
        let operator = Operator::start(&[
            "--job-ttl-seconds",
            "30",
            "--redis-url",
            &redis_url,
            "--namespace",
            &home.name,
            "--model-gateway-addr",
            &format!("0.0.0.0:{port}"),
            "--model-gateway-url",
            &gateway,
        ]);
        (operator, gateway)
    });
    operator.ready().await;
    Api::<Secret>::namespaced(client.clone(), &home.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": KEY_SECRET.0},
                "stringData": {KEY_SECRET.1: REAL_KEY},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    gateway.clone()
}

/// The `modelCredential` of a runner whose model is `endpoint`, with [`REAL_KEY`].
pub fn model_credential(endpoint: &str) -> serde_json::Value {
    json!({
        "secretRef": {"name": KEY_SECRET.0, "key": KEY_SECRET.1},
        "env": "ANTHROPIC_API_KEY",
        "endpoint": endpoint,
    })
}

/// The events of dispatch `ns/name` from the start of its stream up to the `turn-complete` of
/// turn `turn` (`t0`, `t1`, …), within `timeout`.
pub async fn events_of_turn(
    redis: &redis::Client,
    ns: &str,
    name: &str,
    turn: &str,
    timeout: Duration,
) -> Vec<Event> {
    let topic = vexa_policy::names::out_topic(&vexa_policy::names::dispatch_id(ns, name));
    let stream = follow::<UnitEvent>(redis.clone(), topic.clone(), EntryId::ZERO);
    let mut stream = std::pin::pin!(stream);
    let mut seen = Vec::new();
    let collected = tokio::time::timeout(timeout, async {
        while let Some(item) = stream.next().await {
            let (_, e) = item.expect("a well-formed unit event");
            let this_turn = e.turn_id.to_string() == turn;
            if this_turn {
                seen.push(e.event.clone());
            }
            if this_turn && matches!(e.event, Event::TurnComplete {}) {
                return;
            }
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "no turn-complete of {turn} on {topic} within {timeout:?}; saw {seen:#?}"
    );
    seen
}
