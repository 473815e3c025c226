//! Signing in at the cluster's OpenID provider (authorization code with PKCE), for clusters
//! whose API server trusts that provider's ID tokens (`--authentication-config`).
//!
//! The console never decides who someone is: it sends the browser to the provider, trades the
//! code it comes back with for an ID token, and shows that token to the API server, which
//! checks its signature, issuer and audience and names the person (a SelfSubjectReview, as
//! for a pasted token). The token stays on the server; before it expires the console renews
//! it with the refresh token, and signing out ends the session at the provider too.
//!
//! A sign-in under way is bound to the browser that started it: its `state` is kept here
//! (single use, ten minutes at most, a bounded number at once) and in an HttpOnly cookie, and
//! the callback must bring both. A code pushed into someone else's browser (login CSRF), a
//! replayed callback or a forged `state` signs nobody in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use vexa_keycloak::oidc::{ClientSettings, Login, Pending, Tokens};

use crate::cookie::Cookie;
use crate::session::same_secret;

/// A sign-in started this long ago and not finished is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// The most sign-ins under way at once (a flood of starts cannot grow the map past it).
const MAX_PENDING: usize = 10_000;
/// The ID token is renewed when it has less than this left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Why a sign-in through the provider failed, said to the person.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be asked (discovery, the code, a renewal).
    #[error("the sign-in service did not answer as expected: {0}")]
    Provider(String),
    /// The callback is not for a sign-in this browser started.
    #[error("this sign-in was not started in this browser, or it is over: start again")]
    NotStarted,
    /// The provider sent the person back with an error.
    #[error("the sign-in service refused: {0}")]
    Refused(String),
    /// Too many sign-ins under way.
    #[error("too many sign-ins are under way; try again in a minute")]
    Busy,
}

/// How the console is registered at the provider.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The client.
    pub client: ClientSettings,
    /// The CA bundle (PEM) that signs the provider's certificate, if not a public one.
    pub ca: Option<Vec<u8>>,
    /// What the sign-in button calls the provider.
    pub label: String,
}

