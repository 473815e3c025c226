//! The admin REST API calls the operator makes, logged in as a master-realm admin.

use http::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::wire::{self, Http};
use crate::{Error, JWT_GRANT_PROVIDER_ID};

/// How the dispatch-token issuer is trusted (the identity provider's JWT-grant settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerSettings {
    /// The longest `exp - now` an assertion may have (Keycloak's default is 300 s).
    pub max_assertion_lifetime: Duration,
    /// Clock skew tolerated on `exp`/`iat`/`nbf`.
    pub clock_skew: Duration,
    /// Whether an assertion (its `jti`) may be presented more than once.
    pub assertion_reuse: bool,
}

impl Default for IssuerSettings {
    fn default() -> Self {
        Self {
            // A dispatch token lives for its run's deadline at most; see README "Keycloak".
            max_assertion_lifetime: Duration::from_secs(24 * 3600),
            clock_skew: Duration::from_secs(30),
            // The worker presents the same dispatch token on every tool call until it is re-minted.
            assertion_reuse: true,
        }
    }
}

/// A logged-in admin of the server at a base URL (master realm, client `admin-cli`).
pub struct Admin {
    base: String,
    username: String,
    password: String,
    http: Http,
    token: Mutex<(String, Instant)>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("base", &self.base)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Login {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// A token this close to its expiry is renewed before use.
const RENEW_BEFORE: Duration = Duration::from_secs(10);

impl Admin {
    /// Logs in with the password grant of the master realm's `admin-cli` client.
    pub async fn login(base_url: &str, username: &str, password: &str) -> Result<Self, Error> {
        let base = wire::base("admin login", base_url)?;
        let http = Http::new("admin login")?;
        let token = Self::password_grant(&http, &base, username, password).await?;
        Ok(Self {
            base,
            username: username.to_owned(),
            password: password.to_owned(),
            http,
            token: Mutex::new(token),
        })
    }

    async fn password_grant(
        http: &Http,
        base: &str,
        username: &str,
        password: &str,
    ) -> Result<(String, Instant), Error> {
        let url = format!("{base}/realms/master/protocol/openid-connect/token");
        let fields = [
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", username),
            ("password", password),
        ];
        let login: Login = http
            .post_form("admin login", &url, &fields)
            .await?
            .json("admin login")?;
        Ok((
            login.access_token,
            Instant::now() + Duration::from_secs(login.expires_in),
        ))
    }

    /// The admin token, logging in again when it is about to expire.
    async fn bearer(&self) -> Result<String, Error> {
        let mut token = self.token.lock().await;
        if Instant::now() + RENEW_BEFORE >= token.1 {
            *token = Self::password_grant(&self.http, &self.base, &self.username, &self.password)
                .await?;
        }
        Ok(token.0.clone())
    }

    async fn call(
        &self,
        call: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<wire::Answer, Error> {
        let url = format!("{}/admin/realms/{path}", self.base);
        let bearer = self.bearer().await?;
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.http
            .send(call, method, &url, Some(&bearer), body)
            .await
    }

    /// Makes (or updates) the `jwt-authorization-grant` identity provider `alias` in `realm`
    /// trusting `issuer`'s keys at `jwks_url`, with the default [`IssuerSettings`].
    pub async fn upsert_dispatch_issuer(
        &self,
        realm: &str,
        alias: &str,
        issuer: &str,
        jwks_url: &str,
    ) -> Result<(), Error> {
        self.upsert_dispatch_issuer_with(realm, alias, issuer, jwks_url, &IssuerSettings::default())
            .await
    }

    /// [`Admin::upsert_dispatch_issuer`] with explicit settings.
    pub async fn upsert_dispatch_issuer_with(
        &self,
        realm: &str,
        alias: &str,
        issuer: &str,
        jwks_url: &str,
        settings: &IssuerSettings,
    ) -> Result<(), Error> {
        const CALL: &str = "upsert_dispatch_issuer";
        let body = issuer_representation(alias, issuer, jwks_url, settings);
        let path = format!(
            "{}/identity-provider/instances/{}",
            wire::segment(realm),
            wire::segment(alias)
        );
        let existing = self.call(CALL, Method::GET, &path, None).await?;
        if existing.status == 404 {
            let create = format!("{}/identity-provider/instances", wire::segment(realm));
            self.call(CALL, Method::POST, &create, Some(&body))
                .await?
                .done(CALL)
        } else {
            let mut current: Value = existing.json(CALL)?;
            // Keep Keycloak's internal id and any setting we do not manage.
            if let (Some(cur), Some(new)) = (current.as_object_mut(), body.as_object()) {
                for (k, v) in new {
                    if k == "config" {
                        let cfg = cur.entry("config").or_insert_with(|| json!({}));
                        if let (Some(cfg), Some(newcfg)) = (cfg.as_object_mut(), v.as_object()) {
                            cfg.extend(newcfg.clone());
                        }
                    } else {
                        cur.insert(k.clone(), v.clone());
                    }
                }
            }
            self.call(CALL, Method::PUT, &path, Some(&current))
                .await?
                .done(CALL)
        }
    }

    /// A user named `subject` exists in `realm`, enabled, linked to the identity provider
    /// `alias` with `subject` as its user id there. Idempotent.
    pub async fn ensure_subject(
        &self,
        realm: &str,
        alias: &str,
        subject: &str,
    ) -> Result<(), Error> {
        const CALL: &str = "ensure_subject";
        if subject.is_empty() {
            return Err(Error::Invalid {
                call: CALL.into(),
                detail: "empty subject".into(),
            });
        }
        let id = match self.user_id(realm, subject).await? {
            Some(id) => id,
            None => {
                let path = format!("{}/users", wire::segment(realm));
                let created = self
                    .call(
                        CALL,
                        Method::POST,
                        &path,
                        Some(&user_representation(subject)),
                    )
                    .await?;
                // 409: someone made it meanwhile; either way it exists now.
                if created.status != 409 {
                    created.done(CALL)?;
                }
                self.user_id(realm, subject)
                    .await?
                    .ok_or_else(|| Error::Unexpected {
                        call: CALL.into(),
                        detail: format!("user {subject:?} not found right after creating it"),
                    })?
            }
        };
        let (links, current) = self.federated_identities(CALL, realm, &id).await?;
        let linked = current.iter().find(|l| l["identityProvider"] == alias);
        match linked {
            Some(l) if l["userId"] == subject => return Ok(()),
            Some(_) => {
                let path = format!("{links}/{}", wire::segment(alias));
                self.call(CALL, Method::DELETE, &path, None)
                    .await?
                    .done(CALL)?;
            }
            None => {}
        }
        let path = format!("{links}/{}", wire::segment(alias));
        let link = json!({"identityProvider": alias, "userId": subject, "userName": subject});
        let answer = self.call(CALL, Method::POST, &path, Some(&link)).await?;
        if answer.status == 409 {
            Ok(())
        } else {
            answer.done(CALL)
        }
    }

    /// The user id the user named `username` is linked to at identity provider `alias`
    /// (`None`: no such user, or no link to `alias`).
    pub async fn linked_user_id(
        &self,
        realm: &str,
        alias: &str,
        username: &str,
    ) -> Result<Option<String>, Error> {
        const CALL: &str = "linked_user_id";
        let Some(id) = self.user_id(realm, username).await? else {
            return Ok(None);
        };
        let (_, current) = self.federated_identities(CALL, realm, &id).await?;
        Ok(current
            .iter()
            .find(|l| l["identityProvider"] == alias)
            .and_then(|l| l["userId"].as_str())
            .map(str::to_owned))
    }

    /// The federated-identity links of user `id` (as part of `call`), with their path.
    async fn federated_identities(
        &self,
        call: &'static str,
        realm: &str,
        id: &str,
    ) -> Result<(String, Vec<Value>), Error> {
        let links = format!(
            "{}/users/{}/federated-identity",
            wire::segment(realm),
            wire::segment(id)
        );
        let current = self
            .call(call, Method::GET, &links, None)
            .await?
            .json(call)?;
        Ok((links, current))
    }

    /// The id of the user named exactly `username` (what its tokens carry as `sub`).
    pub async fn user_id(&self, realm: &str, username: &str) -> Result<Option<String>, Error> {
        let path = format!(
            "{}/users?exact=true&briefRepresentation=true&username={}",
            wire::segment(realm),
            wire::segment(username)
        );
        let users: Vec<Value> = self
            .call("ensure_subject: find user", Method::GET, &path, None)
            .await?
            .json("ensure_subject: find user")?;
        Ok(users
            .iter()
            .find(|u| {
                u["username"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(username))
            })
            .and_then(|u| u["id"].as_str())
            .map(str::to_owned))
    }

    /// Whether `realm` has a client whose client id is `client_id`.
    pub async fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool, Error> {
        const CALL: &str = "client_exists";
        let path = format!(
            "{}/clients?search=false&clientId={}",
            wire::segment(realm),
            wire::segment(client_id)
        );
        let clients: Vec<Value> = self
            .call(CALL, Method::GET, &path, None)
            .await?
            .json(CALL)?;
        Ok(clients.iter().any(|c| c["clientId"] == client_id))
    }
}

impl Admin {
    /// Whether `realm` has a client scope named `name` (what a token exchange's `scope` names;
    /// Keycloak answers `invalid_scope` for any other).
    pub async fn client_scope_exists(&self, realm: &str, name: &str) -> Result<bool, Error> {
        const CALL: &str = "client_scope_exists";
        let path = format!("{}/client-scopes", wire::segment(realm));
        let scopes: Vec<Value> = self
            .call(CALL, Method::GET, &path, None)
            .await?
            .json(CALL)?;
        Ok(scopes.iter().any(|s| s["name"] == name))
    }
}

/// The identity provider of the dispatch-token issuer (provider `jwt-authorization-grant`).
fn issuer_representation(alias: &str, issuer: &str, jwks_url: &str, s: &IssuerSettings) -> Value {
    json!({
        "alias": alias,
        "providerId": JWT_GRANT_PROVIDER_ID,
        "enabled": true,
        // Never a login option: it only validates assertions.
        "hideOnLogin": true,
        "config": {
            "issuer": issuer,
            "useJwksUrl": "true",
            "jwksUrl": jwks_url,
            "jwtAuthorizationGrantEnabled": "true",
            "jwtAuthorizationGrantAssertionReuseAllowed": s.assertion_reuse.to_string(),
            "jwtAuthorizationGrantMaxAllowedAssertionExpiration": s.max_assertion_lifetime.as_secs().to_string(),
            "jwtAuthorizationGrantAllowedClockSkew": s.clock_skew.as_secs().to_string(),
            "jwtAuthorizationGrantAssertionSignatureAlg": "EdDSA",
        }
    })
}

/// A user for a subject: enabled, no credentials (it only ever signs in through the issuer).
fn user_representation(subject: &str) -> Value {
    json!({"username": subject, "enabled": true, "emailVerified": false, "requiredActions": []})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_a_jwt_grant_provider_reading_the_jwks_url() {
        let v = issuer_representation(
            "vexa-dispatch",
            "https://op",
            "http://op/.well-known/jwks.json",
            &IssuerSettings::default(),
        );
        assert_eq!(v["providerId"], "jwt-authorization-grant");
        assert_eq!(v["config"]["issuer"], "https://op");
        assert_eq!(v["config"]["useJwksUrl"], "true");
        assert_eq!(v["config"]["jwksUrl"], "http://op/.well-known/jwks.json");
        assert_eq!(v["config"]["jwtAuthorizationGrantEnabled"], "true");
        assert_eq!(
            v["config"]["jwtAuthorizationGrantAssertionSignatureAlg"],
            "EdDSA"
        );
    }

    #[test]
    fn a_user_has_no_credentials_or_required_actions() {
        let u = user_representation("alice");
        assert_eq!(u["username"], "alice");
        assert_eq!(u["enabled"], true);
        assert!(u.get("credentials").is_none());
    }
}
