//! A person's sign-in at an OpenID provider (Keycloak, or any other): the authorization code
//! flow with PKCE (RFC 7636, S256) for a confidential client, as the web console does it.
//!
//! - [`Login::discover`] reads the provider's discovery document and refuses one whose
//!   `issuer` is not the configured one (a mix-up).
//! - [`Login::begin`] makes a fresh `state`, `nonce` and code verifier, and the URL to send the
//!   browser to. The caller keeps the [`Pending`] on the server, bound to that browser.
//! - [`Login::finish`] trades the code for tokens with the verifier and checks the ID token's
//!   `iss`, `aud`, `azp`, `nonce` and `exp`. Its signature is not checked here: the token came
//!   straight from the token endpoint over TLS (OpenID Connect Core 3.1.3.7), and whoever it is
//!   shown to (the API server) checks it against the provider's keys anyway.
//! - [`Login::refresh`] renews the tokens before the ID token expires; [`Login::end`] ends the
//!   person's session at the provider.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::wire::{self, Http};

/// What the provider's discovery document says (the fields used here).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Provider {
    /// The issuer, as it puts it in `iss`.
    pub issuer: String,
    /// Where the browser signs in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are traded.
    pub token_endpoint: String,
    /// Where a session ends (RP-initiated logout), if the provider has one.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// How the client is registered at the provider.
