//! The local cluster's Keycloak, a dispatch-token issuer it trusts and dispatch claims: shared
//! by tests/keycloak.rs and benches/exchange.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use vexa_keycloak::{Admin, realm_issuer};
use vexa_policy::token::{Actor, Confirmation, DispatchClaims, KeySet};

/// The realm's identity provider for dispatch tokens (the gateway client allows only it).
pub const ALIAS: &str = "vexa-dispatch";
/// The notes tool's client (its audience and its scope).
pub const NOTES: &str = "vexa-notes";

/// What `eval "$(hack/cluster env)"` exports about Keycloak.
pub struct Env {
    pub url: String,
    pub realm: String,
    pub admin_user: String,
    pub admin_password: String,
    pub client: String,
    pub secret: String,
}

pub fn env() -> Env {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} unset: eval \"$(hack/cluster env)\""))
    };
    let file = |k: &str| std::fs::read_to_string(var(k)).unwrap().trim().to_owned();
    Env {
        url: var("VEXA_KEYCLOAK_URL"),
        realm: var("VEXA_KEYCLOAK_REALM"),
        admin_user: var("VEXA_KEYCLOAK_ADMIN_USER"),
        admin_password: file("VEXA_KEYCLOAK_ADMIN_PASSWORD_FILE"),
        client: var("VEXA_KEYCLOAK_GATEWAY_CLIENT"),
        secret: file("VEXA_KEYCLOAK_GATEWAY_SECRET_FILE"),
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Serves `keys`' JWKS on a loopback port (Keycloak runs on this host); its URL.
async fn serve_jwks(keys: &KeySet) -> String {
    let jwks = keys.jwks();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/.well-known/jwks.json")
}

/// A dispatch-token issuer the realm trusts, like an in-process operator sets up at its start.
pub struct Issuer {
    /// Its signing keys.
    pub keys: KeySet,
    /// Its `iss`.
    pub issuer: String,
    /// Where it serves its JWKS.
    pub jwks_url: String,
    /// The audience Keycloak accepts in a JWT grant's assertion (the realm's issuer).
    pub audience: String,
    /// The admin that set it up.
    pub admin: Admin,
}

/// Serves fresh keys on loopback, (re)points the realm's [`ALIAS`] provider at them and links a
/// user `subject` to it.
pub async fn trusted_issuer(e: &Env, subject: &str) -> Issuer {
    let keys = KeySet::generate(now()).unwrap();
    let jwks_url = serve_jwks(&keys).await;
    let issuer = jwks_url
        .trim_end_matches("/.well-known/jwks.json")
        .to_owned();
    let admin = Admin::login(&e.url, &e.admin_user, &e.admin_password)
        .await
        .unwrap();
    admin
        .upsert_dispatch_issuer(&e.realm, ALIAS, &issuer, &jwks_url)
        .await
        .unwrap();
    admin
        .ensure_subject(&e.realm, ALIAS, subject)
        .await
        .unwrap();
    Issuer {
        keys,
        issuer,
        jwks_url,
        audience: realm_issuer(&e.url, &e.realm),
        admin,
    }
}

/// Claims of a dispatch token for `subject` using the notes tool, valid from `iat` to `exp`.
pub fn claims(issuer: &str, audience: &str, subject: &str, iat: u64, exp: u64) -> DispatchClaims {
    DispatchClaims {
        iss: issuer.into(),
        sub: subject.into(),
        act: Actor {
            sub: "launcher-bot".into(),
        },
        aud: audience.into(),
        workspaces: vec![],
        tools: vec!["notes".into()],
        gated_tools: vec![],
        jti: format!("team-a/run-{iat}"),
        iat,
        exp,
        cnf: Confirmation {
            spiffe_id: "spiffe://vexa.local/ns/team-a/dispatch/run".into(),
        },
    }
}
