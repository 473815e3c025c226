//! The real Envoy (VEXA_ENVOY_BIN, `hack/build-tools envoy`) with the configuration
//! `envoy-config` generates, in front of the filter (Keycloak faked by the Exchanger), against a
//! tiny upstream that records what it receives: the tool gets the exchanged token only, never
//! the dispatch token, no `x-vexa-*` and no client-forged `x-forwarded-client-cert`; a valid
//! token presented with another workload's certificate never reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::{POD, Rig, post};

#[tokio::test(flavor = "multi_thread")]
async fn through_envoy_the_tool_sees_only_the_exchanged_token() {
    let Ok(envoy) = std::env::var("VEXA_ENVOY_BIN") else {
        eprintln!(
            "SKIPPED: VEXA_ENVOY_BIN is unset (hack/build-tools envoy; eval \"$(hack/cluster env)\")"
        );
        return;
    };
    let Rig {
        port,
        pki,
        token,
        seen,
        mut child,
        ..
    } = Rig::start(envoy).await;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"notes.append","arguments":{"text":"hi"}}}"#;
    let (_, _, pod_der, pod_key) = pki.svid(POD);
    let (status, body) = post(port, &pki, (pod_der, pod_key), &token, call).await;
    assert_eq!(status, 200, "{body}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (path, headers) = &seen[0];
        assert_eq!(path, "/mcp");
        assert_eq!(
            headers["authorization"],
            format!("Bearer exchanged.vexa-notes.kc")
        );
        assert!(
            !headers.values().any(|v| v.contains(&token)),
            "the dispatch token reached the tool"
        );
        assert!(
            !headers.keys().any(|k| k.starts_with("x-vexa-")),
            "{headers:?}"
        );
        let xfcc = headers
            .get("x-forwarded-client-cert")
            .cloned()
            .unwrap_or_default();
        assert!(
            !xfcc.contains("forged"),
            "a client-forged XFCC reached the tool: {xfcc}"
        );
    }

    // The same valid token from another workload: refused, nothing reaches the tool.
    let (_, _, other_der, other_key) = pki.svid("spiffe://vexa.local/ns/team/dispatch/d2");
    let (status, body) = post(port, &pki, (other_der, other_key), &token, call).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bound to workload"), "{body}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let _ = child.kill().await;
}
