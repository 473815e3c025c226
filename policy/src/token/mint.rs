//! Minting: the operator signs a dispatch's claims with the current key.

use jsonwebtoken::{Algorithm, Header};

use super::{DispatchClaims, KeySet, TOKEN_TYPE, TokenError, crypto_provider};

/// Signs `claims` with the key set's current key: header `{alg: EdDSA, typ:
/// vexa-dispatch+jwt, kid}`. The claims are taken as given (the caller made them from an
/// authorized scope, see [`crate::delegation::authorize`]).
pub fn mint(keys: &KeySet, claims: &DispatchClaims) -> Result<String, TokenError> {
    crypto_provider();
    let (kid, key) = keys.signing()?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.to_string());
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).map_err(|e| TokenError::Sign(e.to_string()))
}
