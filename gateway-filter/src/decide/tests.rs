//! The attacker's requests, each against the one check that must stop it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use vexa_policy::token::{
    Actor, Confirmation, DispatchClaims, KeySet, Verifier, WorkspaceClaim, mint,
};

use super::*;

const NOW: UnixTime = 1_800_000_000;
const ISS: &str = "https://operator.vexa";
const AUD: &str = "vexa-gateway";
const POD: &str = "spiffe://vexa.local/ns/team/dispatch/d1";

struct Fixture {
    keys: KeySet,
    verifier: Verifier,
    tools: BTreeMap<(String, String), ToolView>,
}

impl Tools for Fixture {
    fn tool(&self, namespace: &str, name: &str) -> Option<ToolView> {
        self.tools
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

fn tool(name: &str, tool_name: &str, gated: bool) -> ToolView {
    ToolView {
        name: name.into(),
        tool_name: tool_name.into(),
        scope: format!("{name}:use"),
        audience: format!("{name}-aud"),
        gated,
        upstream: Upstream::parse("http://10.0.0.5:8080/mcp").unwrap(),
    }
}

fn fixture() -> Fixture {
    let keys = KeySet::generate(NOW - 100).unwrap();
    let verifier = Verifier::new(&keys.jwks(), ISS, AUD).unwrap();
    let mut tools = BTreeMap::new();
    for (ns, t) in [
        ("team", tool("notes", "notes.append", false)),
        ("team", tool("mail", "mail.send", false)),
        ("team", tool("pay", "pay.send", true)),
        ("team", tool("search", "search.query", false)),
        ("other", tool("notes", "notes.append", false)),
    ] {
        tools.insert((ns.to_owned(), t.name.clone()), t);
    }
    Fixture {
        keys,
        verifier,
        tools,
    }
}

fn claims() -> DispatchClaims {
    DispatchClaims {
        iss: ISS.into(),
        sub: "alice".into(),
        act: Actor {
            sub: "user:alice".into(),
        },
        aud: AUD.into(),
        workspaces: vec![WorkspaceClaim {
            name: "alice-notes".into(),
            mode: vexa_core::WorkspaceMode::ReadWrite,
        }],
        tools: vec!["notes".into(), "mail".into(), "pay".into()],
        gated_tools: vec!["mail".into()],
        jti: "team/d1".into(),
        iat: NOW - 10,
        exp: NOW + 590,
        cnf: Confirmation {
            spiffe_id: POD.into(),
        },
    }
}

fn call(name: &str, arguments: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
    .to_string()
    .into_bytes()
}

fn run(f: &Fixture, token: &str, peer: Option<&str>, path: &str, body: &[u8]) -> Decision {
    let header = format!("Bearer {token}");
    decide(
        &Facts {
            path,
            authorization: Some(&header),
            peer,
            body,
        },
        &f.verifier,
        f,
        NOW,
    )
}

fn refused(d: &Decision) -> (u16, &str, Value) {
    let Outcome::Refuse(reply) = &d.outcome else {
        panic!("expected a refusal, got {d:?}");
    };
    assert_eq!(d.record.verdict, Verdict::Refused);
    (
        reply.status,
        d.record.reason.as_str(),
        serde_json::from_str(&reply.body).unwrap(),
    )
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn a_call_in_scope_from_the_bound_pod_is_forwarded_for_the_tools_audience() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/notes",
        &call("notes.append", json!({"text": "hi"})),
    );
    let Outcome::Forward {
        token: subject,
        audience,
        scope,
        upstream,
    } = &d.outcome
    else {
        panic!("{d:?}");
    };
    assert_eq!(subject, &token);
    assert_eq!(audience, "notes-aud");
    assert_eq!(scope, "notes:use");
    assert_eq!(upstream.authority, "10.0.0.5:8080");
    assert_eq!(upstream.path, "/mcp");
    let r = &d.record;
    assert_eq!(
        (
            r.verdict,
            r.reason.as_str(),
            r.dispatch.as_str(),
            r.subject.as_str()
        ),
        (Verdict::Allowed, "Allowed", "team/d1", "alice")
    );
    assert_eq!(
        (r.launcher.as_str(), r.tool.as_str()),
        ("user:alice", "notes")
    );
    assert_eq!(r.mcp_method, "tools/call");
    assert_eq!(r.arguments_sha256, sha256_hex(br#"{"text":"hi"}"#));
}

#[test]
fn no_token_is_refused() {
    let f = fixture();
    let d = decide(
        &Facts {
            path: "/tools/team/notes",
            authorization: None,
            peer: Some(POD),
            body: &call("notes.append", json!({})),
        },
        &f.verifier,
        &f,
        NOW,
    );
    assert_eq!(refused(&d).0, 401);
    assert_eq!(refused(&d).1, "MissingToken");
    let d = run(&f, "", Some(POD), "/tools/team/notes", b"{}");
    assert_eq!(refused(&d).1, "MissingToken");
}

#[test]
fn a_token_signed_by_another_key_is_refused_and_recorded_under_the_dispatch_it_claims() {
    let f = fixture();
    let other = KeySet::generate(NOW - 100).unwrap();
    let forged = mint(&other, &claims()).unwrap();
    let d = run(
        &f,
        &forged,
        Some(POD),
        "/tools/team/notes",
        &call("notes.append", json!({})),
    );
    let (status, reason, body) = refused(&d);
    assert_eq!((status, reason), (401, "UnknownKid"));
    assert_eq!(body["error"]["code"], -32001);
    assert_eq!(body["id"], 1);
    assert_eq!(d.record.dispatch, "team/d1");
    assert_eq!(d.record.subject, "alice");
}

#[test]
fn a_token_edited_after_signing_is_refused() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut more = claims();
    more.tools.push("search".into());
    parts[1] = b64(&serde_json::to_value(&more).unwrap());
    let d = run(
        &f,
        &parts.join("."),
        Some(POD),
        "/tools/team/search",
        &call("search.query", json!({})),
    );
    assert_eq!(refused(&d).1, "BadSignature");
}

#[test]
fn an_expired_token_is_refused() {
    let f = fixture();
    let mut c = claims();
    c.iat = NOW - 1000;
    c.exp = NOW - 400;
    let token = mint(&f.keys, &c).unwrap();
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/notes",
        &call("notes.append", json!({})),
    );
    assert_eq!(refused(&d).1, "TokenExpired");
}

#[test]
fn an_unsigned_or_hmac_token_is_refused() {
    let f = fixture();
    let payload = b64(&serde_json::to_value(claims()).unwrap());
    let kid = f.keys.current_kid().to_owned();
    let none = format!(
        "{}.{payload}.",
        b64(&json!({"alg": "none", "typ": "vexa-dispatch+jwt", "kid": kid}))
    );
    let d = run(
        &f,
        &none,
        Some(POD),
        "/tools/team/notes",
        &call("notes.append", json!({})),
    );
    assert_eq!(refused(&d).1, "AlgNone");
    // HS256 "signed" with the public key as the secret: refused for its algorithm before any
    // key is used.
    let hs = format!(
        "{}.{payload}.{}",
        b64(&json!({"alg": "HS256", "typ": "vexa-dispatch+jwt", "kid": kid})),
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    let d = run(
        &f,
        &hs,
        Some(POD),
        "/tools/team/notes",
        &call("notes.append", json!({})),
    );
    assert_eq!(refused(&d).1, "AlgorithmNotAllowed");
    let d = run(&f, "not-a-jwt", Some(POD), "/tools/team/notes", b"{}");
    assert_eq!(refused(&d).1, "TokenMalformed");
    assert_eq!(d.record.dispatch, "");
}

#[test]
fn a_valid_token_replayed_from_another_workload_is_refused() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    for peer in [
        Some("spiffe://vexa.local/ns/team/dispatch/d2"),
        Some("spiffe://evil.example/ns/team/dispatch/d1"),
        Some("spiffe://vexa.local/vexa/gateway"),
        None,
    ] {
        let d = run(
            &f,
            &token,
            peer,
            "/tools/team/notes",
            &call("notes.append", json!({})),
        );
        let (status, reason, _) = refused(&d);
        assert_eq!((status, reason), (403, "WorkloadMismatch"), "{peer:?}");
        assert_eq!(d.record.dispatch, "team/d1");
    }
}

#[test]
fn a_tool_out_of_scope_or_in_another_namespace_is_refused() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/search",
        &call("search.query", json!({})),
    );
    assert_eq!(refused(&d).0, 403);
    assert_eq!(refused(&d).1, "ToolOutOfScope");
    assert_eq!(d.record.tool, "search");
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/other/notes",
        &call("notes.append", json!({})),
    );
    assert_eq!(refused(&d).1, "OtherNamespace");
    for path in ["/tools/team/../other/notes", "/mcp", "/tools/team/notes/x"] {
        let d = run(
            &f,
            &token,
            Some(POD),
            path,
            &call("notes.append", json!({})),
        );
        assert_eq!(refused(&d).1, "NotAToolPath", "{path}");
    }
    // In scope, but no such Tool object.
    let mut c = claims();
    c.tools.push("ghost".into());
    let token = mint(&f.keys, &c).unwrap();
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/ghost",
        &call("ghost", json!({})),
    );
    assert_eq!(refused(&d).1, "UnknownTool");
}