#[derive(Clone)]
pub struct ClientSettings {
    /// The issuer URL (without `/.well-known/openid-configuration`).
    pub issuer: String,
    /// The client's id.
    pub client_id: String,
    /// The client's secret.
    pub client_secret: String,
    /// Where the provider sends the browser back with the code (registered at the provider).
    pub redirect_uri: String,
    /// The scopes asked for; `openid` is always among them.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// A sign-in under way: what the browser was sent off with, kept on the server.
#[derive(Clone)]
pub struct Pending {
    /// The `state` the provider sends back (also what the browser's cookie holds).
    pub state: String,
    nonce: String,
    verifier: String,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// The tokens of a signed-in person.
#[derive(Clone)]
pub struct Tokens {
    /// The ID token: what the API server is shown.
    pub id_token: String,
    /// What renews them, if the provider gave one.
    pub refresh_token: Option<String>,
    /// When the ID token expires (its `exp`).
    pub expires_at: SystemTime,
    /// Its `sub`.
    pub subject: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer.
#[derive(serde::Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

/// The ID token's claims checked here.
#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    azp: Option<String>,
    nonce: Option<String>,
    exp: u64,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A confidential client's sign-in at one provider.
#[derive(Clone, Debug)]
pub struct Login {
    settings: ClientSettings,
    provider: Provider,
    http: Http,
}

/// 32 random bytes, base64url.
fn random() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Invalid {
        call: "oidc".into(),
        detail: format!("random numbers: {e}"),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE challenge of `verifier` (S256).
fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Login {
    /// Reads `{issuer}/.well-known/openid-configuration` (trusting only `ca` for TLS, if
    /// given) and checks that it names the same issuer.
    pub async fn discover(settings: ClientSettings, ca: Option<&[u8]>) -> Result<Self, Error> {
        const CALL: &str = "oidc discovery";
        let issuer = settings.issuer.trim_end_matches('/').to_owned();
        wire::base(CALL, &issuer)?;
        if settings.client_id.is_empty() || settings.redirect_uri.is_empty() {
            return Err(Error::Invalid {
                call: CALL.into(),
                detail: "the client id and the redirect URI must not be empty".into(),
            });
        }
        let http = match ca {
            Some(pem) => Http::with_ca(CALL, pem)?,
            None => Http::new(CALL)?,
        };
        let url = format!("{issuer}/.well-known/openid-configuration");
        let provider: Provider = http
            .send(CALL, http::Method::GET, &url, None, None)
            .await?
            .json(CALL)?;
        if provider.issuer.trim_end_matches('/') != issuer {
            return Err(Error::Unexpected {
                call: CALL.into(),
                detail: format!(
                    "the provider at {url} calls itself {:?}, not {issuer:?}",
                    provider.issuer
                ),
            });
        }
        Ok(Self {
            settings,
            provider,
            http,
        })
    }

    /// What discovery found.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// A new sign-in: what to keep, and the URL to send the browser to.
    pub fn begin(&self) -> Result<(Pending, String), Error> {
        let pending = Pending {
            state: random()?,
            nonce: random()?,
            verifier: random()?,
        };
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(
            self.settings
                .scopes
                .iter()
                .filter(|s| s.as_str() != "openid")
                .cloned(),
        );
        let query = wire::form(&[
            ("response_type", "code"),
            ("client_id", &self.settings.client_id),
            ("redirect_uri", &self.settings.redirect_uri),
            ("scope", &scopes.join(" ")),
            ("state", &pending.state),
            ("nonce", &pending.nonce),
            ("code_challenge", &challenge(&pending.verifier)),
            ("code_challenge_method", "S256"),
        ]);
        let sep = if self.provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{sep}{query}", self.provider.authorization_endpoint);
        Ok((pending, url))
    }

    /// Trades `code` (sent back with `pending.state`) for tokens.
    pub async fn finish(&self, pending: &Pending, code: &str) -> Result<Tokens, Error> {
        const CALL: &str = "oidc code";
        let answer = self
            .http
            .post_form(
                CALL,
                &self.provider.token_endpoint,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", &self.settings.redirect_uri),
                    ("code_verifier", &pending.verifier),
                    ("client_id", &self.settings.client_id),
                    ("client_secret", &self.settings.client_secret),
                ],
            )
            .await?;
        self.tokens(CALL, answer.json(CALL)?, Some(&pending.nonce), None)
    }

    /// New tokens for `refresh_token`; the ID token must name the same `subject`.
    pub async fn refresh(&self, refresh_token: &str, subject: &str) -> Result<Tokens, Error> {
        const CALL: &str = "oidc refresh";
        let answer = self
            .http
            .post_form(
                CALL,
                &self.provider.token_endpoint,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("scope", "openid"),
                    ("client_id", &self.settings.client_id),
                    ("client_secret", &self.settings.client_secret),
                ],
            )
            .await?;
        let mut tokens = self.tokens(CALL, answer.json(CALL)?, None, Some(subject))?;
        // A provider that does not rotate refresh tokens keeps the old one valid.
        if tokens.refresh_token.is_none() {
            tokens.refresh_token = Some(refresh_token.to_owned());
        }
        Ok(tokens)
    }

    /// Ends the person's session at the provider (back-channel: the refresh token, with the
    /// client's credentials), so a signed-out person's refresh token renews nothing.
    pub async fn end(&self, refresh_token: &str) -> Result<(), Error> {
        const CALL: &str = "oidc logout";
        let Some(url) = &self.provider.end_session_endpoint else {
            return Ok(());
        };
        self.http
            .post_form(
                CALL,
                url,
                &[
                    ("refresh_token", refresh_token),
                    ("client_id", &self.settings.client_id),
                    ("client_secret", &self.settings.client_secret),
                ],
            )
            .await?
            .done(CALL)
    }

    fn tokens(
        &self,
        call: &str,
        answer: TokenResponse,
        nonce: Option<&str>,
        subject: Option<&str>,
    ) -> Result<Tokens, Error> {
        let wrong = |detail: String| Error::Unexpected {
            call: call.to_owned(),
            detail,
        };
        let id_token = answer
            .id_token
            .ok_or_else(|| wrong("the provider sent no ID token (is `openid` a scope?)".into()))?;
        let claims = claims(&id_token).map_err(wrong)?;
        check(
            &claims,
            &self.provider.issuer,
            &self.settings.client_id,
            nonce,
            subject,
            SystemTime::now(),
        )
        .map_err(wrong)?;
        Ok(Tokens {
            id_token,
            refresh_token: answer.refresh_token,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
            subject: claims.sub,
        })
    }
}

/// The claims of a JWT (its middle part), unverified.
fn claims(jwt: &str) -> Result<Claims, String> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the ID token is not a JWT".into());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the ID token's claims are not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the ID token's claims: {e}"))
}

