//! Where the subjects controller links subjects: the identity provider the gateway trades
//! dispatch tokens at (Keycloak). A trait, so the controller is tested without Keycloak and the
//! operator runs without it (`--keycloak-url` unset: Identities have nothing to link).

use std::future::Future;
use std::pin::Pin;

/// A boxed future of a directory call; `Err` says why it failed, in the user's terms.
pub type Call<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The users the gateway's JWT grant maps dispatch tokens to.
pub trait Directory: Send + Sync {
    /// Makes sure a user for `subject` exists, linked to the dispatch-token issuer (which the
    /// directory also makes sure it trusts). Idempotent.
    fn link<'a>(&'a self, subject: &'a str) -> Call<'a>;

    /// Where the users live, for messages (e.g. `Keycloak realm "vexa" at http://…`).
    fn describe(&self) -> String;
}
