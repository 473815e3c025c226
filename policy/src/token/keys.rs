//! The operator's signing keys: Ed25519 keys named by their RFC 7638 thumbprint, rotated on a
//! schedule, kept in a Kubernetes Secret's data, published as a JWKS.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::jwks::{DetachedSignature, Jwk, Jwks, detached_message};
use super::{LEEWAY, TokenError, UnixTime};

/// The Secret data key of the index: the keys' ids and times, oldest first.
pub const SECRET_INDEX: &str = "keys.json";
/// The suffix of the Secret data key holding each private key (`<kid>.pem`, PKCS#8 PEM).
pub const SECRET_PEM_SUFFIX: &str = ".pem";

/// One signing key.
struct Key {
    kid: String,
    created: UnixTime,
    retire_at: Option<UnixTime>,
    signing: SigningKey,
    /// The same key as jsonwebtoken wants it (PKCS#8 DER), made once.
    encoding: jsonwebtoken::EncodingKey,
}

impl Key {
    fn new(
        signing: SigningKey,
        created: UnixTime,
        retire_at: Option<UnixTime>,
    ) -> Result<Self, TokenError> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| TokenError::KeySecret(format!("cannot encode a key as PKCS#8: {e}")))?;
        Ok(Self {
            kid: thumbprint(&x(&signing)),
            created,
            retire_at,
            encoding: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            signing,
        })
    }

    fn generate(now: UnixTime) -> Result<Self, TokenError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
        Self::new(SigningKey::from_bytes(&secret), now, None)
    }

    fn jwk(&self) -> Jwk {
        Jwk::ed25519(self.kid.clone(), x(&self.signing))
    }
}

/// The public key as a JWK's `x`: base64url of its 32 bytes.
fn x(signing: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes())
}

/// The RFC 7638 JWK thumbprint of an Ed25519 key: SHA-256 over the required members in
/// lexicographic order, without whitespace, base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// One entry of the Secret's index.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    kid: String,
    created: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_at: Option<UnixTime>,
}

/// The operator's signing keys, oldest first. The last one is current: it signs. The others
/// were superseded and stay published until their `retire_at`, so tokens they signed keep
/// verifying until those tokens expire.
pub struct KeySet {
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    // Never the private keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for k in &self.keys {
            list.entry(&(&k.kid, k.created, k.retire_at));
        }
        list.finish()
    }
}

impl KeySet {
    /// A new key set with one fresh key created at `now`.
    pub fn generate(now: UnixTime) -> Result<Self, TokenError> {
        Ok(Self {
            keys: vec![Key::generate(now)?],
        })
    }

    /// The rotation rule. When the current key is older than `rotate_after`, a new key becomes
    /// current and the old one gets `retire_at = now + max_token_lifetime + LEEWAY` (the last
    /// token it signed has then expired, clock skew included). Keys past their `retire_at` are
    /// dropped. Returns whether anything changed (then write the Secret back).
    pub fn rotate(
        &mut self,
        now: UnixTime,
        rotate_after: Duration,
        max_token_lifetime: Duration,
    ) -> Result<bool, TokenError> {
        let mut changed = false;
        let due = self
            .keys
            .last()
            .is_none_or(|k| now >= k.created.saturating_add(rotate_after.as_secs()));
        if due {
            let fresh = Key::generate(now)?;
            if let Some(current) = self.keys.last_mut() {
                current.retire_at = Some(
                    now.saturating_add(max_token_lifetime.as_secs())
                        .saturating_add(LEEWAY.as_secs()),
                );
            }
            self.keys.push(fresh);
            changed = true;
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.retire_at.is_none_or(|at| now < at));
        Ok(changed || self.keys.len() != before)
    }

    /// The id of the key that signs now.
    pub fn current_kid(&self) -> &str {
        self.current().map_or("", |k| k.kid.as_str())
    }