/// The ID token checks of OpenID Connect Core 3.1.3.7 (all but the signature).
fn check(
    c: &Claims,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
    subject: Option<&str>,
    now: SystemTime,
) -> Result<(), String> {
    if c.iss != issuer {
        return Err(format!("the ID token is from {:?}, not {issuer:?}", c.iss));
    }
    if !c.aud.iter().any(|a| a == client_id) {
        return Err(format!("the ID token is not for {client_id:?}"));
    }
    if c.aud.len() > 1 && c.azp.as_deref() != Some(client_id) {
        return Err(format!(
            "the ID token was not issued to {client_id:?} (azp)"
        ));
    }
    if let Some(expected) = nonce
        && c.nonce.as_deref() != Some(expected)
    {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    if let Some(expected) = subject
        && c.sub != expected
    {
        return Err("the renewed ID token names someone else".into());
    }
    let exp = UNIX_EPOCH + Duration::from_secs(c.exp);
    if exp <= now {
        return Err("the ID token has expired".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://idp/realms/vexa", "sub": "u-1", "aud": "vexa-console",
            "azp": "vexa-console", "nonce": "n-1", "exp": 4_000_000_000u64,
        })
    }

    fn checked(v: serde_json::Value, nonce: Option<&str>, sub: Option<&str>) -> Result<(), String> {
        let c = claims(&jwt(v))?;
        check(
            &c,
            "https://idp/realms/vexa",
            "vexa-console",
            nonce,
            sub,
            SystemTime::now(),
        )
    }

    #[test]
    fn a_good_id_token_passes() {
        checked(good(), Some("n-1"), Some("u-1")).unwrap();
        let mut many = good();
        many["aud"] = serde_json::json!(["vexa-console", "account"]);
        checked(many, Some("n-1"), None).unwrap();
    }

    #[test]
    fn a_token_of_another_sign_in_issuer_or_client_is_refused() {
        let cases = [
            ("nonce", serde_json::json!("n-2"), "nonce"),
            ("iss", serde_json::json!("https://evil/realms/vexa"), "from"),
            ("aud", serde_json::json!("vexa-gateway"), "not for"),
            ("exp", serde_json::json!(1), "expired"),
            ("sub", serde_json::json!("u-2"), "someone else"),
        ];
        for (field, value, says) in cases {
            let mut v = good();
            v[field] = value.clone();
            let err = checked(v, Some("n-1"), Some("u-1")).unwrap_err();
            assert!(err.contains(says), "{field}={value}: {err}");
        }
        // Many audiences and someone else's azp.
        let mut v = good();
        v["aud"] = serde_json::json!(["vexa-console", "vexa-gateway"]);
        v["azp"] = serde_json::json!("vexa-gateway");
        assert!(checked(v, None, None).unwrap_err().contains("azp"));
        // No nonce at all when one was sent.
        let mut v = good();
        v.as_object_mut().unwrap().remove("nonce");
        assert!(checked(v, Some("n-1"), None).is_err());
    }

    #[test]
    fn what_is_not_a_jwt_is_refused() {
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", "a.e30.c"] {
            assert!(claims(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_challenge_is_s256_of_the_verifier() {
        // base64url(SHA-256(verifier)), unpadded, as `openssl dgst -sha256 -binary | base64`
        // gives it with the URL alphabet.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mJ92K7b4IWpzu2pT6PHg6Vz4WWlUJ8"),
            "ocGiVQKk4TSHvj34OT6CtIxjX4HxuoVMpY5HlSjRHiw"
        );
    }
}
