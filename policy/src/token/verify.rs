//! Verification: what every boundary (the gateway, the worker's mount) runs on a dispatch
//! token before it believes a word of it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{
    DispatchClaims, Jwks, LEEWAY, MAX_TOKEN_LIFETIME, TOKEN_TYPE, TokenError, UnixTime,
    crypto_provider,
};

/// Checks dispatch tokens against a published key set, an issuer and an audience.
#[derive(Debug)]
pub struct Verifier {
    keys: BTreeMap<String, KeyDebug>,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
}

/// A decoding key (jsonwebtoken's has no `Debug`).
struct KeyDebug(DecodingKey);

impl std::fmt::Debug for KeyDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519")
    }
}

/// The header as sent, read before anything is trusted: jsonwebtoken's own header type
/// cannot hold `alg: none`, and we want to say exactly what was wrong.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl Verifier {
    /// A verifier that trusts exactly the keys of `jwks` (every one must be an Ed25519 key),
    /// for tokens from `issuer` meant for `audience`, at most [`MAX_TOKEN_LIFETIME`] long.
    pub fn new(
        jwks: &Jwks,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, TokenError> {
        let mut keys = BTreeMap::new();
        for jwk in &jwks.keys {
            // Checked here: jsonwebtoken would panic on an `x` shorter than 32 bytes.
            let key = jwk.verifying_key()?;
            let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
            let decoding = DecodingKey::from_ed_components(&x).map_err(|e| TokenError::BadJwk {
                kid: jwk.kid.clone(),
                problem: e.to_string(),
            })?;
            keys.insert(jwk.kid.clone(), KeyDebug(decoding));
        }
        Ok(Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            max_lifetime: MAX_TOKEN_LIFETIME,
        })
    }

    /// The same verifier with a shorter (or longer) maximum lifetime.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max;
        self
    }

    /// The claims of `token` if it is a dispatch token this verifier accepts at `now` (Unix
    /// seconds); otherwise what is wrong with it.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<DispatchClaims, TokenError> {
        let key = self.key_for(token)?;
        crypto_provider();
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time, issuer and audience are checked below, against `now` and with our messages.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<DispatchClaims>(token, &key.0, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature(kid_of(token)),
                ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::MalformedClaims(e.to_string())
                }
                _ => TokenError::Malformed(e.to_string()),
            })?
            .claims;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// The key the header names, after refusing every header that is not a dispatch token's.
    fn key_for(&self, token: &str) -> Result<&KeyDebug, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "a JWT has three '.'-separated parts".into(),
            ));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|e| TokenError::Malformed(format!("header is not base64url: {e}")))?;
        let header: RawHeader = serde_json::from_slice(&header)
            .map_err(|e| TokenError::Malformed(format!("header is not a JWS header: {e}")))?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        if header.alg != "EdDSA" {
            return Err(TokenError::AlgorithmNotAllowed(header.alg));
        }
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenError::WrongType(header.typ));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "header has 'crit' extensions; dispatch tokens use none".into(),
            ));
        }
        // Any key the header carries itself (jwk, jku, x5u, x5c) is ignored: only `kid` picks
        // a key, and only from the published set.
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        self.keys.get(&kid).ok_or(TokenError::UnknownKid(kid))
    }

    fn check_claims(&self, claims: &DispatchClaims, now: UnixTime) -> Result<(), TokenError> {
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer {
                got: claims.iss.clone(),
                want: self.issuer.clone(),
            });
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience {
                got: claims.aud.clone(),
                want: self.audience.clone(),
            });
        }
        let leeway = LEEWAY.as_secs();
        if claims.exp <= claims.iat {
            return Err(TokenError::ExpiresBeforeIssued {
                iat: claims.iat,
                exp: claims.exp,
            });
        }
        if claims.lifetime() > self.max_lifetime.as_secs() {
            return Err(TokenError::LifetimeTooLong {
                lifetime: claims.lifetime(),
                max: self.max_lifetime.as_secs(),
            });
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture {
                iat: claims.iat,
                now,
                leeway,
            });
        }
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
                leeway,
            });
        }
        Ok(())
    }
}

/// The `kid` of a token whose header was already read (for the error message).
fn kid_of(token: &str) -> String {
    token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<RawHeader>(&h).ok())
        .and_then(|h| h.kid)
        .unwrap_or_default()
}
