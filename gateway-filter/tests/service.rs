//! The service around decide(): what Envoy is told to send to the tool (the exchanged token,
//! never the dispatch token; the tool's authority and path; client x-vexa-* headers removed),
//! a gated call creating its Card without forwarding, and the audit chain it leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use prometheus_client::registry::Registry;
use serde_json::json;
use vexa_crds::card::Card;
use vexa_gateway_filter::exchange::{Exchanger, Issued};
use vexa_gateway_filter::jwks::Keys;
use vexa_gateway_filter::metrics::Metrics;
use vexa_gateway_filter::service::{Cards, Filter, audit_writer};
use vexa_gateway_filter::{ToolView, Tools, Upstream};
use vexa_policy::token::{Actor, Confirmation, DispatchClaims, KeySet, Verifier, mint};

const POD: &str = "spiffe://vexa.local/ns/team/dispatch/d1";

struct Fake;
impl Exchanger for Fake {
    async fn jwt_grant(&self, _: &str) -> Result<Issued, String> {
        Ok(Issued {
            token: "kc-token".into(),
            expires_in: Duration::from_secs(300),
        })
    }
    async fn exchange(&self, s: &str, aud: &str, _: Option<&str>) -> Result<Issued, String> {
        Ok(Issued {
            token: format!("exchanged:{aud}:{s}"),
            expires_in: Duration::from_secs(300),
        })
    }
}

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Card>>>);
impl Cards for Recorded {
    async fn create(&self, card: Card) -> Result<(), String> {
        self.0.lock().unwrap().push(card);
        Ok(())
    }
}

struct Two;
impl Tools for Two {
    fn tool(&self, ns: &str, name: &str) -> Option<ToolView> {
        (ns == "team" && (name == "notes" || name == "mail")).then(|| ToolView {
            name: name.into(),
            tool_name: format!("{name}.do"),
            scope: format!("{name}:use"),
            audience: format!("{name}-aud"),
            gated: name == "mail",
            upstream: Upstream::parse("http://127.0.0.1:7070/mcp").unwrap(),
        })
    }
}

fn request(
    token: &str,
    path: &str,
    body: serde_json::Value,
    extra: &[(&str, &str)],
) -> CheckRequest {
    let mut headers = HashMap::from([("authorization".to_owned(), format!("Bearer {token}"))]);
    for (k, v) in extra {
        headers.insert((*k).to_owned(), (*v).to_owned());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: POD.into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    path: path.into(),
                    headers,
                    raw_body: body.to_string().into_bytes(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn forwarded_calls_carry_the_exchanged_token_and_gated_calls_only_a_card() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let keys = KeySet::generate(now - 10).unwrap();
    let claims = DispatchClaims {
        iss: "vexa-operator".into(),
        sub: "alice".into(),
        act: Actor {
            sub: "user:alice".into(),
        },
        aud: "vexa-gateway".into(),
        workspaces: vec![],
        tools: vec!["notes".into(), "mail".into()],
        gated_tools: vec![],
        jti: "team/d1".into(),
        iat: now - 5,
        exp: now + 600,
        cnf: Confirmation {
            spiffe_id: POD.into(),
        },
    };
    let token = mint(&keys, &claims).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The gateway's own checkpoint key: never the operator's token keys.
    let audit_keys = Arc::new(KeySet::generate(1_700_000_000).unwrap());
    let cards = Recorded::default();
    let filter = Filter {
        keys: Arc::new(Keys::fixed(
            Verifier::new(&keys.jwks(), "vexa-operator", "vexa-gateway").unwrap(),
        )),
        tools: Arc::new(Two),
        exchanger: Fake,
        cache: Default::default(),
        cards: cards.clone(),
        audit: Some(Mutex::new(
            audit_writer(
                dir.path(),
                Some(Box::new(audit_keys.clone())),
                vexa_audit::DEFAULT_CHECKPOINT_EVERY,
                Duration::from_secs(60),
            )
            .unwrap(),
        )),
        metrics: Arc::new(Metrics::new(&mut Registry::default())),
    };

    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "notes.do", "arguments": {"text": "hi"}}});
    let r = filter
        .check_request(&request(
            &token,
            "/tools/team/notes",
            call,
            &[
                ("x-vexa-upstream", "169.254.169.254:80"),
                ("x-vexa-evil", "1"),
            ],
        ))
        .await;
    let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
        panic!("{r:?}");
    };
    let set: HashMap<String, String> = ok
        .headers
        .iter()
        .map(|h| {
            let h = h.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone())
        })
        .collect();
    assert_eq!(
        set["authorization"],
        format!("Bearer exchanged:notes-aud:kc-token")
    );
    assert!(
        !set.values().any(|v| v.contains(&token)),
        "the dispatch token never goes upstream"
    );
    assert_eq!(set[":authority"], "127.0.0.1:7070");
    assert_eq!(set[":path"], "/mcp");
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, ["x-vexa-evil", "x-vexa-upstream"]);

    let gated = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "mail.do", "arguments": {"to": "bob"}}});
    for _ in 0..2 {
        let r = filter
            .check_request(&request(&token, "/tools/team/mail", gated.clone(), &[]))
            .await;
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!("a gated call is never forwarded: {r:?}");
        };
        assert_eq!(d.status.unwrap().code, 200);
        assert!(d.body.contains("awaits approval by alice"), "{}", d.body);
    }
    let made = cards.0.lock().unwrap().clone();
    assert_eq!(made.len(), 2);
    assert_eq!(
        made[0].metadata.name, made[1].metadata.name,
        "a retry proposes the same Card"
    );
    assert_eq!(made[0].metadata.namespace.as_deref(), Some("team"));

    // The chain: three tool_call records and the checkpoint the stopping writer signs,
    // verifying as one writer's chain.
    drop(filter);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(dir.path().join("gateway.jsonl")).unwrap();
    let decisions: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "record")
        .map(|v| {
            format!(
                "{}/{}",
                v["event"]["decision"].as_str().unwrap(),
                v["event"]["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            "allowed/Allowed",
            "gated/ProposalCreated",
            "gated/ProposalCreated"
        ]
    );
    let report = vexa_audit::verify(&text, &audit_keys.jwks()).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(
        report.signed_through,
        Some(3),
        "the writer signs what is left when it stops"
    );
    assert!(
        vexa_audit::verify(&text, &keys.jwks()).is_err(),
        "the gateway's chain is not signed with the operator's token keys"
    );
}
