//! The keys the operator signs dispatch tokens (and audit checkpoints) with
//! (`vexa_policy::token::KeySet`). They live in one Secret of the operator's namespace, so every
//! replica signs with the same current key and publishes the same JWKS; the first replica to
//! start creates it.
//!
//! Rotation: every replica looks at the Secret every [`REFRESH_EVERY`]. When the current key is
//! older than the rotation period, a replica adds a new current key and writes the Secret back
//! with its resourceVersion as a precondition (a replica that loses the race reads the winner's
//! keys). The superseded key stays published until its last token has expired
//! (`KeySet::rotate`), so a rotation never breaks a running dispatch: a verifier that has the
//! JWKS keeps accepting its token, and the run's next token is signed with the new key.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::watch;
use vexa_policy::token::{
    DispatchClaims, Jwks, KeySet, MAX_TOKEN_LIFETIME, TokenError, UnixTime, mint,
};

/// The Secret holding the keys, in the operator's namespace.
pub const SECRET_NAME: &str = "vexa-dispatch-token-keys";
/// How often every replica reads the Secret again (and rotates when due).
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Why the keys could not be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The API server refused or failed.
    #[error("reading or writing Secret {namespace}/{SECRET_NAME} failed: {source}")]
    Api {
        /// The operator's namespace.
        namespace: String,
        /// Why.
        source: kube::Error,
    },
    /// The Secret holds no usable key set, or one could not be made.
    #[error(
        "Secret {namespace}/{SECRET_NAME}: {source}; delete it and the operator creates new keys (tokens of running dispatches are then refused until they are minted again)"
    )]
    Keys {
        /// The operator's namespace.
        namespace: String,
        /// Why.
        source: TokenError,
    },
}

/// The key set every reconcile mints with, and its public half for the JWKS endpoint.
pub struct SigningKeys {
    client: kube::Client,
    namespace: String,
    rotate_after: Duration,
    keys: Arc<RwLock<KeySet>>,
    jwks: watch::Sender<Jwks>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("namespace", &self.namespace)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn now() -> UnixTime {
    u64::try_from(k8s_openapi::jiff::Timestamp::now().as_second()).unwrap_or(0)
}

impl SigningKeys {
    /// Reads the keys (creating them if no replica has yet) and rotates them if due.
    pub async fn load_or_create(
        client: kube::Client,
        namespace: &str,
        rotate_after: Duration,
    ) -> Result<Arc<Self>, KeyError> {
        let keys = Self::read_or_create(&client, namespace).await?;
        let jwks = watch::channel(keys.jwks()).0;
        let this = Arc::new(Self {
            client,
            namespace: namespace.to_owned(),
            rotate_after,
            keys: Arc::new(RwLock::new(keys)),
            jwks,
        });
        this.refresh().await?;
        Ok(this)
    }

    fn keys_error(&self, source: TokenError) -> KeyError {
        KeyError::Keys {
            namespace: self.namespace.clone(),
            source,
        }
    }

    async fn read_or_create(client: &kube::Client, namespace: &str) -> Result<KeySet, KeyError> {
        let api = Api::<Secret>::namespaced(client.clone(), namespace);
        let api_error = |source| KeyError::Api {
            namespace: namespace.to_owned(),
            source,
        };
        let keys_error = |source| KeyError::Keys {
            namespace: namespace.to_owned(),
            source,
        };
        for _ in 0..2 {
            if let Some(secret) = api.get_opt(SECRET_NAME).await.map_err(api_error)? {
                return KeySet::from_secret_data(&plain(&secret)).map_err(keys_error);
            }
            let keys = KeySet::generate(now()).map_err(keys_error)?;
            let secret = super::gateway_key::operator_secret(
                SECRET_NAME,
                namespace,
                bytes(keys.to_secret_data().map_err(keys_error)?),
            );
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(
                        namespace,
                        secret = SECRET_NAME,
                        kid = keys.current_kid(),
                        "created the dispatch-token signing keys"
                    );
                    return Ok(keys);
                }
                // Another replica was first: read its keys.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_error(e)),
            }
        }
        Err(KeyError::Keys {
            namespace: namespace.to_owned(),
            source: TokenError::KeySecret("it was created and deleted again meanwhile".into()),
        })
    }

    /// Reads the Secret again (another replica may have rotated), rotates when due and writes
    /// the rotation back; then publishes the JWKS.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.namespace);
        let api_error = |source| KeyError::Api {
            namespace: self.namespace.clone(),
            source,
        };
        for _ in 0..3 {
            let Some(mut secret) = api.get_opt(SECRET_NAME).await.map_err(api_error)? else {
                // Deleted by hand: make new keys (the old tokens are refused from now on).
                let keys = Self::read_or_create(&self.client, &self.namespace).await?;
                self.publish(keys);
                return Ok(());
            };
            let mut keys =
                KeySet::from_secret_data(&plain(&secret)).map_err(|e| self.keys_error(e))?;
            let changed = keys
                .rotate(now(), self.rotate_after, MAX_TOKEN_LIFETIME)
                .map_err(|e| self.keys_error(e))?;
            if changed {
                // A merge patch guarded by the resourceVersion read above (the operator may
                // patch Secrets, not replace them); retired keys' entries are removed.
                let fresh = keys.to_secret_data().map_err(|e| self.keys_error(e))?;
                let mut data = serde_json::Map::new();
                for old in secret.data.take().into_iter().flatten().map(|(k, _)| k) {
                    data.insert(old, serde_json::Value::Null);
                }
                for (k, v) in fresh {
                    data.insert(k, serde_json::to_value(ByteString(v)).unwrap_or_default());
                }
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": secret.metadata.resource_version},
                    "data": data,
                });
                match api
                    .patch(SECRET_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => tracing::info!(
                        kid = keys.current_kid(),
                        published = keys.kids().count(),
                        "rotated the dispatch-token signing key"
                    ),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(api_error(e)),
                }
            }
            self.publish(keys);
            return Ok(());
        }
        Ok(())
    }

    fn publish(&self, keys: KeySet) {
        let jwks = keys.jwks();
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        self.jwks.send_if_modified(|published| {
            let modified = *published != jwks;
            *published = jwks;
            modified
        });
    }

    /// Refreshes every [`REFRESH_EVERY`] for as long as the returned task runs.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.refresh().await {
                    tracing::warn!(error = %e, "refreshing the dispatch-token signing keys failed; signing with the ones held");
                }
            }
        })
    }

    /// Signs `claims` with the current key; the token and the key's id.
    pub fn mint(&self, claims: &DispatchClaims) -> Result<(String, String), TokenError> {
        let keys = match self.keys.read() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok((mint(&keys, claims)?, keys.current_kid().to_owned()))
    }

    /// The public keys, as they change.
    pub fn jwks(&self) -> watch::Receiver<Jwks> {
        self.jwks.subscribe()
    }

    /// The key set itself, to sign audit checkpoints with.
    pub fn signer(&self) -> Arc<RwLock<KeySet>> {
        Arc::clone(&self.keys)
    }
}

/// A Secret's data as plain bytes (what `KeySet::from_secret_data` reads).
pub(crate) fn plain(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn bytes(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()
}
