//! Signing checkpoints, and checking their signatures.

use serde::{Deserialize, Serialize};

/// A detached signature as a checkpoint carries it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The key's id (a `kid` of the published JWKS).
    pub kid: String,
    /// The signature (base64url, unpadded).
    pub sig: String,
}

/// Signs checkpoints (the operator: its token key set).
pub trait Signer: Send + Sync {
    /// A detached signature of `msg`.
    fn sign(&self, msg: &[u8]) -> Signature;
}

/// Checks checkpoint signatures (a published JWKS).
pub trait CheckpointKeys {
    /// Whether `sig` is a valid signature of `msg` by the key `kid`.
    fn verify(&self, kid: &str, msg: &[u8], sig: &str) -> Result<(), KeyError>;
}

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key of that id is published.
    #[error("no published key has the id {0:?}")]
    UnknownKey(String),
    /// The key exists and the signature does not verify.
    #[error("the signature does not verify with key {0:?}")]
    BadSignature(String),
}

/// What a checkpoint signs: the writer, the seq of the last line it covers and that line's
/// hash. Each line's hash covers the one before, so this fixes the whole chain up to `covers`.
pub fn checkpoint_message(writer: &str, covers: u64, hash: &str) -> Vec<u8> {
    format!("vexa-audit-checkpoint/v1\n{writer}\n{covers}\n{hash}").into_bytes()
}

/// A signer and key set for tests: an HMAC-like keyed hash (no asymmetric crypto needed to
/// test the chain; the real keys come from the policy crate).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use sha2::{Digest, Sha256};

    #[derive(Debug)]
    pub struct TestKey(pub &'static str, pub &'static str);

    fn mac(secret: &str, msg: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(secret.as_bytes());
        h.update(msg);
        crate::chain::hex(&h.finalize())
    }

    impl Signer for TestKey {
        fn sign(&self, msg: &[u8]) -> Signature {
            Signature {
                kid: self.0.into(),
                sig: mac(self.1, msg),
            }
        }
    }

    impl CheckpointKeys for [TestKey] {
        fn verify(&self, kid: &str, msg: &[u8], sig: &str) -> Result<(), KeyError> {
            let key = self
                .iter()
                .find(|k| k.0 == kid)
                .ok_or_else(|| KeyError::UnknownKey(kid.into()))?;
            if mac(key.1, msg) == sig {
                Ok(())
            } else {
                Err(KeyError::BadSignature(kid.into()))
            }
        }
    }
}

/// The keys of a published JWKS (`{"keys": [{"kid": …, …}]}`), as checkpoints are verified
/// against them.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedKeys {
    jwks: serde_json::Value,
}

impl PublishedKeys {
    /// Reads a JWKS document.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, String> {
        if !jwks.get("keys").is_some_and(serde_json::Value::is_array) {
            return Err("no \"keys\" list".into());
        }
        Ok(Self { jwks: jwks.clone() })
    }

    fn has(&self, kid: &str) -> bool {
        self.jwks["keys"]
            .as_array()
            .is_some_and(|keys| keys.iter().any(|k| k["kid"] == kid))
    }
}

impl CheckpointKeys for PublishedKeys {
    fn verify(&self, kid: &str, _msg: &[u8], _sig: &str) -> Result<(), KeyError> {
        if !self.has(kid) {
            return Err(KeyError::UnknownKey(kid.into()));
        }
        // Until the policy crate's Ed25519 verifier is wired in, no signature is accepted.
        Err(KeyError::BadSignature(kid.into()))
    }
}
