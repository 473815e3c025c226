//! The Tool controller on the real cluster: a Tool whose MCP server answers becomes
//! `Reachable`/`Ready`; one pointing at a closed port is `Ready=False`, reason
//! `ServerUnreachable`, with the connection error in the message; a server that stops answering
//! shows on the Tool (and as a Warning event) at the next probe, before a run needs it; a Tool
//! pointing at the node's metadata address is never probed. Without Keycloak configured,
//! `AudienceKnown` stays `Unknown` (reason `KeycloakNotConfigured`); with it, an audience that is
//! no client of the realm, or a scope that is no client scope there, makes the Tool not ready.
//!
//! The MCP "servers" here listen on the node address (as pods reach this machine): the probe
//! refuses loopback, so the operator in this process cannot be pointed at its own ports.
//!
//! Needs `eval "$(hack/cluster env)"`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vexa_crds::Tool;
use vexa_evals::fixtures::node_ip;
use vexa_evals::keycloak::Keycloak;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

/// The probe interval the operator runs with here (the flag's minimum).
const INTERVAL: &str = "5";
const TIMEOUT: Duration = Duration::from_secs(60);

async fn operator() {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    let redis = cluster_env("POD_REDIS_URL");
    OPERATOR
        .get_or_init(|| {
            let mut flags = vec![
                "--redis-url".to_owned(),
                redis,
                "--tool-probe-interval-seconds".to_owned(),
                INTERVAL.to_owned(),
                "--tool-probe-timeout-seconds".to_owned(),
                "2".to_owned(),
            ];
            // With the cluster's Keycloak, audiences are looked up there. Keycloak refuses an
            // issuer that is not a URL; nothing fetches the keys in this eval.
            if let Some(kc) = Keycloak::from_env() {
                flags.extend(kc.operator_flags());
                flags.extend([
                    format!("--keycloak-url={}", kc.url),
                    "--token-issuer=http://127.0.0.1:9".to_owned(),
                    "--keycloak-jwks-url=http://127.0.0.1:9/.well-known/jwks.json".to_owned(),
                ]);
            }
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Operator::start(&flags)
        })
        .ready()
        .await;
}

/// Whether the local cluster's Keycloak is configured (`hack/cluster env`): the in-process
/// operator then looks audiences up in it.
fn keycloak() -> bool {
    std::env::var("VEXA_KEYCLOAK_URL").is_ok_and(|v| !v.is_empty())
}

/// An HTTP server on the node address answering every request with 401 (as an MCP server
/// behind authentication does to a request without a token), until the task is aborted.
async fn answering_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((node_ip(), 0)).await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (url, task)
}

/// A URL on the node address where nothing listens.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind((node_ip(), 0)).unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/mcp")
}

async fn create_tool(client: &Client, ns: &str, name: &str, url: &str) {
    create_tool_for(client, ns, name, url, "vexa-notes", "vexa-notes").await;
}

/// A Tool for `audience` asking for `scope` (the local realm's notes client and its client
/// scope are both `vexa-notes`: hack/keycloak).
async fn create_tool_for(
    client: &Client,
    ns: &str,
    name: &str,
    url: &str,
    audience: &str,
    scope: &str,
) {
    let tool: Tool = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Tool",
        "metadata": {"name": name},
        "spec": {"toolName": "notes.append", "scope": scope, "grant": "auto",
            "server": {"url": url}, "audience": audience},
    }))
    .unwrap();
    Api::<Tool>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &tool)
        .await
        .unwrap_or_else(|e| panic!("create Tool {name}: {e}"));
}

/// (status, reason, message) of condition `type_` once it satisfies `want`.
async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    want: impl Fn(&str, &str) -> bool,
) -> (String, String, String) {
    let tools = Api::<Tool>::namespaced(client.clone(), ns);
    let mut last = None;
    let found = tokio::time::timeout(TIMEOUT, async {
        loop {
            let tool = tools.get(name).await.unwrap();
            let c = tool.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == type_)
                    .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
            });
            if let Some(c) = &c
                && want(&c.0, &c.1)
            {
                assert_eq!(
                    tool.status.as_ref().unwrap().observed_generation,
                    tool.metadata.generation
                );
                return c.clone();
            }
            last = c;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("Tool {ns}/{name}: condition {type_} is {last:?}"))
}