#[test]
fn a_call_naming_another_mcp_tool_than_the_paths_is_refused() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    // The path is the auto tool `notes`; the body asks the server for `pay.send`.
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/notes",
        &call("pay.send", json!({"to": "x"})),
    );
    let (status, reason, body) = refused(&d);
    assert_eq!((status, reason), (403, "WrongToolName"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pay.send")
    );
    let no_name = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
    let d = run(&f, &token, Some(POD), "/tools/team/notes", no_name);
    assert_eq!(refused(&d).1, "WrongToolName");
}

#[test]
fn batches_malformed_and_oversized_bodies_are_refused_with_json_rpc_errors() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    let one = String::from_utf8(call("notes.append", json!({}))).unwrap();
    let batch = format!(
        "[{one},{}]",
        String::from_utf8(call("pay.send", json!({}))).unwrap()
    );
    let d = run(&f, &token, Some(POD), "/tools/team/notes", batch.as_bytes());
    let (status, reason, body) = refused(&d);
    assert_eq!(
        (status, reason, body["error"]["code"].as_i64()),
        (400, "InvalidRequest", Some(-32600))
    );
    let d = run(&f, &token, Some(POD), "/tools/team/notes", b"{\"jsonrpc\":");
    let (status, reason, body) = refused(&d);
    assert_eq!(
        (status, reason, body["error"]["code"].as_i64()),
        (400, "MalformedJson", Some(-32700))
    );
    let big = vec![b' '; MAX_BODY + 1];
    let d = run(&f, &token, Some(POD), "/tools/team/notes", &big);
    assert_eq!(refused(&d).0, 413);
    assert_eq!(refused(&d).1, "BodyTooLarge");
}

