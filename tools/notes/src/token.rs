//! The bearer token a call carried: who it speaks for, for whom it was issued, and (with
//! `--jwks-url`) whether it is a valid token for this tool (signature against the realm's JWKS,
//! expiry, audience). The tool reports what it saw so a test can assert the gateway's exchange:
//! a Keycloak token whose audience is this tool's, never the Vexa dispatch token.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::Value;

/// The `typ` header of a Vexa dispatch token.
pub const DISPATCH_TYP: &str = vexa_policy::token::TOKEN_TYPE;
/// The least time between two fetches of the JWKS (an unknown `kid` asks again).
const REFETCH_AFTER: Duration = Duration::from_secs(10);

/// What kind of token it was.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// A Vexa dispatch token (header `typ` `vexa-dispatch+jwt`): the gateway did not exchange it.
    VexaDispatch,
    /// A Keycloak access token (issuer `…/realms/<realm>`).
    Keycloak,
    /// Something else.
    Other,
}

/// The claims of the token a call carried, as the tool reports them.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Caller {
    /// `aud` (a string or a list).
    pub aud: Value,
    /// `sub`.
    pub sub: Option<String>,
    /// `preferred_username` (Keycloak).
    pub preferred_username: Option<String>,
    /// `azp`: the client the token was issued to (Keycloak).
    pub azp: Option<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// The header's `typ`.
    pub typ: Option<String>,
    /// The kind it was taken for.
    pub kind: TokenKind,
    /// Whether its signature, expiry and audience were checked (`--jwks-url`).
    pub verified: bool,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No `authorization: Bearer …`.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT.
    #[error("the bearer token is not a JWT: {0}")]
    Malformed(String),
    /// Verification failed.
    #[error("the bearer token is not valid for this tool: {0}")]
    Invalid(String),
    /// The JWKS could not be had.
    #[error("the JWKS at {url} cannot be fetched: {why}")]
    Jwks {
        /// Where.
        url: String,
        /// Why.
        why: String,
    },
}

/// How tokens are checked.
#[derive(Debug)]
pub enum Check {
    /// Only decoded (local demos): nothing is verified.
    DecodeOnly,
    /// Verified against a realm's JWKS (RS256) with the tool's audience.
    Verify {
        /// The realm's JWKS URL (`http://…/realms/<realm>/protocol/openid-connect/certs`).
        jwks_url: String,
        /// The audience the token must carry (`--audience`).
        audience: String,
        /// The keys, and when they were fetched.
        keys: Mutex<Option<(JwkSet, Instant)>>,
    },
}

impl Check {
    /// The caller of an `authorization` header value.
    pub async fn caller(&self, authorization: Option<&str>) -> Result<Caller, Refused> {
        let token = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refused::Missing)?;
        let (header, claims) = decode_unverified(token)?;
        let verified = match self {
            Check::DecodeOnly => false,
            Check::Verify {
                jwks_url,
                audience,
                keys,
            } => {
                verify(token, &header, jwks_url, audience, keys).await?;
                true
            }
        };
        Ok(caller(&header, &claims, verified))
    }
}

/// The header and claims of a JWT, not verified.
pub fn decode_unverified(token: &str) -> Result<(Value, Value), Refused> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed("not three dot-separated parts".into()));
    };
    let json = |part: &str| -> Result<Value, Refused> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| Refused::Malformed(e.to_string()))
    };
    Ok((json(h)?, json(p)?))
}

/// The caller a token's header and claims describe.
pub fn caller(header: &Value, claims: &Value, verified: bool) -> Caller {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let typ = text(header, "typ");
    let iss = text(claims, "iss");
    let kind = if typ.as_deref() == Some(DISPATCH_TYP) {
        TokenKind::VexaDispatch
    } else if iss.as_deref().is_some_and(|i| i.contains("/realms/")) {
        TokenKind::Keycloak
    } else {
        TokenKind::Other
    };
    Caller {
        aud: claims.get("aud").cloned().unwrap_or(Value::Null),
        sub: text(claims, "sub"),
        preferred_username: text(claims, "preferred_username"),
        azp: text(claims, "azp"),
        iss,
        typ,
        kind,
        verified,
    }
}

