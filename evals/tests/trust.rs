//! Stage 2 walls around the agent, on the real cluster (issue "close the boundaries"): the
//! agent's container holds no credential and sees nothing of the trusted worker, and its model
//! requests are brokered: the worker's loopback proxy and the operator's model gateway add the
//! runner's credential, which never enters the tenant's namespace, and count the tokens into
//! the Dispatch's status. The agent is the project's test agent, asked to do what a
//! prompt-injected agent would: read the worker's variables, files and processes, and use the
//! model with whatever key it finds.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vexa_core::model::{GATEWAY_TOKEN_HEADER, GatewayToken};
use vexa_crds::Dispatch;
use vexa_evals::brokered::{REAL_KEY, model_credential, operator_with_gateway};
use vexa_evals::fixtures::{
    chat_dispatch, describe, stop_reason, test_agent_runner, wait_dispatch, workspace,
    workspace_ready, workspace_volume,
};
use vexa_evals::{TestNamespace, client, cluster_env};
use vexa_stream::follow::{EntryId, follow};
use vexa_stream::{Event, UnitEvent};

const TIMEOUT: Duration = Duration::from_secs(180);
/// What the fake model answers.
const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"usage\":{\"input_tokens\":40,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"brokered hello\"}}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":25}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A model endpoint on this machine's loopback that records each request's headers.
async fn fake_model() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(req.headers().clone());
            ([("content-type", "text/event-stream")], STREAM)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// A POST to the gateway as something other than a dispatch's worker would make it.
async fn post_gateway(gateway: &str, token: Option<&str>) -> (u16, String) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut req = axum::http::Request::post(format!("{gateway}/v1/messages"))
        .header("x-api-key", "sk-stolen-or-guessed");
    if let Some(token) = token {
        req = req.header(GATEWAY_TOKEN_HEADER, token);
    }
    let response = client
        .request(req.body(Full::new(bytes::Bytes::from("{}"))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The reply of turn `t0` of `name`.
async fn first_reply(redis: &redis::Client, ns: &str, name: &str) -> String {
    let topic = vexa_policy::names::out_topic(&vexa_policy::names::dispatch_id(ns, name));
    let stream = follow::<UnitEvent>(redis.clone(), topic.clone(), EntryId::ZERO);
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

#[tokio::test]
#[ignore = "needs a cluster: hack/cluster up, the worker image, and KUBECONFIG from hack/cluster env"]
async fn the_agent_holds_no_credential_and_its_model_requests_are_brokered() {
    let client = client().await;
    // The operator's own namespace for this run: the runner's credential and the gateway's
    // key live here, and nowhere else.
    let home = TestNamespace::new(&client, "trust-operator").await;
    let tenant = TestNamespace::new(&client, "trust-tenant").await;
    let (model, seen) = fake_model().await;
    let gateway = operator_with_gateway(&client, &home).await;
    let runner = format!("brokered-{}", tenant.name);
    test_agent_runner(
        &client,
        &tenant,
        &runner,
        json!({
            "defaults": {"idleTimeoutSeconds": 5},
            "modelCredential": model_credential(&model),
        }),
    )
    .await;
    workspace_volume(&client, &tenant.name).await;
    workspace(&client, &tenant.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&client, &tenant.name, "alice-notes").await;

    // What a prompt-injected agent tries, one line each.
    let prompt = [
        "env ANTHROPIC_API_KEY",
        "env REDIS_URL",
        "env VEXA_UNIT_ID",
        "grep vexa-agent-shim /proc/1/cmdline",
        "grep REDIS_URL /proc/1/environ",
        "read /var/run/vexa/dispatch/model-token",
        "model hello",
    ]
    .join("\n");
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &tenant.name);
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("probe", &runner, &prompt),
        )
        .await
        .unwrap();

    // While it runs: its token is in its Secret (read here as the admin).
    let secret = vexa_evals::wait_for("the dispatch's Secret", TIMEOUT, || async {
        Api::<Secret>::namespaced(client.clone(), &tenant.name)
            .get_opt("probe-credentials")
            .await
            .unwrap()
    })
    .await;
    let token = String::from_utf8(secret.data.unwrap()["model-token"].0.clone()).unwrap();
    let secret_text = serde_json::to_string(&secret.metadata).unwrap();
    assert!(!secret_text.contains(REAL_KEY));

    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let reply = first_reply(&redis, &tenant.name, "probe").await;
    for line in [
        "ANTHROPIC_API_KEY=brokered-by-vexa",
        "REDIS_URL is unset",
        "VEXA_UNIT_ID is unset",
        "/proc/1/cmdline contains vexa-agent-shim.",
        "/proc/1/environ does not contain REDIS_URL.",
        "Could not read /var/run/vexa/dispatch/model-token",
        "The model says: brokered hello",
    ] {
        assert!(
            reply.contains(line),
            "{line:?} not in the agent's reply:\n{reply}"
        );
    }
    // The model endpoint saw the real key, and neither the placeholder nor the token.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one model request");
        assert_eq!(seen[0]["x-api-key"], REAL_KEY);
        assert!(seen[0].get(GATEWAY_TOKEN_HEADER).is_none());
        assert!(seen[0].get("authorization").is_none());
    }

    // Anyone else at the gateway: no token, a token signed with another key, another
    // dispatch's name under this one's signature.
    let (status, body) = post_gateway(&gateway, None).await;
    assert_eq!(status, 401, "{body}");
    let forged = GatewayToken {
        namespace: tenant.name.clone(),
        name: "probe".into(),
        uid: "0".into(),
    }
    .sign(b"a key the operator never had");
    assert_eq!(post_gateway(&gateway, Some(&forged)).await.0, 401);
    let (_, mac) = token.rsplit_once('.').unwrap();
    let renamed = format!("{}/other/{}.{mac}", tenant.name, "0");
    assert_eq!(post_gateway(&gateway, Some(&renamed)).await.0, 401);

    // Idle, the run ends; the tokens it used are in its status, and its token is dead.
    let done = wait_dispatch(&dispatches, "probe", "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
    let usage = done
        .status
        .clone()
        .unwrap()
        .usage
        .expect("usage in the status");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.requests),
        (40, 25, 1)
    );
    let (status, body) = post_gateway(&gateway, Some(&token)).await;
    assert_eq!(status, 403, "a stopped dispatch's token is refused: {body}");
    assert!(body.contains("is not running"), "{body}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no refused request reached the model"
    );

    // Nothing of the credential in the tenant's namespace, in any Secret or the Dispatch.
    for s in Api::<Secret>::namespaced(client.clone(), &tenant.name)
        .list(&Default::default())
        .await
        .unwrap()
    {
        let text = serde_json::to_string(&s).unwrap();
        let b64 = serde_json::to_value(k8s_openapi::ByteString(REAL_KEY.into())).unwrap();
        assert!(
            !text.contains(REAL_KEY) && !text.contains(b64.as_str().unwrap()),
            "{:?}",
            s.metadata.name
        );
    }
}
