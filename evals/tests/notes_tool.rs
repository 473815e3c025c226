//! The demo MCP tool server the gateway evals call (`vexa_evals::notes_tool`): it records every
//! call with what its bearer token said, and, verifying, refuses a Vexa dispatch token (what it
//! would get if the gateway forwarded the agent's credential instead of exchanging it).
//!
//! Needs the cluster's environment only for the node's address (`hack/cluster env`) and the
//! binary (`cargo build -p vexa-notes-tool`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use vexa_evals::keycloak::Keycloak;
use vexa_evals::notes_tool::{AUDIENCE, NotesTool, json_reply, mcp_request};
use vexa_policy::delegation::Scope;
use vexa_policy::token::{DispatchClaims, KeySet, RunIdentity, mint};

/// A JSON-RPC request to the tool's MCP endpoint with `authorization: Bearer <token>`: the HTTP
/// status and the body.
async fn mcp(url: &str, token: Option<&str>, request: Value) -> (u16, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    json_reply(
        client
            .request(mcp_request(url, token, &request))
            .await
            .unwrap(),
    )
    .await
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// An unsigned token shaped like the gateway's exchanged one (the tool only decodes here).
fn keycloak_shaped() -> String {
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.sig",
        enc(json!({"alg": "RS256", "typ": "JWT", "kid": "k"})),
        enc(
            json!({"iss": "http://keycloak/realms/vexa", "aud": AUDIENCE, "sub": "u-alice",
                   "preferred_username": "alice", "azp": "vexa-gateway"})
        )
    )
}

/// A real dispatch token (EdDSA, the operator's format), with the tool's audience even.
fn dispatch_token(keys: &KeySet) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = DispatchClaims::new(
        "vexa-operator",
        AUDIENCE,
        RunIdentity {
            subject: "alice".into(),
            launcher: "alice".into(),
            dispatch_id: "ns/d".into(),
            spiffe_id: "spiffe://vexa.local/ns/ns/dispatch/d".into(),
        },
        Scope {
            workspaces: vec![],
            tools: vec!["notes".into()],
            gated_tools: vec![],
            iat: now,
            exp: now + 600,
        },
    );
    mint(keys, &claims).unwrap()
}

#[tokio::test]
#[ignore = "needs `hack/cluster env` (the node's address) and `cargo build -p vexa-notes-tool`"]
async fn the_tool_reports_what_each_call_carried() {
    let tool = NotesTool::start(None).await;
    let token = keycloak_shaped();
    let (status, answer) = mcp(
        &tool.mcp_url(),
        Some(&token),
        call(1, "notes.append", json!({"text": "first"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["result"]["content"][0]["text"], "appended line 1",
        "{answer}"
    );
    let (_, answer) = mcp(
        &tool.mcp_url(),
        Some(&token),
        call(2, "notes.send", json!({"to": "bob", "text": "hi"})),
    )
    .await;
    assert_eq!(answer["result"]["content"][0]["text"], "sent to bob");

    let calls = tool.calls().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].tool, "notes.append");
    assert_eq!(calls[0].arguments, json!({"text": "first"}));
    let seen = calls[0].token.as_ref().unwrap();
    assert_eq!(seen.kind, "keycloak");
    assert!(seen.has_audience(AUDIENCE));
    assert_eq!(seen.preferred_username.as_deref(), Some("alice"));
    assert_eq!(seen.azp.as_deref(), Some("vexa-gateway"));
    assert!(!seen.verified);
    assert_eq!(tool.notes(), vec!["first"]);
    assert_eq!(tool.sent(), vec![json!({"to": "bob", "text": "hi"})]);
}

#[tokio::test]
#[ignore = "needs `hack/cluster env` (the node's address) and `cargo build -p vexa-notes-tool`"]
async fn a_verifying_tool_refuses_the_dispatch_token() {
    // The attacker's best case: the tool even trusts the keys that signed the dispatch token,
    // and the token names the tool's audience. It is still not a realm (RS256) token.
    let keys = KeySet::generate(0).unwrap();
    let jwks = serde_json::to_value(keys.jwks()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/certs", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route("/certs", get(move || async move { axum::Json(jwks) }));
        axum::serve(listener, app).await.unwrap();
    });
    let tool = NotesTool::start(Some(&jwks_url)).await;

    let send = call(1, "notes.send", json!({"to": "mallory", "text": "exfil"}));
    let (status, answer) = mcp(&tool.mcp_url(), Some(&dispatch_token(&keys)), send.clone()).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = mcp(&tool.mcp_url(), Some(&keycloak_shaped()), send.clone()).await;
    assert_eq!(status, 401, "an unsigned token passed a verifying tool");
    let (status, _) = mcp(&tool.mcp_url(), None, send).await;
    assert_eq!(status, 401, "no token passed a verifying tool");

    assert_eq!(tool.calls().await, vec![], "{}", tool.log_text());
    assert!(tool.sent().is_empty());
    server.abort();
}

#[tokio::test]
#[ignore = "needs the local cluster's Keycloak (hack/cluster env) and `cargo build -p vexa-notes-tool`"]
async fn a_verifying_tool_takes_the_realm_token_for_its_audience() {
    let kc = Keycloak::required();
    // The realm trusts this test's dispatch keys, as it trusts an operator's at its start.
    let keys = KeySet::generate(0).unwrap();
    let jwks = serde_json::to_value(keys.jwks()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            get(move || async move { axum::Json(jwks) }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    let admin = kc.admin().await;
    let alias = "vexa-dispatch";
    admin
        .upsert_dispatch_issuer(
            &kc.realm,
            alias,
            &issuer,
            &format!("{issuer}/.well-known/jwks.json"),
        )
        .await
        .unwrap();
    admin
        .ensure_subject(&kc.realm, alias, "alice")
        .await
        .unwrap();
    let gateway = kc.gateway();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = DispatchClaims::new(
        &issuer,
        &kc.realm_issuer(),
        RunIdentity {
            subject: "alice".into(),
            launcher: "alice".into(),
            dispatch_id: format!("ns/notes-{now}"),
            spiffe_id: "spiffe://vexa.local/ns/ns/dispatch/d".into(),
        },
        Scope {
            workspaces: vec![],
            tools: vec!["notes".into()],
            gated_tools: vec![],
            iat: now,
            exp: now + 600,
        },
    );
    let subject = gateway
        .jwt_grant(&mint(&keys, &claims).unwrap())
        .await
        .unwrap();
    let for_tool = gateway
        .exchange(&subject.access_token, AUDIENCE, Some(AUDIENCE))
        .await
        .unwrap();

    let tool = NotesTool::start(Some(&format!(
        "{}/realms/{}/protocol/openid-connect/certs",
        kc.url, kc.realm
    )))
    .await;
    let append = call(1, "notes.append", json!({"text": "verified"}));
    // The grant's token is alice's but not for this tool.
    let (status, _) = mcp(&tool.mcp_url(), Some(&subject.access_token), append.clone()).await;
    assert_eq!(
        status, 401,
        "a realm token without the tool's audience passed"
    );
    let (status, answer) = mcp(&tool.mcp_url(), Some(&for_tool.access_token), append).await;
    assert_eq!(status, 200, "{answer}\n{}", tool.log_text());
    let calls = tool.calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let seen = calls[0].token.as_ref().unwrap();
    assert!(
        seen.verified && seen.kind == "keycloak" && seen.has_audience(AUDIENCE),
        "{seen:?}"
    );
    assert_eq!(seen.preferred_username.as_deref(), Some("alice"));
    server.abort();
}
