//! The MCP gateway end to end (issue "Trust, part 3", evals 1–4), on the local cluster with the
//! real Envoy, Keycloak and SPIRE: a dispatch of the test agent (the agent worker image) calls
//! its tools through the worker's loopback endpoint, which forwards over mutual TLS with the
//! pod's SVID to Envoy and the `vexa-gateway-filter` binary, which trade the dispatch token for
//! a Keycloak token scoped to the tool.
//!
//! 1. The allowed call reaches the notes tool, which sees a Keycloak token for its audience
//!    (`vexa-notes`) issued for alice, never the dispatch token; `tools/list` answers with the
//!    Tool in scope only.
//! 2. At the gateway, with the run's real token or one made from it: a forged token (its scope
//!    widened), an expired one (signed with the operator's real key), `alg: none`, the real
//!    token from a workload with another SVID, and a Tool out of the run's scope are refused,
//!    nothing reaches the tool, and each leaves a `tool_call` record with its reason.
//! 3. The gated `notes.send` is not called; a `send` Card for alice holds its arguments.
//! 4. `kubectl vexa audit <dispatch>` shows every tool call as subject · launcher · scope
//!    between the run's admission and its end, and `audit verify` passes on both chains, the
//!    gateway's signed to its last record with the gateway's own key (which the operator
//!    publishes beside its own).
//!
//! The eval plays the attacker with SVIDs minted by the SPIRE server's admin socket (root on
//! the node; a pod cannot) and the dispatch token read from the run's Secret (an admin can).
//!
//! Needs `eval "$(hack/cluster env)"` (Keycloak, SPIRE, Envoy), the worker image
//! (`hack/images/agent-worker`) and `cargo build -p vexa-gateway-filter -p vexa-notes-tool`;
//! hack/test provides all of it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use vexa_audit::{Body, Event as AuditEvent, Line};
use vexa_core::pod::layout::secret_key;
use vexa_crds::{Card, Dispatch, Identity, Tool};
use vexa_evals::brokered::events_of_turn;
use vexa_evals::fixtures::{
    chat_dispatch, test_agent_runner, wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::gateway::{Stack, mint_svid, tools_ready};
use vexa_evals::keycloak::Keycloak;
use vexa_evals::notes_tool::{AUDIENCE, NotesTool};
use vexa_evals::operator::assert_no_operator_in_cluster;
use vexa_evals::streams::StreamsApi;
use vexa_evals::{TestNamespace, cli_binary, client, cluster_env, kubectl_vexa};
use vexa_policy::token::{DispatchClaims, KeySet, mint};
use vexa_stream::Event;

const TIMEOUT: Duration = Duration::from_secs(180);
const RUN: &str = "gw-run";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token's three parts, the middle one decoded.
fn parts(token: &str) -> (String, Value, String) {
    let mut it = token.split('.');
    let (h, p, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    (h.to_owned(), payload, s.to_owned())
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A Tool on the notes server at `url`. Its scope is the realm's client scope for the notes
/// tool (hack/keycloak/scope-vexa-notes.json), which Keycloak's exchange requires by name.
fn tool(name: &str, tool_name: &str, grant: &str, url: &str) -> Tool {
    serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Tool",
        "metadata": {"name": name},
        "spec": {
            "toolName": tool_name, "scope": AUDIENCE, "grant": grant,
            "irreversible": grant == "gate", "transport": "mcp",
            "server": {"url": url}, "audience": AUDIENCE,
        },
    }))
    .unwrap()
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

/// The gateway's records of dispatch `ns/RUN`, in order.
fn gateway_records(audit_dir: &std::path::Path, ns: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(audit_dir.join("gateway.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Line>(l).unwrap())
        .filter_map(|l| match l.body {
            Body::Record {
                effect,
                event:
                    AuditEvent::ToolCall {
                        tool,
                        decision,
                        reason,
                        ..
                    },
            } if effect.dispatch.namespace == ns && effect.dispatch.name == RUN => {
                Some((tool, decision, reason))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local cluster with Keycloak, SPIRE and Envoy, and the worker image: hack/test"]
async fn a_tool_call_crosses_the_gateway_with_an_exchanged_token_and_every_refusal_is_recorded() {
    cli_binary();
    let kc = Keycloak::required();
    let admin = client().await;
    assert_no_operator_in_cluster(&admin).await;
    let home = TestNamespace::new(&admin, "gateway-home").await;
    let ns = TestNamespace::new(&admin, "gateway").await;
    let streams = StreamsApi::register(&admin, &ns.name).await;
    let stack = Stack::start(&kc, &home.name, &streams, &[]).await;
    streams.available(&admin).await;
    let (gateway, audit_dir) = (&stack.gateway, &stack.audit_dir);
    let notes = NotesTool::start(Some(&kc.jwks_url())).await;

    // alice, her Tools (one automatic, one gated, one she does not grant the run), a runner.
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "vexa.ai/v1", "kind": "Identity",
                "metadata": {"name": "alice"}, "spec": {"subject": "alice"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let tools = Api::<Tool>::namespaced(admin.clone(), &ns.name);
    for t in [
        tool("notes-append", "notes.append", "auto", &notes.mcp_url()),
        tool("notes-send", "notes.send", "gate", &notes.mcp_url()),
        tool("notes-admin", "notes.append", "auto", &notes.mcp_url()),
    ] {
        tools.create(&PostParams::default(), &t).await.unwrap();
    }
    tools_ready(
        &admin,
        &ns.name,
        &["notes-append", "notes-send", "notes-admin"],
    )
    .await;
    let runner = format!("gw-{}", ns.name);
    test_agent_runner(&admin, &ns, &runner, json!({})).await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&admin, &ns.name, "alice-notes").await;

    // Turn t0: the agent lists and calls its tools through the worker's loopback endpoint.
    let prompt = [
        "mcp-list notes-append",
        r#"mcp-call notes-append notes.append {"text": "from the agent"}"#,
        r#"mcp-call notes-send notes.send {"to": "bob@example.org", "text": "the report"}"#,
    ]
    .join("\n");
    let mut d = chat_dispatch(RUN, &runner, &prompt);
    d.spec.tools = vec!["notes-append".into(), "notes-send".into()];
    // It ends on its own soon after its turn (the attacks below need only its token).
    d.spec.limits.get_or_insert_default().idle_timeout_seconds = Some(15);
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches.create(&PostParams::default(), &d).await.unwrap();
    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let t0 = events_of_turn(&redis, &ns.name, RUN, "t0", TIMEOUT).await;
    let reply = t0
        .iter()
        .find_map(|e| match e {
            Event::Done { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reply in t0: {t0:#?}\n{}", gateway.logs()));
    eprintln!("the agent's reply:\n{reply}");

    // 1. The allowed call reached the tool with a token for the tool, for alice.
    let calls = notes.calls().await;
    let appends: Vec<_> = calls.iter().filter(|c| c.tool == "notes.append").collect();
    assert_eq!(
        appends.len(),
        1,
        "one notes.append reached the tool: {calls:#?}\n{reply}\n{}",
        gateway.logs()
    );
    let token = appends[0].token.clone().expect("the call carried a token");
    assert!(token.verified, "the tool verified it: {token:?}");
    assert_eq!(token.kind, "keycloak", "{token:?}");
    assert!(token.has_audience(AUDIENCE), "{token:?}");
    assert_eq!(
        token.preferred_username.as_deref(),
        Some("alice"),
        "{token:?}"
    );
    assert_eq!(token.azp.as_deref(), Some(kc.gateway_client.as_str()));
    assert_eq!(notes.notes(), ["from the agent"], "the tool's effect");
    assert!(
        reply.contains("mcp-list notes-append") && reply.contains("notes.append"),
        "{reply}"
    );
    let listed = reply
        .lines()
        .find(|l| l.starts_with("mcp-list notes-append"))
        .unwrap_or_else(|| panic!("no tools/list answer: {reply}"));
    assert!(
        listed.contains("notes.append") && !listed.contains("notes.send"),
        "tools/list answers with the Tool in scope at that path only: {listed}"
    );

    // 3. The gated call: not made, a Card for alice instead.
    assert!(
        calls.iter().all(|c| c.tool != "notes.send") && notes.sent().is_empty(),
        "the gated tool was called: {calls:#?}"
    );
    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(cards.len(), 1, "{cards:#?}");
    let card = &cards[0].spec;
    assert_eq!(card.owner, "alice");
    assert_eq!(card.source_dispatch.as_deref(), Some(RUN));
    let send = card.send.as_ref().expect("a send proposal");
    assert_eq!(send.tool, "notes-send");
    let arguments: Value = serde_json::from_str(&send.arguments).unwrap();
    assert_eq!(
        arguments,
        json!({"to": "bob@example.org", "text": "the report"})
    );
    assert!(
        reply.contains(&cards[0].metadata.name.clone().unwrap()),
        "the agent is told the Card: {reply}"
    );

    // 2. The attacker at the gateway. The run's real token, and SVIDs for the run's workload
    // and another one.
    let secret = Api::<Secret>::namespaced(admin.clone(), &ns.name)
        .get(&format!("{RUN}-credentials"))
        .await
        .unwrap();
    let real =
        String::from_utf8(secret.data.unwrap()[secret_key::DISPATCH_TOKEN].0.clone()).unwrap();
    let (header, payload, signature) = parts(&real);
    let pod_id = payload["cnf"]["spiffe_id"].as_str().unwrap().to_owned();
    let svids =
        std::env::temp_dir().join(format!("vexa-eval-gateway-svids-{}", std::process::id()));
    let pod = mint_svid(&pod_id, &svids.join("pod"));
    let other = mint_svid(
        &vexa_core::identity::spiffe_id(&cluster_env("VEXA_SPIRE_TRUST_DOMAIN"), &ns.name, "other"),
        &svids.join("other"),
    );
    let append_path = format!("/tools/{}/notes-append", ns.name);
    let append = call(7, "notes.append", json!({"text": "from the attacker"}));

    // Control: the real token from the run's workload goes through.
    let (status, body) = gateway.post(&pod, Some(&real), &append_path, &append).await;
    assert_eq!(status, 200, "the real token from its workload: {body}");

    let mut widened = payload.clone();
    widened["tools"] = json!(["notes-append", "notes-send", "notes-admin"]);
    let forged = format!("{header}.{}.{signature}", b64(&widened));

    let keys = Api::<Secret>::namespaced(admin.clone(), &home.name)
        .get("vexa-dispatch-token-keys")
        .await
        .unwrap();
    let keys: BTreeMap<String, Vec<u8>> = keys
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let keys = KeySet::from_secret_data(&keys).unwrap();
    let mut claims: DispatchClaims = serde_json::from_value(payload.clone()).unwrap();
    claims.iat = now() - 700;
    claims.exp = now() - 100;
    let expired = mint(&keys, &claims).unwrap();

    let none_header = json!({"alg": "none", "typ": "JWT"});
    let alg_none = format!("{}.{}.", b64(&none_header), b64(&payload));

    let admin_path = format!("/tools/{}/notes-admin", ns.name);
    let cases = [
        (
            "forged",
            &pod,
            forged.as_str(),
            append_path.as_str(),
            "BadSignature",
        ),
        (
            "expired",
            &pod,
            expired.as_str(),
            append_path.as_str(),
            "TokenExpired",
        ),
        (
            "alg none",
            &pod,
            alg_none.as_str(),
            append_path.as_str(),
            "AlgNone",
        ),
        (
            "replayed from another SVID",
            &other,
            real.as_str(),
            append_path.as_str(),
            "WorkloadMismatch",
        ),
        (
            "out of scope",
            &pod,
            real.as_str(),
            admin_path.as_str(),
            "ToolOutOfScope",
        ),
    ];
    let before = notes.calls().await.len();
    for (what, svid, token, path, _) in &cases {
        let (status, body) = gateway.post(svid, Some(token), path, &append).await;
        eprintln!("{what}: {status} {body}");
        assert!(
            status == 401 || status == 403,
            "{what}: refused with 401/403, got {status} {body}"
        );
        assert!(
            body["error"]["message"].is_string(),
            "{what}: a JSON-RPC error says why: {body}"
        );
    }
    assert_eq!(
        notes.calls().await.len(),
        before,
        "a refused call reached the tool"
    );

    let records = gateway_records(audit_dir, &ns.name);
    eprintln!("gateway records of {RUN}: {records:#?}");
    for (what, _, _, path, reason) in &cases {
        let tool = path.rsplit('/').next().unwrap();
        assert!(
            records
                .iter()
                .any(|(t, d, r)| t == tool && d == "refused" && r == reason),
            "{what}: no refused record with reason {reason}: {records:#?}"
        );
    }
    for wanted in [
        ("notes-append", "allowed", "ToolsListed"),
        ("notes-append", "allowed", "Allowed"),
        ("notes-send", "gated", "ProposalCreated"),
    ] {
        assert!(
            records
                .iter()
                .any(|(t, d, r)| (t.as_str(), d.as_str(), r.as_str()) == wanted),
            "missing {wanted:?}: {records:#?}"
        );
    }

    // 4. What a person sees, once the run is over: every tool call resolved, between the run's
    // admission and its end, and both chains verify.
    wait_dispatch(&dispatches, RUN, "stopped", TIMEOUT, |d| {
        vexa_evals::fixtures::phase(d) == "stopped"
    })
    .await;
    let out = kubectl_vexa(&ns.name, &["audit", RUN]);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = shown.lines().collect();
    let at = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what:?} not shown:\n{shown}"))
    };
    let (admitted, stopped) = (at(" admitted "), at(" stopped "));
    let tool_calls: Vec<(usize, &&str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(" tool_call "))
        .collect();
    assert_eq!(
        tool_calls.len(),
        records.len(),
        "every tool call is shown:\n{shown}"
    );
    let scope = "alice · user:alice · workspaces alice-notes:rw · tools notes-append,notes-send";
    for (i, line) in &tool_calls {
        assert!(line.contains(scope), "subject · launcher · scope: {line}");
        assert!(
            admitted < *i && *i < stopped,
            "tool calls read between admitted and stopped:\n{shown}"
        );
    }
    let out = kubectl_vexa(&ns.name, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the live log verifies: {said}");
    let gateway_line = said
        .lines()
        .find(|l| l.starts_with("gateway: "))
        .unwrap_or_else(|| panic!("no gateway chain verified: {said}"));
    assert!(
        gateway_line.contains("signed through seq") && !gateway_line.contains("not yet signed"),
        "the gateway signed its whole chain with its own key, which the operator publishes: \
         {gateway_line}"
    );
    assert!(said.contains("operator: "), "{said}");

    let metrics = gateway.metrics().await;
    eprintln!(
        "gateway metrics:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("vexa_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let Stack {
        operator, gateway, ..
    } = stack;
    drop(gateway);
    operator.kill().await;
}