#[test]
fn a_gated_call_becomes_one_card_and_is_not_forwarded() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    // `mail` is gated by the token, `pay` by its Tool object: either is enough.
    for (path, name) in [
        ("/tools/team/mail", "mail.send"),
        ("/tools/team/pay", "pay.send"),
    ] {
        let body = call(name, json!({"to": "bob", "amount": 5}));
        let d = run(&f, &token, Some(POD), path, &body);
        let Outcome::Propose { card, reply } = &d.outcome else {
            panic!("{d:?}");
        };
        assert_eq!(reply.status, 200);
        let reply: Value = serde_json::from_str(&reply.body).unwrap();
        assert!(
            reply["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains(&card.name)
        );
        assert_eq!(
            (card.namespace.as_str(), card.owner.as_str()),
            ("team", "alice")
        );
        assert_eq!(card.source_dispatch, "d1");
        assert_eq!(card.arguments, r#"{"amount":5,"to":"bob"}"#);
        assert_eq!(
            (d.record.verdict, d.record.reason.as_str()),
            (Verdict::Gated, "ProposalCreated")
        );
        let object = card.to_card();
        let spec = serde_json::to_value(&object.spec).unwrap();
        assert_eq!(spec["kind"], "send");
        assert_eq!(spec["sourceDispatch"], "d1");
        assert_eq!(spec["send"]["tool"], path.rsplit('/').next().unwrap());
        // The retry names the same Card.
        let again = run(&f, &token, Some(POD), path, &body);
        let Outcome::Propose { card: card2, .. } = &again.outcome else {
            panic!();
        };
        assert_eq!(card2.name, card.name);
    }
}

#[test]
fn tools_list_is_answered_with_the_paths_tool_only() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    let list = br#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#;
    let d = run(&f, &token, Some(POD), "/tools/team/notes", list);
    let Outcome::Answer(reply) = &d.outcome else {
        panic!("{d:?}");
    };
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["id"], "l");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.append"]);
    // Still behind the token and the binding.
    let d = run(
        &f,
        &token,
        Some("spiffe://vexa.local/ns/team/dispatch/d2"),
        "/tools/team/notes",
        list,
    );
    assert_eq!(refused(&d).1, "WorkloadMismatch");
}

