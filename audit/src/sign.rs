//! Signing checkpoints, and checking their signatures.

use vexa_policy::token::{DetachedSignature, Jwks, KeySet, TokenError};

/// Signs checkpoints (the operator: its token key set).
pub trait Signer: Send + Sync {
    /// A detached signature of `msg`, or why there is none (e.g. no key yet).
    fn sign(&self, msg: &[u8]) -> Result<DetachedSignature, String>;
}

impl Signer for KeySet {
    fn sign(&self, msg: &[u8]) -> Result<DetachedSignature, String> {
        KeySet::sign(self, msg).map_err(|e| e.to_string())
    }
}

impl<S: Signer + ?Sized> Signer for std::sync::Arc<S> {
    fn sign(&self, msg: &[u8]) -> Result<DetachedSignature, String> {
        (**self).sign(msg)
    }
}

impl<S: Signer> Signer for std::sync::RwLock<S> {
    fn sign(&self, msg: &[u8]) -> Result<DetachedSignature, String> {
        // A writer that panicked left a whole key set behind (they are replaced, not edited).
        self.read().unwrap_or_else(|p| p.into_inner()).sign(msg)
    }
}

/// Checks checkpoint signatures (a published JWKS).
pub trait CheckpointKeys {
    /// Whether `signature` is a valid signature of `msg`.
    fn verify(&self, msg: &[u8], signature: &DetachedSignature) -> Result<(), KeyError>;
}

impl CheckpointKeys for Jwks {
    fn verify(&self, msg: &[u8], signature: &DetachedSignature) -> Result<(), KeyError> {
        self.verify_detached(msg, signature).map_err(|e| match e {
            TokenError::UnknownKid(kid) => KeyError::UnknownKey(kid),
            other => KeyError::BadSignature(format!("{} ({other})", signature.kid)),
        })
    }
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

/// A signer and key set for the chain's tests: a keyed hash, fast and with readable kids (the
/// real Ed25519 key set is tested in `tests.rs` too).
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
        fn sign(&self, msg: &[u8]) -> Result<DetachedSignature, String> {
            Ok(DetachedSignature {
                kid: self.0.into(),
                sig: mac(self.1, msg),
            })
        }
    }

    impl CheckpointKeys for [TestKey] {
        fn verify(&self, msg: &[u8], signature: &DetachedSignature) -> Result<(), KeyError> {
            let kid = &signature.kid;
            let key = self
                .iter()
                .find(|k| k.0 == *kid)
                .ok_or_else(|| KeyError::UnknownKey(kid.into()))?;
            if mac(key.1, msg) == signature.sig {
                Ok(())
            } else {
                Err(KeyError::BadSignature(kid.into()))
            }
        }
    }
}
