//! A confidential client at a realm's token endpoint.

use std::time::Duration;

use crate::wire::{self, Http};
use crate::{ACCESS_TOKEN_TYPE, Error, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT};

/// An access token Keycloak issued.
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    /// How long Keycloak says it is valid from now.
    pub expires_in: Duration,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("IssuedToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer (RFC 6749 section 5.1).
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

impl From<TokenResponse> for IssuedToken {
    fn from(r: TokenResponse) -> Self {
        IssuedToken {
            access_token: r.access_token,
            expires_in: Duration::from_secs(r.expires_in),
        }
    }
}

/// A confidential client of one realm, authenticating with its client secret.
#[derive(Clone)]
pub struct TokenClient {
    token_url: String,
    client_id: String,
    client_secret: String,
    http: Http,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenClient {
    /// The client `client_id` of `realm` on the server at `base_url` (e.g.
    /// `http://10.88.0.1:8180`).
    pub fn new(
        base_url: &str,
        realm: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, Error> {
        let base = wire::base("token client", base_url)?;
        if realm.is_empty() || client_id.is_empty() {
            return Err(Error::Invalid {
                call: "token client".into(),
                detail: "realm and client id must not be empty".into(),
            });
        }
        Ok(Self {
            token_url: token_url(&base, realm),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            http: Http::new("token client")?,
        })
    }

    /// The token endpoint this client posts to.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// RFC 7523 section 2.1: `assertion` (a dispatch token) for an access token of the user
    /// that the identity provider matching the assertion's `iss` links to its `sub`.
    pub async fn jwt_grant(&self, assertion: &str) -> Result<IssuedToken, Error> {
        let fields = self.jwt_grant_form(assertion);
        self.post("jwt_grant", &fields).await
    }

    /// RFC 8693: `subject_token` (an access token of this realm) for one whose audience is the
    /// client `audience`, optionally narrowed to `scope`.
    pub async fn exchange(
        &self,
        subject_token: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> Result<IssuedToken, Error> {
        let fields = self.exchange_form(subject_token, audience, scope);
        self.post("exchange", &fields).await
    }

    fn jwt_grant_form<'a>(&'a self, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
        ]
    }

    fn exchange_form<'a>(
        &'a self,
        subject_token: &'a str,
        audience: &'a str,
        scope: Option<&'a str>,
    ) -> Vec<(&'a str, &'a str)> {
        let mut fields = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", audience),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
        ];
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        fields
    }

    async fn post(&self, call: &str, fields: &[(&str, &str)]) -> Result<IssuedToken, Error> {
        let answer = self.http.post_form(call, &self.token_url, fields).await?;
        Ok(answer.json::<TokenResponse>(call)?.into())
    }
}

fn token_url(base: &str, realm: &str) -> String {
    format!(
        "{base}/realms/{}/protocol/openid-connect/token",
        wire::segment(realm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> TokenClient {
        TokenClient::new("http://10.88.0.1:8180/", "vexa", "vexa-gateway", "s3cret").unwrap()
    }

    #[test]
    fn the_token_endpoint_is_the_realms() {
        assert_eq!(
            client().token_url(),
            "http://10.88.0.1:8180/realms/vexa/protocol/openid-connect/token"
        );
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused() {
        let err = TokenClient::new("ftp://x", "vexa", "c", "s").unwrap_err();
        assert!(err.to_string().contains("not an http(s) URL"), "{err}");
        assert!(TokenClient::new("http://x", "", "c", "s").is_err());
    }

    #[test]
    fn the_jwt_grant_form_is_rfc_7523() {
        let c = client();
        let body = wire::form(&c.jwt_grant_form("a.b.c"));
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c\
             &client_id=vexa-gateway&client_secret=s3cret"
        );
    }

    #[test]
    fn the_exchange_form_is_rfc_8693() {
        let c = client();
        let body = wire::form(&c.exchange_form("tok", "vexa-notes", Some("notes write")));
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some(TOKEN_EXCHANGE_GRANT));
        assert_eq!(get("subject_token"), Some("tok"));
        assert_eq!(get("subject_token_type"), Some(ACCESS_TOKEN_TYPE));
        assert_eq!(get("requested_token_type"), Some(ACCESS_TOKEN_TYPE));
        assert_eq!(get("audience"), Some("vexa-notes"));
        assert_eq!(get("scope"), Some("notes write"));
        let without = wire::form(&c.exchange_form("tok", "vexa-notes", None));
        assert!(!without.contains("scope="));
    }

    #[test]
    fn a_refusal_carries_keycloaks_error() {
        let err = Error::refused(
            "jwt_grant",
            400,
            br#"{"error":"invalid_grant","error_description":"Token reuse detected"}"#,
        );
        assert_eq!(err.keycloak_error(), Some("invalid_grant"));
        assert_eq!(
            err.to_string(),
            "keycloak jwt_grant: HTTP 400: invalid_grant: Token reuse detected"
        );
        let admin = Error::refused(
            "ensure_subject",
            409,
            br#"{"errorMessage":"User exists with same username"}"#,
        );
        assert_eq!(
            admin.keycloak_error(),
            Some("User exists with same username")
        );
        let html = Error::refused("x", 502, b"<html>bad gateway</html>");
        assert!(html.to_string().contains("<html>bad gateway"), "{html}");
    }

    #[test]
    fn the_token_response_is_read() {
        let r: TokenResponse = serde_json::from_str(
            r#"{"access_token":"SECRET-TOKEN","expires_in":300,"token_type":"Bearer"}"#,
        )
        .unwrap();
        let t = IssuedToken::from(r);
        assert_eq!(t.expires_in, Duration::from_secs(300));
        assert!(
            !format!("{t:?}").contains("SECRET-TOKEN"),
            "Debug shows no token"
        );
    }
}