#[test]
fn initialize_and_notifications_pass_to_the_tool() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    for body in [
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ] {
        let d = run(&f, &token, Some(POD), "/tools/team/notes", body.as_bytes());
        assert!(matches!(d.outcome, Outcome::Forward { .. }), "{d:?}");
    }
}

#[test]
fn server_urls_split_into_authority_and_path() {
    let u = Upstream::parse("https://mail.tools.svc/mcp?x=1").unwrap();
    assert_eq!(
        (u.authority.as_str(), u.path.as_str()),
        ("mail.tools.svc:443", "/mcp?x=1")
    );
    let u = Upstream::parse("http://10.1.2.3:9000").unwrap();
    assert_eq!(
        (u.authority.as_str(), u.path.as_str()),
        ("10.1.2.3:9000", "/")
    );
    assert_eq!(Upstream::parse("ftp://x/y"), None);
    assert_eq!(Upstream::parse("http://user@x/y"), None);
}

#[test]
fn the_record_reads_as_a_tool_call_line() {
    let f = fixture();
    let token = mint(&f.keys, &claims()).unwrap();
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/search",
        &call("search.query", json!({})),
    );
    let (effect, event) = d.record.to_audit();
    assert_eq!(
        (
            effect.dispatch.namespace.as_str(),
            effect.dispatch.name.as_str()
        ),
        ("team", "d1")
    );
    assert_eq!(effect.scope.tools, ["notes", "mail", "pay"]);
    let workspaces: Vec<_> = effect
        .scope
        .workspaces
        .iter()
        .map(|w| (w.name.as_str(), w.mode.map(|m| m.as_str())))
        .collect();
    assert_eq!(workspaces, [("alice-notes", Some("rw"))]);
    let line = serde_json::to_value(&event).unwrap();
    assert_eq!(
        line,
        json!({"type": "tool_call", "tool": "search", "mcp_method": "tools/call",
               "decision": "refused", "reason": "ToolOutOfScope", "arguments_sha256": ""})
    );
}

#[test]
fn a_token_is_never_sent_in_clear_to_a_server_that_expects_tls() {
    let mut f = fixture();
    for view in f.tools.values_mut() {
        view.upstream = Upstream::parse("https://tools.example.org/mcp").unwrap();
    }
    let token = mint(&f.keys, &claims()).unwrap();
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/notes",
        &call("notes.append", json!({})),
    );
    assert_eq!(refused(&d).1, "UpstreamTlsUnsupported");
    // tools/list is answered by the gateway and a gated call becomes a Card: neither reaches
    // the server, so both still work.
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let d = run(&f, &token, Some(POD), "/tools/team/notes", list.as_bytes());
    assert!(matches!(d.outcome, Outcome::Answer(_)), "{d:?}");
    let d = run(
        &f,
        &token,
        Some(POD),
        "/tools/team/mail",
        &call("mail.send", json!({"to": "bob"})),
    );
    assert!(matches!(d.outcome, Outcome::Propose { .. }), "{d:?}");
}