#[tokio::test]
#[ignore = "needs a cluster: eval \"$(hack/cluster env)\""]
async fn a_tool_whose_server_answers_is_ready_and_one_that_stops_answering_shows_it() {
    operator().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "tools").await;
    let (url, server) = answering_server().await;
    create_tool(&client, &ns.name, "notes", &url).await;

    let (_, reason, message) =
        wait_condition(&client, &ns.name, "notes", "Reachable", |s, _| s == "True").await;
    assert_eq!(reason, "ServerAnswered");
    assert!(message.contains("HTTP 401"), "{message}");
    let (_, reason, _) =
        wait_condition(&client, &ns.name, "notes", "Ready", |s, _| s == "True").await;
    assert_eq!(reason, "Ready");
    let (status, reason, message) =
        wait_condition(&client, &ns.name, "notes", "AudienceKnown", |_, _| true).await;
    if keycloak() {
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "ClientFound"),
            "{message}"
        );
    } else {
        assert_eq!(reason, "KeycloakNotConfigured", "{message}");
    }

    // The server goes away: the next periodic probe (no change of the Tool) shows it.
    server.abort();
    let _ = server.await;
    let stopped = std::time::Instant::now();
    let (_, reason, message) =
        wait_condition(&client, &ns.name, "notes", "Ready", |s, _| s == "False").await;
    assert_eq!(reason, "ServerUnreachable", "{message}");
    eprintln!(
        "a stopped server showed on its Tool after {:.1} s (probe interval {INTERVAL} s)",
        stopped.elapsed().as_secs_f64()
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    wait_for(
        "a Warning event ServerUnreachable on the Tool",
        TIMEOUT,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.involved_object.name.as_deref() == Some("notes")
                        && e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("ServerUnreachable")
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a cluster: eval \"$(hack/cluster env)\""]
async fn a_tool_pointing_at_a_closed_port_is_not_ready_and_says_why() {
    operator().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "tools").await;
    let url = closed_url();
    create_tool(&client, &ns.name, "closed", &url).await;
    let (_, reason, message) =
        wait_condition(&client, &ns.name, "closed", "Ready", |s, _| s == "False").await;
    assert_eq!(reason, "ServerUnreachable", "{message}");
    let (status, _, message) =
        wait_condition(&client, &ns.name, "closed", "Reachable", |_, _| true).await;
    assert_eq!(status, "False");
    assert!(
        message.contains(&url) && message.to_lowercase().contains("refused"),
        "{message}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: eval \"$(hack/cluster env)\""]
async fn a_tool_pointing_at_the_metadata_address_is_never_probed() {
    operator().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "tools").await;
    create_tool(
        &client,
        &ns.name,
        "metadata",
        "http://169.254.169.254/latest/meta-data",
    )
    .await;
    let (_, reason, message) =
        wait_condition(&client, &ns.name, "metadata", "Reachable", |s, _| {
            s == "False"
        })
        .await;
    assert_eq!(reason, "ServerUnreachable");
    assert!(message.contains("does not probe"), "{message}");
}

#[tokio::test]
#[ignore = "needs a cluster with Keycloak: eval \"$(hack/cluster env)\""]
async fn an_audience_or_scope_that_keycloak_does_not_know_is_not_ready() {
    assert!(
        keycloak(),
        "VEXA_KEYCLOAK_URL is not set: run hack/cluster up with Keycloak"
    );
    operator().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "tools").await;
    let (url, _server) = answering_server().await;
    create_tool_for(&client, &ns.name, "known", &url, "vexa-notes", "vexa-notes").await;
    create_tool_for(
        &client,
        &ns.name,
        "unknown",
        &url,
        "no-such-client",
        "vexa-notes",
    )
    .await;
    // A known audience with a scope the realm has no client scope for: every exchange would be
    // refused `invalid_scope`, so it must show before a run needs it.
    create_tool_for(
        &client,
        &ns.name,
        "bad-scope",
        &url,
        "vexa-notes",
        "notes:append",
    )
    .await;
    let (status, reason, message) =
        wait_condition(&client, &ns.name, "known", "AudienceKnown", |s, _| {
            s != "Unknown"
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ClientFound"),
        "{message}"
    );
    wait_condition(&client, &ns.name, "known", "Ready", |s, _| s == "True").await;
    let (status, reason, message) =
        wait_condition(&client, &ns.name, "unknown", "AudienceKnown", |s, _| {
            s != "Unknown"
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AudienceUnknown"),
        "{message}"
    );
    assert!(
        message.contains("\"no-such-client\" is not a client of Keycloak realm"),
        "{message}"
    );
    let (_, reason, _) =
        wait_condition(&client, &ns.name, "unknown", "Ready", |s, _| s == "False").await;
    assert_eq!(reason, "AudienceUnknown");
    let (status, reason, message) =
        wait_condition(&client, &ns.name, "bad-scope", "AudienceKnown", |s, _| {
            s != "Unknown"
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ScopeUnknown"),
        "{message}"
    );
    assert!(
        message.contains("\"notes:append\" is not a client scope"),
        "{message}"
    );
    let (_, reason, _) =
        wait_condition(&client, &ns.name, "bad-scope", "Ready", |s, _| s == "False").await;
    assert_eq!(reason, "ScopeUnknown");
}
