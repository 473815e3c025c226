//! Against the local cluster's Keycloak (`hack/cluster up`, then `eval "$(hack/cluster env)"`):
//! `cargo test -p vexa-keycloak --test keycloak -- --ignored --test-threads=1`.
//!
//! A dispatch token minted by `vexa_policy::token::mint` is traded for a Keycloak token of its
//! subject (JWT grant), then for one whose audience is the notes tool (token exchange); and
//! Keycloak refuses what an attacker would try: a token signed by a key the issuer does not
//! publish, an expired one, one for a subject nobody linked, an exchange to an unknown audience.
//!
//! It (re)points the realm's `vexa-dispatch` identity provider at its own issuer and JWKS (the
//! gateway client allows only that provider), like an in-process operator does at its start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::{ALIAS, NOTES, claims, env, now, trusted_issuer};
use vexa_keycloak::TokenClient;
use vexa_policy::token::{KeySet, mint};

fn payload(jwt: &str) -> serde_json::Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Refused with that status and `error`, for the reason `why` (part of the description).
fn refused(err: &vexa_keycloak::Error, status: u16, error: &str, why: &str) {
    eprintln!("refused as expected: {err}");
    assert_eq!(err.status(), Some(status), "{err}");
    assert_eq!(err.keycloak_error(), Some(error), "{err}");
    assert!(err.to_string().contains(why), "{err}");
}

#[tokio::test]
#[ignore = "needs the local cluster's Keycloak (hack/cluster up)"]
async fn a_dispatch_token_becomes_a_tool_token_and_forgeries_are_refused() {
    let e = env();
    let common::Issuer {
        keys,
        issuer,
        jwks_url,
        audience,
        admin,
    } = trusted_issuer(&e, "alice").await;
    // Again: an update of the existing provider.
    admin
        .upsert_dispatch_issuer(&e.realm, ALIAS, &issuer, &jwks_url)
        .await
        .unwrap();
    // Again: the user exists and is linked already.
    admin
        .ensure_subject(&e.realm, ALIAS, "alice")
        .await
        .unwrap();
    assert!(admin.client_exists(&e.realm, NOTES).await.unwrap());
    assert!(
        !admin
            .client_exists(&e.realm, "vexa-no-such-tool")
            .await
            .unwrap()
    );

    let gateway = TokenClient::new(&e.url, &e.realm, &e.client, &e.secret).unwrap();
    let t = now();
    let token = mint(&keys, &claims(&issuer, &audience, "alice", t, t + 600)).unwrap();

    let subject_token = gateway.jwt_grant(&token).await.unwrap();
    let p = payload(&subject_token.access_token);
    assert_eq!(p["preferred_username"], "alice", "{p}");
    assert_eq!(p["azp"], e.client.as_str(), "{p}");
    assert!(
        p.get("aud").is_none_or(|a| !a.to_string().contains(NOTES)),
        "the grant's token names no tool: {p}"
    );
    // The same dispatch token is presented on every call until it is re-minted.
    gateway
        .jwt_grant(&token)
        .await
        .expect("assertion reuse is allowed");

    let tool_token = gateway
        .exchange(&subject_token.access_token, NOTES, Some(NOTES))
        .await
        .unwrap();
    let q = payload(&tool_token.access_token);
    let aud = q["aud"].to_string();
    assert!(aud.contains(NOTES), "{q}");
    assert_eq!(q["sub"], p["sub"], "the tool token is alice's: {q}");
    assert_eq!(q["preferred_username"], "alice", "{q}");
    assert!(tool_token.expires_in.as_secs() > 0);

    // A key the issuer does not publish (another operator, an attacker).
    let forger = KeySet::generate(now()).unwrap();
    let forged = mint(&forger, &claims(&issuer, &audience, "alice", t, t + 600)).unwrap();
    refused(
        &gateway.jwt_grant(&forged).await.unwrap_err(),
        400,
        "invalid_grant",
        "Invalid signature",
    );

    // Expired (beyond the allowed clock skew).
    let expired = mint(
        &keys,
        &claims(&issuer, &audience, "alice", t - 900, t - 300),
    )
    .unwrap();
    refused(
        &gateway.jwt_grant(&expired).await.unwrap_err(),
        400,
        "invalid_grant",
        "not active",
    );

    // A subject no Identity made a user for.
    let stranger = mint(
        &keys,
        &claims(&issuer, &audience, "mallory-unlinked", t, t + 600),
    )
    .unwrap();
    refused(
        &gateway.jwt_grant(&stranger).await.unwrap_err(),
        400,
        "invalid_grant",
        "User not found",
    );

    // Meant for another audience (the gateway's own name instead of the realm).
    let wrong_aud = mint(&keys, &claims(&issuer, "vexa-gateway", "alice", t, t + 600)).unwrap();
    refused(
        &gateway.jwt_grant(&wrong_aud).await.unwrap_err(),
        400,
        "invalid_grant",
        "Invalid token audience",
    );

    // An exchange to a client that does not exist.
    let err = gateway
        .exchange(
            &subject_token.access_token,
            "vexa-no-such-tool",
            Some(NOTES),
        )
        .await
        .unwrap_err();
    refused(&err, 400, "invalid_client", "Audience not found");
    // An exchange for the audience without its scope.
    let err = gateway
        .exchange(&subject_token.access_token, NOTES, None)
        .await
        .unwrap_err();
    refused(
        &err,
        400,
        "invalid_request",
        "Requested audience not available",
    );

    // The gateway's secret is what authenticates it.
    let impostor = TokenClient::new(&e.url, &e.realm, &e.client, "not-the-secret").unwrap();
    let err = impostor.jwt_grant(&token).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}