    /// The ids of every key still published, oldest first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    fn current(&self) -> Option<&Key> {
        self.keys.last()
    }

    /// The current key for jsonwebtoken, with its id.
    pub(super) fn signing(&self) -> Result<(&str, &jsonwebtoken::EncodingKey), TokenError> {
        let key = self
            .current()
            .ok_or_else(|| TokenError::Sign("the key set is empty".into()))?;
        Ok((&key.kid, &key.encoding))
    }

    /// The public keys, to serve at the JWKS endpoint (every key not yet retired).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.iter().map(Key::jwk).collect(),
        }
    }

    /// Signs `bytes` with the current key, for a record that is not a JWT (an audit checkpoint).
    /// The signature covers a context prefix too, so it can never pass as a JWT's signature.
    pub fn sign(&self, bytes: &[u8]) -> Result<DetachedSignature, TokenError> {
        let key = self
            .current()
            .ok_or_else(|| TokenError::Sign("the key set is empty".into()))?;
        let sig = key.signing.sign(&detached_message(bytes));
        Ok(DetachedSignature {
            kid: key.kid.clone(),
            sig: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        })
    }

    /// The Secret's data: [`SECRET_INDEX`] (ids and times) and one `<kid>.pem` (PKCS#8 PEM)
    /// per key.
    pub fn to_secret_data(&self) -> Result<BTreeMap<String, Vec<u8>>, TokenError> {
        let mut data = BTreeMap::new();
        let index: Vec<IndexEntry> = self
            .keys
            .iter()
            .map(|k| IndexEntry {
                kid: k.kid.clone(),
                created: k.created,
                retire_at: k.retire_at,
            })
            .collect();
        let index = serde_json::to_vec(&index)
            .map_err(|e| TokenError::KeySecret(format!("cannot write {SECRET_INDEX}: {e}")))?;
        data.insert(SECRET_INDEX.to_string(), index);
        for k in &self.keys {
            let pem = k
                .signing
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| TokenError::KeySecret(format!("cannot encode key {}: {e}", k.kid)))?;
            data.insert(
                format!("{}{SECRET_PEM_SUFFIX}", k.kid),
                pem.as_bytes().to_vec(),
            );
        }
        Ok(data)
    }

    /// Reads the Secret's data back, checking that every key is listed, present, and named by
    /// its own thumbprint, and that only the last one is current.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, TokenError> {
        let bad = TokenError::KeySecret;
        let index = data
            .get(SECRET_INDEX)
            .ok_or_else(|| bad(format!("it has no {SECRET_INDEX}")))?;
        let index: Vec<IndexEntry> = serde_json::from_slice(index)
            .map_err(|e| bad(format!("{SECRET_INDEX} is not a key index: {e}")))?;
        if index.is_empty() {
            return Err(bad(format!("{SECRET_INDEX} lists no key")));
        }
        let mut keys = Vec::with_capacity(index.len());
        for (i, entry) in index.iter().enumerate() {
            let last = i + 1 == index.len();
            if last != entry.retire_at.is_none() {
                return Err(bad(format!(
                    "key {} in {SECRET_INDEX}: only the last (current) key has no retireAt",
                    entry.kid
                )));
            }
            let name = format!("{}{SECRET_PEM_SUFFIX}", entry.kid);
            let pem = data.get(&name).ok_or_else(|| {
                bad(format!(
                    "{SECRET_INDEX} lists key {} but {name} is missing",
                    entry.kid
                ))
            })?;
            let pem = std::str::from_utf8(pem).map_err(|_| bad(format!("{name} is not text")))?;
            let signing = SigningKey::from_pkcs8_pem(pem)
                .map_err(|e| bad(format!("{name} is not an Ed25519 PKCS#8 PEM key: {e}")))?;
            let key = Key::new(signing, entry.created, entry.retire_at)?;
            if key.kid != entry.kid {
                return Err(bad(format!(
                    "{name} holds the key with thumbprint {}, not {}",
                    key.kid, entry.kid
                )));
            }
            keys.push(key);
        }
        if let Some(stray) = data
            .keys()
            .filter(|name| name.as_str() != SECRET_INDEX)
            .find(|name| {
                !keys
                    .iter()
                    .any(|k| **name == format!("{}{SECRET_PEM_SUFFIX}", k.kid))
            })
        {
            return Err(bad(format!("{stray} is not listed in {SECRET_INDEX}")));
        }
        Ok(Self { keys })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rotation_adds_a_key_when_due_and_drops_it_once_retired() {
        let mut set = KeySet::generate(1_000).unwrap();
        let first = set.current_kid().to_string();
        assert!(!set.rotate(1_000 + 3599, HOUR, HOUR).unwrap());
        assert!(set.rotate(1_000 + 3600, HOUR, HOUR).unwrap());
        let second = set.current_kid().to_string();
        assert_ne!(first, second);
        assert_eq!(set.kids().collect::<Vec<_>>(), [&first, &second]);
        let retire_at = 4_600 + 3600 + LEEWAY.as_secs();
        assert_eq!(set.keys[0].retire_at, Some(retire_at));
        assert!(
            !set.rotate(retire_at - 1, Duration::from_secs(86_400), HOUR)
                .unwrap()
        );
        assert_eq!(set.jwks().keys.len(), 2);
        assert!(
            set.rotate(retire_at, Duration::from_secs(86_400), HOUR)
                .unwrap()
        );
        assert_eq!(set.kids().collect::<Vec<_>>(), [&second]);
    }

    #[test]
    fn the_secret_data_round_trips() {
        let mut set = KeySet::generate(1_000).unwrap();
        set.rotate(5_000, HOUR, HOUR).unwrap();
        let data = set.to_secret_data().unwrap();
        assert_eq!(data.len(), 3);
        let pem = std::str::from_utf8(&data[&format!("{}.pem", set.current_kid())]).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let back = KeySet::from_secret_data(&data).unwrap();
        assert_eq!(format!("{back:?}"), format!("{set:?}"));
        assert_eq!(back.jwks(), set.jwks());
        let sig = back.sign(b"checkpoint").unwrap();
        set.jwks().verify_detached(b"checkpoint", &sig).unwrap();
    }

    #[test]
    fn a_tampered_secret_is_refused_with_what_is_wrong() {
        let a = KeySet::generate(1_000).unwrap();
        let b = KeySet::generate(1_000).unwrap();
        let mut data = a.to_secret_data().unwrap();
        // b's key under a's name.
        let b_pem = b.to_secret_data().unwrap()[&format!("{}.pem", b.current_kid())].clone();
        data.insert(format!("{}.pem", a.current_kid()), b_pem);
        let err = KeySet::from_secret_data(&data).unwrap_err();
        assert!(
            err.to_string().contains("holds the key with thumbprint"),
            "{err}"
        );

        let mut data = a.to_secret_data().unwrap();
        data.insert("extra.pem".into(), b"x".to_vec());
        let err = KeySet::from_secret_data(&data).unwrap_err();
        assert!(err.to_string().contains("extra.pem is not listed"), "{err}");

        let err = KeySet::from_secret_data(&BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("no keys.json"), "{err}");
    }

    #[test]
    fn debug_shows_no_private_key() {
        let set = KeySet::generate(1_000).unwrap();
        let data = set.to_secret_data().unwrap();
        let pem = std::str::from_utf8(&data[&format!("{}.pem", set.current_kid())]).unwrap();
        let body = pem.lines().nth(1).unwrap();
        assert!(!format!("{set:?}").contains(body));
        assert!(format!("{set:?}").contains(set.current_kid()));
    }
}