/// The provider, found once, and the sign-ins under way.
pub struct Oidc {
    settings: Settings,
    /// Binds a sign-in to the browser that started it. `Lax`: the provider's redirect back is
    /// a top-level navigation from another site, on which a `Strict` cookie would not be sent.
    cookie: Cookie,
    login: tokio::sync::Mutex<Option<Login>>,
    pending: Mutex<HashMap<[u8; 32], (Pending, Instant)>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn key(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

impl Oidc {
    /// Sign-in at the provider of `settings`; `secure`: its cookie is `Secure`.
    pub fn new(settings: Settings, secure: bool) -> Self {
        Self {
            settings,
            cookie: Cookie::new(
                "__Host-vexa-signin",
                "vexa-signin",
                "Lax",
                PENDING_TTL,
                secure,
            ),
            login: tokio::sync::Mutex::new(None),
            pending: Mutex::default(),
        }
    }

    /// What the button says.
    pub fn label(&self) -> &str {
        &self.settings.label
    }

    /// The provider, discovered on first use (and again after a failure: it may start later
    /// than the console).
    async fn login(&self) -> Result<Login, OidcError> {
        let mut cached = self.login.lock().await;
        if let Some(l) = cached.as_ref() {
            return Ok(l.clone());
        }
        let login = Login::discover(self.settings.client.clone(), self.settings.ca.as_deref())
            .await
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        *cached = Some(login.clone());
        Ok(login)
    }

    /// A new sign-in: the `state` (for the browser's cookie) and the provider's URL.
    pub async fn begin(&self) -> Result<(String, String), OidcError> {
        let login = self.login().await?;
        let (pending, url) = login
            .begin()
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_PENDING {
            map.retain(|_, (_, at)| now.duration_since(*at) < PENDING_TTL);
            if map.len() >= MAX_PENDING {
                return Err(OidcError::Busy);
            }
        }
        let state = pending.state.clone();
        map.insert(key(&state), (pending, now));
        Ok((state, url))
    }

    /// Finishes the sign-in the provider sent back with `state` and `code`, if this browser
    /// (its cookie holds `cookie_state`) started it. The state is spent either way.
    pub async fn finish(
        &self,
        cookie_state: Option<&str>,
        state: &str,
        code: &str,
    ) -> Result<Tokens, OidcError> {
        let pending = self.take(state).ok_or(OidcError::NotStarted)?;
        if !cookie_state.is_some_and(|c| same_secret(c, state)) {
            return Err(OidcError::NotStarted);
        }
        let login = self.login().await?;
        login
            .finish(&pending, code)
            .await
            .map_err(|e| OidcError::Refused(e.to_string()))
    }

    /// Renews a session's tokens.
    pub async fn refresh(&self, refresh_token: &str, subject: &str) -> Result<Tokens, OidcError> {
        let login = self.login().await?;
        login
            .refresh(refresh_token, subject)
            .await
            .map_err(|e| OidcError::Refused(e.to_string()))
    }

    /// Ends the person's session at the provider (best effort: the console's session is over
    /// whatever it answers).
    pub async fn end(&self, refresh_token: &str) {
        match self.login().await {
            Ok(login) => {
                if let Err(e) = login.end(refresh_token).await {
                    tracing::warn!(error = %e, "ending the session at the sign-in service");
                }
            }
            Err(e) => tracing::warn!(error = %e, "ending the session at the sign-in service"),
        }
    }

    /// The pending sign-in of `state`, removed (single use), if it is not too old.
    fn take(&self, state: &str) -> Option<Pending> {
        let (pending, at) = self.lock().remove(&key(state))?;
        (at.elapsed() < PENDING_TTL).then_some(pending)
    }

    /// How many sign-ins are under way.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &'static str {
        self.cookie.name()
    }

    /// The `Set-Cookie` value binding a sign-in to this browser.
    pub fn set_cookie(&self, state: &str) -> String {
        self.cookie.set(state)
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(&self) -> String {
        self.cookie.clear()
    }

    /// The state in a `Cookie` header, if any.
    pub fn state_in<'a>(&self, cookie_header: &'a str) -> Option<&'a str> {
        self.cookie.find(cookie_header)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Pending, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a session signed in through the provider keeps to renew its token.
#[derive(Clone)]
pub struct Renewal {
    /// The refresh token.
    pub refresh_token: String,
    /// The ID token's `sub`, which a renewed one must name too.
    pub subject: String,
    /// When the current ID token expires.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Renewal {
    /// What `tokens` renew with, if the provider gave a refresh token.
    pub fn of(tokens: &Tokens) -> Option<Self> {
        Some(Self {
            refresh_token: tokens.refresh_token.clone()?,
            subject: tokens.subject.clone(),
            expires_at: tokens.expires_at,
        })
    }

    /// Whether the token should be renewed now.
    pub fn due(&self, now: SystemTime) -> bool {
        self.expires_at
            .duration_since(now)
            .is_ok_and(|left| left < RENEW_BEFORE)
            || self.expired(now)
    }

    /// Whether the token has expired.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> Oidc {
        Oidc::new(
            Settings {
                client: ClientSettings {
                    issuer: "https://127.0.0.1:1/realms/vexa".into(),
                    client_id: "vexa-console".into(),
                    client_secret: "s".into(),
                    redirect_uri: "http://127.0.0.1/signin/oidc/callback".into(),
                    scopes: vec![],
                },
                ca: None,
                label: "Keycloak".into(),
            },
            true,
        )
    }

    #[tokio::test]
    async fn a_callback_without_a_started_sign_in_is_refused_before_the_provider_is_asked() {
        // Nothing listens at the issuer: reaching it would be a Provider error, not NotStarted.
        let o = oidc();
        let e = o
            .finish(Some("forged"), "forged", "code")
            .await
            .unwrap_err();
        assert!(matches!(e, OidcError::NotStarted), "{e}");
        let e = o.finish(None, "forged", "code").await.unwrap_err();
        assert!(matches!(e, OidcError::NotStarted), "{e}");
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_and_read_back() {
        let o = oidc();
        let c = o.set_cookie("st");
        assert!(c.starts_with("__Host-vexa-signin=st; Path=/; HttpOnly; SameSite=Lax"));
        assert!(c.ends_with("; Secure"));
        assert_eq!(o.state_in("a=b; __Host-vexa-signin=st"), Some("st"));
        assert_eq!(o.state_in("vexa-signin=st"), None);
    }

    #[test]
    fn renewal_is_due_a_minute_before_expiry() {
        let now = SystemTime::now();
        let r = |left: u64| Renewal {
            refresh_token: "r".into(),
            subject: "s".into(),
            expires_at: now + Duration::from_secs(left),
        };
        assert!(!r(300).due(now));
        assert!(r(30).due(now));
        assert!(r(0).due(now) && r(0).expired(now));
    }
}
