//! Dispatch tokens: what the operator mints for each run and every boundary verifies.
//!
//! # Format
//! A JWS compact token (RFC 7515/7519) signed with Ed25519 (`alg` `EdDSA`, RFC 8037). Header:
//! `{"alg":"EdDSA","typ":"vexa-dispatch+jwt","kid":<key id>}`. Claims ([`DispatchClaims`]):
//! `iss`, `sub` (the subject), `act.sub` (the launcher, RFC 8693), `aud` (the gateway),
//! `workspaces` (`[{name, mode: ro|rw}]`), `tools`, `gated_tools` (the tools whose calls
//! become Cards), `jti` (the dispatch id `<namespace>/<name>`), `iat`, `exp` (Unix seconds;
//! minutes apart: [`DEFAULT_TOKEN_LIFETIME`], never more than [`MAX_TOKEN_LIFETIME`]) and
//! `cnf.spiffe_id` (the SPIFFE ID of the pod's trusted container, which alone may present it).
//!
//! The [`Verifier`] accepts a token only if its header says `EdDSA`, `vexa-dispatch+jwt` and a
//! `kid` of the published key set, the signature holds, `iss` and `aud` are the expected ones,
//! `iat <= now + LEEWAY`, `now < exp + LEEWAY`, and `0 < exp - iat <= MAX_TOKEN_LIFETIME`.
//! Every refusal is its own [`TokenError`] variant.
//!
//! # Keys and rotation
//! The [`KeySet`] holds Ed25519 keys, each named (`kid`) by its RFC 7638 JWK thumbprint. The
//! newest key signs. [`KeySet::rotate`] makes a new key current once the current one is older
//! than the rotation period, and marks the one it replaces with
//! `retire_at = superseded + max token lifetime + LEEWAY`: until then it stays in the JWKS, so
//! every token it signed verifies until that token expires; after that it is dropped. A
//! running dispatch is re-minted with the current key before its token expires, so a rotation
//! never breaks one. The key set lives in a Secret ([`KeySet::to_secret_data`]: `keys.json`
//! plus one PKCS#8 PEM `<kid>.pem` per key); [`KeySet::jwks`] is what the operator serves.
//!
//! The same keys sign records that are not tokens (audit checkpoints) with
//! [`KeySet::sign`]; [`Jwks::verify_detached`] checks them. Those signatures cover a context
//! prefix, so one can never pass for a token's signature.

mod claims;
mod error;
mod jwks;
mod keys;
mod mint;
mod verify;

use std::time::Duration;

pub use claims::{Actor, Confirmation, DispatchClaims, RunIdentity, WorkspaceClaim};
pub use error::TokenError;
pub use jwks::{DetachedSignature, Jwk, Jwks};
pub use keys::{KeySet, SECRET_INDEX, SECRET_PEM_SUFFIX};
pub use mint::mint;
pub use verify::Verifier;

/// Seconds since the Unix epoch (a JWT NumericDate).
pub type UnixTime = u64;

/// The header `typ` of a dispatch token (RFC 8725 §3.11: explicit typing).
pub const TOKEN_TYPE: &str = "vexa-dispatch+jwt";
/// Clock skew tolerated on `iat` and `exp`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// How long the operator makes a dispatch token live, unless a grant allows less.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// The longest lifetime (`exp - iat`) any verifier accepts; also the default of a grant's
/// `maxTokenLifetimeSeconds`, and what [`KeySet::rotate`] keeps retired keys for.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Makes sure jsonwebtoken has its crypto provider: it finds it by itself while only
/// `rust_crypto` is enabled, but panics on first use if another crate in the build enables
/// `aws_lc_rs` too. Installing ours first (when none is installed) keeps that from happening.
fn crypto_provider() {
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        // Losing the race to another installer is fine: a provider is installed either way.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
}
