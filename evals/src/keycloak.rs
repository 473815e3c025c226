//! The local cluster's Keycloak (`hack/cluster up`; `VEXA_KEYCLOAK_*` from `hack/cluster env`),
//! for evals that go through the tool gateway: the realm's coordinates, an admin and the
//! gateway's token client, and the operator flags that make dispatch tokens usable as
//! Keycloak JWT-grant assertions.

use vexa_keycloak::{Admin, TokenClient, realm_issuer};

/// Where the local Keycloak is and the secrets `hack/cluster up` made.
#[derive(Clone)]
pub struct Keycloak {
    pub url: String,
    pub realm: String,
    pub admin_user: String,
    pub admin_password: String,
    pub gateway_client: String,
    pub gateway_secret: String,
}

impl std::fmt::Debug for Keycloak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keycloak")
            .field("url", &self.url)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Keycloak {
    /// From `hack/cluster env`; `None` when `VEXA_KEYCLOAK_URL` is unset.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("VEXA_KEYCLOAK_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| panic!("{k} unset: eval \"$(hack/cluster env)\""))
        };
        let file = |k: &str| {
            let path = var(k);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{k}={path}: {e}"))
                .trim()
                .to_owned()
        };
        Some(Self {
            url,
            realm: var("VEXA_KEYCLOAK_REALM"),
            admin_user: var("VEXA_KEYCLOAK_ADMIN_USER"),
            admin_password: file("VEXA_KEYCLOAK_ADMIN_PASSWORD_FILE"),
            gateway_client: var("VEXA_KEYCLOAK_GATEWAY_CLIENT"),
            gateway_secret: file("VEXA_KEYCLOAK_GATEWAY_SECRET_FILE"),
        })
    }

    /// [`Keycloak::from_env`], or a panic saying to start the cluster with Keycloak.
    pub fn required() -> Self {
        Self::from_env()
            .expect("VEXA_KEYCLOAK_URL unset: hack/cluster up, then eval \"$(hack/cluster env)\"")
    }

    /// The realm's issuer URL: what Keycloak requires as a JWT-grant assertion's `aud`, so the
    /// operator's `--token-audience` (and the gateway's expected audience) in the local setup.
    pub fn realm_issuer(&self) -> String {
        realm_issuer(&self.url, &self.realm)
    }

    /// The realm's JWKS: what a tool behind the gateway verifies its tokens with.
    pub fn jwks_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.realm_issuer())
    }

    /// A master-realm admin, logged in.
    pub async fn admin(&self) -> Admin {
        Admin::login(&self.url, &self.admin_user, &self.admin_password)
            .await
            .expect("Keycloak admin login")
    }

    /// The gateway's confidential client (JWT grant, token exchange).
    pub fn gateway(&self) -> TokenClient {
        TokenClient::new(
            &self.url,
            &self.realm,
            &self.gateway_client,
            &self.gateway_secret,
        )
        .expect("the gateway's token client")
    }

    /// Flags for an in-process operator beyond the `VEXA_KEYCLOAK_*` it reads from the
    /// environment: dispatch tokens addressed to the realm (Keycloak refuses any other `aud`
    /// with `Invalid token audience`).
    pub fn operator_flags(&self) -> Vec<String> {
        vec!["--token-audience".into(), self.realm_issuer()]
    }
}
