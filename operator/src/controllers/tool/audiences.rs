//! Where the Tool controller asks whether a Tool's `audience` (and `scope`) exists: the Keycloak realm the
//! gateway exchanges tokens in. A trait, so the controller is tested without Keycloak and runs
//! without it (`--keycloak-url` unset: the condition stays `Unknown`).

use std::future::Future;
use std::pin::Pin;

/// A boxed future of a directory lookup.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;

/// The clients the gateway can exchange tokens for.
pub trait Audiences: Send + Sync {
    /// Whether a client named `audience` exists (`Err`: the directory could not be asked, and
    /// why).
    fn client_exists<'a>(&'a self, audience: &'a str) -> Lookup<'a>;

    /// Whether a client scope named `scope` exists: the gateway asks for the Tool's `scope` by
    /// name in each exchange.
    fn scope_exists<'a>(&'a self, scope: &'a str) -> Lookup<'a>;

    /// Where the lookup happens, for messages (e.g. `Keycloak realm "vexa" at http://…`).
    fn describe(&self) -> String;
}
