//! Keycloak clients without kube, for the tool gateway and the operator.
//!
//! - [`TokenClient`]: a confidential client at a realm's token endpoint: the JWT authorization
//!   grant (RFC 7523: a dispatch token in, a Keycloak token for its subject out) and standard
//!   token exchange (RFC 8693: that token in, one for a tool's audience out).
//! - [`Admin`]: the admin REST API calls the operator makes: the dispatch-token issuer as a
//!   `jwt-authorization-grant` identity provider, a user per subject linked to it, client lookup.
//! - [`oidc::Login`]: a person's sign-in (authorization code with PKCE) at an OpenID provider,
//!   for the web console.
//!
//! Every failure is an [`Error`] naming the call and carrying Keycloak's `error` /
//! `error_description` when it sent them.

mod admin;
mod error;
pub mod oidc;
mod token;
mod wire;

pub use admin::{Admin, IssuerSettings};
pub use error::Error;
pub use token::{IssuedToken, TokenClient};

/// The grant type of RFC 7523 section 2.1 (a JWT as an authorization grant).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The grant type of RFC 8693 (token exchange).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an OAuth access token (RFC 8693 section 3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Keycloak's identity provider type for the JWT authorization grant (feature
/// `jwt-authorization-grant`, preview in 26.7).
pub const JWT_GRANT_PROVIDER_ID: &str = "jwt-authorization-grant";

/// The issuer URL of `realm` on the server at `base_url` (what Keycloak puts in `iss`, and
/// the audience it accepts in a JWT grant's assertion).
pub fn realm_issuer(base_url: &str, realm: &str) -> String {
    format!(
        "{}/realms/{}",
        base_url.trim_end_matches('/'),
        wire::segment(realm)
    )
}
