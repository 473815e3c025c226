//! The published key set (RFC 7517 JWKS with RFC 8037 Ed25519 keys), and signatures over
//! records that are not JWTs (audit checkpoints), checked against it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::TokenError;

/// What a detached signature covers before the signed bytes. The NUL byte never occurs in a
/// JWT's signing input (base64url and '.'), so such a signature cannot be replayed as a token's.
const DETACHED_CONTEXT: &[u8] = b"vexa-detached-signature-v1\0";

/// The bytes a detached signature is made over.
pub(super) fn detached_message(bytes: &[u8]) -> Vec<u8> {
    [DETACHED_CONTEXT, bytes].concat()
}

/// A JSON Web Key Set, as the operator serves it and the gateway reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Jwks {
    /// The keys, oldest first.
    pub keys: Vec<Jwk>,
}

/// One public key: `kty` `OKP`, `crv` `Ed25519` (RFC 8037).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The public key, base64url (32 bytes).
    pub x: String,
    /// Key id: the RFC 7638 thumbprint.
    pub kid: String,
    /// Algorithm: `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Use: `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A signature over bytes kept apart from them, with the id of the key that made it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DetachedSignature {
    /// The signing key's id.
    pub kid: String,
    /// The Ed25519 signature, base64url.
    pub sig: String,
}

impl Jwk {
    /// An Ed25519 signing key's public half.
    pub fn ed25519(kid: String, x: String) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x,
            kid,
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }

    /// The verifying key, if this is an Ed25519 signing key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, TokenError> {
        let bad = |problem: &str| TokenError::BadJwk {
            kid: self.kid.clone(),
            problem: problem.to_string(),
        };
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(bad("not an Ed25519 key (kty OKP, crv Ed25519)"));
        }
        if self.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return Err(bad("its alg is not EdDSA"));
        }
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(bad("its use is not sig"));
        }
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.x)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("x is not 32 bytes of base64url"))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| bad("x is not a point on the curve"))
    }
}

impl Jwks {
    /// The key with this id.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Checks a signature made by [`super::KeySet::sign`] over `bytes`.
    pub fn verify_detached(
        &self,
        bytes: &[u8],
        signature: &DetachedSignature,
    ) -> Result<(), TokenError> {
        let jwk = self
            .find(&signature.kid)
            .ok_or_else(|| TokenError::UnknownKid(signature.kid.clone()))?;
        let key = jwk.verifying_key()?;
        let bad = || TokenError::BadSignature(signature.kid.clone());
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(&signature.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        key.verify_strict(&detached_message(bytes), &Signature::from_bytes(&sig))
            .map_err(|_| bad())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::token::KeySet;

    #[test]
    fn the_jwks_is_rfc_7517_json() {
        let set = KeySet::generate(0).unwrap();
        let json = serde_json::to_value(set.jwks()).unwrap();
        let key = &json["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], set.current_kid());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(serde_json::from_value::<Jwks>(json).unwrap(), set.jwks());
    }

    #[test]
    fn a_detached_signature_holds_only_for_its_bytes_and_key() {
        let set = KeySet::generate(0).unwrap();
        let other = KeySet::generate(0).unwrap();
        let sig = set.sign(b"record 7").unwrap();
        set.jwks().verify_detached(b"record 7", &sig).unwrap();
        assert_eq!(
            set.jwks().verify_detached(b"record 8", &sig),
            Err(TokenError::BadSignature(sig.kid.clone()))
        );
        assert_eq!(
            other.jwks().verify_detached(b"record 7", &sig),
            Err(TokenError::UnknownKid(sig.kid.clone()))
        );
        let forged = DetachedSignature {
            kid: sig.kid.clone(),
            ..other.sign(b"record 7").unwrap()
        };
        assert!(matches!(
            set.jwks().verify_detached(b"record 7", &forged),
            Err(TokenError::BadSignature(_))
        ));
    }

    #[test]
    fn keys_that_are_not_ed25519_are_refused() {
        let mut jwk = KeySet::generate(0).unwrap().jwks().keys.remove(0);
        jwk.x = URL_SAFE_NO_PAD.encode([1u8; 31]);
        assert!(matches!(
            jwk.verifying_key(),
            Err(TokenError::BadJwk { .. })
        ));
        jwk.crv = "P-256".into();
        assert!(matches!(
            jwk.verifying_key(),
            Err(TokenError::BadJwk { .. })
        ));
    }
}