async fn verify(
    token: &str,
    header: &Value,
    jwks_url: &str,
    audience: &str,
    keys: &Mutex<Option<(JwkSet, Instant)>>,
) -> Result<(), Refused> {
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(Refused::Invalid(format!(
            "alg {} is not RS256",
            header.get("alg").unwrap_or(&Value::Null)
        )));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| Refused::Invalid("no kid".into()))?;
    let cached = keys.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut set = match cached {
        Some((set, _)) if set.find(kid).is_some() => set,
        Some((_, at)) if at.elapsed() < REFETCH_AFTER => {
            return Err(Refused::Invalid(format!("unknown kid {kid}")));
        }
        _ => {
            let fetched = fetch(jwks_url).await?;
            *keys.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((fetched.clone(), Instant::now()));
            fetched
        }
    };
    let jwk = set
        .keys
        .drain(..)
        .find(|k| k.common.key_id.as_deref() == Some(kid))
        .ok_or_else(|| Refused::Invalid(format!("unknown kid {kid}")))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| Refused::Invalid(e.to_string()))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    // A token without `aud` must not pass: jsonwebtoken checks the audience only when the
    // claim is there, unless it is required (the realm's JWT-grant tokens carry none).
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = 5;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| Refused::Invalid(e.to_string()))
}

async fn fetch(url: &str) -> Result<JwkSet, Refused> {
    let fail = |why: String| Refused::Jwks {
        url: url.to_owned(),
        why,
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn jwt(header: Value, claims: Value) -> String {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(header), enc(claims))
    }

    #[tokio::test]
    async fn a_keycloak_token_and_a_dispatch_token_are_told_apart() {
        let kc = jwt(
            json!({"alg": "RS256", "typ": "JWT", "kid": "k"}),
            json!({"iss": "http://10.88.0.1:8180/realms/vexa", "aud": "vexa-notes", "sub": "u-1",
                   "preferred_username": "alice", "azp": "vexa-gateway"}),
        );
        let c = Check::DecodeOnly
            .caller(Some(&format!("Bearer {kc}")))
            .await
            .unwrap();
        assert_eq!(c.kind, TokenKind::Keycloak);
        assert_eq!(c.aud, json!("vexa-notes"));
        assert_eq!(c.preferred_username.as_deref(), Some("alice"));
        assert_eq!(c.azp.as_deref(), Some("vexa-gateway"));
        assert!(!c.verified);

        let dispatch = jwt(
            json!({"alg": "EdDSA", "typ": DISPATCH_TYP}),
            json!({"iss": "vexa-operator", "aud": "vexa-gateway", "sub": "alice"}),
        );
        let c = Check::DecodeOnly
            .caller(Some(&format!("Bearer {dispatch}")))
            .await
            .unwrap();
        assert_eq!(c.kind, TokenKind::VexaDispatch);
    }

    #[tokio::test]
    async fn verification_refuses_what_it_cannot_check() {
        let check = Check::Verify {
            jwks_url: "http://127.0.0.1:9/certs".into(),
            audience: "vexa-notes".into(),
            keys: Mutex::new(None),
        };
        assert!(matches!(check.caller(None).await, Err(Refused::Missing)));
        assert!(matches!(
            check.caller(Some("Bearer x.y")).await,
            Err(Refused::Malformed(_))
        ));
        let none = jwt(json!({"alg": "none"}), json!({"aud": "vexa-notes"}));
        let e = check
            .caller(Some(&format!("Bearer {none}")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not RS256"), "{e}");
        let dispatch = jwt(json!({"alg": "EdDSA", "typ": DISPATCH_TYP}), json!({}));
        assert!(matches!(
            check.caller(Some(&format!("Bearer {dispatch}"))).await,
            Err(Refused::Invalid(_))
        ));
    }
}
