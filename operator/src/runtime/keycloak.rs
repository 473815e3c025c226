//! The operator's Keycloak (`--keycloak-url`): the directory the subjects controller links
//! subjects in, and where the Tool controller looks audiences up. One admin login, made when
//! first needed and again after a failure, so the operator starts while Keycloak is down.

use std::sync::Arc;

use tokio::sync::Mutex;
use vexa_keycloak::Admin;

use crate::controllers::subjects::directory::{Call, Directory};
use crate::controllers::tool::audiences::{Audiences, Lookup};

/// Where Keycloak is and how the operator logs in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL, e.g. `http://10.88.0.1:8180`.
    pub url: String,
    /// The realm the gateway exchanges tokens in.
    pub realm: String,
    /// Master-realm admin user and password.
    pub admin_user: String,
    pub admin_password: String,
    /// The identity provider standing for the dispatch-token issuer.
    pub issuer_alias: String,
    /// The dispatch tokens' `iss`.
    pub issuer: String,
    /// Where Keycloak fetches the dispatch tokens' keys.
    pub jwks_url: String,
}

/// The realm, logged in lazily.
#[derive(Debug)]
pub struct Keycloak {
    settings: Settings,
    /// The admin session, once logged in and once the issuer is trusted.
    session: Mutex<Option<Arc<Admin>>>,
}

impl Keycloak {
    /// Nothing is called until a controller needs it.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            session: Mutex::new(None),
        }
    }

    /// The logged-in admin; the first login also makes the issuer an identity provider of the
    /// realm (Keycloak fetches its keys from the JWKS URL and again on an unknown `kid`, so a
    /// key rotation needs no update here).
    async fn admin(&self) -> Result<Arc<Admin>, String> {
        let mut session = self.session.lock().await;
        if let Some(admin) = session.as_ref() {
            return Ok(admin.clone());
        }
        let s = &self.settings;
        let admin = Admin::login(&s.url, &s.admin_user, &s.admin_password)
            .await
            .map_err(|e| e.to_string())?;
        admin
            .upsert_dispatch_issuer(&s.realm, &s.issuer_alias, &s.issuer, &s.jwks_url)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(realm = %s.realm, alias = %s.issuer_alias, issuer = %s.issuer, jwks_url = %s.jwks_url, "Keycloak trusts the dispatch-token issuer");
        let admin = Arc::new(admin);
        *session = Some(admin.clone());
        Ok(admin)
    }

    /// Forgets the session after a failure, so the next call logs in (and upserts) again.
    async fn forget(&self) {
        *self.session.lock().await = None;
    }
}

impl Directory for Keycloak {
    fn link<'a>(&'a self, subject: &'a str) -> Call<'a> {
        Box::pin(async move {
            let admin = self.admin().await?;
            let s = &self.settings;
            let linked = admin
                .ensure_subject(&s.realm, &s.issuer_alias, subject)
                .await
                .map_err(|e| e.to_string());
            if linked.is_err() {
                self.forget().await;
            }
            linked
        })
    }

    fn describe(&self) -> String {
        format!(
            "Keycloak realm {:?} at {}",
            self.settings.realm, self.settings.url
        )
    }
}

impl Keycloak {
    /// One admin lookup; a failure drops the login (the next lookup logs in again).
    fn lookup<'a, F, Fut>(&'a self, ask: F) -> Lookup<'a>
    where
        F: FnOnce(Arc<Admin>) -> Fut + Send + 'a,
        Fut: std::future::Future<Output = Result<bool, vexa_keycloak::Error>> + Send + 'a,
    {
        Box::pin(async move {
            let admin = self.admin().await?;
            let found = ask(admin).await.map_err(|e| e.to_string());
            if found.is_err() {
                self.forget().await;
            }
            found
        })
    }
}

impl Audiences for Keycloak {
    fn client_exists<'a>(&'a self, audience: &'a str) -> Lookup<'a> {
        let realm = &self.settings.realm;
        self.lookup(move |admin| async move { admin.client_exists(realm, audience).await })
    }

    fn scope_exists<'a>(&'a self, scope: &'a str) -> Lookup<'a> {
        let realm = &self.settings.realm;
        self.lookup(move |admin| async move { admin.client_scope_exists(realm, scope).await })
    }

    fn describe(&self) -> String {
        Directory::describe(self)
    }
}
